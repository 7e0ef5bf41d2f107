"""Data-pipeline throughput against a plain PyBaMM loop, in one run on one machine.

Measures, as medians over ``--repeats`` runs:

* cell-hours simulated per wall-second by a plain single-process PyBaMM loop
  (parameter values built once; per profile: interpolant current, ``Simulation``,
  IDAKLU ``solve`` with its step capped at ``dt_s`` as the backend does, read the
  variables) — the anchor; the same loop with an uncapped step (the recipe before
  ``backend_version`` 2, which can step over short pulses), interleaved with it: the
  cap's cost is ``step_cap_slowdown = uncapped / capped cell-h/s``;
* the same for ``cellax generate`` (profile planning, PyBaMM backend, crash-safe
  part files, final merge and validation) with 1 and 2 workers, on the same
  profiles; the pipeline overhead is ``anchor cell-h/s / pipeline(1 worker) cell-h/s - 1``;
* the same pipeline with the ``jax`` backend (cellax's SPMe, 64 profiles per vmapped call, one
  process; its compilation included), beside the PyBaMM backend on 2 workers, with a step per
  sample and with ``simulation.max_samples_per_step: 8`` (steps chosen from the current);
* the ``jax`` backend with 1 and 2 batches in flight (``--workers``: threads), on a longer job
  (``--jax-profiles``, default 256 one-hour profiles: four batches of 64), interleaved, compile included;
* loader throughput: random windows of 64 x 2048 steps as ``jax.Array`` batches,
  in windows/s and MB/s (float32, 4 signals), from the file just generated, with the
  signals cached in memory and read from the file (chunked, gzip) per window.

Run: ``python benchmarks/data_generation.py [--profiles 32] [--repeats 3]``; writes
``benchmarks/results/data_generation.json``. ``--only jax_threads`` runs the thread comparison alone and
updates that entry of an existing JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

import numpy as np  # noqa: E402

from cellax.config import validate_config  # noqa: E402
from cellax.data.config import DataConfig  # noqa: E402
from cellax.data.generate import generate, plan_profile  # noqa: E402
from cellax.data.pybamm_backend import MODEL_OPTIONS, VARIABLES  # noqa: E402
from cellax.signals import KELVIN  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def job(n_profiles: int) -> DataConfig:
    return validate_config(
        DataConfig,
        {
            "name": "benchmark",
            "seed": 2024,
            "n_profiles": n_profiles,
            "profiles": {"kinds": {"dynamic": 1.0}, "duration_s": 3600, "dt_s": 1.0},
            "conditions": {"ambient_temp_degc": [15, 30], "heat_transfer_coeff": [5, 30], "initial_soc": [0.3, 0.8]},
        },
    )


def plain_pybamm_loop(config: DataConfig, cap_step: bool = True) -> tuple[float, float]:
    """The anchor: how a PyBaMM user simulates these profiles in a loop. Returns (wall_s, cell_hours)."""
    import pybamm

    plans = [plan_profile(config, i) for i in range(config.n_profiles)]
    thermal = config.simulation.thermal
    started = time.perf_counter()
    base = pybamm.ParameterValues(config.simulation.parameter_set)
    base.update(
        {
            "Environment thermal resistance [K.W-1]": thermal.environment_thermal_resistance_k_w,
            "Casing heat capacity [J.K-1]": thermal.casing_heat_capacity_j_k,
        },
        check_already_exists=False,
    )
    hours = 0.0
    for meta, current_a in plans:
        time_s = np.arange(len(current_a), dtype=float)
        params = base.copy()
        params.update(
            {
                "Current function [A]": pybamm.Interpolant(time_s, current_a, pybamm.t, interpolator="linear"),
                "Ambient temperature [K]": meta["ambient_temp_degc"] + KELVIN,
                "Initial temperature [K]": meta["ambient_temp_degc"] + KELVIN,
                "Total heat transfer coefficient [W.m-2.K-1]": meta["heat_transfer_coeff"],
            }
        )
        sim = pybamm.Simulation(pybamm.lithium_ion.SPMe(MODEL_OPTIONS), parameter_values=params,
                                solver=pybamm.IDAKLUSolver(rtol=config.simulation.rtol, atol=config.simulation.atol,
                                                           options={"dt_max": config.profiles.dt_s} if cap_step else {}))
        solution = sim.solve(t_eval=[0.0, time_s[-1]], t_interp=time_s, initial_soc=meta["initial_soc"])
        outputs = {name: solution[var].entries for name, var in VARIABLES.items()}
        hours += len(outputs["time_s"]) / 3600
    return time.perf_counter() - started, hours


def pipeline(config: DataConfig, workers: int, folder: Path) -> tuple[float, float, Path]:
    out = folder / f"pipeline-{workers}-{time.monotonic_ns()}.h5"
    started = time.perf_counter()
    report = generate(config, out, workers=workers, progress=False, log=lambda *_: None)
    return time.perf_counter() - started, report.cell_hours, out


def jax_threads(n_profiles: int, repeats: int, folder: Path) -> dict:
    """Cell-hours/s of the jax backend's pipeline with one and two batches in flight, interleaved."""
    config = job(n_profiles).model_copy(update={"backend": "jax"})
    labels = {1: "1_thread", 2: "2_threads"}
    runs = {label: [] for label in labels.values()}
    for repeat in range(repeats):
        for threads in (1, 2) if repeat % 2 == 0 else (2, 1):
            wall, hours, out = pipeline(config, threads, folder)
            runs[labels[threads]].append(hours / wall)
            out.unlink()
        print(f"jax threads, repeat {repeat}: " + ", ".join(f"{k}: {v[-1]:.2f} cell-h/s" for k, v in runs.items()),
              flush=True)
    median = {k: statistics.median(v) for k, v in runs.items()}
    return {"profiles": n_profiles, "batch": 64, "cell_hours_per_s_runs": runs, "cell_hours_per_s_median": median,
            "two_threads_vs_one": median["2_threads"] / median["1_thread"], "load_average_after": os.getloadavg(),
            "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def loader_throughput(path: Path, batches: int, repeats: int, cache_in_memory: bool) -> dict:
    from cellax.data.loader import WindowLoader, split_profiles
    from cellax.data.store import open_dataset

    names = ["current_a", "voltage_v", "surface_temp_degc", "soc"]
    with open_dataset(path) as ds:
        rows = split_profiles(ds, fractions=(1.0, 0.0, 0.0))["train"]
    rates = []
    for repeat in range(repeats):
        with WindowLoader(path, rows, names, window_len=2048, batch_size=64, seed=repeat, prefetch=4,
                          cache_in_memory=cache_in_memory) as loader:
            batches_iter = iter(loader)
            next(batches_iter).get("current_a").block_until_ready()  # start-up excluded
            started = time.perf_counter()
            for _ in range(batches):
                batch = next(batches_iter)
            batch["soc"].block_until_ready()
            rates.append(batches * 64 / (time.perf_counter() - started))
    windows_per_s = statistics.median(rates)
    bytes_per_window = 2048 * len(names) * 4
    return {
        "cache_in_memory": cache_in_memory,
        "batch_size": 64,
        "window_len": 2048,
        "signals": names,
        "dtype": "float32",
        "windows_per_s": windows_per_s,
        "mb_per_s": windows_per_s * bytes_per_window / 1e6,
        "runs_windows_per_s": rates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profiles", type=int, default=32, help="one-hour dynamic profiles per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "data_generation.json")
    parser.add_argument("--jax-profiles", type=int, default=256, help="one-hour profiles of the jax thread comparison")
    parser.add_argument("--only", choices=["jax_threads"], help="run this part alone, updating the existing JSON")
    args = parser.parse_args()
    if args.only == "jax_threads":
        result = json.loads(args.out.read_text())
        with tempfile.TemporaryDirectory() as folder:
            result["jax_backend_threads"] = jax_threads(args.jax_profiles, args.repeats, Path(folder))
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["jax_backend_threads"], indent=2))
        return
    config = job(args.profiles)
    load_before = os.getloadavg()

    runs: dict[str, list[float]] = {"plain_pybamm_loop": [], "plain_pybamm_loop_uncapped": [], "pipeline_1_worker": [],
                                    "pipeline_2_workers": [], "pipeline_jax_backend": [],
                                    "pipeline_jax_backend_steps_from_input": []}
    steps_from_input = config.simulation.model_copy(update={"max_samples_per_step": 8})
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for repeat in range(args.repeats):
            for cap_step in (True, False) if repeat % 2 else (False, True):
                wall, hours = plain_pybamm_loop(config, cap_step)
                runs["plain_pybamm_loop" + ("" if cap_step else "_uncapped")].append(hours / wall)
            for workers in (1, 2):
                wall, hours, out = pipeline(config, workers, folder)
                runs[f"pipeline_{workers}_worker{'s' if workers > 1 else ''}"].append(hours / wall)
            wall, hours, _ = pipeline(config.model_copy(update={"backend": "jax"}), 1, folder)  # compile included
            runs["pipeline_jax_backend"].append(hours / wall)
            wall, hours, _ = pipeline(config.model_copy(update={"backend": "jax", "simulation": steps_from_input}), 1,
                                      folder)
            runs["pipeline_jax_backend_steps_from_input"].append(hours / wall)
            print(f"repeat {repeat}: " + ", ".join(f"{k} {v[-1]:.3f} cell-h/s" for k, v in runs.items()), flush=True)
        threads = jax_threads(args.jax_profiles, args.repeats, folder)
        loader = {
            "in_memory": loader_throughput(out, batches=50, repeats=args.repeats, cache_in_memory=True),
            "from_file": loader_throughput(out, batches=20, repeats=args.repeats, cache_in_memory=False),
        }

    median = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "benchmark": "data_generation",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "load_average_1_5_15_before": load_before, "load_average_1_5_15_after": os.getloadavg()},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "job": {"profiles": args.profiles, "profile_kind": "dynamic", "duration_s": 3600, "dt_s": 1.0,
                "model": "SPMe + lumped core/surface thermal", "solver": "IDAKLU, step <= dt_s", "repeats": args.repeats},
        "cell_hours_per_s": {"median": median, "runs": runs},
        "seconds_per_cell_hour": {k: 1 / v for k, v in median.items()},
        "ratios": {
            "step_cap_slowdown": median["plain_pybamm_loop_uncapped"] / median["plain_pybamm_loop"],
            "pipeline_1_worker_vs_plain": median["pipeline_1_worker"] / median["plain_pybamm_loop"],
            "pipeline_2_workers_vs_plain": median["pipeline_2_workers"] / median["plain_pybamm_loop"],
            "pipeline_overhead_1_worker": median["plain_pybamm_loop"] / median["pipeline_1_worker"] - 1,
            "jax_backend_vs_pybamm_backend_2_workers": median["pipeline_jax_backend"] / median["pipeline_2_workers"],
            "jax_backend_steps_from_input_vs_pybamm_backend_2_workers":
                median["pipeline_jax_backend_steps_from_input"] / median["pipeline_2_workers"],
            "jax_backend_steps_from_input_vs_step_per_sample":
                median["pipeline_jax_backend_steps_from_input"] / median["pipeline_jax_backend"],
        },
        "jax_backend_threads": threads,
        "loader": loader,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"ratios": result["ratios"],
                      "loader": {k: (v["windows_per_s"], v["mb_per_s"]) for k, v in loader.items()}}, indent=2))


if __name__ == "__main__":
    main()
