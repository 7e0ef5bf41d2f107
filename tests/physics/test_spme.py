"""The JAX SPMe is PyBaMM's SPMe: same vector field, discharges and 1 h dynamic profiles, five parameter sets."""

import jax.numpy as jnp
import numpy as np
import pytest

from cellax.data.datasheet import LG_M50
from cellax.data.profiles import ProfileConfig, make_profile, profile_rng
from cellax.physics import load_parameter_set
from cellax.physics.spme import SPMe, SPMeState
from tests.physics.discharge import assert_discharge_matches_pybamm, simulate_like_pybamm
from tests.physics.pybamm_reference import BuiltModel, pybamm_run

ELECTROLYTE = [f"{region} porosity times concentration [mol.m-3]" for region in ("Negative electrode", "Separator", "Positive electrode")]


def test_vector_field_equals_pybamm_at_an_arbitrary_state(cell):
    name, params = cell
    capacity = float(params.scalars["nominal_capacity_ah"])
    reference = BuiltModel("SPMe", name, 2 * capacity)
    where = reference.slices
    neg = where["X-averaged negative particle concentration [mol.m-3]"]
    pos = where["X-averaged positive particle concentration [mol.m-3]"]
    core, surface = where["Volume-averaged cell temperature [K]"], where["Surface temperature [K]"]
    porosity = np.concatenate([np.full(20, float(params.scalars[f"{k}_porosity"])) for k in ("neg", "sep", "pos")])
    state = reference.initial.copy()
    rng = np.random.default_rng(2)
    state[neg] *= 1 + 0.05 * np.sort(rng.uniform(size=20))
    state[pos] *= 1 - 0.03 * np.sort(rng.uniform(size=20))
    c_e = np.concatenate([state[where[k]] for k in ELECTROLYTE]) / porosity
    c_e *= 1 + 0.3 * np.linspace(1, -1, 60) + 0.02 * rng.uniform(size=60)  # a polarised electrolyte
    for k, part in zip(ELECTROLYTE, np.split(c_e * porosity, 3)):
        state[where[k]] = part
    state[core], state[surface] = 305.0, 301.0
    expected = reference.rates(state)
    ours = SPMeState(jnp.asarray(state[neg]), jnp.asarray(state[pos]), jnp.asarray(c_e),
                     jnp.asarray(state[core][0]), jnp.asarray(state[surface][0]))
    got = SPMe().vector_field(params, ours, 2 * capacity, float(reference.values["Ambient temperature [K]"]))
    expected_c_e = np.concatenate([expected[where[k]] for k in ELECTROLYTE]) / porosity
    for value, target in ((got.c_neg, expected[neg]), (got.c_pos, expected[pos]), (got.c_e, expected_c_e),
                          (got.core_temp_k, expected[core]), (got.surface_temp_k, expected[surface])):
        np.testing.assert_allclose(np.atleast_1d(value), target, rtol=1e-4, atol=1e-10 * np.abs(target).max())


@pytest.mark.parametrize("c_rate", [1.0, 2.0])
def test_constant_current_discharge_matches_pybamm(cell, c_rate):
    assert_discharge_matches_pybamm(SPMe(), "SPMe", *cell, c_rate)


def test_one_hour_dynamic_profile_matches_pybamm(cell):
    name, params = cell
    # the generator's LG M50 dynamic profile, scaled to this cell's capacity (same C-rates)
    config = ProfileConfig(kinds={"dynamic": 1.0}, duration_s=3600.0)
    current_a = make_profile("dynamic", profile_rng(7, 0), LG_M50, config, 0.5)
    current_a = current_a * float(params.scalars["nominal_capacity_ah"]) / LG_M50.capacity_ah
    reference = pybamm_run("SPMe", name, current_a, 1.0, initial_soc=0.5)
    ours = simulate_like_pybamm(SPMe(), params, current_a, 0.5, reference["ambient_temp_k"])
    assert int(ours.status) == 0 and reference["termination"] == "final time"
    voltage = np.asarray(ours.signals["voltage_v"])
    assert np.sqrt(np.mean((voltage - reference["voltage_v"]) ** 2)) <= 2e-3
    for ours_name, ref_name in (("core_temp_degc", "core_temp_k"), ("surface_temp_degc", "surface_temp_k")):
        np.testing.assert_allclose(np.asarray(ours.signals[ours_name]) + 273.15, reference[ref_name], atol=0.1)


@pytest.mark.parametrize("soc, temp_k", [(0.05, 283.15), (0.5, 298.15), (0.97, 318.15)])
def test_rest_outputs_equal_outputs_at_zero_current(soc, temp_k):
    params = load_parameter_set("Chen2020")
    model = SPMe(10, (6, 4, 6))
    state = model.initial_state(params, soc, temp_k)
    full, rest = model.outputs(params, state, 0.0, 298.15), model.rest_outputs(params, state, 298.15)
    assert set(full) == set(rest)
    for name in full:
        np.testing.assert_allclose(rest[name], full[name], rtol=0, atol=1e-12, err_msg=name)
