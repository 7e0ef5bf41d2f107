"""Is ``simulate`` as fast as ``diffrax.diffeqsolve`` with ROS2 as a diffrax ``AbstractSolver``? (issue 17.2)

The same ROS2 step (:func:`cellax.physics.stepping.ros2_step`, spectral stiff blocks) driven two ways
over 1 h dynamic profiles of the generator (1 s samples, SPMe 20/20/20/20, Chen2020, float64):

* ``scan``: today's :func:`cellax.physics.simulate.simulate` (``lax.scan`` over samples, with the
  limit and invalid-state checks and event-time interpolation written by hand);
* ``diffrax``: ``diffeqsolve`` with :class:`ROS2` below, ``ConstantStepSize``, ``SaveAt(ts=...)`` and the
  canonical outputs from the saved states; once without an event, once with a ``diffrax.Event`` on the
  voltage window (what ``simulate`` would need at least).

Medians of ``--repeats`` runs after a compile, one profile and a vmapped batch; writes
``benchmarks/results/ros2_diffrax.json`` with the load average (the machine may be shared).
"""

from __future__ import annotations

import os

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import diffrax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from cellax.data.datasheet import LG_M50  # noqa: E402
from cellax.data.profiles import ProfileConfig, make_profile, profile_rng  # noqa: E402
from cellax.physics import load_parameter_set  # noqa: E402
from cellax.physics.simulate import simulate  # noqa: E402
from cellax.physics.spme import SPMe  # noqa: E402
from cellax.physics.stepping import ros2_step  # noqa: E402
from timing import timed  # noqa: E402  (beside this script)

RESULTS = Path(__file__).resolve().parent / "results"


class ROS2(diffrax.AbstractSolver):
    """ROS2 with the model's spectral stiff blocks as a diffrax solver; ``args = (params, operators,
    current(t), ambient_temp_k)``. No error estimate: constant steps only."""

    model: SPMe
    term_structure = diffrax.AbstractTerm
    interpolation_cls = diffrax.LocalLinearInterpolation

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        params, operators, current, ambient_temp_k = args
        y1, _ = ros2_step(self.model, params, operators, y0, current(t0), current(t1), t1 - t0, ambient_temp_k)
        return y1, None, dict(y0=y0, y1=y1), None, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


def diffrax_simulate(model, params, current_a, dt_s, initial_soc, ambient_temp_k, event: bool):
    ts = jnp.arange(current_a.shape[0], dtype=params.dtype) * dt_s
    current = diffrax.LinearInterpolation(ts=ts, ys=current_a).evaluate
    y0 = model.initial_state(params, initial_soc, ambient_temp_k)
    args = (params, model.stiff_operators(params), current, ambient_temp_k)
    s = params.scalars

    def voltage_window(t, y, args, **kwargs):
        v = model.outputs(params, y, current(t), ambient_temp_k)["voltage_v"]
        return jnp.minimum(v - s["voltage_min_v"], s["voltage_max_v"] - v)

    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, a: model.vector_field(params, y, current(t), ambient_temp_k)), ROS2(model), t0=ts[0], t1=ts[-1], dt0=dt_s, y0=y0, args=args,
        saveat=diffrax.SaveAt(ts=ts), stepsize_controller=diffrax.ConstantStepSize(),
        event=diffrax.Event(voltage_window) if event else None, max_steps=current_a.shape[0], throw=False,
    )
    return jax.vmap(lambda y, i: model.outputs(params, y, i, ambient_temp_k))(solution.ys, current_a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS / "ros2_diffrax.json")
    args = parser.parse_args()
    load_at_start = list(os.getloadavg())
    params = load_parameter_set("Chen2020")
    model = SPMe()
    config = ProfileConfig(duration_s=3600.0)
    profiles = jnp.asarray(np.stack([make_profile("dynamic", profile_rng(11, k), LG_M50, config, 0.5)
                                     for k in range(args.batch)]))
    ambient = jnp.asarray(298.15)
    ways = {
        "scan": lambda c: simulate(model, params, c, 1.0, 0.5, ambient).signals,
        "diffrax": lambda c: diffrax_simulate(model, params, c, 1.0, 0.5, ambient, event=False),
        "diffrax_event": lambda c: diffrax_simulate(model, params, c, 1.0, 0.5, ambient, event=True),
    }
    seconds, runs, agreement = {}, {}, {}
    reference = jax.jit(ways["scan"])(profiles[0])
    for name, way in ways.items():
        one, batch = jax.jit(way), jax.jit(jax.vmap(way))
        seconds[f"{name}_single"], runs[f"{name}_single"] = timed(lambda: one(profiles[0]), args.repeats, warmup=True)
        seconds[f"{name}_batch"], runs[f"{name}_batch"] = timed(lambda: batch(profiles), args.repeats, warmup=True)
        agreement[f"{name}_voltage_max_diff_v"] = float(jnp.max(jnp.abs(one(profiles[0])["voltage_v"] - reference["voltage_v"])))
        print(name, seconds[f"{name}_single"], seconds[f"{name}_batch"], flush=True)
    result = {
        "benchmark": "ros2_diffrax",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": {"model": "SPMe 20/20/20/20", "parameter_set": "Chen2020", "profile": "1 h dynamic, 1 s samples",
                  "batch": args.batch, "repeats": args.repeats, "devices": str(jax.devices())},
        "load_average_1_5_15_min_at_start": load_at_start,
        "load_average_1_5_15_min_at_end": list(os.getloadavg()),
        "seconds": seconds,
        "runs": runs,
        "agreement_with_scan": agreement,
        "ratios_diffrax_over_scan": {
            f"{way}_{size}": seconds[f"{way}_{size}"] / seconds[f"scan_{size}"]
            for way in ("diffrax", "diffrax_event") for size in ("single", "batch")
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios_diffrax_over_scan"], indent=2))


if __name__ == "__main__":
    main()
