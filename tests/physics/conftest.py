"""Shared fixtures for the physics tests."""

import pytest

from cellax.physics import load_parameter_set
from tests.physics.pybamm_reference import SETS


@pytest.fixture(scope="module", params=SETS)
def cell(request):
    """(name, ParameterSet) for each of the five validated PyBaMM parameter sets."""
    return request.param, load_parameter_set(request.param)
