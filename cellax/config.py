"""Typed, validated configs loaded from YAML.

Every config is a frozen pydantic model with ``extra="forbid"``: a misspelt key is
an error, not a silently ignored setting. :func:`load_config` turns validation
failures into a :class:`ConfigError` whose message names each bad field.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cellax.data.datasheet import Datasheet, datasheet_for
from cellax.data.profiles import ProfileConfig


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Range(_Strict):
    """A closed interval ``[low, high]`` to sample uniformly from; ``low == high`` is a constant."""

    low: float
    high: float

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value):
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError(f"expected [low, high], got {list(value)}")
            return {"low": value[0], "high": value[1]}
        if isinstance(value, (int, float)):
            return {"low": value, "high": value}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if self.low > self.high:
            raise ValueError(f"range reversed: low {self.low} > high {self.high}")
        return self


def pybamm_parameter_sets() -> list[str]:
    """Names of the parameter sets PyBaMM has installed (read without importing PyBaMM)."""
    return sorted(ep.name for ep in entry_points(group="pybamm_parameter_sets"))


class ThermalConfig(_Strict):
    """The two parameters of PyBaMM's lumped surface-temperature model that no bundled set defines.

    Defaults describe a 21700 cell in still air: the steel can (about 10 g at
    0.5 J/g/K) gives ``casing_heat_capacity_j_k = 5``; natural convection
    (h ≈ 10 W/m²/K over the 5.3e-3 m² can surface) gives
    ``environment_thermal_resistance_k_w = 1 / (10 * 5.3e-3) ≈ 19``.
    """

    environment_thermal_resistance_k_w: float = Field(19.0, gt=0)
    casing_heat_capacity_j_k: float = Field(5.0, gt=0)


class SimulationConfig(_Strict):
    """How a profile is simulated: PyBaMM model, parameter set, thermal and solver settings."""

    parameter_set: str = "Chen2020"
    model: Literal["SPM", "SPMe", "DFN"] = "SPMe"
    thermal: ThermalConfig = ThermalConfig()
    parameter_overrides: dict[str, float] = Field(default_factory=dict)
    rtol: float = Field(1e-6, gt=0)
    atol: float = Field(1e-8, gt=0)

    @field_validator("parameter_set")
    @classmethod
    def _known_set(cls, name: str) -> str:
        known = pybamm_parameter_sets()
        if known and name not in known:
            raise ValueError(f"unknown PyBaMM parameter set {name!r}; installed: {', '.join(known)}")
        return name


class ConditionsConfig(_Strict):
    """Per-profile operating conditions, each drawn uniformly from its range.

    ``heat_transfer_coeff`` is PyBaMM's "Total heat transfer coefficient
    [W.m-2.K-1]", which in the lumped two-node model couples core and surface.
    """

    ambient_temp_degc: Range = Range(low=10.0, high=35.0)
    heat_transfer_coeff: Range = Range(low=5.0, high=30.0)
    initial_soc: Range = Range(low=0.2, high=0.9)

    @model_validator(mode="after")
    def _physical(self) -> "ConditionsConfig":
        if self.heat_transfer_coeff.low <= 0:
            raise ValueError("heat_transfer_coeff must be positive")
        if self.initial_soc.low < 0 or self.initial_soc.high > 1:
            raise ValueError("initial_soc must lie in [0, 1]")
        return self


class DataConfig(_Strict):
    """A synthetic-data job: which cell, which profiles, which conditions, how many."""

    name: str
    seed: int = Field(ge=0)
    n_profiles: int = Field(gt=0)
    backend: Literal["pybamm", "jax"] = "pybamm"
    simulation: SimulationConfig = SimulationConfig()
    datasheet: Datasheet | None = None
    profiles: ProfileConfig = ProfileConfig()
    conditions: ConditionsConfig = ConditionsConfig()

    @property
    def cell(self) -> Datasheet:
        """The datasheet in force: the inline one, else the parameter set's default."""
        return self.datasheet or datasheet_for(self.simulation.parameter_set)

    @model_validator(mode="after")
    def _consistent(self) -> "DataConfig":
        try:
            cell = self.cell
        except ValueError as err:
            raise ValueError(f"datasheet: {err}") from None
        low, high = self.profiles.soc_window
        if low < cell.soc_min or high > cell.soc_max:
            raise ValueError(
                f"profiles.soc_window [{low}, {high}] leaves the datasheet's SOC window [{cell.soc_min}, {cell.soc_max}]"
            )
        soc = self.conditions.initial_soc
        if soc.low < low or soc.high > high:
            raise ValueError(f"conditions.initial_soc [{soc.low}, {soc.high}] leaves profiles.soc_window [{low}, {high}]")
        ambient = self.conditions.ambient_temp_degc
        if ambient.low < cell.temp_min_degc or ambient.high > cell.temp_max_degc:
            raise ValueError(
                f"conditions.ambient_temp_degc [{ambient.low}, {ambient.high}] leaves the datasheet's "
                f"temperature limits [{cell.temp_min_degc}, {cell.temp_max_degc}]"
            )
        return self


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for item in err.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def validate_config(cls: type[BaseModel], data: dict, source: str = "") -> BaseModel:
    """``cls.model_validate(data)`` with a :class:`ConfigError` naming each bad field."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


def load_config(path: str | Path, cls: type[BaseModel] = DataConfig) -> BaseModel:
    """Read YAML at ``path`` into ``cls``; :class:`ConfigError` on any problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of fields, got {type(data).__name__}")
    return validate_config(cls, data, str(path))


class FitParameterConfig(_Strict):
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


class FitConfig(_Strict):
    """``cellax fit``: identify cell-model parameters from profiles of a cellax dataset."""

    data: Path
    profiles: list[int] = Field(default_factory=lambda: [0], min_length=1)
    model: Literal["SPM", "SPMe"] = "SPMe"
    signals: list[Literal["voltage_v", "surface_temp_degc", "core_temp_degc"]] = Field(
        default_factory=lambda: ["voltage_v", "surface_temp_degc"], min_length=1
    )
    sigma_v: float = Field(2e-3, gt=0)
    sigma_temp_k: float = Field(0.1, gt=0)
    max_steps: int = Field(100, gt=0)
    parameters: dict[str, FitParameterConfig] = Field(min_length=1)
    out: Path = Path("runs/fit")
