"""Accuracy of the FastCharge control step: cellax (ROS2 or ETD2, n steps per 30 s interval) against PyBaMM.

Both environments run the same actions from the same start (:class:`cellax.rl.FastCharge` and
``benchmarks/pybamm_gym.py``'s ``PybammFastCharge``, PyBaMM's SPMe with IDAKLU at ``--rtol``, default 1e-9, on
the same mesh, default the coarse 10 / (6, 4, 6) of ``configs/rl/fast_charge.yaml``), so the difference is
cellax's time stepping (plus the ~0.1 mV between the two discretisations). Three charging cases, each from rest
at 25 degC:

* ``holds``: 20 C-rates uniform in [0, 1.5] held for 2 min (4 intervals) each, from 10 % SOC;
* ``every_interval``: 60 C-rates uniform in [0, 2], a new one every interval, from 10 % SOC (the actions of
  ``benchmarks/rl_env.py``);
* ``2c_from_20``: 2C for 15 min from 20 % SOC (the electrolyte close to depletion: the hardest case).

For each case and method: maximum and RMS voltage error, maximum surface and core temperature errors and the
maximum anode-potential error over the intervals' ends. Writes ``benchmarks/results/step_accuracy.json``.
Run: ``python benchmarks/step_accuracy.py`` (a few minutes; ``--methods etd2:1 ros2:3`` for fewer rows).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from pybamm_gym import PybammFastCharge  # noqa: E402
from rl_env import stepping_method  # noqa: E402

from cellax.physics import load_parameter_set  # noqa: E402
from cellax.physics.spme import SPMe  # noqa: E402
from cellax.rl import EnvParams, FastCharge  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIGNALS = ("voltage_v", "surface_temp_degc", "core_temp_degc", "anode_potential_v")


def cases(seed: int = 0) -> dict[str, tuple[float, np.ndarray]]:
    """``name -> (initial SOC, C-rate per 30 s interval)``."""
    rng = np.random.default_rng(seed)
    return {
        "holds": (0.1, np.repeat(rng.uniform(0.0, 1.5, 20), 4)),
        "every_interval": (0.1, rng.uniform(0.0, 2.0, 60)),
        "2c_from_20": (0.2, np.full(30, 2.0)),
    }


def env_params(initial_soc: float) -> EnvParams:
    """A fixed start (``initial_soc``, 25 degC) and no early end: the target and the episode length out of reach."""
    return EnvParams(initial_soc_min=initial_soc, initial_soc_max=initial_soc, initial_temp_min_degc=25.0,
                     initial_temp_max_degc=25.0, ambient_temp_degc=25.0, target_soc=1.0, max_c_rate=3.0,
                     max_steps_in_episode=10_000)


def pybamm_signals(c_rates, params: EnvParams, var_pts, rtol: float) -> np.ndarray:
    env = PybammFastCharge(params, var_pts=var_pts, rtol=rtol, atol=rtol)
    env.reset(seed=0)
    rows = []
    for c_rate in c_rates:
        _, _, terminated, truncated, info = env.step(np.array([c_rate], np.float32))
        if terminated or truncated:
            raise RuntimeError(f"the PyBaMM episode ended early (invalid: {info['invalid']})")
        rows.append([info[k] for k in SIGNALS])
    return np.asarray(rows)


def cellax_signals(env: FastCharge, c_rates, params: EnvParams) -> np.ndarray:
    def body(state, c_rate):
        _, state, _, _, _, info = env.step(jax.random.key(0), state, jnp.reshape(c_rate, (1,)), params)
        return state, jnp.stack([info[k] for k in SIGNALS])

    _, state = env.reset(jax.random.key(0), params)
    return np.asarray(jax.jit(lambda s, a: jax.lax.scan(body, s, a)[1])(state, jnp.asarray(c_rates, jnp.float32)))


def errors(signals: np.ndarray, reference: np.ndarray) -> dict:
    e = np.abs(signals - reference)
    return {
        "voltage_max_mv": 1e3 * float(e[:, 0].max()),
        "voltage_rms_mv": 1e3 * float(np.sqrt(np.mean(e[:, 0] ** 2))),
        "surface_temp_max_k": float(e[:, 1].max()),
        "core_temp_max_k": float(e[:, 2].max()),
        "anode_potential_max_mv": 1e3 * float(e[:, 3].max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", type=stepping_method,
                        default=[("ros2", 1), ("ros2", 3), ("ros2", 10), ("etd2", 1), ("etd2", 2), ("etd2", 3)],
                        help="solver:steps per interval")
    parser.add_argument("--mesh", type=int, nargs=4, default=[10, 6, 4, 6], metavar=("SHELLS", "NEG", "SEP", "POS"))
    parser.add_argument("--rtol", type=float, default=1e-9, help="PyBaMM's IDAKLU tolerances (rtol = atol)")
    parser.add_argument("--out", type=Path, default=RESULTS / "step_accuracy.json")
    args = parser.parse_args()

    jax.config.update("jax_enable_x64", True)
    parameter_set = load_parameter_set("Chen2020")
    mesh = (args.mesh[0], tuple(args.mesh[1:]))
    var_pts = SPMe(*mesh).pybamm_var_pts
    methods = args.methods
    envs = {m: FastCharge(parameter_set, mesh=mesh, solver=m[0], substeps=m[1]) for m in methods}
    table = {}
    for name, (initial_soc, c_rates) in cases().items():
        params = env_params(initial_soc)
        reference = pybamm_signals(c_rates, params, var_pts, args.rtol)
        table[name] = {}
        for (solver, substeps), env in envs.items():
            row = errors(cellax_signals(env, c_rates, params), reference)
            table[name][f"{solver}:{substeps}"] = row
            print(f"{name:15s} {solver} x{substeps:<2d} V max {row['voltage_max_mv']:6.2f} rms {row['voltage_rms_mv']:5.2f} mV"
                  f"  T_s {row['surface_temp_max_k']:.3f} K  T {row['core_temp_max_k']:.3f} K"
                  f"  anode {row['anode_potential_max_mv']:6.2f} mV", flush=True)
    result = {
        "benchmark": "step_accuracy",
        "description": __doc__,
        "machine": {"platform": platform.platform(), "jax_version": jax.__version__},
        "mesh": [mesh[0], list(mesh[1])],
        "pybamm_rtol": args.rtol,
        "control_interval_s": 30.0,
        "cases": {name: {"initial_soc": soc, "c_rates": c.tolist()} for name, (soc, c) in cases().items()},
        "errors": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
