"""Configs of the physics layer: the thermal defaults PyBaMM's sets lack, and ``cellax fit``.

Also the list of PyBaMM's bundled parameter sets, read from package metadata
without importing PyBaMM (which would switch on ``jax_enable_x64``).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from cellax.config import Strict
from cellax.signals import FIT_SIGNALS


def bundled_parameter_sets() -> list[str]:
    """Names of every parameter set PyBaMM has installed (read without importing PyBaMM)."""
    return sorted(ep.name for ep in entry_points(group="pybamm_parameter_sets"))


class ThermalConfig(Strict):
    """The two parameters of PyBaMM's lumped surface-temperature model that no bundled set defines.

    Defaults describe a 21700 cell in still air: the steel can (about 10 g at
    0.5 J/g/K) gives ``casing_heat_capacity_j_k = 5``; natural convection
    (h ≈ 10 W/m²/K over the 5.3e-3 m² can surface) gives
    ``environment_thermal_resistance_k_w = 1 / (10 * 5.3e-3) ≈ 19``.
    """

    environment_thermal_resistance_k_w: float = Field(19.0, gt=0)
    casing_heat_capacity_j_k: float = Field(5.0, gt=0)


class FitParameterConfig(Strict):
    """Bounds, start value and transform of one identified parameter (a ``ParameterSet`` scalar)."""

    lower: float
    upper: float
    initial: float
    transform: Literal["log", "linear"] = "log"

    @model_validator(mode="after")
    def _inside(self) -> "FitParameterConfig":
        if not self.lower < self.initial < self.upper:
            raise ValueError(f"initial {self.initial} must lie strictly inside [lower {self.lower}, upper {self.upper}]")
        if self.transform == "log" and self.lower <= 0:
            raise ValueError("a log transform needs a positive lower bound")
        return self


class FitConfig(Strict):
    """``cellax fit``: identify cell-model parameters from profiles of a cellax dataset."""

    data: Path
    profiles: list[int] = Field(default_factory=lambda: [0], min_length=1)
    model: Literal["SPM", "SPMe"] = "SPMe"
    signals: list[FIT_SIGNALS] = Field(
        default_factory=lambda: ["voltage_v", "surface_temp_degc"], min_length=1
    )
    sigma_v: float = Field(2e-3, gt=0)
    sigma_temp_k: float = Field(0.1, gt=0)
    max_steps: int = Field(100, gt=0)
    parameters: dict[str, FitParameterConfig] = Field(min_length=1)
    out: Path = Path("runs/fit")
