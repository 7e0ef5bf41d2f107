"""Device set-up shared by the benchmarks: one XLA device per core on a CPU-only host, nothing on an accelerator."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")


def accelerator_expected() -> bool:
    """Whether JAX will pick a GPU/TPU: ``JAX_PLATFORMS`` says so, or an accelerator plugin is installed."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0] != "cpu"
    return any(importlib.util.find_spec(name) is not None for name in PLUGINS)


def use_host_cores() -> int:
    """On a CPU-only host, shard batches over one XLA CPU device per core; returns the core count.

    Call before JAX's first device use. On an accelerator host it sets nothing, so
    ``jax.devices()`` are the accelerators and the same sharding code runs there.
    """
    cores = os.cpu_count() or 1
    if not accelerator_expected():
        os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={cores}")
    return cores


@contextmanager
def cpu_only_children() -> Iterator[None]:
    """Processes started inside keep JAX on the CPU (``JAX_PLATFORMS=cpu`` in their environment).

    For PyBaMM's worker processes: ``import pybamm`` initialises JAX, and on an accelerator
    host each worker would otherwise open the device the parent holds and claim its memory.
    """
    previous = os.environ.get("JAX_PLATFORMS")
    os.environ["JAX_PLATFORMS"] = "cpu"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["JAX_PLATFORMS"]
        else:
            os.environ["JAX_PLATFORMS"] = previous
