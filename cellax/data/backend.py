"""The interface every simulation backend implements, and what backends share.

A backend is built once per worker from the job's :class:`SimulationConfig` and
:class:`Datasheet` and simulates profiles of one cell: ``simulate`` one profile,
``simulate_batch`` many (the JAX backend solves them in one vmapped call). Neither
raises for a failing solve: the reason is the result's ``status``
(:mod:`cellax.status`'s vocabulary). Both cut a run at the datasheet's temperature
window with :func:`enforce_temperature_limits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from cellax.data.config import DataConfig, SimulationConfig
from cellax.data.datasheet import Datasheet
from cellax.status import stopped


@dataclass
class SimulationResult:
    """Signals on the sample grid up to where the run stopped, and ``"ok"`` or the reason it stopped."""

    signals: dict[str, np.ndarray]
    status: str


def enforce_temperature_limits(signals: dict[str, np.ndarray], status: str, datasheet: Datasheet):
    """Cut the signals after the first sample whose surface temperature leaves the datasheet's window
    (every backend applies the same rule)."""
    hot = np.flatnonzero(
        (signals["surface_temp_degc"] > datasheet.temp_max_degc) | (signals["surface_temp_degc"] < datasheet.temp_min_degc)
    )
    if not hot.size:
        return signals, status
    first = int(hot[0])
    status = stopped(
        "temperature_limit",
        f"surface {signals['surface_temp_degc'][first]:.1f} degC outside [{datasheet.temp_min_degc}, {datasheet.temp_max_degc}]",
        signals["time_s"][first],
    )
    return {k: v[: first + 1] for k, v in signals.items()}, status


class Backend(Protocol):
    """A simulator of one cell (see the module docstring)."""

    version: int
    """Revision of the simulation recipe; datasets record it as ``backend_version``."""

    def __init__(self, config: SimulationConfig, datasheet: Datasheet): ...

    def simulate(self, current_a, dt_s, ambient_temp_degc, heat_transfer_coeff, initial_soc) -> SimulationResult: ...

    def simulate_batch(self, currents, dt_s, ambient_temp_degc, heat_transfer_coeff, initial_soc) -> list[SimulationResult]: ...


def backend_class(name: str) -> type[Backend]:
    """The class of backend ``name`` ("pybamm" or "jax"), imported on demand."""
    if name == "jax":
        from cellax.data.jax_backend import JaxBackend

        return JaxBackend
    from cellax.data.pybamm_backend import PybammBackend

    return PybammBackend


def make_backend(config: DataConfig) -> Backend:
    """The backend ``config.backend`` names; ``ValueError`` naming the problem if the cell cannot be simulated."""
    return backend_class(config.backend)(config.simulation, config.cell)
