"""The JAX SPM is PyBaMM's SPM: same vector field, same discharge curves, for five parameter sets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cellax.physics import load_parameter_set, pybamm_parameter_values
from cellax.physics.simulate import simulate
from cellax.physics.spm import SPM, SPMState
from tests.physics.pybamm_reference import OPTIONS, VAR_PTS, pybamm, pybamm_run

SETS = ["Chen2020", "Marquis2019", "Prada2013", "Ecker2015", "OKane2022"]


@pytest.fixture(scope="module", params=SETS)
def cell(request):
    return request.param, load_parameter_set(request.param)


def test_vector_field_equals_pybamm_at_an_arbitrary_state(cell):
    name, params = cell
    values = pybamm_parameter_values(name)
    capacity = float(values["Nominal cell capacity [A.h]"])
    values["Current function [A]"] = capacity
    sim = pybamm.Simulation(pybamm.lithium_ion.SPM(OPTIONS), parameter_values=values, var_pts=VAR_PTS)
    sim.build(initial_soc=0.5)
    built = sim.built_model
    y0 = np.asarray(built.concatenated_initial_conditions.evaluate(0, None, inputs={})).ravel()
    scale, shift, where = np.ones_like(y0), np.zeros_like(y0), {}
    for var, (sl,) in built.y_slices.items():
        scale[sl] = np.squeeze(var.scale.evaluate()) if hasattr(var.scale, "evaluate") else var.scale
        shift[sl] = np.squeeze(var.reference.evaluate()) if hasattr(var.reference, "evaluate") else var.reference
        where[var.name] = sl
    physical = y0 * scale + shift
    rng = np.random.default_rng(1)
    neg = where["X-averaged negative particle concentration [mol.m-3]"]
    pos = where["X-averaged positive particle concentration [mol.m-3]"]
    core, surface = where["Volume-averaged cell temperature [K]"], where["Surface temperature [K]"]
    physical[neg] *= 1 + 0.05 * np.sort(rng.uniform(size=20))
    physical[pos] *= 1 - 0.03 * np.sort(rng.uniform(size=20))
    physical[core], physical[surface] = 303.0, 300.5
    expected = np.asarray(built.concatenated_rhs.evaluate(0.0, ((physical - shift) / scale)[:, None], inputs={})).ravel() * scale
    state = SPMState(*(jnp.asarray(physical[sl]) for sl in (neg, pos)), jnp.asarray(physical[core][0]), jnp.asarray(physical[surface][0]))
    got = SPM(20).vector_field(params, state, capacity, float(values["Ambient temperature [K]"]))
    for sl, value in ((neg, got.c_neg), (pos, got.c_pos), (core, got.core_temp_k), (surface, got.surface_temp_k)):
        np.testing.assert_allclose(np.atleast_1d(value), expected[sl], rtol=1e-5, atol=1e-9 * np.abs(expected[sl]).max())


@pytest.mark.parametrize("c_rate", [1.0, 2.0])
def test_constant_current_discharge_matches_pybamm(cell, c_rate):
    name, params = cell
    capacity = float(params.scalars["nominal_capacity_ah"])
    n = int(1.6 * 3600)  # one grid for both C-rates: one compile per parameter set
    current_a = np.full(n, c_rate * capacity)
    reference = pybamm_run("SPM", name, current_a, 1.0, initial_soc=0.98)
    ours = _simulate(params, jnp.asarray(current_a), reference["ambient_temp_k"])
    assert int(ours.status) == 1, "the lower cut-off ends the discharge"
    end = int(ours.stop_index) + 1
    both = min(end, len(reference["voltage_v"]))
    voltage = np.asarray(ours.signals["voltage_v"][:both])
    rmse_v = np.sqrt(np.mean((voltage - reference["voltage_v"][:both]) ** 2))
    assert rmse_v <= 1e-3
    assert abs(end - len(reference["voltage_v"])) <= max(2, 0.005 * len(reference["voltage_v"]))
    core = np.asarray(ours.signals["core_temp_degc"][:both]) + 273.15
    np.testing.assert_allclose(core, reference["core_temp_k"][:both], atol=0.01)
    anode = np.asarray(ours.signals["anode_potential_v"][:both])
    np.testing.assert_allclose(anode, reference["anode_potential_v"][:both], atol=2e-3)


_compiled = {}


def _simulate(params, current_a, ambient_temp_k):
    key = params.name
    if key not in _compiled:
        _compiled[key] = jax.jit(lambda p, i, a: simulate(SPM(20), p, i, 1.0, 0.98, a))
    return _compiled[key](params, current_a, ambient_temp_k)
