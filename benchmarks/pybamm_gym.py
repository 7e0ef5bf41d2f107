"""FastCharge as a gymnasium environment on PyBaMM: the anchor that ``benchmarks/rl_env.py`` measures against.

The way published RL charging work wraps PyBaMM: the SPMe with
``{"thermal": "lumped", "surface temperature": "lumped"}`` (Chen2020, from
:func:`cellax.physics.pybamm_parameter_values`) is built and discretised once,
the current is an input parameter (``"Current function [A]" =
pybamm.InputParameter("Current")``), and every ``step`` advances IDAKLU by one
control interval from the last solution (``solver.step(..., inputs=..., save=False)``).
The initial concentrations and temperature are input parameters too, so a reset
needs no rebuild. The voltage cut-offs are widened (the environment penalises,
the solver must not stop at 4.2 V).

Observation, action, reward and termination are those of
:class:`cellax.rl.FastCharge` (same ``EnvParams``), so the two environments are
interchangeable for an agent; a solver failure or an event (a concentration
limit) ends the episode as invalid.

Run ``python benchmarks/pybamm_gym.py`` for a 1C CC-CV episode and its steps/s.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from cellax.physics import pybamm_parameter_values  # noqa: E402
from cellax.physics.parameters import PYBAMM_MODEL_OPTIONS  # noqa: E402
from cellax.rl.fast_charge import (  # noqa: E402
    ANODE_SCALE_V,
    KELVIN,
    OBS_SIZE,
    PLATING_EXCESS_V,
    TEMP_EXCESS_K,
    TEMP_SCALE_K,
    VOLTAGE_EXCESS_V,
    VOLTAGE_SCALE_V,
    EnvParams,
)

VARIABLES = {
    "voltage_v": "Voltage [V]",
    "surface_temp_k": "Surface temperature [K]",
    "core_temp_k": "Volume-averaged cell temperature [K]",
    "anode_potential_v": "Negative electrode surface potential difference at separator interface [V]",
    "x_neg": "Average negative particle stoichiometry",
}


class PybammFastCharge(gym.Env):
    """FastCharge-v0 on PyBaMM's SPMe (or ``model="DFN"``, any ``pybamm.lithium_ion`` model) + IDAKLU, one
    control interval per ``step``; ``overrides`` and ``thermal`` as for :func:`cellax.physics.load_parameter_set`."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        params: EnvParams | None = None,
        parameter_set: str = "Chen2020",
        var_pts: dict[str, int] | None = None,
        rtol: float = 1e-6,
        atol: float = 1e-8,
        model: str = "SPMe",
        overrides: dict | None = None,
        thermal: dict | None = None,
    ):
        import pybamm

        self.pybamm = pybamm
        self.params = params if params is not None else EnvParams()
        values = pybamm_parameter_values(parameter_set, overrides, thermal)
        self.capacity_ah = float(values["Nominal cell capacity [A.h]"])
        self.c_n_max = float(values["Maximum concentration in negative electrode [mol.m-3]"])
        self.c_p_max = float(values["Maximum concentration in positive electrode [mol.m-3]"])
        self.x_0, self.x_100, self.y_100, self.y_0 = (
            float(v) for v in pybamm.lithium_ion.get_min_max_stoichiometries(values)
        )
        values.update(
            {
                "Current function [A]": pybamm.InputParameter("Current"),
                "Initial concentration in negative electrode [mol.m-3]": pybamm.InputParameter("c_n0"),
                "Initial concentration in positive electrode [mol.m-3]": pybamm.InputParameter("c_p0"),
                "Initial temperature [K]": pybamm.InputParameter("T0"),
                "Ambient temperature [K]": self.params.ambient_temp_degc + KELVIN,
                "Lower voltage cut-off [V]": 1.0,
                "Upper voltage cut-off [V]": 6.0,
            }
        )
        model = getattr(pybamm.lithium_ion, model)(PYBAMM_MODEL_OPTIONS)
        self.solver = pybamm.IDAKLUSolver(rtol=rtol, atol=atol, output_variables=list(VARIABLES.values()))
        sim = pybamm.Simulation(model, parameter_values=values, solver=self.solver, var_pts=var_pts)
        sim.build()
        self.model = sim.built_model
        p = self.params
        self.action_space = gym.spaces.Box(0.0, p.max_c_rate, (1,), np.float32)
        low = np.array([-np.inf] * 5 + [0.0, 0.0], np.float32)
        high = np.array([np.inf] * 5 + [1.0, 1.0], np.float32)
        self.observation_space = gym.spaces.Box(low, high, (OBS_SIZE,), np.float32)
        self._solution = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        p = self.params
        soc = self.np_random.uniform(p.initial_soc_min, p.initial_soc_max)
        temp_k = KELVIN + self.np_random.uniform(p.initial_temp_min_degc, p.initial_temp_max_degc)
        x = self.x_0 + soc * (self.x_100 - self.x_0)
        y = self.y_0 - soc * (self.y_0 - self.y_100)
        self._inputs = {"c_n0": x * self.c_n_max, "c_p0": y * self.c_p_max, "T0": temp_k}
        self._solution = None
        self._time, self._charge_time_s, self._current_a = 0, 0.0, 0.0
        self._counts = {"voltage": 0, "temperature": 0, "plating": 0}
        # the signals at rest: a zero-current step of 1 ms from the initial conditions
        self._signals = self._advance(0.0, 1e-3)
        if self._signals is None:
            raise RuntimeError("PyBaMM could not start from the initial conditions")
        return self._obs(), {}

    def step(self, action):
        p = self.params
        action = float(np.reshape(np.asarray(action, dtype=np.float64), ()))
        c_rate = float(np.clip(action, 0.0, p.max_c_rate)) if np.isfinite(action) else 0.0
        current_a = -c_rate * self.capacity_ah
        previous = self._signals
        signals = self._advance(current_a, p.control_interval_s)
        invalid = signals is None
        self._time += 1
        self._charge_time_s += p.control_interval_s
        reward = -p.time_penalty
        flags = {"voltage": False, "temperature": False, "plating": False}
        if invalid:
            reward -= p.invalid_penalty
            self._current_a = 0.0
        else:
            excess = {
                "voltage": (signals["voltage_v"] - p.voltage_max_v) / VOLTAGE_EXCESS_V,
                "temperature": (signals["surface_temp_degc"] - p.surface_temp_max_degc) / TEMP_EXCESS_K,
                "plating": (p.anode_potential_min_v - signals["anode_potential_v"]) / PLATING_EXCESS_V,
            }
            weights = {"voltage": p.voltage_penalty, "temperature": p.temperature_penalty, "plating": p.plating_penalty}
            for name, value in excess.items():
                flags[name] = value > 0
                self._counts[name] += int(flags[name])
                reward -= weights[name] * (float(flags[name]) + max(value, 0.0))
            reward += p.soc_reward * (min(signals["soc"], p.target_soc) - min(previous["soc"], p.target_soc))
            self._signals, self._current_a = signals, current_a
        terminated = invalid or self._signals["soc"] >= p.target_soc
        truncated = self._time >= p.max_steps_in_episode
        info = {
            "charge_time_s": self._charge_time_s,
            **self._signals,
            "c_rate": c_rate,
            "invalid": invalid,
            **{f"{k}_violation": v for k, v in flags.items()},
            **{f"n_{k}_violations": v for k, v in self._counts.items()},
        }
        return self._obs(), float(reward), bool(terminated), bool(truncated), info

    def _advance(self, current_a: float, dt_s: float) -> dict | None:
        """Step IDAKLU from the last solution; the signals at the end, or None when the step failed."""
        try:
            solution = self.solver.step(
                self._solution, self.model, dt_s, inputs={**self._inputs, "Current": current_a}, save=False
            )
        except self.pybamm.SolverError:
            return None
        if str(solution.termination).startswith("event"):
            return None
        raw = {name: float(solution[var].entries[-1]) for name, var in VARIABLES.items()}
        if not all(np.isfinite(v) for v in raw.values()):
            return None
        self._solution = solution
        return {
            "soc": (raw["x_neg"] - self.x_0) / (self.x_100 - self.x_0),
            "voltage_v": raw["voltage_v"],
            "surface_temp_degc": raw["surface_temp_k"] - KELVIN,
            "core_temp_degc": raw["core_temp_k"] - KELVIN,
            "anode_potential_v": raw["anode_potential_v"],
            "current_a": current_a,
        }

    def _obs(self) -> np.ndarray:
        p, s = self.params, self._signals
        return np.array(
            [
                s["soc"],
                (s["voltage_v"] - p.voltage_max_v) / VOLTAGE_SCALE_V,
                (s["surface_temp_degc"] - p.surface_temp_max_degc) / TEMP_SCALE_K,
                (s["core_temp_degc"] - p.surface_temp_max_degc) / TEMP_SCALE_K,
                (s["anode_potential_v"] - p.anode_potential_min_v) / ANODE_SCALE_V,
                -self._current_a / (self.capacity_ah * p.max_c_rate),
                self._time / p.max_steps_in_episode,
            ],
            np.float32,
        )


if __name__ == "__main__":
    import time

    from cellax.rl.protocols import cccv

    params = EnvParams(initial_soc_min=0.1, initial_soc_max=0.1, initial_temp_min_degc=25.0, initial_temp_max_degc=25.0)
    env = PybammFastCharge(params)
    policy = cccv(1.0)
    obs, _ = env.reset(seed=0)
    started, steps, done = time.perf_counter(), 0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(np.asarray(policy(obs, params)))
        steps, done = steps + 1, terminated or truncated
    elapsed = time.perf_counter() - started
    print(f"1C CC-CV: SOC {info['soc']:.3f} after {info['charge_time_s']:.0f} s, max-voltage violations "
          f"{info['n_voltage_violations']}; {steps / elapsed:.0f} steps/s")
