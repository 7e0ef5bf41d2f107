"""cellax SPMe (JAX, ROS2 on the sample grid) against PyBaMM's SPMe + IDAKLU, in one run on one machine.

Both models: SPMe with ``{"thermal": "lumped", "surface temperature": "lumped"}``,
Chen2020, 20 shells per particle and 20 cells per region. Measured (medians of
``--repeats``), each figure beside its anchor from the same run:

* 1 h dynamic profiles (the generator's ``dynamic`` kind, 1 s samples): PyBaMM
  cell-hours/s on one core (a new interpolant and simulation per profile, as the
  data backend does) and on all cores (one PyBaMM process per core); cellax one
  profile, and a vmapped batch of ``--batch`` sharded over the host's cores
  (one XLA CPU device per core), in float64 and float32, each both as one ``vmap``
  and in cache-sized blocks of ``--block`` cells (:func:`cellax.batching.blocked_vmap`,
  the two timed in interleaved rounds);
* 1C discharge from 98 % SOC to 2.5 V: PyBaMM solves/s (model built once,
  ``Simulation.solve`` repeated; one core and all cores) against cellax single
  and batched, on the 1 s grid and on a 10 s grid, and on the 1 s grid with one
  step per ``--samples-per-step`` samples (signals interpolated between steps);
* cellax compile time; a reverse-mode gradient of a 1 h voltage loss in four
  parameters against the forward solve;
* the 1 h dynamic batch in float64 with steps chosen from the input (``--max-samples-per-step``: each
  step ends at the next kink of the current or after at most that many samples; cells sorted by step
  count into blocks of ``--adaptive-block``, one lane per core), timed in interleaved rounds against
  the blocked step-per-sample run, with its error against that run and against PyBaMM;
* accuracy: cellax voltage and temperatures against PyBaMM on the same profiles,
  and float32 against float64.

Writes ``benchmarks/results/rom_vs_pybamm.json``. Run: ``python benchmarks/rom_vs_pybamm.py``.
"""

from __future__ import annotations

import os

from devices import cpu_only_children, use_host_cores  # noqa: E402  (beside this script)
from timing import interleaved, timed  # noqa: E402

CORES = use_host_cores()
os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

from cellax.batching import blocked_vmap  # noqa: E402
from cellax.data.datasheet import LG_M50  # noqa: E402
from cellax.data.profiles import ProfileConfig, make_profile, profile_rng  # noqa: E402
from cellax.physics import load_parameter_set, pybamm_parameter_values  # noqa: E402
from cellax.physics.parameters import PYBAMM_MODEL_OPTIONS as OPTIONS  # noqa: E402
from cellax.physics.simulate import adaptive_step_count, simulate  # noqa: E402
from cellax.physics.spme import SPMe  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DISCHARGE_S = 4000
VAR_PTS = SPMe().pybamm_var_pts
FIT_KEYS = ("neg_diffusivity_scale", "pos_diffusivity_scale", "neg_exchange_current_scale", "electrolyte_diffusivity_scale")


# --- PyBaMM (runs in worker processes too, so module-level functions) ------------------------------------------


def _pybamm_dynamic(current_a, tight=False):
    """One profile as the data backend runs it: fresh interpolant, simulation and solve. Returns seconds and signals.

    ``tight``: IDAKLU at rtol 1e-9, atol 1e-10 (the accuracy reference) instead of its defaults (the timed runs).
    """
    import pybamm

    started = time.perf_counter()
    values = pybamm_parameter_values("Chen2020")
    t = np.arange(len(current_a), dtype=float)
    values["Current function [A]"] = pybamm.Interpolant(t, current_a, pybamm.t, interpolator="linear")
    solver = pybamm.IDAKLUSolver(rtol=1e-9, atol=1e-10) if tight else pybamm.IDAKLUSolver()
    sim = pybamm.Simulation(pybamm.lithium_ion.SPMe(OPTIONS), parameter_values=values, var_pts=VAR_PTS, solver=solver)
    solution = sim.solve(t_eval=[0, t[-1]], t_interp=t, initial_soc=0.5)
    voltage = solution["Voltage [V]"].entries
    core = solution["Volume-averaged cell temperature [K]"].entries
    return time.perf_counter() - started, voltage, core


def _pybamm_discharges(count):
    """``count`` 1C discharges on one built simulation; returns the seconds of each solve and the last voltage."""
    import pybamm

    values = pybamm_parameter_values("Chen2020")
    values["Current function [A]"] = 5.0
    sim = pybamm.Simulation(pybamm.lithium_ion.SPMe(OPTIONS), parameter_values=values, var_pts=VAR_PTS,
                            solver=pybamm.IDAKLUSolver())
    t = np.arange(DISCHARGE_S, dtype=float)
    sim.solve(t_eval=[0, t[-1]], t_interp=t, initial_soc=0.98)  # build once
    times = []
    for _ in range(count):
        started = time.perf_counter()
        voltage = sim.solve(t_eval=[0, t[-1]], t_interp=t, initial_soc=0.98)["Voltage [V]"].entries
        times.append(time.perf_counter() - started)
    return times, voltage


def _warm(_):
    _pybamm_discharges(1)
    return os.getpid()


@contextmanager
def pybamm_pool(workers: int = CORES) -> Iterator[ProcessPoolExecutor]:
    """One PyBaMM process per core, each having imported PyBaMM and built a model once; JAX in them stays on
    the CPU (:func:`devices.cpu_only_children`)."""
    with cpu_only_children(), ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_warm, range(workers)))
        yield pool


def pybamm_parallel(fn, items, pool):
    started = time.perf_counter()
    list(pool.map(fn, items))
    return time.perf_counter() - started


# --- cellax ------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--pybamm-profiles", type=int, default=16, help="profiles PyBaMM solves per measurement")
    parser.add_argument("--block", type=int, default=64, help="cells per block in the blocked rows")
    parser.add_argument("--samples-per-step", type=int, nargs="*", default=[5, 10],
                        help="1C on the 1 s grid with one step per this many samples")
    parser.add_argument("--max-samples-per-step", type=int, nargs="*", default=[8, 16],
                        help="1 h dynamic with steps chosen from the input, at most this many samples long")
    parser.add_argument("--adaptive-block", type=int, default=16,
                        help="cells per block in the input-chosen-step rows (blocks of similar step counts)")
    parser.add_argument("--out", type=Path, default=RESULTS / "rom_vs_pybamm.json")
    args = parser.parse_args()
    load_at_start = list(os.getloadavg())

    params = load_parameter_set("Chen2020")
    ambient = float(params.scalars["ambient_temp_k"])
    model = SPMe()
    config = ProfileConfig(kinds={"dynamic": 1.0}, duration_s=3600.0)
    profiles = np.stack([make_profile("dynamic", profile_rng(11, k), LG_M50, config, 0.5) for k in range(args.batch)])
    devices = jax.devices()
    batch_sharding = NamedSharding(Mesh(np.array(devices), ("batch",)), PartitionSpec("batch"))

    def run(p, current, soc, dt_s=1.0, samples_per_step=1, max_samples_per_step=None):
        sol = simulate(model, p, current, dt_s, soc, ambient, samples_per_step=samples_per_step,
                       max_samples_per_step=max_samples_per_step)
        return sol.signals["voltage_v"], sol.signals["core_temp_degc"], sol.stop_index

    def batched(dt_s=1.0, samples_per_step=1, block=0):
        def cells(p, current, soc):
            fn = lambda c, s: run(p, c, s, dt_s, samples_per_step)  # noqa: E731
            return (blocked_vmap(fn, block, len(devices)) if block else jax.vmap(fn))(current, soc)

        return jax.jit(cells)

    def batched_adaptive(m):
        """Steps chosen from the input: cells sorted by step count into blocks, one lane per device (shard_map)."""
        def cells(p, current, soc):
            fn = lambda c, s: run(p, c, s, max_samples_per_step=m)  # noqa: E731
            return blocked_vmap(fn, args.adaptive_block, len(devices), cost=lambda c, s: adaptive_step_count(c, m),
                                devices=devices)(current, soc)

        return jax.jit(cells)

    one = jax.jit(run, static_argnames=("dt_s", "samples_per_step", "max_samples_per_step"))
    batch, batch_blocked = batched(), batched(block=args.block)
    batch_10s = batched(dt_s=10.0)
    seconds, runs, accuracy = {}, {}, {}

    # compile (first call: trace + compile + one run, minus a run)
    started = time.perf_counter()
    jax.block_until_ready(one(params, jnp.asarray(profiles[0]), 0.5))
    first = time.perf_counter() - started
    single, runs["cellax_1h_single"] = timed(lambda: one(params, jnp.asarray(profiles[0]), 0.5), args.repeats)
    seconds["cellax_compile_1h"] = first - single
    seconds["cellax_1h_single_f64"] = single

    results = {}
    for name, dtype in (("f64", jnp.float64), ("f32", jnp.float32)):
        p = params.astype(dtype)
        x = jax.device_put(jnp.asarray(profiles, dtype=dtype), batch_sharding)
        s = jax.device_put(jnp.full(args.batch, 0.5, dtype=dtype), batch_sharding)
        results[name] = jax.block_until_ready(batch(p, x, s))
        blocked = jax.block_until_ready(batch_blocked(p, x, s))
        accuracy[f"blocked_vs_plain_{name}_voltage_max_v"] = float(jnp.max(jnp.abs(blocked[0] - results[name][0])))
        ab = interleaved({"plain": lambda: batch(p, x, s), "blocked": lambda: batch_blocked(p, x, s)}, args.repeats)
        seconds[f"cellax_1h_batch_{name}"], runs[f"cellax_1h_batch_{name}"] = ab["plain"]
        seconds[f"cellax_1h_batch_{name}_blocked"], runs[f"cellax_1h_batch_{name}_blocked"] = ab["blocked"]
        if name == "f32":
            one(p, jnp.asarray(profiles[0], dtype=dtype), jnp.float32(0.5))
            seconds["cellax_1h_single_f32"], _ = timed(
                lambda: one(p, jnp.asarray(profiles[0], dtype=dtype), jnp.float32(0.5)), args.repeats)
    # 1 h dynamic in float64 with steps chosen from the input, A/B against the blocked step-per-sample run
    x = jax.device_put(jnp.asarray(profiles), batch_sharding)
    s = jax.device_put(jnp.full(args.batch, 0.5), batch_sharding)
    adaptive = {f"adaptive_{m}": batched_adaptive(m) for m in args.max_samples_per_step}
    adaptive_out = {k: jax.block_until_ready(fn(params, x, s)) for k, fn in adaptive.items()}
    ab = interleaved({"blocked": lambda: batch_blocked(params, x, s),
                      **{k: (lambda fn=fn: fn(params, x, s)) for k, fn in adaptive.items()}}, args.repeats)
    steps = {}
    for m in args.max_samples_per_step:
        key = f"cellax_1h_batch_f64_adaptive_{m}"
        seconds[key], runs[key] = ab[f"adaptive_{m}"]
        seconds[f"{key}_ab_blocked"] = ab["blocked"][0]
        count = np.asarray(jax.vmap(lambda c: adaptive_step_count(c, m))(jnp.asarray(profiles)))
        steps[f"adaptive_{m}"] = {"mean": float(count.mean()), "max": int(count.max()), "samples": profiles.shape[1]}
        error = np.asarray(adaptive_out[f"adaptive_{m}"][0]) - np.asarray(results["f64"][0])
        accuracy[f"1h_adaptive_{m}_vs_step_per_sample_voltage_rmse_mv_max"] = 1e3 * float(np.sqrt((error**2).mean(1)).max())
        accuracy[f"1h_adaptive_{m}_vs_step_per_sample_voltage_rmse_mv_mean"] = 1e3 * float(np.sqrt((error**2).mean(1)).mean())
        accuracy[f"1h_adaptive_{m}_vs_step_per_sample_voltage_max_mv"] = 1e3 * float(np.abs(error).max())
        accuracy[f"1h_adaptive_{m}_vs_step_per_sample_core_temp_max_k"] = float(
            np.abs(np.asarray(adaptive_out[f"adaptive_{m}"][1]) - np.asarray(results["f64"][1])).max())
    v64, t64, _ = (np.asarray(a, dtype=np.float64) for a in results["f64"])
    v32, t32, _ = (np.asarray(a, dtype=np.float64) for a in results["f32"])
    accuracy["f32_vs_f64_voltage_max_mv"] = 1e3 * float(np.abs(v32 - v64).max())
    accuracy["f32_vs_f64_voltage_rmse_mv"] = 1e3 * float(np.sqrt(np.mean((v32 - v64) ** 2)))
    accuracy["f32_vs_f64_core_temp_max_k"] = float(np.abs(t32 - t64).max())

    # gradient of a 1 h voltage loss in four parameters, against the forward solve
    target = jnp.asarray(v64[0])

    def loss(scales, p):
        p = p.with_values(scales)
        return jnp.mean((simulate(model, p, jnp.asarray(profiles[0]), 1.0, 0.5, ambient).signals["voltage_v"] - target) ** 2)

    scales = {k: jnp.asarray(1.05, dtype=jnp.float64) for k in FIT_KEYS}
    forward = jax.jit(loss)
    gradient = jax.jit(jax.value_and_grad(loss))
    jax.block_until_ready(forward(scales, params))
    jax.block_until_ready(gradient(scales, params))
    seconds["cellax_1h_loss_forward"], _ = timed(lambda: forward(scales, params), args.repeats)
    seconds["cellax_1h_loss_value_and_grad"], _ = timed(lambda: gradient(scales, params), args.repeats)

    # 1C discharges: 1 s grid and 10 s grid
    for dt_s in (1.0, 10.0):
        n = int(DISCHARGE_S / dt_s)
        cc = jax.device_put(jnp.full((args.batch, n), 5.0), batch_sharding)
        soc = jax.device_put(jnp.full(args.batch, 0.98), batch_sharding)
        jax.block_until_ready(one(params, jnp.full(n, 5.0), 0.98, dt_s=dt_s))
        batch_dt = batch if dt_s == 1.0 else batch_10s
        jax.block_until_ready(batch_dt(params, cc, soc))
        tag = f"{int(dt_s)}s"
        seconds[f"cellax_1c_single_{tag}"], _ = timed(lambda: one(params, jnp.full(n, 5.0), 0.98, dt_s=dt_s), args.repeats)
        seconds[f"cellax_1c_batch_{tag}"], _ = timed(lambda: batch_dt(params, cc, soc), args.repeats)
        v, _, stop = one(params, jnp.full(n, 5.0), 0.98, dt_s=dt_s)
        results[f"1c_{tag}"] = (np.asarray(v), int(stop), dt_s)
    # 1C on the 1 s grid, one step per m samples (plain and blocked, interleaved)
    cc = jax.device_put(jnp.full((args.batch, DISCHARGE_S), 5.0), batch_sharding)
    for m in args.samples_per_step:
        tag = f"1s_grid_{m}s_steps"
        fns = {"plain": batched(samples_per_step=m), "blocked": batched(samples_per_step=m, block=args.block)}
        for fn in fns.values():
            jax.block_until_ready(fn(params, cc, soc))
        ab = interleaved({k: (lambda fn=fn: fn(params, cc, soc)) for k, fn in fns.items()}, args.repeats)
        seconds[f"cellax_1c_batch_{tag}"], seconds[f"cellax_1c_batch_{tag}_blocked"] = ab["plain"][0], ab["blocked"][0]
        v, _, stop = one(params, jnp.full(DISCHARGE_S, 5.0), 0.98, samples_per_step=m)
        results[f"1c_{tag}"] = (np.asarray(v), int(stop), 1.0)

    # PyBaMM: one core, then one process per core
    pybamm_dyn = [_pybamm_dynamic(profiles[k]) for k in range(args.repeats)]
    seconds["pybamm_1h_single"] = statistics.median(r[0] for r in pybamm_dyn)
    runs["pybamm_1h_single"] = [r[0] for r in pybamm_dyn]
    cc_times, v_ref = _pybamm_discharges(max(args.repeats, 5))
    seconds["pybamm_1c_single"] = statistics.median(cc_times)
    with pybamm_pool() as pool:
        count = args.pybamm_profiles
        wall = [pybamm_parallel(_pybamm_dynamic, list(profiles[:count]), pool) for _ in range(args.repeats)]
        seconds["pybamm_1h_all_cores_per_profile"] = statistics.median(wall) / count
        wall = [pybamm_parallel(_pybamm_discharges, [10] * CORES, pool) for _ in range(args.repeats)]
        seconds["pybamm_1c_all_cores_per_solve"] = statistics.median(wall) / (10 * CORES)

    # accuracy against PyBaMM: at its default tolerances (as timed) and at tight ones (the reference)
    tight = [_pybamm_dynamic(profiles[k], tight=True) for k in range(args.repeats)]
    for tag, reference in (("pybamm_default_tol", pybamm_dyn), ("pybamm_tight_tol", tight)):
        errors = [np.sqrt(np.mean((v64[k] - r[1]) ** 2)) for k, r in enumerate(reference)]
        accuracy[f"1h_voltage_rmse_mv_max_vs_{tag}"] = 1e3 * float(max(errors))
        accuracy[f"1h_core_temp_max_error_k_vs_{tag}"] = float(
            max(np.abs(t64[k] + 273.15 - r[2]).max() for k, r in enumerate(reference)))
        for m in args.max_samples_per_step:
            v = np.asarray(adaptive_out[f"adaptive_{m}"][0])
            accuracy[f"1h_adaptive_{m}_voltage_rmse_mv_max_vs_{tag}"] = 1e3 * float(
                max(np.sqrt(np.mean((v[k] - r[1]) ** 2)) for k, r in enumerate(reference)))
    for tag in ["1s", "10s"] + [f"1s_grid_{m}s_steps" for m in args.samples_per_step]:
        v, stop, dt_s = results[f"1c_{tag}"]
        t_ref = np.arange(len(v_ref))
        ours_t = np.arange(stop + 1) * dt_s
        both = ours_t <= t_ref[-1]
        accuracy[f"1c_{tag}_voltage_rmse_vs_pybamm_mv"] = 1e3 * float(
            np.sqrt(np.mean((v[: stop + 1][both] - np.interp(ours_t[both], t_ref, v_ref)) ** 2)))
        accuracy[f"1c_{tag}_end_time_error_pct"] = 100 * float(abs((stop + 1) * dt_s - len(v_ref)) / len(v_ref))

    b = args.batch
    ratios = {
        "1h_batch_f64_vs_pybamm_one_core": seconds["pybamm_1h_single"] / (seconds["cellax_1h_batch_f64"] / b),
        "1h_batch_f64_vs_pybamm_all_cores": seconds["pybamm_1h_all_cores_per_profile"] / (seconds["cellax_1h_batch_f64"] / b),
        "1h_batch_f32_vs_pybamm_all_cores": seconds["pybamm_1h_all_cores_per_profile"] / (seconds["cellax_1h_batch_f32"] / b),
        **{f"1h_batch_{name}_blocked_vs_pybamm_all_cores": seconds["pybamm_1h_all_cores_per_profile"]
           / (seconds[f"cellax_1h_batch_{name}_blocked"] / b) for name in ("f64", "f32")},
        **{f"1h_batch_{name}_blocked_vs_plain": seconds[f"cellax_1h_batch_{name}"]
           / seconds[f"cellax_1h_batch_{name}_blocked"] for name in ("f64", "f32")},
        "1h_single_f64_vs_pybamm_single": seconds["pybamm_1h_single"] / seconds["cellax_1h_single_f64"],
        "1h_single_f32_vs_pybamm_single": seconds["pybamm_1h_single"] / seconds["cellax_1h_single_f32"],
        "1c_batch_1s_vs_pybamm_all_cores": seconds["pybamm_1c_all_cores_per_solve"] / (seconds["cellax_1c_batch_1s"] / b),
        "1c_batch_10s_vs_pybamm_all_cores": seconds["pybamm_1c_all_cores_per_solve"] / (seconds["cellax_1c_batch_10s"] / b),
        "1c_single_1s_vs_pybamm_single": seconds["pybamm_1c_single"] / seconds["cellax_1c_single_1s"],
        **{f"1c_batch_1s_grid_{m}s_steps{kind}_vs_pybamm_all_cores": seconds["pybamm_1c_all_cores_per_solve"]
           / (seconds[f"cellax_1c_batch_1s_grid_{m}s_steps{kind}"] / b)
           for m in args.samples_per_step for kind in ("", "_blocked")},
        **{f"1h_batch_f64_adaptive_{m}_vs_pybamm_all_cores": seconds["pybamm_1h_all_cores_per_profile"]
           / (seconds[f"cellax_1h_batch_f64_adaptive_{m}"] / b) for m in args.max_samples_per_step},
        **{f"1h_batch_f64_adaptive_{m}_vs_blocked": seconds[f"cellax_1h_batch_f64_adaptive_{m}_ab_blocked"]
           / seconds[f"cellax_1h_batch_f64_adaptive_{m}"] for m in args.max_samples_per_step},
        "gradient_cost_vs_forward": seconds["cellax_1h_loss_value_and_grad"] / seconds["cellax_1h_loss_forward"],
    }
    result = {
        "benchmark": "rom_vs_pybamm",
        "machine": {"platform": platform.platform(), "cpus": CORES, "jax_devices": str(devices),
                    "load_average_1_5_15_min_at_start": load_at_start,
                    "load_average_1_5_15_min_at_end": list(os.getloadavg())},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": {"model": "SPMe + two-node lumped thermal", "parameter_set": "Chen2020", "mesh": VAR_PTS,
                  "cellax_solver": "ROS2 Rosenbrock-W, one step per sample, spectral stiff blocks",
                  "pybamm_solver": "IDAKLU defaults", "batch": b, "repeats": args.repeats, "block": args.block,
                  "samples_per_step": args.samples_per_step,
                  "max_samples_per_step": args.max_samples_per_step, "adaptive_block": args.adaptive_block,
                  "adaptive_steps_per_profile": steps,
                  "pybamm_profiles_per_measurement": args.pybamm_profiles},
        "seconds": seconds,
        "runs": runs,
        "accuracy": accuracy,
        "ratios": ratios,
        "targets": {"1h_batch_f64_vs_pybamm_all_cores": ">= 100", "1h_single_f64_vs_pybamm_single": ">= 10",
                    "1c_batch_vs_pybamm_all_cores": ">= 10", "cellax_compile_1h": "<= 10 s",
                    "gradient_cost_vs_forward": "<= 5"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"seconds": seconds, "accuracy": accuracy, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
