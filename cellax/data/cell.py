"""The cell a dataset simulated, as a :class:`~cellax.physics.ParameterSet`: its parameter set, thermal
settings and overrides, with the datasheet's voltage cut-offs (what both data backends simulate)."""

from __future__ import annotations

from cellax.data.config import DataConfig, SimulationConfig
from cellax.data.datasheet import Datasheet


def cell_parameters(simulation: SimulationConfig, datasheet: Datasheet):
    """Float64 parameters of ``simulation``'s set with ``datasheet``'s cut-offs (imports PyBaMM)."""
    from cellax.physics import load_parameter_set

    overrides = {
        **simulation.parameter_overrides,
        "Lower voltage cut-off [V]": datasheet.voltage_min_v,
        "Upper voltage cut-off [V]": datasheet.voltage_max_v,
    }
    return load_parameter_set(simulation.parameter_set, overrides=overrides, thermal=simulation.thermal)


def dataset_parameters(data_config: dict):
    """The cell of a dataset from its stored config (``Dataset.config``)."""
    config = DataConfig.model_validate(data_config)
    return cell_parameters(config.simulation, config.cell)
