"""Parameter identification: cellax.physics.fit against PyBOP on the same synthetic problem, in one run.

The problem (PyBOP's own showcase): four SPMe parameters — both particle
diffusivities and both active-material volume fractions — from a 1C discharge
of Chen2020 (SPMe + two-node thermal, PyBaMM IDAKLU as the truth) with 2 mV
Gaussian voltage noise. Bounds: diffusivities ×[0.2, 5], fractions ×[0.8, 1.2];
start: diffusivities ×2 and ×0.5, fractions ×1.05 and ×0.95.

* cellax: Levenberg–Marquardt through the JAX SPMe (forward-mode Jacobians),
  log transforms for the diffusivities, on the data decimated to a 10 s grid
  (the ROS2 solver's error there is 0.3 mV RMSE against PyBaMM, well under the
  noise); time with and without the one-off compilation.
* PyBOP: ``benchmarks/pybop_fit.py`` in its own environment (PyBOP pins
  ``numpy<2.4``), CMA-ES and L-BFGS-B, called as a subprocess on the same data.

Writes ``benchmarks/results/fit_vs_pybop.json``. Run:
``python benchmarks/fit_vs_pybop.py [--pybop-python /work/pybop-venv/bin/python]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PYBAMM_NAMES = {
    "neg_diffusivity_scale": "Negative particle diffusivity [m2.s-1]",
    "pos_diffusivity_scale": "Positive particle diffusivity [m2.s-1]",
    "neg_active_frac": "Negative electrode active material volume fraction",
    "pos_active_frac": "Positive electrode active material volume fraction",
}
BOUNDS = {"neg_diffusivity_scale": (0.2, 5.0), "pos_diffusivity_scale": (0.2, 5.0),
          "neg_active_frac": (0.8, 1.2), "pos_active_frac": (0.8, 1.2)}  # relative to the truth
START = {"neg_diffusivity_scale": 2.0, "pos_diffusivity_scale": 0.5, "neg_active_frac": 1.05, "pos_active_frac": 0.95}
SIGMA_V = 2e-3
INITIAL_SOC = 0.98


def make_problem(path: Path, seed: int) -> dict:
    """The truth from PyBaMM, noisy voltage, and everything both fitters need (npz, no pickle)."""
    import pybamm

    from cellax.physics.config import ThermalConfig
    from cellax.physics import pybamm_parameter_values
    from cellax.physics.parameters import PYBAMM_MODEL_OPTIONS
    from cellax.physics.spme import SPMe

    values = pybamm_parameter_values("Chen2020")
    values["Current function [A]"] = 5.0
    sim = pybamm.Simulation(pybamm.lithium_ion.SPMe(PYBAMM_MODEL_OPTIONS), parameter_values=values,
                            var_pts=SPMe().pybamm_var_pts, solver=pybamm.IDAKLUSolver(rtol=1e-9, atol=1e-10))
    t = np.arange(0, 4000.0)
    solution = sim.solve(t_eval=[0, t[-1]], t_interp=t, initial_soc=INITIAL_SOC)
    time_s = solution["Time [s]"].entries
    on_grid = np.isclose(time_s, np.round(time_s))
    time_s, voltage = time_s[on_grid], solution["Voltage [V]"].entries[on_grid]
    rng = np.random.default_rng(seed)
    names = list(PYBAMM_NAMES)
    true = np.array([float(values[PYBAMM_NAMES[k]]) for k in names])
    thermal = ThermalConfig()
    problem = dict(
        time_s=time_s, current_a=np.full(len(time_s), 5.0), voltage_v=voltage + rng.normal(0, SIGMA_V, len(time_s)),
        voltage_true_v=voltage, initial_soc=INITIAL_SOC, ambient_temp_k=float(values["Ambient temperature [K]"]),
        parameter_set="Chen2020",
        overrides_json=json.dumps({
            "Environment thermal resistance [K.W-1]": thermal.environment_thermal_resistance_k_w,
            "Casing heat capacity [J.K-1]": thermal.casing_heat_capacity_j_k,
        }),
        fit_names=np.array([PYBAMM_NAMES[k] for k in names]), true_values=true,
        lower=true * np.array([BOUNDS[k][0] for k in names]), upper=true * np.array([BOUNDS[k][1] for k in names]),
        initial_guess=true * np.array([START[k] for k in names]), sigma_v=SIGMA_V,
    )
    np.savez(path, **problem)
    return problem


def cellax_fit(problem: dict, decimate: int) -> dict:
    from cellax.physics import load_parameter_set
    from cellax.physics.fit import FitParameter, Measurement, fit
    from cellax.physics.spme import SPMe

    params = load_parameter_set("Chen2020")
    truth = {k: float(params.scalars[k]) for k in PYBAMM_NAMES}  # scales are 1; fractions Chen2020's
    parameters = [
        FitParameter(k, truth[k] * BOUNDS[k][0], truth[k] * BOUNDS[k][1], truth[k] * START[k],
                     "log" if "diffusivity" in k else "linear")
        for k in PYBAMM_NAMES
    ]
    voltage, time_s = problem["voltage_v"], problem["time_s"]
    v_min = float(params.scalars["voltage_min_v"])  # the data end at the cut-off: extrapolate the crossing
    end_time_s = time_s[-1] + (voltage[-1] - v_min) / max(voltage[-2] - voltage[-1], 1e-9) * (time_s[-1] - time_s[-2])
    data = Measurement(problem["current_a"][::decimate], float(decimate), INITIAL_SOC, float(problem["ambient_temp_k"]),
                       {"voltage_v": voltage[::decimate]}, end_time_s=float(end_time_s))
    started = time.perf_counter()
    result = fit(SPMe(), params, parameters, [data], sigma_v=SIGMA_V)
    wall = time.perf_counter() - started
    errors = {k: 100 * (result.values[k] / truth[k] - 1) for k in PYBAMM_NAMES}
    return {
        "values": result.values, "std": result.std, "relative_error_pct": errors,
        "max_abs_error_pct": max(abs(e) for e in errors.values()), "rmse_mv": 1e3 * result.rmse["voltage_v"],
        "steps": result.steps, "converged": result.converged, "wall_s_total": wall,
        "compile_s": result.compile_seconds, "solve_s_excluding_compile": result.seconds - result.compile_seconds,
        "grid_s": decimate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pybop-python", default="/work/pybop-venv/bin/python")
    parser.add_argument("--decimate", type=int, default=10, help="cellax fits every n-th sample (n s grid)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "fit_vs_pybop")
    parser.add_argument("--out", type=Path, default=RESULTS / "fit_vs_pybop.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    problem_path = args.work / "problem.npz"
    problem = make_problem(problem_path, args.seed)
    result = {"benchmark": "fit_vs_pybop", "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
              "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "problem": {"parameters": PYBAMM_NAMES, "bounds_relative": BOUNDS, "start_relative": START,
                          "sigma_v": SIGMA_V, "samples": int(len(problem["time_s"])), "initial_soc": INITIAL_SOC}}
    result["cellax"] = cellax_fit(problem, args.decimate)
    print(json.dumps(result["cellax"], indent=2), flush=True)
    if Path(args.pybop_python).exists():
        pybop_out = args.work / "pybop.json"
        run = subprocess.run([args.pybop_python, str(ROOT / "benchmarks" / "pybop_fit.py"), "--problem", str(problem_path),
                              "--out", str(pybop_out), "--method", "both"], capture_output=True, text=True)
        if run.returncode != 0:
            result["pybop"] = {"error": run.stderr[-2000:]}
        else:
            result["pybop"] = json.loads(pybop_out.read_text())
            cmaes = result["pybop"]["methods"].get("cmaes", {})
            if "wall_s" in cmaes:
                result["ratios"] = {
                    "pybop_cmaes_time_over_cellax_total": cmaes["wall_s"] / result["cellax"]["wall_s_total"],
                    "pybop_cmaes_time_over_cellax_excluding_compile":
                        cmaes["wall_s"] / result["cellax"]["solve_s_excluding_compile"],
                }
    else:
        result["pybop"] = {"error": f"no PyBOP environment at {args.pybop_python}; see benchmarks/pybop_fit.py"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("pybop", "ratios") if k in result}, indent=2))


if __name__ == "__main__":
    main()
