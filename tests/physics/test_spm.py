"""The JAX SPM is PyBaMM's SPM: same vector field, same discharge curves, for five parameter sets."""

import jax.numpy as jnp
import numpy as np
import pytest

from cellax.physics.spm import SPM, SPMState
from tests.physics.discharge import assert_discharge_matches_pybamm
from tests.physics.pybamm_reference import BuiltModel


def test_vector_field_equals_pybamm_at_an_arbitrary_state(cell):
    name, params = cell
    capacity = float(params.scalars["nominal_capacity_ah"])
    reference = BuiltModel("SPM", name, capacity)
    where = reference.slices
    neg = where["X-averaged negative particle concentration [mol.m-3]"]
    pos = where["X-averaged positive particle concentration [mol.m-3]"]
    core, surface = where["Volume-averaged cell temperature [K]"], where["Surface temperature [K]"]
    state = reference.initial.copy()
    rng = np.random.default_rng(1)
    state[neg] *= 1 + 0.05 * np.sort(rng.uniform(size=20))
    state[pos] *= 1 - 0.03 * np.sort(rng.uniform(size=20))
    state[core], state[surface] = 303.0, 300.5
    expected = reference.rates(state)
    ours = SPMState(jnp.asarray(state[neg]), jnp.asarray(state[pos]), jnp.asarray(state[core][0]), jnp.asarray(state[surface][0]))
    got = SPM(20).vector_field(params, ours, capacity, float(reference.values["Ambient temperature [K]"]))
    for sl, value in ((neg, got.c_neg), (pos, got.c_pos), (core, got.core_temp_k), (surface, got.surface_temp_k)):
        np.testing.assert_allclose(np.atleast_1d(value), expected[sl], rtol=1e-5, atol=1e-9 * np.abs(expected[sl]).max())


@pytest.mark.parametrize("c_rate", [1.0, 2.0])
def test_constant_current_discharge_matches_pybamm(cell, c_rate):
    assert_discharge_matches_pybamm(SPM(20), "SPM", *cell, c_rate)
