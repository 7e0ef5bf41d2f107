"""``cellax hpo`` configs: a base train config, a search space over its fields, budget, objective, sampler, pruner.

A space names train-config fields by dotted path (``model.width``, ``optimizer.learning_rate``,
``loss.weights.voltage_v``) and gives each a range or a list::

    space:
      model.width: {low: 32, high: 128, step: 32}          # integers (both ends integers)
      optimizer.learning_rate: {low: 3.0e-4, high: 1.0e-2, log: true}
      model.positional: {choices: [rope, alibi]}

Every problem (unknown field, empty range, log range through zero, an end the train config refuses)
is one line naming the field, raised as :class:`~cellax.config.ConfigError` before any trial.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from cellax.config import ConfigError, Seed, Strict, load_config
from cellax.models import parse_model_config
from cellax.train.config import TrainConfig

MODEL_KINDS = ("transformer", "mamba", "gru")


class Param(Strict):
    """One searched field: ``choices``, or ``[low, high]`` (integers when both ends are, optional ``step``/``log``)."""

    choices: list[Any] | None = None
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> "Param":
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("empty choices")
            return self
        if self.low is None or self.high is None:
            raise ValueError("needs choices or both low and high")
        if not self.low < self.high:
            raise ValueError(f"empty range: low {self.low} must be below high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log-scale range [{self.low}, {self.high}] reaches zero or below; low must be > 0")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step {self.step} must be positive")
        return self

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))

    @property
    def ends(self) -> list[Any]:
        return list(self.choices) if self.choices is not None else [self.low, self.high]


class Budget(Strict):
    """Training budget per trial: ``steps`` (the schedule's length; default the base's) and/or wall ``seconds``.

    With both, the schedule is ``steps`` long and training stops at ``seconds``. ``steps: fit`` sizes each
    trial's schedule from its own measured step time so that it ends with ``seconds``
    (:mod:`cellax.train.budget`): a small, fast config gets more steps than a large one, as it would in the
    same time. Its validations then fall at ``evals`` even fractions of the schedule, and the pruner compares
    trials at equal fractions of the budget."""

    steps: int | Literal["fit"] | None = Field(None, description="schedule length, or fit (needs seconds)")
    seconds: float | None = Field(None, gt=0)
    eval_every: int | None = Field(None, gt=0, description="validation period of the trials (the pruner's rungs); "
                                                           "default the base's")
    evals: int = Field(6, gt=0, description="validations per trial with steps: fit")

    @model_validator(mode="after")
    def _one(self) -> "Budget":
        if self.steps is None and self.seconds is None:
            raise ValueError("give steps, seconds, or both")
        if isinstance(self.steps, int) and self.steps <= 0:
            raise ValueError(f"steps must be positive or fit, got {self.steps}")
        if self.steps == "fit" and self.seconds is None:
            raise ValueError("steps: fit sizes the schedule to seconds; give seconds")
        if self.steps == "fit" and self.eval_every is not None:
            raise ValueError("with steps: fit the validations are set by evals, not eval_every")
        return self

    @property
    def fitted(self) -> bool:
        return self.steps == "fit"


class Objective(Strict):
    """Minimised: one output's validation error in physical units (mV, K, % SOC) over the validation profiles."""

    output: str = "voltage_v"
    metric: Literal["rmse", "mae", "max"] = "rmse"


class Sampler(Strict):
    """TPE or random search; trial ``n`` samples with seed ``seed + n`` (reproducible with one worker)."""

    kind: Literal["tpe", "random"] = "tpe"
    seed: Seed = 0
    startup_trials: int = Field(8, ge=0, description="random trials before TPE models the history")


class Pruner(Strict):
    """Multi-fidelity pruning on the validation errors reported at each evaluation.

    The resource is training steps, or with ``budget.steps: fit`` the fraction of each trial's schedule
    (reported to Optuna in per mille), so that trials of different speeds are compared at equal time."""

    kind: Literal["asha", "hyperband", "median", "none"] = "asha"
    min_steps: int | None = Field(None, gt=0, description="steps before a trial may be pruned (default 100)")
    min_fraction: float | None = Field(None, gt=0, lt=1, description="with budget.steps: fit, the fraction of "
                                                                     "the schedule before a trial may be pruned "
                                                                     "(default 1/9)")
    reduction_factor: int = Field(3, ge=2)

    def min_resource(self, fitted: bool) -> int:
        if fitted:
            return max(1, round(PER_MILLE * (self.min_fraction or 1 / 9)))
        return self.min_steps or 100


PER_MILLE = 1000


class HpoConfig(Strict):
    """A study: which train config, which fields, how many trials, how long each, what is minimised."""

    name: str
    base: Path
    data: Path | None = Field(None, description="dataset for every trial (default: the base config's)")
    trials: int = Field(gt=0)
    budget: Budget
    objective: Objective = Objective()
    sampler: Sampler = Sampler()
    pruner: Pruner = Pruner()
    space: dict[str, Param] = Field(min_length=1)
    heartbeat_s: int = Field(30, gt=0, description="a running trial's heartbeat period")
    grace_s: int | None = Field(None, gt=0, description="silence after which a trial counts as dead (default 2 heartbeats)")
    max_retry: int = Field(3, ge=0, description="re-runs of a trial whose worker died")
    out: Path | None = None

    @model_validator(mode="after")
    def _resource(self) -> "HpoConfig":
        if self.budget.fitted and self.pruner.min_steps is not None:
            raise ValueError("pruner.min_steps: with budget.steps: fit trials are compared at fractions of their "
                             "schedule; give pruner.min_fraction")
        if not self.budget.fitted and self.pruner.min_fraction is not None:
            raise ValueError("pruner.min_fraction needs budget.steps: fit; give pruner.min_steps")
        return self

    @property
    def out_dir(self) -> Path:
        return self.out or Path("runs") / "hpo" / self.name


def model_fields(kind: str) -> set[str]:
    return set(type(parse_model_config({"kind": kind})).model_fields)


def model_for(model: dict, kind: str) -> dict:
    """``model`` switched to ``kind``, keeping the fields that kind has."""
    fields = model_fields(kind)
    return {**{k: v for k, v in model.items() if k in fields}, "kind": kind}


def set_path(config: dict, path: str, value: Any) -> dict:
    """A copy of the nested dict ``config`` with ``path`` (``a.b.c``) set to ``value``."""
    head, _, rest = path.partition(".")
    out = dict(config)
    out[head] = set_path(dict(out.get(head) or {}), rest, value) if rest else value
    return out


def _known(path: str) -> str | None:
    """Why ``path`` is not a searchable train-config field, or None."""
    head, _, rest = path.partition(".")
    if head not in TrainConfig.model_fields or head in ("name", "data", "out"):
        return f"unknown field (train config fields: {', '.join(sorted(set(TrainConfig.model_fields) - {'name', 'data', 'out'}))})"
    if head == "model":
        every = set().union(*(model_fields(k) for k in MODEL_KINDS))
        if not rest or "." in rest or rest not in every:
            return f"unknown model field (model fields: {', '.join(sorted(every))})"
        return None
    if head in ("optimizer", "loss", "stft"):
        sub = TrainConfig.model_fields[head].annotation
        sub = next(a for a in getattr(sub, "__args__", (sub,)) if a is not type(None))
        first, _, deeper = rest.partition(".")
        if first not in sub.model_fields or (deeper and first != "weights") or (first == "weights" and not deeper):
            return f"unknown {head} field (fields: {', '.join(sorted(sub.model_fields))})"
        return None
    return "unknown field" if rest else None


def _one_line(err: ValidationError) -> str:
    item = err.errors()[0]
    where = ".".join(str(p) for p in item["loc"]) or "(top level)"
    return f"{where}: {item['msg'].removeprefix('Value error, ')}"


def load_hpo_config(path: str | Path) -> tuple[HpoConfig, TrainConfig]:
    """Read and check a study config and its base train config; :class:`ConfigError` (one line) on any problem."""
    path = Path(path)
    try:
        config = load_config(path, HpoConfig)
    except ConfigError as err:
        raise ConfigError(" ".join(str(err).split())) from None
    config = config.model_copy(update={"base": (path.parent / config.base)})
    try:
        base = load_config(config.base, TrainConfig)
    except ConfigError as err:
        raise ConfigError(f"{path}: base: {' '.join(str(err).split())}") from None
    if config.data is not None:
        base = base.model_copy(update={"data": config.data})
    if config.objective.output not in base.output_signals:
        raise ConfigError(f"{path}: objective.output {config.objective.output!r} is not an output of the base "
                          f"config ({', '.join(base.output_signals)})")
    kinds = config.space["model.kind"].ends if "model.kind" in config.space else [base.model.kind]
    for name, param in config.space.items():
        why = _known(name)
        if why:
            raise ConfigError(f"{path}: space.{name}: {why}")
        check_ends(path, name, param, base, kinds)
    return config, base


def check_ends(path: Path, name: str, param: Param, base: TrainConfig, kinds: list[str]) -> None:
    """Every end of the range (every choice) must make a valid train config."""
    for value in param.ends:
        tried = False
        for kind in kinds:
            model = model_for(base.model.model_dump(mode="json"), kind)
            if name.startswith("model.") and name != "model.kind" and name[6:] not in model_fields(kind):
                continue
            candidate = set_path({**base.model_dump(mode="json"), "model": model}, name, value)
            try:
                TrainConfig.model_validate(candidate)
            except ValidationError as err:
                raise ConfigError(f"{path}: space.{name}: {value!r} is refused by the train config: "
                                  f"{_one_line(err)}") from None
            tried = True
        if not tried:
            raise ConfigError(f"{path}: space.{name}: no searched model kind ({', '.join(kinds)}) has this field")
