"""``cellax train``: one jitted, data-parallel training step under a progress bar, with exact resume.

The run folder (``config.run_dir``) holds ``config.json``, ``stats.json`` (train
normalisation), ``metrics.jsonl`` (one JSON object per logged step and
evaluation), and orbax checkpoints ``checkpoints/latest`` and
``checkpoints/best`` (by validation rollout loss). A batch is a function of the
seed and the step only (:class:`~cellax.data.loader.WindowLoader` with
``start_batch``), and there is no other randomness after initialisation, so a
run killed and resumed from ``latest`` ends with the parameters of an
uninterrupted run, bit for bit on the CPU.

Data parallel: the batch is split over every visible device along a ``data``
mesh axis (``NamedSharding``), parameters and optimiser state are replicated,
and XLA inserts the gradient all-reduce. Several hosts: call
``jax.distributed.initialize()`` first in each process; ``jax.devices()`` then
spans all hosts and the same code runs (each host must read its own share of
the data, which this single-host loader does not do yet).
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from cellax.config import UserError
from cellax.data.loader import (
    NormStats,
    WindowLoader,
    compute_stats,
    condition_values,
    iterate_profiles,
    loader_resident_bytes,
    signal_bytes,
    split_profiles,
)
from cellax.data.store import StoreError, open_dataset
from cellax.events import EventLog
from cellax.models import make_model
from cellax.train.checkpoint import Checkpoints
from cellax.train.config import TrainConfig
from cellax.train.losses import feature_loss, loss_weights
from cellax.train.metrics import evaluate_profiles
from cellax.train.physics import PhysicsLoss, physics_loss
from cellax.train.task import Task, rollout


SYNC_EVERY = 16  # training steps between fetches of their metrics to the host


class TrainError(RuntimeError, UserError):
    """A run that cannot start or continue; the message says why and what was kept."""


def optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """AdamW, warm-up + cosine schedule, global-norm clipping, weight decay on matrices only."""
    o = config.optimizer
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, o.learning_rate, max(o.warmup_steps, 1), max(config.steps, o.warmup_steps + 1),
        o.learning_rate * o.final_lr_fraction,
    )
    decay_mask = lambda params: jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(o.clip_norm),
        optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay, mask=decay_mask),
    )


def batch_loss(model, task: Task, batch: dict, weights, config: TrainConfig, physics: PhysicsLoss | None = None):
    """Training loss of a batch ``{name: (B, window)}`` of normalised signals: chunked free-running rollouts,
    plus the weighted physics terms; ``(loss, per-output losses followed by the physics terms)``."""

    def one(signals):
        x, y = task.split(signals)
        return rollout(model, task, x, task.initial(y)), y

    prediction, target = jax.vmap(one)(batch)
    loss, per_output = feature_loss(prediction, target, weights, config.loss.kind, config.loss.smooth_l1_beta)
    if physics is None:
        return loss, per_output
    terms = physics(prediction, batch, predict=lambda windows: jax.vmap(one)(windows)[0])
    loss = loss + sum(physics.weights[name] * value for name, value in terms.items())
    return loss, jnp.concatenate([per_output, jnp.stack(list(terms.values()))])


CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
"""XLA:CPU options for the training step: no YNNPACK library fusions. YNNPACK's matmuls take their operands in
one layout, so XLA materialises a transposed copy of an activation for every weight-gradient matmul (1-2 ms
each in the reference Transformer's step); XLA's own dot emitter reads them as they are (docs/performance.md)."""


def compiler_options() -> dict[str, str] | None:
    """:data:`CPU_COMPILER_OPTIONS` on a CPU backend, else none; ``CELLAX_XLA_LIBRARY_FUSIONS=1`` keeps XLA's default."""
    if jax.default_backend() != "cpu" or os.environ.get("CELLAX_XLA_LIBRARY_FUSIONS") == "1":
        return None
    return dict(CPU_COMPILER_OPTIONS)


def make_step(task: Task, config: TrainConfig, tx: optax.GradientTransformation, physics: PhysicsLoss | None = None):
    """``step(model, opt_state, batch) -> (model, opt_state, loss, per_output, grad_norm)``, one jitted update;
    ``step.lower(model, opt_state, batch)`` lowers it for a batch of ``jax.ShapeDtypeStruct`` without running it
    (compiling the lowered step fills the same cache the calls use)."""
    weights = loss_weights(task.outputs, config.loss.weights)

    @functools.partial(jax.jit, static_argnums=1, compiler_options=compiler_options())
    def arrays_step(params, static, opt_state, batch):
        model = eqx.combine(params, jax.tree_util.tree_unflatten(*static))
        (loss, per_output), grads = jax.value_and_grad(
            lambda p: batch_loss(eqx.combine(p, model), task, batch, weights, config, physics), has_aux=True
        )(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return eqx.apply_updates(params, updates), opt_state, loss, per_output, optax.tree.norm(grads)

    def split(model):  # arrays, and the rest in a hashable form (a static argument)
        params, static = eqx.partition(model, eqx.is_array)
        leaves, treedef = jax.tree_util.tree_flatten(static)
        return params, (treedef, tuple(leaves)), static

    def step(model, opt_state, batch):
        params, key, static = split(model)
        params, *rest = arrays_step(params, key, opt_state, batch)
        return eqx.combine(params, static), *rest

    step.lower = lambda model, opt_state, batch: arrays_step.lower(*split(model)[:2], opt_state, batch)
    return step


def _dt_s(dataset) -> float:
    return float(dataset.config.get("profiles", {}).get("dt_s", 1.0))


def dataset_dt_s(path: Path) -> float:
    """The sample interval (s) of the dataset at ``path``."""
    with open_dataset(path) as ds:
        return _dt_s(ds)


def prepare(config: TrainConfig):
    """Check the data against the config; splits and train statistics (written to the run folder)."""
    names = [*config.input_signals, *config.output_signals]
    try:
        with open_dataset(config.data) as ds:
            missing = sorted(set(names) - set(ds.signal_names) - set(config.conditions))
            if missing:
                raise TrainError(f"data: {config.data} lacks signal(s) {missing} that task {config.task!r} needs")
            for name in config.conditions:
                column, _, value = name.partition("=")
                values = condition_values(ds, name)
                if values is None:
                    raise TrainError(f"conditions: {config.data} has no profile condition {name!r}")
                if value and not values.any():
                    raise TrainError(f"conditions: no profile of {config.data} has {name} "
                                     f"(it has {sorted(set(ds.profiles[column]))})")
            dt_s = _dt_s(ds)
    except OSError as err:
        raise TrainError(f"data: cannot open {config.data}: {err}") from None
    try:
        splits = split_profiles(config.data, config.split_fractions, config.split_seed)
    except StoreError:
        raise
    except ValueError as err:
        raise TrainError(f"split_fractions: {err}") from None
    if len(splits["train"]) == 0 or len(splits["val"]) == 0:
        raise TrainError(f"data: {config.data} has {len(splits['train'])} train and {len(splits['val'])} validation "
                         "profiles; need at least one of each (more profiles, or other split_fractions)")
    indicators = [name for name in config.conditions if "=" in name]  # one-hot 0/1: not normalised
    try:
        stats = compute_stats(config.data, splits["train"], [n for n in names if n not in indicators])
    except StoreError:
        raise
    except ValueError as err:
        raise TrainError(f"data: {config.data}: {err}") from None
    return splits, stats, dt_s


def training_physics(config: TrainConfig, splits: dict, stats, dt_s: float) -> PhysicsLoss | None:
    """The config's physics-informed loss terms on its training data, or None when it asks for none."""
    if config.physics is None or not config.physics.weights:
        return None
    try:
        return physics_loss(config, splits, stats, dt_s)
    except ValueError as err:
        raise TrainError(str(err)) from None


def train_loader(config: TrainConfig, task: Task, splits: dict, stats, **kwargs) -> WindowLoader:
    """Random training windows of ``config`` (``kwargs``: the loader's batch range and device)."""
    try:
        return WindowLoader(config.data, splits["train"], [*task.inputs, *task.outputs], config.window_len,
                            config.batch_size, seed=config.seed, stats=stats, **kwargs)
    except ValueError as err:
        raise TrainError(f"chunk_len x chunks_per_window = {config.window_len}: {err}") from None


def data_fingerprint(path: Path) -> str:
    with open_dataset(path) as ds:
        return ds.fingerprint


def changed_fields(run_dir: Path, config: TrainConfig) -> list[str]:
    """Fields (other than ``steps``) in which ``config`` differs from the run stored in ``run_dir``."""
    stored = TrainConfig.model_validate_json((run_dir / "config.json").read_text()).model_dump(exclude={"steps"})
    new = config.model_dump(exclude={"steps"})
    return sorted(k for k in new if stored.get(k) != new[k])


def available_memory_bytes() -> int:
    """Memory this process may still take: ``MemAvailable`` of ``/proc/meminfo`` (else the free physical pages),
    capped by a cgroup v2 limit (``memory.max - memory.current``) where one is set."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        free = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free


def memory_need(config: TrainConfig, task: Task, splits: dict, step_fn, model, opt_state, sharding) -> tuple[int, int]:
    """``(step_bytes, data_bytes)``: XLA's size of the compiled training step per device (arguments, outputs and
    temporaries: parameters, optimiser state, gradients and the activations of batch x window), and the data held
    in RAM (the loader's cached training signals, the validation profiles). Compiles the step (its calls reuse it)."""
    names = [*task.inputs, *task.outputs]
    batch = {name: jax.ShapeDtypeStruct((config.batch_size, config.window_len), jnp.float32, sharding=sharding)
             for name in names}
    stats = step_fn.lower(model, opt_state, batch).compile().memory_analysis()
    step_bytes = 0 if stats is None else (stats.argument_size_in_bytes + stats.output_size_in_bytes
                                          - stats.alias_size_in_bytes + stats.temp_size_in_bytes)
    signals = [name for name in names if name not in config.conditions]
    data_bytes = (loader_resident_bytes(config.data, splits["train"], signals, config.window_len)
                  + signal_bytes(config.data, splits["val"][: config.eval_profiles], names))
    return step_bytes, data_bytes


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e9:.2f} GB" if abs(n_bytes) >= 1e8 else f"{n_bytes / 1e6:.1f} MB"


def _check_memory(config: TrainConfig, step_bytes: int, data_bytes: int, memory_bytes: float | None, log) -> None:
    """State the job's memory and refuse one that cannot fit: on the CPU, step and data share RAM; on an
    accelerator the step must fit its free memory and the data the host's. ``memory_bytes`` overrides the RAM."""
    ram = available_memory_bytes() if memory_bytes is None else int(memory_bytes)
    device = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in device:
        pools = [("device memory", step_bytes, device["bytes_limit"] - device.get("bytes_in_use", 0)),
                 ("RAM", data_bytes, ram)]
    else:
        pools = [("RAM", step_bytes + data_bytes, ram)]
    with open_dataset(config.data) as ds:
        n_profiles = len(ds)
    log(f"job: {n_profiles} profiles, batch {config.batch_size} x window {config.window_len}; memory: "
        f"{_size(step_bytes)} for the training step + {_size(data_bytes)} of data; "
        + ", ".join(f"{_size(free)} {name} available" for name, _, free in pools))
    for name, need, free in pools:
        if need > free:
            raise TrainError(f"memory: the run needs about {_size(need)} of {name} (training step {_size(step_bytes)}, "
                             f"data {_size(data_bytes)}) but {_size(free)} are available; lower batch_size, chunk_len or "
                             "the model's width (or give --memory-gb if the estimate is wrong)")


def has_checkpoint(folder: Path) -> bool:
    """Whether an orbax manager folder holds a finished step (a folder named by its step number)."""
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


_RUN_FILES = ("config.json", "stats.json", "data.json", "metrics.jsonl", "checkpoints", "events")


def _clear_run(run_dir: Path) -> None:
    for name in _RUN_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def train(
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    time_budget_s: float | None = None,
    log=print,
    on_eval=None,
    memory_gb: float | None = None,
) -> Path:
    """Train ``config`` into ``config.run_dir`` (see the module docstring); returns the run folder.

    ``resume`` continues from ``checkpoints/latest``; ``stop_after`` ends the run after that many steps
    (with a checkpoint), as a crash would, for tests of resumption; ``time_budget_s`` ends it (validated
    and checkpointed) once that much wall time has passed since the first step. ``on_eval(step, report)``
    is called after each validation (after its checkpoint); an exception it raises (a prune signal) ends the run.
    Before any folder is written the job's memory is stated and checked (:func:`memory_need`); ``memory_gb``
    replaces the RAM found free.
    """
    if memory_gb is not None and not (math.isfinite(memory_gb) and memory_gb > 0):
        raise TrainError(f"--memory-gb must be a positive number of GB, got {memory_gb}")
    run_dir = config.run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainError(f"out: {run_dir} is a file, not a run folder")
    started_run = (run_dir / "config.json").exists()
    if started_run and not has_checkpoint(run_dir / "checkpoints" / "latest"):
        log(f"note: {run_dir} holds a run that stopped before its first checkpoint; starting it afresh")
        _clear_run(run_dir)
        started_run, resume = False, False
    if started_run and not resume:
        raise TrainError(f"{run_dir} holds a run; pass --resume to continue it or choose another name/out")
    if resume and not started_run:
        raise TrainError(f"--resume: {run_dir} holds no run to resume")
    if resume:
        changed = changed_fields(run_dir, config)
        if changed:
            raise TrainError(f"--resume: {run_dir} was started with a config that differs in {', '.join(changed)} "
                             "(only steps may change)")
        stored = json.loads((run_dir / "data.json").read_text()) if (run_dir / "data.json").exists() else None
        if stored and stored["fingerprint"] != data_fingerprint(config.data):
            raise TrainError(f"--resume: {config.data} is not the dataset {run_dir} was trained on (its profile "
                             "index differs); restore that file or start a new run")
    splits, stats, dt_s = prepare(config)
    if resume:
        stats = NormStats.from_json((run_dir / "stats.json").read_text())
    task = Task.from_config(config)
    physics = training_physics(config, splits, stats, dt_s)
    devices = jax.devices()
    if config.batch_size % len(devices):
        raise TrainError(f"batch_size {config.batch_size} must be a multiple of the {len(devices)} visible devices")
    mesh = Mesh(np.array(devices), ("data",))
    replicated, sharded = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))

    model = make_model(config.model, task.n_features, task.n_outputs, jax.random.key(config.seed))
    tx = optimizer(config)
    opt_state = tx.init(eqx.filter(model, eqx.is_array))
    model, opt_state = jax.device_put((model, opt_state), replicated)
    step_fn = make_step(task, config, tx, physics)
    try:
        need = memory_need(config, task, splits, step_fn, model, opt_state, sharded)
    except (MemoryError, jax.errors.JaxRuntimeError) as err:
        raise TrainError(f"memory: cannot even compile the training step with batch_size {config.batch_size} x "
                         f"window {config.window_len} ({str(err).splitlines()[0][:200]})") from None
    except ValueError as err:
        raise TrainError(f"model: {config.model.kind} cannot be built for this config: {err}") from None
    _check_memory(config, *need, None if memory_gb is None else memory_gb * 1e9, log)
    if physics is not None:
        log(f"physics terms {physics.weights}; rate scales {physics.scales}")
    start, best = 0, math.inf
    if resume:
        checkpoints = Checkpoints(run_dir / "checkpoints")
        restored = checkpoints.restore_latest(model, opt_state)
        model, opt_state, start, best = restored
        if start > config.steps:
            checkpoints.close()
            raise TrainError(f"--resume: {run_dir} is already at step {start}, past steps {config.steps}; "
                             f"give more steps than {start} (quickstart: --steps N) or start afresh")
        log(f"resuming {run_dir} at step {start}")
    else:
        fresh = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(config.model_dump_json(indent=2))
        (run_dir / "stats.json").write_text(stats.to_json())
        (run_dir / "data.json").write_text(json.dumps({"path": str(config.data),
                                                       "fingerprint": data_fingerprint(config.data)}, indent=2))
        checkpoints = Checkpoints(run_dir / "checkpoints")
    try:
        val_rows = splits["val"][: config.eval_profiles]
        val_profiles = list(iterate_profiles(config.data, val_rows, [*task.inputs, *task.outputs]))
        weights = loss_weights(task.outputs, config.loss.weights)
        last = config.steps if stop_after is None else min(config.steps, start + stop_after)
        loader = train_loader(config, task, splits, stats, start_batch=start, num_batches=last - start,
                              device=sharded)

        metrics = (run_dir / "metrics.jsonl").open("a")
        events = EventLog(run_dir / "events")
        if resume:
            metrics.write(json.dumps({"event": "resumed", "step": start}) + "\n")
        bar = tqdm(total=config.steps, initial=start, disable=not progress, unit="step", desc=f"training {config.name}")
        started = time.perf_counter()
        step = start
        pending = []  # per-step metrics still on the device: fetched every SYNC_EVERY steps, not every step

        def drain() -> list[dict]:
            records = []
            for k, loss, grad_norm, per_output, time_s in jax.device_get(pending):
                if not math.isfinite(loss := float(loss)):
                    raise TrainError(
                        f"loss became {loss} at step {k}; stopped. The last good checkpoint "
                        f"(step {checkpoints.latest_step()}) is kept in {run_dir / 'checkpoints'}; lower the "
                        "learning rate or check the data"
                    )
                record = {"step": k, "loss": loss, "grad_norm": float(grad_norm),
                          "per_output": dict(zip(task.outputs, map(float, per_output))), "time_s": time_s}
                if physics is not None:
                    record["physics"] = dict(zip(physics.weights, map(float, per_output[task.n_outputs:])))
                records.append(record)
            pending.clear()
            if records:
                bar.set_postfix(loss=f"{records[-1]['loss']:.4f}")
            return records

        try:
            for batch in loader:
                model, opt_state, loss, per_output, grad_norm = step_fn(model, opt_state, batch)
                step += 1
                bar.update()
                pending.append((step, loss, grad_norm, per_output, time.perf_counter() - started))
                out_of_time = time_budget_s is not None and time.perf_counter() - started > time_budget_s
                validate = step % config.eval_every == 0 or step == config.steps or out_of_time
                save = step % config.checkpoint_every == 0 or step == last or out_of_time
                if not (validate or save or len(pending) >= SYNC_EVERY):
                    continue
                records = drain()  # before any checkpoint: a non-finite loss stops the run without saving it
                if validate:
                    report, _ = evaluate_profiles(model, task, stats, val_profiles, config.loss.kind, weights,
                                                  config.loss.smooth_l1_beta)
                    records[-1]["val"] = report
                    if report["loss"] < best:
                        best = report["loss"]
                        checkpoints.save("best", step, model, opt_state, best)
                    bar.set_postfix(loss=f"{records[-1]['loss']:.4f}", val=f"{report['loss']:.4f}")
                metrics.writelines(json.dumps(record) + "\n" for record in records)
                metrics.flush()
                for record in records:
                    events.write(record["step"], record)
                if save:
                    checkpoints.save("latest", step, model, opt_state, best)
                if on_eval is not None and validate:
                    on_eval(step, records[-1]["val"])
                if out_of_time:
                    log(f"time budget of {time_budget_s:.0f} s reached at step {step}")
                    break
        finally:
            bar.close()
            metrics.close()
            events.close()
            loader.close()
            checkpoints.close()
        return run_dir
    except BaseException as err:
        if not resume and not has_checkpoint(run_dir / "checkpoints" / "latest"):  # nothing worth resuming
            if fresh:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                _clear_run(run_dir)
        if isinstance(err, MemoryError) or (isinstance(err, jax.errors.JaxRuntimeError)
                                            and "RESOURCE_EXHAUSTED" in str(err)):
            raise TrainError(f"out of memory with batch_size {config.batch_size} x window {config.window_len} and "
                             f"model {config.model}; lower batch_size, chunk_len or the model's width") from None
        raise
