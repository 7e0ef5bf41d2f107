"""PyBaMM run with exactly the parameters, options and mesh of a cellax cell model, for comparisons."""

import os

import numpy as np

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

import pybamm  # noqa: E402

from cellax.physics import pybamm_parameter_values  # noqa: E402
from cellax.physics.parameters import PYBAMM_MODEL_OPTIONS as OPTIONS  # noqa: E402
from cellax.physics.spme import SPMe  # noqa: E402

VAR_PTS = SPMe().pybamm_var_pts  # the default mesh of both models
SETS = ["Chen2020", "Marquis2019", "Prada2013", "Ecker2015", "OKane2022"]


def pybamm_run(model_name: str, set_name: str, current_a: np.ndarray, dt_s: float, initial_soc: float,
               var_pts: dict | None = None, keep_solution: bool = False) -> dict:
    """Signals of PyBaMM's ``model_name`` over a sampled current (linear interpolant), IDAKLU at tight tolerances,
    on ``var_pts`` (default: the SPMe's default mesh); ``keep_solution`` adds PyBaMM's ``solution``."""
    values = pybamm_parameter_values(set_name)
    time_s = np.arange(len(current_a)) * dt_s
    if np.all(current_a == current_a[0]):
        values["Current function [A]"] = float(current_a[0])
    else:
        values["Current function [A]"] = pybamm.Interpolant(time_s, current_a, pybamm.t, interpolator="linear")
    model = getattr(pybamm.lithium_ion, model_name)(OPTIONS)
    sim = pybamm.Simulation(model, parameter_values=values, var_pts=var_pts or VAR_PTS,
                            solver=pybamm.IDAKLUSolver(rtol=1e-9, atol=1e-10))
    solution = sim.solve(t_eval=[0.0, time_s[-1]], t_interp=time_s, initial_soc=initial_soc)
    out = {
        "time_s": solution["Time [s]"].entries,
        "voltage_v": solution["Voltage [V]"].entries,
        "core_temp_k": solution["Volume-averaged cell temperature [K]"].entries,
        "surface_temp_k": solution["Surface temperature [K]"].entries,
        "anode_potential_v": solution["Negative electrode surface potential difference at separator interface [V]"].entries,
    }
    out["ambient_temp_k"] = float(values["Ambient temperature [K]"])
    out["termination"] = str(solution.termination)
    out["end_time_s"] = float(solution.t[-1])
    if keep_solution:
        out["solution"] = solution
    return out


class BuiltModel:
    """PyBaMM's discretised ``model_name`` at ``current_a``: its vector field in physical units, by variable name."""

    def __init__(self, model_name: str, set_name: str, current_a: float):
        self.values = pybamm_parameter_values(set_name)
        self.values["Current function [A]"] = current_a
        sim = pybamm.Simulation(getattr(pybamm.lithium_ion, model_name)(OPTIONS), parameter_values=self.values,
                                var_pts=VAR_PTS)
        sim.build(initial_soc=0.5)
        self.model = sim.built_model
        y0 = np.asarray(self.model.concatenated_initial_conditions.evaluate(0, None, inputs={})).ravel()
        self.scale, self.shift, self.slices = np.ones_like(y0), np.zeros_like(y0), {}
        for var, (sl,) in self.model.y_slices.items():
            self.scale[sl] = _number(var.scale)
            self.shift[sl] = _number(var.reference)
            self.slices[var.name] = sl
        self.initial = y0 * self.scale + self.shift

    def rates(self, state: np.ndarray) -> np.ndarray:
        """d(state)/dt for a state vector in physical units."""
        y = (state - self.shift) / self.scale
        return np.asarray(self.model.concatenated_rhs.evaluate(0.0, y[:, None], inputs={})).ravel() * self.scale


def _number(value):
    return float(np.squeeze(value.evaluate())) if hasattr(value, "evaluate") else float(value)
