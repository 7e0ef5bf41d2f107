"""The PyBaMM backend records physically consistent canonical signals, and stops cleanly at limits."""

import numpy as np
import pytest

from cellax.data.config import SimulationConfig
from cellax.data.datasheet import LG_M50
from cellax.data.pybamm_backend import MODEL_OPTIONS, PybammBackend
from cellax.data.store import SIGNALS
from cellax.signals import KELVIN


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


def _fine_reference(backend, current_a, ambient_temp_degc, heat_transfer_coeff, initial_soc):
    """The same cell solved with IDAKLU's step capped at 0.05 s and tight tolerances: nothing to step over."""
    pybamm = backend.pybamm
    time_s = np.arange(len(current_a), dtype=float)
    params = backend.params.copy()
    params.update({
        "Current function [A]": pybamm.Interpolant(time_s, current_a, pybamm.t, interpolator="linear"),
        "Ambient temperature [K]": ambient_temp_degc + KELVIN,
        "Initial temperature [K]": ambient_temp_degc + KELVIN,
        "Total heat transfer coefficient [W.m-2.K-1]": heat_transfer_coeff,
    })
    solver = pybamm.IDAKLUSolver(rtol=1e-8, atol=1e-10, options={"dt_max": 0.05})
    sim = pybamm.Simulation(backend.model_class(MODEL_OPTIONS), parameter_values=params, solver=solver)
    solution = sim.solve(t_eval=[0.0, time_s[-1]], t_interp=time_s, initial_soc=initial_soc)
    x_neg = solution["Average negative particle stoichiometry"].entries
    return {"voltage_v": solution["Voltage [V]"].entries,
            "soc": (x_neg - backend.x_0) / (backend.x_100 - backend.x_0),
            "discharge_ah": solution["Discharge capacity [A.h]"].entries}


@pytest.mark.parametrize("model", ["SPMe", "DFN"])
def test_a_short_pulse_inside_a_rest_reaches_the_cell(backend, model):
    """Regression: with the current as an interpolant and a free step size, IDAKLU grew its steps
    over the rest and stepped over the pulse: no charge passed, the voltage never relaxed (31 mV off)."""
    if model != "SPMe":
        backend = PybammBackend(SimulationConfig(model=model), LG_M50)
    current_a = np.zeros(245)
    current_a[120:125] = 10.0  # 5 s at 2C between two 2-minute rests
    s = backend.simulate(current_a, 1.0, 25.0, 10.0, initial_soc=0.5).signals
    ref = _fine_reference(backend, current_a, 25.0, 10.0, 0.5)
    profile_ah = np.concatenate([[0], np.cumsum((current_a[1:] + current_a[:-1]) / 2)]) / 3600
    np.testing.assert_allclose(ref["discharge_ah"], profile_ah, atol=1e-8)  # the reference passes the pulse
    # the simulated cell loses exactly the pulse's charge: 50 A s = 2.7e-3 of its SOC window
    np.testing.assert_allclose(s["soc"], ref["soc"], atol=1e-6)
    assert s["soc"][0] - s["soc"][-1] == pytest.approx(ref["soc"][0] - ref["soc"][-1], rel=1e-3)
    # and its voltage follows the reference, also while relaxing after the pulse
    np.testing.assert_allclose(s["voltage_v"], ref["voltage_v"], atol=1e-4)
    assert s["voltage_v"][130] < s["voltage_v"][119] - 0.01
