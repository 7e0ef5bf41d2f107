"""Training budgets in wall seconds: the schedule's length from the measured step time.

A run given ``seconds`` of training should end its warm-up + cosine schedule when the time runs out: a schedule
that is too long stops at a high learning rate, one too short idles at its floor. The step count is

.. math::

    N = \\max\\left(1, \\left\\lfloor f \\, \\frac{T}{t_\\text{step}} \\right\\rfloor\\right)

with ``T`` the budget, ``t_step`` the median time of the compiled training step on this config's batches, and a
fill fraction ``f`` (default 0.85) that leaves room for the validations inside the budget. The reference runs of
``benchmarks/models.py`` and the trials of ``cellax hpo`` with ``budget.steps: fit`` both size their runs here.
"""

from __future__ import annotations

import statistics
import time

import equinox as eqx
import jax

from cellax.models import make_model
from cellax.train.config import TrainConfig
from cellax.train.loop import make_step, optimizer, prepare, train_loader, training_physics
from cellax.train.task import Task

FILL = 0.85
MEASURE_SHARE = 0.05


def measure_step_s(config: TrainConfig, n_batches: int = 8, passes: int = 2, budget_s: float | None = None) -> float:
    """Wall time (s) per compiled training step of ``config`` on its own training batches, as the loop runs it.

    The step is compiled (its first call discarded), then ``passes`` times all ``n_batches`` steps are dispatched
    back to back and waited for once, as the training loop does (it syncs every few steps, not every step); the
    figure is the median pass time over ``n_batches``. Timing each step with a wait after it would add the
    dispatch latency to every step and size schedules that end early.

    With ``budget_s``, a step so slow that the passes would take more than ``MEASURE_SHARE`` of the budget is timed
    once (its wait is small beside it) and that time returned: measuring must not cost more than the run."""
    if n_batches < 1 or passes < 1:
        raise ValueError(f"n_batches and passes must be at least 1, got {n_batches} and {passes}")
    splits, stats, dt_s = prepare(config)
    task = Task.from_config(config)
    physics = training_physics(config, splits, stats, dt_s)
    model = make_model(config.model, task.n_features, task.n_outputs, jax.random.key(config.seed))
    tx = optimizer(config)
    state = (model, tx.init(eqx.filter(model, eqx.is_array)))
    step = make_step(task, config, tx, physics)
    with train_loader(config, task, splits, stats, num_batches=n_batches + 1) as loader:
        batches = list(loader)
    state = step(*state, batches[0])[:2]  # compiles
    jax.block_until_ready(state)
    started = time.perf_counter()
    state = jax.block_until_ready(step(*state, batches[1])[:2])
    once_s = time.perf_counter() - started
    if budget_s is not None and once_s * n_batches * passes > MEASURE_SHARE * budget_s:
        return once_s
    times = []
    for _ in range(passes):
        started = time.perf_counter()
        for batch in batches[1:]:
            state = step(*state, batch)[:2]
        jax.block_until_ready(state)
        times.append((time.perf_counter() - started) / n_batches)
    return statistics.median(times)


def steps_for_seconds(step_s: float, seconds: float, fill: float = FILL) -> int:
    """Schedule length that fills ``fill`` of ``seconds`` at ``step_s`` per step (at least one step)."""
    if not (step_s > 0 and seconds > 0 and 0 < fill <= 1):
        raise ValueError(f"need step_s > 0, seconds > 0 and 0 < fill <= 1; got {step_s}, {seconds}, {fill}")
    return max(1, int(fill * seconds / step_s))
