"""The one timing helper of the benchmarks: median wall time of a JAX call over repeats."""

from __future__ import annotations

import statistics
import time


def timed(fn, repeats: int, warmup: bool = False) -> tuple[float, list[float]]:
    """``(median, all)`` seconds of ``fn()`` (results blocked on) over ``repeats`` calls, after one untimed
    call when ``warmup`` (compile and first-touch out of the figure)."""
    import jax

    if warmup:
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def interleaved(fns: dict, repeats: int) -> dict[str, tuple[float, list[float]]]:
    """``{name: (median, all)}`` seconds of each ``fns[name]()`` (results blocked on), timed in ``repeats``
    rounds that call every function once in turn: an A/B comparison that a loaded machine's drifts hit alike."""
    import jax

    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - started)
    return {name: (statistics.median(t), t) for name, t in times.items()}
