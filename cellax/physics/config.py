"""Configs of the physics layer: the thermal defaults PyBaMM's sets lack, and ``cellax fit``.

Also the list of PyBaMM's bundled parameter sets, read from package metadata
without importing PyBaMM (which would switch on ``jax_enable_x64``).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from cellax.config import Strict
from cellax.signals import FIT_SIGNALS

CELL_MODELS = ("SPM", "SPMe", "DFN")
"""The cell models a config can name (:func:`cellax.physics.cell_model` builds them)."""


def bundled_parameter_sets() -> list[str]:
    """Names of every parameter set PyBaMM has installed (read without importing PyBaMM)."""
    return sorted(ep.name for ep in entry_points(group="pybamm_parameter_sets"))


def _known_parameter_set(name: str) -> str:
    known = bundled_parameter_sets()
    if known and name not in known:
        raise ValueError(f"unknown PyBaMM parameter set {name!r}; installed: {', '.join(known)}")
    return name


ParameterSetName = Annotated[str, AfterValidator(_known_parameter_set)]
"""A config field naming a parameter set PyBaMM has installed."""


class ThermalConfig(Strict):
    """The two parameters of PyBaMM's lumped surface-temperature model that no bundled set defines.

    Defaults describe a 21700 cell in still air: the steel can (about 10 g at
    0.5 J/g/K) gives ``casing_heat_capacity_j_k = 5``; natural convection
    (h ≈ 10 W/m²/K over the 5.3e-3 m² can surface) gives
    ``environment_thermal_resistance_k_w = 1 / (10 * 5.3e-3) ≈ 19``.
    """

    environment_thermal_resistance_k_w: float = Field(19.0, gt=0)
    casing_heat_capacity_j_k: float = Field(5.0, gt=0)


class FitParameter(Strict):
    """A scalar of the ``ParameterSet`` to identify: finite bounds, a start value strictly inside, a transform
    (``"log"`` for quantities spanning decades, which needs ``lower > 0``)."""

    name: str
    lower: float = Field(allow_inf_nan=False)
    upper: float = Field(allow_inf_nan=False)
    initial: float = Field(allow_inf_nan=False)
    transform: Literal["log", "linear"] = "log"

    @model_validator(mode="after")
    def _inside(self) -> "FitParameter":
        if not self.lower < self.upper:
            raise ValueError(f"{self.name}: bounds must be finite with lower < upper, got [{self.lower}, {self.upper}]")
        if self.transform == "log" and self.lower <= 0:
            raise ValueError(f"{self.name}: a log transform needs a positive lower bound, got {self.lower}")
        if not self.lower < self.initial < self.upper:
            raise ValueError(f"{self.name}: initial value {self.initial} must lie strictly inside [{self.lower}, {self.upper}]")
        return self


class FitConfig(Strict):
    """``cellax fit``: identify cell-model parameters from profiles of a cellax dataset."""

    data: Path
    profiles: list[int] = Field(default_factory=lambda: [0], min_length=1)
    model: Literal[CELL_MODELS] = "SPMe"
    signals: list[FIT_SIGNALS] = Field(
        default_factory=lambda: ["voltage_v", "surface_temp_degc"], min_length=1
    )
    sigma_v: float = Field(2e-3, gt=0)
    sigma_temp_k: float = Field(0.1, gt=0)
    max_steps: int = Field(100, gt=0)
    parameters: dict[str, FitParameter] = Field(min_length=1, description="ParameterSet scalar name -> its bounds")
    out: Path = Path("runs/fit")

    @field_validator("parameters", mode="before")
    @classmethod
    def _named(cls, parameters):
        if isinstance(parameters, dict):
            return {k: {"name": k, **v} if isinstance(v, dict) else v for k, v in parameters.items()}
        return parameters
