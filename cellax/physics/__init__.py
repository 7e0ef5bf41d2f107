"""Differentiable cell physics in JAX: PyBaMM parameter sets, SPM/SPMe with lumped thermal.

Float64 throughout (see :mod:`cellax.physics.parameters`). Importing this package
does not import PyBaMM; loading a parameter set does.
"""

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
]
