"""The one place cellax imports PyBaMM: lazily, because ``import pybamm`` switches on ``jax_enable_x64``
for the whole process."""

from __future__ import annotations

import os


def import_pybamm():
    """``import pybamm`` with its telemetry prompt off."""
    os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
    import pybamm

    return pybamm


def pybamm_version() -> str:
    """The installed PyBaMM's version (without importing it)."""
    from importlib.metadata import version

    return version("pybamm")
