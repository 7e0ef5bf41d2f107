"""Configs of the data layer: a synthetic-data job (cell, profiles, conditions, simulator)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cellax.config import Seed, Strict
from cellax.data.datasheet import Datasheet, datasheet_for
from cellax.data.profiles import ProfileConfig
from cellax.physics.config import CELL_MODELS, ParameterSetName, ThermalConfig


class Range(Strict):
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


class SimulationConfig(Strict):
    """How a profile is simulated: PyBaMM model, parameter set, thermal and solver settings."""

    parameter_set: ParameterSetName = "Chen2020"
    model: Literal[CELL_MODELS] = "SPMe"
    thermal: ThermalConfig = ThermalConfig()
    parameter_overrides: dict[str, float] = Field(default_factory=dict)
    rtol: float = Field(1e-6, gt=0)
    atol: float = Field(1e-8, gt=0)
    max_samples_per_step: int | None = Field(None, ge=1)
    """``jax`` backend only: steps chosen from the current, each ending at its next kink or after at most this
    many samples (:func:`cellax.physics.simulate.simulate`); ``None`` (default): a step per sample. With 8, a
    batch of 64 one-hour dynamic profiles simulates ~1.5x faster at 0.33 mV RMSE against PyBaMM, but compiles
    ~3.5 s longer, and the simulation is a small part of ``cellax generate``'s time: end to end 1.08x on 256
    profiles, 0.62x on 32 (docs/physics.md)."""



class ConditionsConfig(Strict):
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


MAX_PROFILES = 1_000_000


class DataConfig(Strict):
    """A synthetic-data job: which cell, which profiles, which conditions, how many."""

    name: str
    seed: Seed
    n_profiles: int = Field(gt=0, le=MAX_PROFILES)
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
        if self.simulation.max_samples_per_step is not None and self.backend != "jax":
            raise ValueError(f"simulation.max_samples_per_step applies to the jax backend only, not {self.backend!r} "
                             "(PyBaMM chooses its own steps)")
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
