"""Differentiable cell physics in JAX: PyBaMM parameter sets, SPM/SPMe/DFN with lumped thermal.

Float64 throughout (see :mod:`cellax.physics.parameters`). Importing this package
does not import PyBaMM; loading a parameter set does.
"""

from cellax.physics.config import CELL_MODELS
from cellax.physics.parameters import (
    ParameterSet,
    initial_stoichiometries,
    soc_capacity_ah,
    load_parameter_set,
    pybamm_parameter_values,
    supported_parameter_sets,
)

__all__ = [
    "ParameterSet",
    "initial_stoichiometries",
    "soc_capacity_ah",
    "load_parameter_set",
    "pybamm_parameter_values",
    "supported_parameter_sets",
    "CELL_MODELS",
    "cell_model",
]


def cell_model(name: str):
    """The cell model called ``name`` (one of :data:`CELL_MODELS`) on its default mesh."""
    from cellax.physics.dfn import DFN
    from cellax.physics.spm import SPM
    from cellax.physics.spme import SPMe

    models = {"SPM": SPM, "SPMe": SPMe, "DFN": DFN}
    if name not in models:
        raise ValueError(f"model: {name!r} is not a cell model; choose one of {list(models)}")
    return models[name]()
