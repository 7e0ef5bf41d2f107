"""The equivalent-circuit baseline: its OCV is the parameter set's, fitting recovers known constants, its
Kalman filter finds the SOC."""

import jax.numpy as jnp
import numpy as np
import pytest

from cellax.physics import ecm


@pytest.fixture(scope="module")
def table():
    return ecm.ocv_table("Chen2020", n=101)


def test_the_ocv_table_spans_the_cells_voltage_window(table):
    assert 2.4 < table["ocv_v"][0] < 3.0 and 4.1 < table["ocv_v"][-1] < 4.3
    assert np.all(np.diff(table["ocv_v"]) > 0)


def test_fitting_recovers_the_constants_of_data_the_ecm_generated(table):
    rng = np.random.default_rng(0)
    n_profiles, length = 4, 600
    current = np.repeat(rng.uniform(-5, 10, size=(n_profiles, length // 30)), 30, axis=1)
    truth = {**ecm.INITIAL, "r0_ohm": 0.03, "r1_ohm": 0.015, "tau1_s": 30.0, "g_sa_w_k": 0.08}
    true_model = ecm.ECM(table, truth)
    h = rng.uniform(5, 30, n_profiles)
    profiles = [{"current_a": current[i], "ambient_temp_degc": np.full(length, 25.0),
                 "soc": np.full(length, 0.8), "surface_temp_degc": np.full(length, 25.0),
                 "core_temp_degc": np.full(length, 25.0), "voltage_v": np.zeros(length), "ocv_v": np.zeros(length)}
                for i in range(n_profiles)]
    batch = ecm.stack(profiles, h)
    outputs = np.asarray(ecm.predict(true_model, batch))
    for i, p in enumerate(profiles):
        for j, name in enumerate(ecm.OUTPUTS):
            p[name] = outputs[i, :, j]
    batch = ecm.stack(profiles, h)
    scales = jnp.asarray([0.05, 0.5, 0.5, 0.1, 0.05], jnp.float32)
    start = ecm.ECM(table)
    before = float(ecm.loss(start, batch, scales))
    fitted, history = ecm.fit(start, batch, scales, steps=40)
    assert history[-1] < 0.02 * before
    assert fitted.constants["r0_ohm"] == pytest.approx(0.03, rel=0.1)
    volts = np.asarray(ecm.predict(fitted, batch))[..., 0] - outputs[..., 0]
    assert np.sqrt(np.mean(volts**2)) < 2e-3  # V
    # the Kalman filter on the true model finds the SOC (0.8) from a wrong guess (0.5) through the voltage
    soc = np.asarray(ecm.estimate_batch(true_model, batch))[..., 0]
    assert np.max(np.abs(soc[:, length // 2:] - outputs[:, length // 2:, 3])) < 0.01
