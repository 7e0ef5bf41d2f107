"""A charging protocol optimised by gradients on the SPMe and on the hybrid, both checked on PyBaMM's DFN.

    nice -n 10 python benchmarks/hybrid_protocol.py [--data data/dfn_charge.h5] [--steps 100] [--iterations 150]

1. Generates the DFN data of ``configs/data/dfn_charge.yaml`` at ``--data`` when it is missing (charging up to 2C)
   and trains the hybrid of ``configs/hybrid/dfn_charge.yaml`` on it for ``--steps`` steps, the way
   ``benchmarks/hybrid_vs_dfn.py`` does (its functions); the hybrid's held-out error against the SPMe's.
2. Builds ``FastCharge-v0`` on the trained hybrid and on its own SPMe (same mesh, same cell:
   :func:`cellax.hybrid.charging.fast_charge_env`) with the settings of ``configs/rl/fast_charge.yaml``, and
   optimises the protocol table by gradients through episodes (:mod:`cellax.rl.gradient_protocol`) on each,
   against the same tightened limits as ``cellax rl train``.
3. Plays both protocols, and CC-CV at ``--cccv`` C as a reference, closed loop from the evaluation's start
   (10 % SOC, 25 degC) on the SPMe env, the hybrid env and PyBaMM's DFN (lumped two-node thermal, same
   parameter set; ``benchmarks/pybamm_gym.py`` with ``model="DFN"``), and reports charge time to the target
   SOC, minimum anode potential (plating below 0 V vs Li/Li+), maximum temperatures and violation counts.

With ``--hybrid-run RUN`` a finished ``cellax hybrid train`` run is used instead of step 1 (e.g. the hybrid on the
coarse DFN backbone, ``configs/hybrid/dfn_hard192_dfn.yaml``); its plain physics models
(:func:`cellax.hybrid.evaluate.physics_baselines`) get environments and protocols of their own, the plain coarse DFN
under the name ``cellax_dfn`` (``dfn`` is PyBaMM's).

Writes ``benchmarks/results/hybrid_protocol.json`` (``--out``) and the picture beside it; records the load average.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cellax.rl.protocols import rollout  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PYBAMM_DFN = "dfn"


def _load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@eqx.filter_jit
def play_jax(env, params, policy, n_steps: int) -> dict:
    """The policy's recorded episode on a JAX environment; compiled once per environment for every protocol
    table (the table's logits are traced)."""
    return rollout(env, params, policy, jax.random.key(0), n_steps)


def play_pybamm(env, params, policy, n_steps: int) -> dict:
    """The same closed loop on a :class:`PybammFastCharge` (DFN): traces with the keys of ``play_jax``."""
    act = jax.jit(lambda obs: policy(obs, params))
    obs, _ = env.reset(seed=0)
    rows = []
    for _ in range(n_steps):
        obs, reward, terminated, truncated, info = env.step(np.asarray(act(obs)))
        rows.append({**info, "time_s": info["charge_time_s"], "reward": reward})
        if terminated or truncated:
            break
    keys = ("soc", "voltage_v", "surface_temp_degc", "core_temp_degc", "anode_potential_v", "c_rate", "time_s",
            "voltage_violation", "temperature_violation", "plating_violation", "invalid", "reward")
    trace = {k: np.asarray([r[k] for r in rows]) for k in keys}
    trace["active"] = np.ones(len(rows), bool)
    return trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "dfn_charge.h5")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "hybrid" / "dfn_charge.yaml")
    parser.add_argument("--rl-config", type=Path, default=ROOT / "configs" / "rl" / "fast_charge.yaml")
    parser.add_argument("--steps", type=int, default=100, help="hybrid training steps")
    parser.add_argument("--iterations", type=int, default=150, help="protocol gradient iterations per model")
    parser.add_argument("--cccv", type=float, default=1.1, help="C-rate of the reference CC-CV")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "bench_hybrid_protocol")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --run-dir")
    parser.add_argument("--hybrid-run", type=Path, default=None,
                        help="a finished `cellax hybrid train` run to use instead of training one (--data, --config, "
                             "--steps, --run-dir unused)")
    parser.add_argument("--substeps", type=int, default=None,
                        help="solver steps per control interval (default: the rl config's); a DFN backbone needs "
                             "ROS2 3 / ETD2 6 at 30 s intervals (docs/physics.md, \"Step size\")")
    parser.add_argument("--solver", choices=("etd2", "ros2"), default=None, help="default: the rl config's")
    parser.add_argument("--implicit-reaction", action="store_true",
                        help="a DFN backbone with its reaction coupling in ROS2's W-matrix (needs --solver ros2): stable "
                             "with one substep per interval, but protocol design to a few-mV plating margin needs three "
                             "(docs/hybrid.md)")
    parser.add_argument("--out", type=Path, default=RESULTS / "hybrid_protocol.json")
    args = parser.parse_args()
    hybrid_vs_dfn = _load_benchmark("hybrid_vs_dfn")
    if args.hybrid_run is None:
        hybrid_vs_dfn.refuse_existing(parser, args.run_dir, args.overwrite)
    elif not (args.hybrid_run / "config.json").exists():
        parser.exit(2, f"error: --hybrid-run {args.hybrid_run} is not a hybrid run folder (no config.json)\n")
    load_before, started = os.getloadavg(), time.perf_counter()
    wall = {}

    import jax.numpy as jnp

    from cellax.config import load_config
    from cellax.hybrid.charging import fast_charge_env
    from cellax.hybrid.evaluate import evaluate_run
    from cellax.rl.config import RLConfig
    from cellax.rl.gradient_protocol import optimise_protocol
    from cellax.rl.protocols import cccv
    from cellax.workflows.rl import build, charge_metrics, tightened

    if args.hybrid_run is None:
        t0 = time.perf_counter()
        hybrid_vs_dfn.ensure_data(args.data, ROOT / "configs" / "data" / "dfn_charge.yaml")
        wall["data_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        config, summary = hybrid_vs_dfn.train_hybrid(args.config, args.data, args.steps, args.run_dir, progress=False,
                                                     overwrite=args.overwrite)
        wall["hybrid_training_s"] = time.perf_counter() - t0
        run_dir, data = args.run_dir, str(args.data)
        training = {"training_steps": summary["steps"], "training_wall_s": summary["train_wall_s"],
                    "final_loss": summary["history"][-1]["loss"]}
    else:
        from cellax.hybrid.config import HybridConfig

        run_dir = args.hybrid_run
        config = HybridConfig.model_validate_json((run_dir / "config.json").read_text())
        last = json.loads((run_dir / "train_history.jsonl").read_text().splitlines()[-1])
        data = str(config.data)
        training = {"run": str(run_dir), "training_steps": last["step"], "final_loss": last["loss"]}
    accuracy = evaluate_run(run_dir, pictures=False)["test"]

    rl = load_config(args.rl_config, RLConfig)
    e = rl.env
    dtype = jnp.float64 if e.dtype == "float64" else jnp.float32
    substeps, solver = args.substeps or e.substeps, args.solver or e.solver
    hybrid_env, baselines, _ = fast_charge_env(run_dir, "latest", substeps=substeps, dtype=dtype,
                                               with_baselines=True, solver=solver,
                                               implicit_reaction=args.implicit_reaction)
    _, _, fixed = build(rl)  # the rl config's EnvParams with the evaluation's start (10 % SOC, 25 degC)
    train_params = tightened(fixed, rl.protocol)
    envs = {("cellax_dfn" if name == PYBAMM_DFN else name): env for name, env in baselines.items()}
    envs["hybrid"] = hybrid_env
    models = (*envs, PYBAMM_DFN)
    held_out_names = {("cellax_dfn" if name == PYBAMM_DFN else name): name for name in accuracy}
    protocols, optimisation = {}, {}
    for name, env in envs.items():
        protocol, history, seconds = optimise_protocol(env, train_params, args.iterations, rl.protocol.learning_rate,
                                                       rl.protocol.gamma)
        protocols[f"protocol_{name}"] = protocol
        optimisation[name] = {"iterations": args.iterations, "seconds": seconds,
                              "return_first_last": [history[0], history[-1]]}
        print(f"protocol on {name}: return {history[0]:.2f} -> {history[-1]:.2f} in {seconds:.0f} s", flush=True)
    policies = {**protocols, f"cccv_{args.cccv:g}C": cccv(args.cccv)}

    cell = json.loads((run_dir / "meta.json").read_text())  # the hybrid's cell (cellax.hybrid.train.run_meta)
    dfn = _load_benchmark("pybamm_gym").PybammFastCharge(
        fixed, cell["parameter_set"], model="DFN", overrides=cell["parameter_overrides"] or None, thermal=cell["thermal"])
    n_steps = int(fixed.max_steps_in_episode)
    traces, metrics, play_s = {}, {}, {}
    for policy_name, policy in policies.items():
        for model in models:
            t0 = time.perf_counter()
            trace = (play_pybamm(dfn, fixed, policy, n_steps) if model == PYBAMM_DFN else
                     jax.tree_util.tree_map(np.asarray, play_jax(envs[model], fixed, policy, n_steps)))
            play_s[f"{policy_name}_on_{model}"] = time.perf_counter() - t0
            traces[(policy_name, model)] = trace
            metrics.setdefault(policy_name, {})[model] = charge_metrics(trace, float(fixed.target_soc))

    def answer(policy_name):
        m = metrics[policy_name][PYBAMM_DFN]
        return {"plates_on_dfn": m["min_anode_potential_v"] < float(fixed.anode_potential_min_v),
                "min_anode_potential_mv": {k: 1e3 * metrics[policy_name][k]["min_anode_potential_v"] for k in models},
                "dfn_plating_steps": m["plating_violations"],
                "charge_time_min": {k: (metrics[policy_name][k]["charge_time_s"] or float("nan")) / 60 for k in models}}

    result = {
        "benchmark": "hybrid_protocol",
        "question": "does the protocol optimised on the SPMe plate on the DFN, and the one optimised on the hybrid?",
        "answers": {name: answer(name) for name in protocols},
        "start": {"initial_soc": rl.evaluation.initial_soc, "initial_temp_degc": rl.evaluation.initial_temp_degc,
                  "ambient_temp_degc": float(fixed.ambient_temp_degc), "target_soc": float(fixed.target_soc)},
        "limits": {"voltage_max_v": float(fixed.voltage_max_v), "surface_temp_max_degc": float(fixed.surface_temp_max_degc),
                   "anode_potential_min_v": float(fixed.anode_potential_min_v)},
        "trained_against": {"anode_potential_min_v": float(train_params.anode_potential_min_v),
                            "surface_temp_max_degc": float(train_params.surface_temp_max_degc),
                            "voltage_max_v": float(train_params.voltage_max_v)},
        "metrics": metrics,
        "env": {"mesh": [hybrid_env.model.particle.n, list(hybrid_env.model.x_counts)],
                "backbone": type(hybrid_env.model.backbone).__name__, "solver": solver, "substeps": substeps,
                "implicit_reaction": args.implicit_reaction, "dtype": e.dtype,
                "control_interval_s": float(fixed.control_interval_s), "dfn": "PyBaMM DFN, lumped two-node thermal, "
                "IDAKLU stepped per control interval (benchmarks/pybamm_gym.py)"},
        "hybrid": {"config": json.loads(config.model_dump_json()), "data": data, **training,
                   "held_out_test": {m: accuracy[name]["all"] for m, name in held_out_names.items()}},
        "protocol_optimisation": optimisation,
        "wall_s": {**wall, "play": play_s, "total": time.perf_counter() - started},
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    _plot(traces, fixed, list(protocols), args.out.with_suffix(".png"))
    print(json.dumps(result["answers"], indent=1))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def _plot(traces: dict, params, protocol_names, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("c_rate", "current [C]"), ("voltage_v", "voltage [V]"), ("surface_temp_degc", "surface temp [°C]"),
            ("soc", "SOC"), ("anode_potential_v", "anode potential [V]")]
    styles = {"spme": ":", "cellax_dfn": "-.", "hybrid": "--", PYBAMM_DFN: "-"}
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 11), sharex=True)
    for colour, policy_name in zip(("C0", "C3", "C2"), protocol_names):
        for model, style in styles.items():
            if (policy_name, model) not in traces:
                continue
            t = traces[(policy_name, model)]
            active = t["active"]
            for ax, (key, label) in zip(axes, rows):
                ax.plot(t["time_s"][active] / 60, t[key][active], ls=style, color=colour, lw=1.2,
                        label=f"{policy_name} on {model}")
                ax.set_ylabel(label, fontsize=8)
    axes[1].axhline(params.voltage_max_v, color="k", lw=0.6)
    axes[2].axhline(params.surface_temp_max_degc, color="k", lw=0.6)
    axes[3].axhline(params.target_soc, color="k", lw=0.6)
    axes[4].axhline(params.anode_potential_min_v, color="k", lw=0.6)
    axes[4].set_ylim(-0.03, 0.1)
    axes[0].legend(fontsize=7, ncol=2)
    axes[-1].set_xlabel("time [min]")
    fig.suptitle("gradient-optimised protocols played on the SPMe (dotted), cellax's DFN (dash-dot), the hybrid (dashed), "
                 "PyBaMM's DFN (solid)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
