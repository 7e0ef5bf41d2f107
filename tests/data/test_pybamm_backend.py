"""The PyBaMM backend records physically consistent canonical signals, and stops cleanly at limits."""

import numpy as np
import pytest

from cellax.data.config import SimulationConfig
from cellax.data.datasheet import LG_M50
from cellax.data.pybamm_backend import PybammBackend
from cellax.data.store import SIGNALS


@pytest.fixture(scope="module")
def backend():
    return PybammBackend(SimulationConfig(), LG_M50)


def test_signals_are_canonical_and_consistent(backend):
    current_a = np.r_[np.full(600, 5.0), np.zeros(300), np.full(900, -2.5)]
    result = backend.simulate(current_a, 1.0, ambient_temp_degc=20.0, heat_transfer_coeff=10.0, initial_soc=0.6)
    s = result.signals
    assert result.status == "ok"
    assert set(s) == set(SIGNALS)
    assert all(len(v) == len(current_a) and np.all(np.isfinite(v)) for v in s.values())
    np.testing.assert_array_equal(s["time_s"], np.arange(len(current_a)))
    np.testing.assert_allclose(s["current_a"], current_a, atol=1e-9)
    # true SOC starts where asked and follows coulomb counting (trapezoid of the linear interpolant)
    assert s["soc"][0] == pytest.approx(0.6, abs=1e-3)
    charge_ah = np.concatenate([[0], np.cumsum((current_a[1:] + current_a[:-1]) / 2)]) / 3600
    capacity_ah = charge_ah[600] / (s["soc"][0] - s["soc"][600])
    assert capacity_ah == pytest.approx(LG_M50.capacity_ah, rel=0.05)  # Chen2020: 5.15 Ah between 2.5 and 4.2 V
    np.testing.assert_allclose(s["soc"], s["soc"][0] - charge_ah / capacity_ah, atol=2e-4)
    # heat flows core -> surface -> ambient under load; the ambient is the sampled one
    assert np.all(s["ambient_temp_degc"] == 20.0)
    assert s["core_temp_degc"][0] == pytest.approx(20.0) and s["surface_temp_degc"][0] == pytest.approx(20.0)
    assert np.all(s["core_temp_degc"][10:600] > s["surface_temp_degc"][10:600])
    assert np.all(s["surface_temp_degc"][10:600] > 20.0)
    # discharge drops the terminal voltage below OCV, charge lifts it above
    assert np.all(s["voltage_v"][5:600] < s["ocv_v"][5:600])
    assert np.all(s["voltage_v"][905:] > s["ocv_v"][905:])
    # charging lowers the anode potential vs Li/Li+ (towards plating), resting restores it
    assert s["anode_potential_v"][1700] < s["anode_potential_v"][890]
    assert 0 < s["anode_potential_v"].min() < 0.3


def test_leaving_the_voltage_window_is_a_status_with_the_data_up_to_there(backend):
    result = backend.simulate(np.full(3600, 7.0), 1.0, 25.0, 10.0, initial_soc=0.3)
    assert result.status.startswith("voltage_limit: Minimum voltage")
    n = len(result.signals["time_s"])
    assert 0 < n < 3600
    assert result.signals["voltage_v"][-1] >= LG_M50.voltage_min_v - 1e-3
    assert np.all(np.diff(result.signals["time_s"]) == 1.0)


def test_a_failing_solve_is_a_status_not_an_exception(backend, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("IDA_CONV_FAIL: planted")

    monkeypatch.setattr(backend.pybamm.Simulation, "solve", explode)
    result = backend.simulate(np.ones(60), 1.0, 25.0, 10.0, 0.5)
    assert result.status == "solver_failed: IDA_CONV_FAIL: planted" and result.signals == {}


def test_parameter_sets_missing_thermal_parameters_are_refused_clearly():
    with pytest.raises(ValueError, match="Prada2013 lacks .* simulation.parameter_overrides"):
        PybammBackend(SimulationConfig(parameter_set="Prada2013"), LG_M50)


def test_dfn_is_available_for_higher_fidelity(backend):
    dfn = PybammBackend(SimulationConfig(model="DFN"), LG_M50)
    current_a = np.full(300, 5.0)
    spme = backend.simulate(current_a, 1.0, 25.0, 10.0, 0.5).signals["voltage_v"]
    result = dfn.simulate(current_a, 1.0, 25.0, 10.0, 0.5)
    assert result.status == "ok"
    assert np.abs(result.signals["voltage_v"] - spme).max() < 0.02
