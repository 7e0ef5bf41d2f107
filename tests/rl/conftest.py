"""Shared fixtures: one FastCharge environment on the coarse mesh (fast to compile and run)."""

import pytest

from cellax.physics import load_parameter_set
from cellax.rl import FastCharge

COARSE_MESH = (10, (6, 4, 6))


@pytest.fixture(scope="session")
def chen2020():
    return load_parameter_set("Chen2020")


@pytest.fixture(scope="session")
def env(chen2020):
    """FastCharge on Chen2020, 10 shells and 6/4/6 cells, float64."""
    return FastCharge(chen2020, mesh=COARSE_MESH)


@pytest.fixture(scope="session")
def params(env):
    """Default parameters with a fixed start: SOC 0.1 at 25 degC (ambient 25 degC)."""
    return env.default_params.replace(
        initial_soc_min=0.1, initial_soc_max=0.1, initial_temp_min_degc=25.0, initial_temp_max_degc=25.0
    )
