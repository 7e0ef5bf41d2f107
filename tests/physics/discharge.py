"""Shared comparison: a cellax cell model against PyBaMM over one profile."""

import jax
import jax.numpy as jnp
import numpy as np

from cellax.physics.simulate import simulate
from tests.physics.pybamm_reference import pybamm_run

DISCHARGE_SAMPLES = int(1.6 * 3600)  # one grid for 1C and 2C: one compile per model and parameter set
_compiled = {}


def simulate_like_pybamm(model, params, current_a, initial_soc, ambient_temp_k):
    key = (type(model).__name__, params.name, len(current_a), initial_soc)
    if key not in _compiled:
        _compiled[key] = jax.jit(lambda p, i, a: simulate(model, p, i, 1.0, initial_soc, a))
    return _compiled[key](params, jnp.asarray(current_a), ambient_temp_k)


def assert_discharge_matches_pybamm(model, model_name, set_name, params, c_rate):
    """1C/2C from 98 % SOC to the cut-off: voltage RMSE <= 1 mV, end time within 0.5 %, temperatures and anode potential close."""
    capacity = float(params.scalars["nominal_capacity_ah"])
    current_a = np.full(DISCHARGE_SAMPLES, c_rate * capacity)
    reference = pybamm_run(model_name, set_name, current_a, 1.0, initial_soc=0.98)
    ours = simulate_like_pybamm(model, params, current_a, 0.98, reference["ambient_temp_k"])
    assert int(ours.status) == 1, "the lower cut-off ends the discharge"
    end = int(ours.stop_index) + 1
    both = min(end, len(reference["voltage_v"]))
    voltage = np.asarray(ours.signals["voltage_v"][:both])
    assert np.sqrt(np.mean((voltage - reference["voltage_v"][:both]) ** 2)) <= 1e-3
    assert abs(end - len(reference["voltage_v"])) <= max(2, 0.005 * len(reference["voltage_v"]))
    assert abs(float(ours.event_time_s) - reference["end_time_s"]) <= 0.005 * reference["end_time_s"]
    core = np.asarray(ours.signals["core_temp_degc"][:both]) + 273.15
    np.testing.assert_allclose(core, reference["core_temp_k"][:both], atol=0.05)
    anode = np.asarray(ours.signals["anode_potential_v"][:both])
    np.testing.assert_allclose(anode, reference["anode_potential_v"][:both], atol=2e-3)
