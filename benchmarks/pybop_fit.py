"""PyBOP reference fit of a PyBaMM SPMe cell: time-to-fit and accuracy, written as JSON.

Runs in its own environment, because PyBOP 26.3 pins ``numpy<2.4``::

    python3 -m venv .venv-pybop
    .venv-pybop/bin/pip install "pybop==26.3" "pybamm==26.10.1.1" "numpy>=1.26,<2.4"

Called by ``benchmarks/fit_vs_pybop.py`` as a subprocess::

    .venv-pybop/bin/python benchmarks/pybop_fit.py --problem PROBLEM.npz --out RESULT.json \\
        [--method cmaes|lbfgsb|both] [--max-iterations N] [--sigma0 S] [--seed K]

or, to write a self-contained test problem with PyBaMM alone::

    .venv-pybop/bin/python benchmarks/pybop_fit.py --make-problem PROBLEM.npz

The problem npz holds ``time_s``, ``current_a``, ``voltage_v`` (measured),
``initial_soc``, ``ambient_temp_k``, ``parameter_set``, ``overrides_json`` (PyBaMM
name -> value, applied to the parameter set first), ``fit_names``, ``true_values``,
``lower``, ``upper``, ``initial_guess`` and ``sigma_v``; ``voltage_true_v``
(noise-free) is optional. The model is PyBaMM's SPMe with lumped cell and surface
temperatures, 20 points per region and per particle, started at ``initial_soc``
through PyBaMM's electrode state of health (recomputed for every candidate, since
the active-material fractions move the electrode capacities), and solved with
PyBOP's recommended IDAKLU solver.

PyBOP set-up: a sum-of-squared-errors voltage cost; every fitted parameter is
searched in log space (``pybop.LogTransformation``) between its bounds, so one
step size means the same relative change for each (PINTS' CMA-ES takes a single
``sigma0``, the smallest of the per-parameter values). PyBOP's population
optimisers start from each parameter's distribution mean rather than its initial
value, so every parameter gets a uniform distribution on its bounds that reports
``initial_guess`` as its mean and ``sigma0`` (in log space) as its spread: CMA-ES
and L-BFGS-B both start from ``initial_guess``. CMA-ES is seeded through
``numpy.random`` (PINTS draws CMA's seed from it) and stops on PyBOP's default
criteria (15 iterations without a 1 % change in the cost, or ``--max-iterations``).
L-BFGS-B (``pybop.SciPyMinimize``) gets finite-difference gradients from SciPy:
PyBOP offers no sensitivities for a simulation started from an initial SOC.

PyBOP as shipped, no workarounds: its simulator checks once whether the model
can be built without the fitted inputs; the initial SOC's eSOH needs the
active-material fractions, so the check fails and PyBOP rebuilds (re-discretises
and re-sets-up the solver) for every candidate, about 0.5 s per evaluation on a
2-core machine against about 0.06 s for a solve of a model built once.

Reported per method: wall time including the problem build (``wall_s``), the
build (problem and optimiser set-up; ``SciPyMinimize`` evaluates the starting
cost there) and optimise parts, iterations and cost evaluations (PyBOP's count,
with its final re-evaluation of the best point), the fitted values and
their errors against ``true_values``, the voltage RMSE against the measured (and,
if given, the noise-free) voltage, and the parameters that ended on a bound.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pybamm
import pybop

MODEL_OPTIONS = {"thermal": "lumped", "surface temperature": "lumped"}
VAR_PTS = {"x_n": 20, "x_s": 20, "x_p": 20, "r_n": 20, "r_p": 20}
VOLTAGE = "Voltage [V]"

# --make-problem: Chen2020 at 1C (5 A) from 98 % SOC, the truth being the set's own values.
FIT_NAMES = (
    "Negative particle diffusivity [m2.s-1]",
    "Positive particle diffusivity [m2.s-1]",
    "Negative electrode active material volume fraction",
    "Positive electrode active material volume fraction",
)
BOUNDS = ((0.2, 5.0), (0.2, 5.0), (0.8, 1.2), (0.8, 1.2))  # relative to the truth
START = (2.0, 0.5, 1.05, 0.95)  # relative to the truth
OVERRIDES = {"Environment thermal resistance [K.W-1]": 19.0, "Casing heat capacity [J.K-1]": 5.0}


def model() -> pybamm.BaseModel:
    return pybamm.lithium_ion.SPMe(options=MODEL_OPTIONS)


def base_parameter_values(problem: dict) -> pybamm.ParameterValues:
    """The parameter set with the problem's overrides and ambient temperature applied."""
    values = pybamm.ParameterValues(problem["parameter_set"])
    values.update(problem["overrides"], check_already_exists=False)
    values.update({"Ambient temperature [K]": problem["ambient_temp_k"]})
    return values


def make_problem(path: Path, seed: int) -> None:
    """Write a test problem: PyBaMM's SPMe (tight IDAKLU tolerances) plus 2 mV noise."""
    problem = {"parameter_set": "Chen2020", "overrides": OVERRIDES, "ambient_temp_k": 298.15}
    values = base_parameter_values(problem)
    values.update({"Current function [A]": 5.0})
    sim = pybamm.Simulation(
        model(), parameter_values=values, var_pts=VAR_PTS, solver=pybamm.IDAKLUSolver(rtol=1e-9, atol=1e-10)
    )
    t = np.arange(0.0, 4000.0)
    solution = sim.solve(t_eval=[0.0, t[-1]], t_interp=t, initial_soc=0.98)
    time_s = solution["Time [s]"].entries
    on_grid = np.isclose(time_s, np.round(time_s))  # drop the terminating event's off-grid point
    time_s, voltage = time_s[on_grid], solution[VOLTAGE].entries[on_grid]
    true = np.array([float(values[name]) for name in FIT_NAMES])
    sigma_v = 2e-3
    np.savez(
        path,
        time_s=time_s,
        current_a=np.full(len(time_s), 5.0),
        voltage_v=voltage + np.random.default_rng(seed).normal(0.0, sigma_v, len(time_s)),
        voltage_true_v=voltage,
        initial_soc=0.98,
        ambient_temp_k=problem["ambient_temp_k"],
        parameter_set=problem["parameter_set"],
        overrides_json=json.dumps(OVERRIDES),
        fit_names=np.array(FIT_NAMES),
        true_values=true,
        lower=true * np.array([b[0] for b in BOUNDS]),
        upper=true * np.array([b[1] for b in BOUNDS]),
        initial_guess=true * np.array(START),
        sigma_v=sigma_v,
    )


def load_problem(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        problem = {
            "time_s": np.asarray(data["time_s"], dtype=float),
            "current_a": np.asarray(data["current_a"], dtype=float),
            "voltage_v": np.asarray(data["voltage_v"], dtype=float),
            "voltage_true_v": np.asarray(data["voltage_true_v"], dtype=float) if "voltage_true_v" in data else None,
            "initial_soc": float(data["initial_soc"]),
            "ambient_temp_k": float(data["ambient_temp_k"]),
            "parameter_set": str(data["parameter_set"]),
            "overrides": json.loads(str(data["overrides_json"])),
            "fit_names": [str(name) for name in data["fit_names"]],
            "sigma_v": float(data["sigma_v"]),
        }
        for key in ("true_values", "lower", "upper", "initial_guess"):
            problem[key] = np.asarray(data[key], dtype=float)
    return problem


class StartingUniform(pybop.Uniform):
    """Uniform on [lower, upper] reporting ``start`` as its mean and ``spread`` as its standard deviation.

    PyBOP takes a population optimiser's start point and initial step size from
    these two, so this makes CMA-ES start where L-BFGS-B does.
    """

    def __init__(self, lower: float, upper: float, start: float, spread: float):
        super().__init__(lower, upper)
        self.start, self.spread = start, spread

    def mean(self) -> float:
        return self.start

    def std(self) -> float:
        return self.spread


def build_problem(problem: dict, sigma0: float) -> pybop.Problem:
    """The PyBOP fitting problem: dataset, parameters (log space), simulator and cost."""
    dataset = pybop.Dataset(
        {
            "Time [s]": problem["time_s"],
            "Current [A]": problem["current_a"],  # becomes the "Current function [A]" interpolant
            VOLTAGE: problem["voltage_v"],
        }
    )
    values = base_parameter_values(problem)
    values.update(
        {
            name: pybop.Parameter(
                distribution=StartingUniform(lower, upper, start, sigma0 * start),  # log-space std = sigma0
                initial_value=start,
                transformation=pybop.LogTransformation(),
            )
            for name, lower, upper, start in zip(
                problem["fit_names"], problem["lower"], problem["upper"], problem["initial_guess"], strict=True
            )
        }
    )
    simulator = pybop.pybamm.Simulator(
        model(),
        parameter_values=values,
        initial_state={"Initial SoC": problem["initial_soc"]},
        protocol=dataset,
        var_pts=VAR_PTS,
    )
    return pybop.Problem(simulator, pybop.SumSquaredError(dataset, target=VOLTAGE))


def make_optimiser(method: str, fit: pybop.Problem, max_iterations: int | None) -> pybop.BaseOptimiser:
    if method == "cmaes":
        options = pybop.PintsOptions()
        if max_iterations is not None:
            options.max_iterations = max_iterations
        return pybop.CMAES(fit, options=options)
    options = pybop.SciPyMinimizeOptions(method="L-BFGS-B")
    if max_iterations is not None:
        options.maxiter = max_iterations
    return pybop.SciPyMinimize(fit, options=options)


def run(method: str, problem: dict, max_iterations: int | None, sigma0: float, seed: int) -> dict:
    """Build the problem, fit it with one optimiser, and summarise the fit."""
    np.random.seed(seed)
    started = time.perf_counter()
    fit = build_problem(problem, sigma0)
    optimiser = make_optimiser(method, fit, max_iterations)
    built = time.perf_counter()
    result = optimiser.run()
    finished = time.perf_counter()

    names, truth = problem["fit_names"], problem["true_values"]
    best = result.best_inputs  # PyBOP orders its parameters as the model does, not as fit_names
    fitted = np.array([float(best[name]) for name in names])
    errors = 100.0 * (fitted / truth - 1.0)
    voltage = np.asarray(fit.simulate(best)[VOLTAGE].data)

    def rmse_mv(reference: np.ndarray) -> float:
        return 1e3 * float(np.sqrt(np.mean((voltage - reference) ** 2)))

    on_bound = np.isclose(fitted, problem["lower"], rtol=1e-3, atol=0) | np.isclose(
        fitted, problem["upper"], rtol=1e-3, atol=0
    )
    summary = {
        "optimiser": optimiser.name,
        "message": str(result.message),
        "wall_s": finished - started,
        "build_s": built - started,
        "optimise_s": finished - built,
        "n_iterations": int(result.n_iterations),
        "n_evaluations": int(result.n_evaluations),
        "final_cost_sse_v2": float(result.best_cost),
        "values": dict(zip(names, fitted.tolist(), strict=True)),
        "relative_error_pct": dict(zip(names, errors.tolist(), strict=True)),
        "max_abs_error_pct": float(np.max(np.abs(errors))),
        "rmse_mv": rmse_mv(problem["voltage_v"]),
        "on_bound": [name for name, hit in zip(names, on_bound, strict=True) if hit],
    }
    if problem["voltage_true_v"] is not None:
        summary["rmse_vs_truth_mv"] = rmse_mv(problem["voltage_true_v"])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problem", type=Path, help="problem npz to fit")
    parser.add_argument("--out", type=Path, help="result JSON")
    parser.add_argument("--method", choices=("cmaes", "lbfgsb", "both"), default="both")
    parser.add_argument("--max-iterations", type=int, default=None, help="default: PyBOP's (1000)")
    parser.add_argument("--sigma0", type=float, default=0.2, help="initial step in log space (CMA-ES)")
    parser.add_argument("--seed", type=int, default=0, help="CMA-ES seed (and --make-problem noise seed)")
    parser.add_argument("--make-problem", type=Path, metavar="PATH", help="write a Chen2020 test problem and exit")
    args = parser.parse_args()
    if args.make_problem is not None:
        make_problem(args.make_problem, args.seed)
        return
    if args.problem is None or args.out is None:
        parser.error("--problem and --out are required unless --make-problem is given")

    problem = load_problem(args.problem)
    methods = ("cmaes", "lbfgsb") if args.method == "both" else (args.method,)
    result = {
        "pybop_version": pybop.__version__,
        "pybamm_version": pybamm.__version__,
        "numpy_version": np.__version__,
        "problem": {
            "samples": len(problem["time_s"]),
            "initial_soc": problem["initial_soc"],
            "sigma_v": problem["sigma_v"],
            "true_values": dict(zip(problem["fit_names"], problem["true_values"].tolist(), strict=True)),
            "initial_guess": dict(zip(problem["fit_names"], problem["initial_guess"].tolist(), strict=True)),
        },
        "settings": {
            "model": "SPMe",
            "model_options": MODEL_OPTIONS,
            "var_pts": VAR_PTS,
            "solver": "pybop.pybamm.RecommendedSolver (IDAKLU, rtol=atol=1e-6)",
            "cost": "SumSquaredError(voltage)",
            "transformation": "log (all parameters)",
            "sigma0_log": args.sigma0,
            "seed": args.seed,
            "max_iterations": args.max_iterations,
            "threads": os.cpu_count(),
        },
        "methods": {method: run(method, problem, args.max_iterations, args.sigma0, args.seed) for method in methods},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["methods"], indent=2))


if __name__ == "__main__":
    main()
