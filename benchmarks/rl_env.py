"""Environment steps per second: cellax FastCharge (jit + vmap + lax.scan) against PyBaMM's gymnasium env.

Both environments are FastCharge-v0 with the same observation, action, reward
and limits (``benchmarks/pybamm_gym.py`` wraps PyBaMM's SPMe + IDAKLU the way
published RL charging work does). Each is driven by uniformly random C-rates in
``[0, --max-c-rate]`` (default 2C: higher rates deplete Chen2020's electrolyte
within a minute or two, and failing IDAKLU solves would slow PyBaMM down
unfairly), with episodes reset when they end (cellax: gymnax's auto-reset inside
``step``). PyBaMM is also timed on a constant 1C charge (no failures, no events).

* cellax: ``--sizes`` parallel environments (default 1, 64, 1024, 4096), one jitted
  function that scans ``--steps`` steps of ``vmap(env.step)``; the compile (first
  call) is timed separately, then the median of ``--repeats`` runs. The batch is
  sharded over the host's CPU cores (one XLA device per core) when it divides evenly.
  Rows for the PyBaMM mesh (20 shells, 20/20/20) in float64 (the like-for-like
  comparison), and for the coarse mesh (10 shells, 6/4/6) and float32 as faster options.
  *Blocked* rows (``--block``, default 64) run the same environments in the same one
  jitted call, but in blocks of ``--block`` environments that each scan all their steps
  before the next block starts (``lax.map`` over blocks, blocks split over the cores):
  one block's states and temporaries stay in cache, where a 1024-wide ``vmap`` streams
  every intermediate through memory at each step. Environments are independent, so the
  work and results are those of the plain rows; only the order differs.
* Each cellax row names its time stepping (``--methods``, ``solver:steps`` per 30 s interval): the default,
  one ETD2 step, first (the target's rows), then three ROS2 steps (the default before 2026-12-01); one ETD2
  step is the more accurate of the two against PyBaMM (``benchmarks/step_accuracy.py``).
* PyBaMM: ``--pybamm-steps`` steps of one environment on one core (same mesh), the median of the same
  ``--repeats`` runs (the model built once, before them).

Writes ``benchmarks/results/rl_env.json`` with each figure and the ratio
cellax/PyBaMM. Run: ``python benchmarks/rl_env.py`` (``--sizes 1 64 1024`` when
4096 takes too long on a small machine; the JSON records what ran).
"""

from __future__ import annotations

import os

from devices import use_host_cores  # noqa: E402  (beside this script)

CORES = use_host_cores()
os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pybamm_gym import PybammFastCharge  # noqa: E402

from cellax.physics import load_parameter_set  # noqa: E402
from cellax.physics.spme import SPMe  # noqa: E402
from cellax.physics.stepping import STEPPERS  # noqa: E402
from cellax.rl import FastCharge  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MESHES = {"pybamm": (20, (20, 20, 20)), "coarse": (10, (6, 4, 6))}


def stepping_method(text: str) -> tuple[str, int]:
    """``"solver:steps"`` (steps per control interval) as ``(solver, steps)``; argparse reports a bad one."""
    solver, _, steps = text.partition(":")
    if solver not in STEPPERS or not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: want solver:steps, solver one of {tuple(STEPPERS)}, steps >= 1")
    return solver, int(steps)


def cellax_rate(env, n_envs: int, n_steps: int, repeats: int, max_c_rate: float, block: int | None = None) -> dict:
    """Steps/s of ``n_envs`` vmapped environments scanned over ``n_steps`` random actions (in blocks of ``block``)."""
    params = env.default_params
    devices = jax.devices()
    groups = n_envs // block if block else n_envs
    sharded = len(devices) > 1 and groups % len(devices) == 0
    sharding = NamedSharding(Mesh(np.array(devices), ("envs",)), PartitionSpec("envs")) if sharded else None
    if block:
        run = jax.jit(lambda key: blocked_rollout(env, params, key, n_envs, n_steps, max_c_rate, block, sharding))
    else:
        run = jax.jit(lambda key: random_rollout(env, params, key, n_envs, n_steps, max_c_rate, sharding))
    started = time.perf_counter()
    total, episodes = jax.block_until_ready(run(jax.random.key(0)))
    compile_s = time.perf_counter() - started
    if not np.isfinite(float(total)):
        raise RuntimeError("non-finite rewards or observations in the cellax rollout")
    times = []
    for r in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(run(jax.random.key(r + 1)))
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    return {
        "n_envs": n_envs,
        "block": block,
        "n_steps": n_steps,
        "sharded_over_devices": len(devices) if sharded else 1,
        "compile_and_first_run_s": compile_s,
        "run_s": times,
        "median_run_s": median,
        "steps_per_s": n_envs * n_steps / median,
        "episodes_ended_in_first_run": int(episodes),
    }


def random_rollout(env, params, key, n_envs: int, n_steps: int, max_c_rate: float, sharding=None):
    """Reset ``n_envs`` environments and step them ``n_steps`` times with C-rates uniform in
    ``[0, max_c_rate]`` (auto-reset).

    Returns the sum of rewards and observations (a finiteness check that keeps the work alive)
    and the number of episodes that ended.
    """
    def split(key):  # one key per environment, sharded over the devices when asked
        keys = jax.random.split(key, n_envs)
        return keys if sharding is None else jax.lax.with_sharding_constraint(keys, sharding)

    key_reset, key_run = jax.random.split(key)
    _, state = jax.vmap(env.reset, in_axes=(0, None))(split(key_reset), params)

    def body(carry, step_key):
        state, total = carry
        key_action, key_step = jax.random.split(step_key)
        actions = jax.vmap(lambda k: jax.random.uniform(k, (1,), jnp.float32, 0.0, max_c_rate))(split(key_action))
        obs, state, reward, terminated, truncated, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            split(key_step), state, actions, params
        )
        return (state, total + jnp.sum(reward) + jnp.sum(obs)), jnp.sum(terminated | truncated)

    (_, total), episodes = jax.lax.scan(body, (state, jnp.zeros((), jnp.float32)), jax.random.split(key_run, n_steps))
    return total, jnp.sum(episodes)


def blocked_rollout(env, params, key, n_envs: int, n_steps: int, max_c_rate: float, block: int, sharding=None):
    """:func:`random_rollout` of ``n_envs`` environments as ``n_envs / block`` blocks run one after another
    on each core (``lax.map``), the blocks split over the devices by ``sharding``."""
    if n_envs % block:
        raise ValueError(f"n_envs {n_envs} is not a multiple of block {block}")
    groups = len(sharding.mesh.devices.flat) if sharding is not None else 1
    keys = jax.random.split(key, n_envs // block).reshape(groups, -1)
    if sharding is not None:
        keys = jax.lax.with_sharding_constraint(keys, sharding)

    def one_block(k):
        return random_rollout(env, params, k, block, n_steps, max_c_rate)

    total, episodes = jax.vmap(lambda ks: jax.lax.map(one_block, ks))(keys)
    return jnp.sum(total), jnp.sum(episodes)


def pybamm_rate(n_steps: int, var_pts: dict, max_c_rate: float | None, repeats: int, seed: int = 0) -> dict:
    """Steps/s of the PyBaMM gymnasium env (one core; resets included, build excluded), with C-rates
    uniform in ``[0, max_c_rate]``, or a constant 1C charge when ``max_c_rate`` is None: the median of
    ``repeats`` runs of the same ``n_steps`` actions, as for cellax."""
    started = time.perf_counter()
    env = PybammFastCharge(var_pts=var_pts)
    build_s = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        rng = np.random.default_rng(seed)
        env.reset(seed=seed)
        episodes, invalid = 0, 0
        started = time.perf_counter()
        for _ in range(n_steps):
            c_rate = 1.0 if max_c_rate is None else rng.uniform(0.0, max_c_rate)
            _, _, terminated, truncated, info = env.step(np.array([c_rate], np.float32))
            if terminated or truncated:
                episodes, invalid = episodes + 1, invalid + int(info["invalid"])
                env.reset()
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    return {
        "actions": "constant 1C" if max_c_rate is None else f"uniform C-rate in [0, {max_c_rate}]",
        "n_steps": n_steps,
        "build_s": build_s,
        "runs_s": times,
        "run_s": median,
        "steps_per_s": n_steps / median,
        "episodes_ended": episodes,
        "invalid_episodes": invalid,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 1024, 4096])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pybamm-steps", type=int, default=300)
    parser.add_argument("--max-c-rate", type=float, default=2.0, help="random actions: C-rate uniform in [0, this]")
    parser.add_argument("--extra-sizes", type=int, nargs="*", default=[1024], help="sizes for the coarse/float32 rows")
    parser.add_argument("--block", type=int, default=64, help="environments per block in the blocked rows (0: none)")
    parser.add_argument("--methods", nargs="+", type=stepping_method, default=[("etd2", 1), ("ros2", 3)],
                        help="solver:steps per interval of the cellax rows; the first is the environment's default "
                             "and gets the coarse-mesh and float32 rows too")
    parser.add_argument("--out", type=Path, default=RESULTS / "rl_env.json")
    args = parser.parse_args()

    load_at_start = list(os.getloadavg())
    parameter_set = load_parameter_set("Chen2020")
    var_pts = SPMe(*MESHES["pybamm"]).pybamm_var_pts
    pybamm = pybamm_rate(args.pybamm_steps, var_pts, args.max_c_rate, args.repeats)
    pybamm_1c = pybamm_rate(args.pybamm_steps, var_pts, None, args.repeats)
    print(f"PyBaMM gymnasium env: {pybamm['steps_per_s']:.0f} steps/s random actions, "
          f"{pybamm_1c['steps_per_s']:.0f} at constant 1C", flush=True)

    blocked = [n for n in args.sizes if args.block and n > args.block and n % args.block == 0]
    methods = args.methods
    configurations = []
    for method in methods:
        configurations += [(method, "pybamm", "float64", args.sizes, None), (method, "pybamm", "float64", blocked, args.block)]
    extra_blocked = [n for n in args.extra_sizes if n in blocked]
    for mesh, dtype in (("coarse", "float64"), ("pybamm", "float32")):
        configurations += [(methods[0], mesh, dtype, args.extra_sizes, None), (methods[0], mesh, dtype, extra_blocked, args.block)]
    rows = []
    for (solver, substeps), mesh, dtype, sizes, block in configurations:
        env = FastCharge(parameter_set, mesh=MESHES[mesh], dtype=getattr(jnp, dtype), solver=solver, substeps=substeps)
        for n_envs in sizes:
            row = {"solver": solver, "substeps": substeps, "mesh": mesh, "dtype": dtype,
                   **cellax_rate(env, n_envs, args.steps, args.repeats, args.max_c_rate, block)}
            row["ratio_to_pybamm"] = row["steps_per_s"] / pybamm["steps_per_s"]
            row["ratio_to_pybamm_constant_1c"] = row["steps_per_s"] / pybamm_1c["steps_per_s"]
            rows.append(row)
            print(
                f"cellax {solver}x{substeps} {mesh:6s} {dtype} {n_envs:5d} envs{f' (blocks of {block})' if block else ''}: "
                f"{row['steps_per_s']:12.0f} steps/s "
                f"({row['ratio_to_pybamm']:.0f}x PyBaMM, {row['ratio_to_pybamm_constant_1c']:.0f}x at 1C), "
                f"compile+first {row['compile_and_first_run_s']:.1f} s",
                flush=True,
            )

    def like_for_like(block, method=methods[0]):
        return next((r for r in rows if r["mesh"] == "pybamm" and r["dtype"] == "float64" and r["n_envs"] == 1024
                     and r["block"] == block and (r["solver"], r["substeps"]) == method), None)

    target, target_blocked = like_for_like(None), like_for_like(args.block or None)
    result = {
        "benchmark": "rl_env",
        "description": __doc__,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": CORES,
            "jax_backend": jax.default_backend(),
            "jax_devices": [str(d) for d in jax.devices()],
            "jax_version": jax.__version__,
            "load_average_1_5_15_min_at_start": load_at_start,
            "load_average_1_5_15_min_at_end": list(os.getloadavg()),
        },
        "environment": {"name": "FastCharge-v0", "parameter_set": "Chen2020", "control_interval_s": 30.0,
                        "methods": [f"{s}:{n}" for s, n in methods], "target_method": "{}:{}".format(*methods[0])},
        "actions": f"uniform random C-rate in [0, {args.max_c_rate}], the same for both",
        "pybamm": pybamm,
        "pybamm_constant_1c": pybamm_1c,
        "cellax": rows,
        "target": {
            "ratio_at_1024_envs": 1000,
            **{f"measured_ratio_at_1024_envs{label}": None if row is None else row["ratio_to_pybamm"]
               for label, row in (("", target), ("_blocked", target_blocked))},
            "measured_ratio_at_1024_envs_vs_pybamm_constant_1c": None if target is None else target[
                "ratio_to_pybamm_constant_1c"
            ],
            "met": None if target is None else max(r["ratio_to_pybamm"] for r in (target, target_blocked) if r) >= 1000,
        },
        "sizes_run": args.sizes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
