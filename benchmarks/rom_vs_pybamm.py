"""cellax SPMe (JAX, diffrax) against PyBaMM's SPMe + IDAKLU, in one run on one machine.

Both models: SPMe with ``{"thermal": "lumped", "surface temperature": "lumped"}``,
Chen2020, 20 shells per particle and 20 cells per region, float64. Measured
(medians of ``--repeats``):

* 1C constant-current discharge from 98 % SOC to 2.5 V: PyBaMM solves/s (model
  built once, ``Simulation.solve`` repeated) vs cellax single solve and a vmapped
  batch of ``--batch`` discharges;
* 1 h dynamic profile (the generator's ``dynamic`` kind, 1 s samples): PyBaMM
  cell-hours/s (a new interpolant per profile, as the data backend does) vs cellax
  single and vmapped batch;
* cellax compile time.

cellax currently integrates with diffrax's adaptive ``Kvaerno5`` (dense Newton):
the accurate reference path. This benchmark records where that stands; the
structure-aware solver of ``docs/physics.md`` is what the speed targets need.
Writes ``benchmarks/results/rom_vs_pybamm.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from cellax.data.datasheet import LG_M50  # noqa: E402
from cellax.data.profiles import ProfileConfig, make_profile, profile_rng  # noqa: E402
from cellax.physics import load_parameter_set, pybamm_parameter_values  # noqa: E402
from cellax.physics.parameters import PYBAMM_MODEL_OPTIONS as OPTIONS  # noqa: E402
from cellax.physics.simulate import simulate  # noqa: E402
from cellax.physics.spme import SPMe  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DISCHARGE_SAMPLES = 4000
VAR_PTS = SPMe().pybamm_var_pts


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def pybamm_discharge(repeats):
    import pybamm

    values = pybamm_parameter_values("Chen2020")
    values["Current function [A]"] = 5.0
    sim = pybamm.Simulation(pybamm.lithium_ion.SPMe(OPTIONS), parameter_values=values, var_pts=VAR_PTS,
                            solver=pybamm.IDAKLUSolver())
    t = np.arange(DISCHARGE_SAMPLES, dtype=float)
    sim.solve(t_eval=[0, t[-1]], t_interp=t, initial_soc=0.98)  # build once
    return timed(lambda: sim.solve(t_eval=[0, t[-1]], t_interp=t, initial_soc=0.98)["Voltage [V]"].entries, repeats)


def pybamm_dynamic(profiles):
    import pybamm

    times = []
    for current_a in profiles:
        started = time.perf_counter()
        values = pybamm_parameter_values("Chen2020")
        t = np.arange(len(current_a), dtype=float)
        values["Current function [A]"] = pybamm.Interpolant(t, current_a, pybamm.t, interpolator="linear")
        sim = pybamm.Simulation(pybamm.lithium_ion.SPMe(OPTIONS), parameter_values=values, var_pts=VAR_PTS,
                                solver=pybamm.IDAKLUSolver())
        sim.solve(t_eval=[0, t[-1]], t_interp=t, initial_soc=0.5)["Voltage [V]"].entries
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS / "rom_vs_pybamm.json")
    args = parser.parse_args()

    params = load_parameter_set("Chen2020")
    ambient = float(params.scalars["ambient_temp_k"])
    model = SPMe()
    config = ProfileConfig(kinds={"dynamic": 1.0}, duration_s=3600.0)
    profiles = [make_profile("dynamic", profile_rng(11, k), LG_M50, config, 0.5) for k in range(args.batch)]

    one = jax.jit(lambda i, soc: simulate(model, params, i, 1.0, soc, ambient).signals["voltage_v"])
    batch = jax.jit(jax.vmap(lambda i, soc: simulate(model, params, i, 1.0, soc, ambient).signals["voltage_v"]))
    discharge = jnp.full(DISCHARGE_SAMPLES, 5.0)
    dynamic = jnp.asarray(np.stack(profiles))

    started = time.perf_counter()
    jax.block_until_ready(one(discharge, 0.98))
    compile_s = time.perf_counter() - started
    jax.block_until_ready(one(dynamic[0], 0.5))
    jax.block_until_ready(batch(jnp.tile(discharge, (args.batch, 1)), jnp.full(args.batch, 0.98)))
    jax.block_until_ready(batch(dynamic, jnp.full(args.batch, 0.5)))

    cellax_cc, cellax_cc_runs = timed(lambda: one(discharge, 0.98), args.repeats)
    cellax_cc_batch, _ = timed(lambda: batch(jnp.tile(discharge, (args.batch, 1)), jnp.full(args.batch, 0.98)), args.repeats)
    cellax_dyn, cellax_dyn_runs = timed(lambda: one(dynamic[0], 0.5), args.repeats)
    cellax_dyn_batch, _ = timed(lambda: batch(dynamic, jnp.full(args.batch, 0.5)), args.repeats)
    pybamm_cc, pybamm_cc_runs = pybamm_discharge(args.repeats)
    pybamm_dyn, pybamm_dyn_runs = pybamm_dynamic(profiles[: args.repeats])

    result = {
        "benchmark": "rom_vs_pybamm",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "jax_devices": str(jax.devices())},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": {"model": "SPMe + two-node lumped thermal", "parameter_set": "Chen2020", "mesh": VAR_PTS,
                  "dtype": "float64", "cellax_solver": "diffrax Kvaerno5, PID rtol=atol=1e-8",
                  "pybamm_solver": "IDAKLU defaults", "batch": args.batch, "repeats": args.repeats},
        "seconds": {
            "cellax_compile_1c": compile_s,
            "cellax_1c_single": cellax_cc, "cellax_1c_batch": cellax_cc_batch,
            "cellax_1h_dynamic_single": cellax_dyn, "cellax_1h_dynamic_batch": cellax_dyn_batch,
            "pybamm_1c_single": pybamm_cc, "pybamm_1h_dynamic_single": pybamm_dyn,
        },
        "runs": {"cellax_1c": cellax_cc_runs, "cellax_1h": cellax_dyn_runs, "pybamm_1c": pybamm_cc_runs,
                 "pybamm_1h": pybamm_dyn_runs},
        "ratios": {
            "1c_solves_per_s_single_vs_pybamm": pybamm_cc / cellax_cc,
            "1c_solves_per_s_batch_vs_pybamm": pybamm_cc / (cellax_cc_batch / args.batch),
            "1h_cell_hours_per_s_single_vs_pybamm": pybamm_dyn / cellax_dyn,
            "1h_cell_hours_per_s_batch_vs_pybamm": pybamm_dyn / (cellax_dyn_batch / args.batch),
        },
        "targets": {"1h_batch_256": ">= 100x", "1h_single": ">= 10x", "1c_batch_256": ">= 10x", "compile_s": "<= 10"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"seconds": result["seconds"], "ratios": result["ratios"]}, indent=2))


if __name__ == "__main__":
    main()
