"""Optuna studies over train configs: storage, the trial queue, workers with heartbeats, the objective.

The study is planned once: ``trials`` empty trials are enqueued (WAITING). Workers (processes on one
machine, or on many machines sharing one database URL) claim WAITING trials one at a time by the
database's compare-and-set of the state (WAITING -> RUNNING, :func:`claim`), so no trial runs twice. While a trial
runs its worker records a heartbeat every ``heartbeat_s``; a worker that finds no WAITING trial but
RUNNING ones fails those whose heartbeat is older than ``grace_s`` (:func:`optuna.storages.fail_stale_trials`)
and Optuna's :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` re-queues each as a new WAITING
trial with the same parameters. A study is done when nothing is WAITING or RUNNING; then every
planned trial has ended COMPLETE, PRUNED, or FAIL with a ``fail_reason`` (diverged, refused config),
and each heartbeat-failed trial has exactly one retry.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from datetime import datetime
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState
from pydantic import ValidationError

from cellax.config import ConfigError
from cellax.hpo.config import PER_MILLE, HpoConfig, model_fields, model_for, set_path
from cellax.train.config import TrainConfig

PLANNED = "cellax_planned_trials"


def check_storage(url: str) -> None:
    """Refuse (one line, nothing created) a storage URL that cannot be used."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError as err:
        raise ConfigError(f"--storage {url!r}: not a SQLAlchemy URL ({err})") from None
    if parsed.get_backend_name() == "sqlite":
        folder = Path(parsed.database or "").resolve().parent
        if not parsed.database or not folder.is_dir():
            raise ConfigError(f"--storage {url}: folder {folder} does not exist")
        return
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 10})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as err:  # noqa: BLE001 - any driver's failure is the user's URL
        raise ConfigError(f"--storage {parsed.render_as_string()}: cannot connect: "
                          f"{' '.join(str(err).split())[:200]}") from None


def make_storage(url: str, config: HpoConfig) -> RDBStorage:
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    return RDBStorage(
        url, engine_kwargs=kwargs, heartbeat_interval=config.heartbeat_s,
        grace_period=config.grace_s or 2 * config.heartbeat_s,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=config.max_retry),
    )


def sampler_for(config: HpoConfig, number: int) -> optuna.samplers.BaseSampler:
    seed = config.sampler.seed + number
    if config.sampler.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.sampler.startup_trials)


def make_pruner(config: HpoConfig) -> optuna.pruners.BasePruner:
    p, fitted = config.pruner, config.budget.fitted
    least = p.min_resource(fitted)
    if p.kind == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=least, reduction_factor=p.reduction_factor)
    if p.kind == "hyperband":
        most = PER_MILLE if fitted else (config.budget.steps or "auto")
        return optuna.pruners.HyperbandPruner(least, most, reduction_factor=p.reduction_factor)
    if p.kind == "median":
        return optuna.pruners.MedianPruner(n_warmup_steps=least)
    return optuna.pruners.NopPruner()


def open_study(config: HpoConfig, storage: RDBStorage, number: int = 0) -> optuna.Study:
    return optuna.load_study(study_name=config.name, storage=storage, sampler=sampler_for(config, number),
                             pruner=make_pruner(config))


def plan_study(config: HpoConfig, storage: RDBStorage) -> optuna.Study:
    """Create the study (or join it) and enqueue its trials once; a joining run must ask for the same count."""
    study = optuna.create_study(study_name=config.name, storage=storage, direction="minimize", load_if_exists=True)
    planned = study.user_attrs.get(PLANNED)
    if planned is None:
        study.set_user_attr(PLANNED, config.trials)
        study.set_user_attr("objective", f"{config.objective.output} {config.objective.metric}")
        for _ in range(config.trials):
            study.enqueue_trial({}, skip_if_exists=False)
    elif planned != config.trials:
        raise ConfigError(f"study {config.name!r} in this storage plans {planned} trials, not {config.trials}; "
                          "use the same config (or another name)")
    return study


def sample(trial: optuna.Trial, config: HpoConfig, base: TrainConfig, out_dir: Path,
           planned_steps: int | None = None) -> TrainConfig:
    """The train config of ``trial``: the base with the sampled fields (model fields the kind lacks are not sampled).

    With ``budget.steps: fit`` its schedule is ``planned_steps`` long, or sized here from its measured step time."""
    data = base.model_dump(mode="json")
    kind = suggest(trial, "model.kind", config.space["model.kind"]) if "model.kind" in config.space else base.model.kind
    data["model"] = model_for(data["model"], kind)
    for name, param in config.space.items():
        if name == "model.kind" or (name.startswith("model.") and name[6:] not in model_fields(kind)):
            continue
        data = set_path(data, name, suggest(trial, name, param))  # a retried trial gets its stored value
    data.update(name=f"{config.name}_trial{trial.number}", out=str(out_dir / "trials" / f"trial-{trial.number:04d}"))
    budget = config.budget
    if isinstance(budget.steps, int):
        data["steps"] = budget.steps
    if budget.eval_every:
        data["eval_every"] = budget.eval_every
    train_config = TrainConfig.model_validate(data)
    if budget.fitted:
        steps = planned_steps
        if steps is None:
            from cellax.train.budget import measure_step_s, steps_for_seconds

            step_s = measure_step_s(train_config, budget_s=budget.seconds)
            steps = steps_for_seconds(step_s, budget.seconds)
            trial.set_user_attr("step_s", step_s)
            trial.set_user_attr("planned_steps", steps)
        every = max(1, -(-steps // budget.evals))
        train_config = train_config.model_copy(update={"steps": steps, "eval_every": every,
                                                       "checkpoint_every": every})
    return train_config


def suggest(trial: optuna.Trial, name: str, param):
    if param.choices is not None:
        return trial.suggest_categorical(name, param.choices)
    if param.is_int:
        return trial.suggest_int(name, param.low, param.high, step=param.step or 1, log=param.log)
    return trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)


class _Heartbeat:
    """Records ``trial_id``'s heartbeat every ``period_s`` on a daemon thread while in the ``with`` block."""

    def __init__(self, storage: RDBStorage, trial_id: int, period_s: float):
        self.storage, self.trial_id, self.period_s = storage, trial_id, period_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while True:
            self.storage.record_heartbeat(self.trial_id)
            if self.stop.wait(self.period_s):
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def claim(study: optuna.Study, storage: RDBStorage) -> int | None:
    """The id of a WAITING trial this worker now owns, or None.

    One conditional ``UPDATE ... WHERE state = 'WAITING'``, atomic on every database. (Optuna's own
    compare-and-set, ``set_trial_state_values``, reads the state with ``SELECT ... FOR UPDATE`` and then writes
    it: PostgreSQL locks the row, SQLite does not, so two workers on a SQLite file could both claim a trial.)"""
    from optuna.storages._rdb.models import TrialModel

    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        with storage.engine.begin() as connection:
            claimed = connection.execute(
                sqlalchemy.update(TrialModel)
                .where(TrialModel.trial_id == trial._trial_id, TrialModel.state == TrialState.WAITING)
                .values(state=TrialState.RUNNING, datetime_start=datetime.now())
            ).rowcount
        if claimed == 1:
            return trial._trial_id
    return None


def run_trial(config: HpoConfig, base: TrainConfig, storage: RDBStorage, trial_id: int, log=print) -> None:
    """Train one claimed trial under the budget, reporting validation errors for pruning; tell the result."""
    from cellax.train.loop import TrainError, train

    number = storage.get_trial_number_from_id(trial_id)
    study = open_study(config, storage, number)
    study.get_trials(deepcopy=False)  # fills this study's storage cache, which the trial writes through
    trial = optuna.Trial(study, trial_id)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    objective = config.objective
    started = time.perf_counter()
    state, value, reason, steps = TrialState.FAIL, None, "", 0

    planned = None  # the fitted schedule's length: progress is then reported in per mille of it
    reported = set()  # progress points already reported: Optuna keeps the first value of each and warns on more

    def on_eval(step: int, report: dict) -> None:
        nonlocal value, steps
        value, steps = report["outputs"][objective.output][objective.metric], step
        if not math.isfinite(value):
            raise TrainError(f"validation {objective.output} {objective.metric} became {value} at step {step}")
        progress = step if planned is None else min(PER_MILLE, round(PER_MILLE * step / planned))
        if progress not in reported:
            trial.report(value, progress)
            reported.add(progress)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")

    with _Heartbeat(storage, trial_id, config.heartbeat_s):
        try:
            train_config = sample(trial, config, base, config.out_dir)
            planned = train_config.steps if config.budget.fitted else None
            trial.set_user_attr("run_dir", str(train_config.run_dir))
            train(train_config, progress=False, time_budget_s=config.budget.seconds, log=lambda *_: None,
                  on_eval=on_eval)
            state = TrialState.COMPLETE if value is not None else TrialState.FAIL
            reason = "" if value is not None else "no validation ran"
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except (TrainError, ValidationError, ValueError) as err:
            reason = " ".join(str(err).split())[:500]
    if reason:
        trial.set_user_attr("fail_reason", reason)
    trial.set_user_attr("steps", steps)
    trial.set_user_attr("train_s", round(time.perf_counter() - started, 1))
    trial.set_user_attr("load_avg", os.getloadavg()[0])  # machines are shared: a slow trial may be a busy one
    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    shown = f"{objective.output} {objective.metric} {value:.4g}" if value is not None else "no value"
    log(f"trial {number} {state.name.lower()}: {shown} at step {steps} in {time.perf_counter() - started:.0f} s"
        f"{' (' + reason + ')' if reason else ''} {trial.params}", flush=True)


def quiet_optuna() -> None:
    """Optuna's per-trial INFO lines and experimental-feature warnings off (the worker prints its own line)."""
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def run_worker(config: HpoConfig, base: TrainConfig, url: str, log=print) -> int:
    """Run trials until the study has none WAITING or RUNNING; returns how many this worker ran."""
    quiet_optuna()
    storage = make_storage(url, config)
    study = open_study(config, storage)
    ran = 0
    while True:
        fail_stale_trials(study)
        trial_id = claim(study, storage)
        if trial_id is not None:
            run_trial(config, base, storage, trial_id, log)
            ran += 1
            continue
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            return ran
        time.sleep(min(config.heartbeat_s, 5))


def _worker_main(config_json: str, base_json: str, url: str, index: int) -> None:
    config = HpoConfig.model_validate_json(config_json)
    base = TrainConfig.model_validate_json(base_json)
    run_worker(config, base, url, log=lambda msg, **kw: print(f"[worker {index}] {msg}", **kw))


def run_study(config: HpoConfig, base: TrainConfig, url: str, workers: int = 1, log=print) -> optuna.Study:
    """Plan (or join) the study and run ``workers`` processes on it until it is done."""
    quiet_optuna()
    storage = make_storage(url, config)
    plan_study(config, storage)
    log(f"study {config.name!r}: {config.trials} trials, {workers} worker(s) on {storage.url.split('@')[-1]}",
        flush=True)
    if workers == 1:
        run_worker(config, base, url, log)
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_worker_main, args=(config.model_dump_json(), base.model_dump_json(), url, i))
                 for i in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        run_worker(config, base, url, log)  # finishes what dead workers left (normally nothing)
    return open_study(config, storage)
