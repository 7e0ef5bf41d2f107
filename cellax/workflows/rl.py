"""``cellax rl train`` and ``cellax rl evaluate``: a PPO agent and a gradient-optimised protocol against CC-CV.

A run folder holds ``config.json``, ``ppo/`` (learning curve, orbax checkpoint of
the networks, one per seed) and ``protocol.npz`` (the optimised table: logits and
knots, plain arrays). Evaluation charges the same cell from the same initial
conditions with every CC-CV C-rate of the config, the PPO policies (mean action)
and the protocol, and reports charge time to the target SOC, peak temperatures,
minimum anode potential and violation counts (``eval/report.json``), with a PNG
of current, voltage, temperatures, SOC and anode potential over the charge.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from cellax.checkpoint import CheckpointError
from cellax.rl.config import ProtocolConfig, RLConfig, RLError
from cellax.rl.fast_charge import FastCharge
from cellax.rl.gradient_protocol import ProtocolTable, optimise_protocol
from cellax.rl.ppo import make_train
from cellax.rl.ppo import train as train_ppo
from cellax.rl.protocols import cccv, rollout


def build(config: RLConfig):
    """``(env, training params, evaluation params)``: evaluation fixes the initial conditions."""
    e = config.env
    env = FastCharge(e.parameter_set, mesh=(e.n_shells, e.x_counts), substeps=e.substeps, solver=e.solver,
                     dtype=jnp.float64 if e.dtype == "float64" else jnp.float32)
    params = env.default_params.replace(**e.params.changes())
    v = config.evaluation
    fixed = params.replace(initial_soc_min=v.initial_soc, initial_soc_max=v.initial_soc,
                           initial_temp_min_degc=v.initial_temp_degc, initial_temp_max_degc=v.initial_temp_degc)
    return env, params, fixed


def train_run(config: RLConfig, progress: bool = True, log=print) -> Path:
    """Train PPO (all seeds at once) and optimise the protocol; returns the run folder.

    Refuses an existing run folder (a run is never mixed with another); a run that fails is removed whole.
    """
    run_dir = config.run_dir
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise RLError(f"{run_dir} exists; choose another name or --out (an rl run is never resumed or mixed)")
    try:
        env, params, fixed = build(config)
    except (ValueError, TypeError) as err:
        raise RLError(f"env: {err}") from None
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _train_run(config, run_dir, env, params, fixed, progress, log)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _train_run(config: RLConfig, run_dir: Path, env, params, fixed, progress: bool, log) -> Path:
    from gymnax.wrappers.purerl import LogWrapper

    (run_dir / "config.json").write_text(config.model_dump_json(indent=2))
    ppo_config = config.ppo
    log(f"PPO: {ppo_config.num_seeds} seed(s) x {ppo_config.num_envs} environments x "
        f"{ppo_config.total_updates * ppo_config.num_steps} steps")
    started = time.perf_counter()
    _, curve = train_ppo(ppo_config, LogWrapper(env), params, out=run_dir / "ppo", progress=progress)
    ppo_seconds = time.perf_counter() - started
    log(f"PPO done in {ppo_seconds:.0f} s; optimising the protocol by gradients through the cell model")
    p = config.protocol
    protocol, history, protocol_seconds = optimise_protocol(env, tightened(fixed, p), p.iterations, p.learning_rate,
                                                            p.gamma, log=log)
    np.savez(run_dir / "protocol.npz", logits=np.asarray(protocol.logits), soc_knots=np.asarray(protocol.soc_knots),
             temp_knots_degc=np.asarray(protocol.temp_knots_degc))
    (run_dir / "timing.json").write_text(json.dumps({
        "ppo_seconds": ppo_seconds, "ppo_env_steps": curve[-1]["env_steps"] * ppo_config.num_seeds,
        "protocol_seconds": protocol_seconds, "protocol_iterations": len(history),
        "protocol_return_first_last": [history[0], history[-1]],
    }, indent=2))
    return run_dir


def tightened(fixed, p: ProtocolConfig):
    """The ``EnvParams`` the protocol trains against: limits tightened by ``p``'s margins, penalties scaled."""
    return fixed.replace(
        anode_potential_min_v=fixed.anode_potential_min_v + p.anode_margin_v,
        surface_temp_max_degc=fixed.surface_temp_max_degc - p.temperature_margin_k,
        voltage_max_v=fixed.voltage_max_v - p.voltage_margin_v,
        plating_penalty=fixed.plating_penalty * p.penalty_scale,
        temperature_penalty=fixed.temperature_penalty * p.penalty_scale,
        voltage_penalty=fixed.voltage_penalty * p.penalty_scale,
    )


def load_ppo_policies(config: RLConfig, env, params):
    """The trained actor-critics (one per seed) from the run's orbax checkpoint."""
    from gymnax.wrappers.purerl import LogWrapper

    from cellax.checkpoint import TreeCheckpoint

    ppo_config = config.ppo
    init, _, static = make_train(ppo_config, LogWrapper(env), params)
    keys = jax.random.split(jax.random.key(0), ppo_config.num_seeds)
    abstract = jax.eval_shape(lambda k: jax.vmap(init)(k)[0], keys)
    checkpoint = TreeCheckpoint(config.run_dir / "ppo" / "checkpoints")
    try:
        restored = checkpoint.restore(abstract)
        if restored is None:
            raise CheckpointError(f"{config.run_dir / 'ppo' / 'checkpoints'} holds no finished checkpoint")
        nets, _ = restored
    finally:
        checkpoint.close()
    policies = {}
    for s in range(ppo_config.num_seeds):
        net = eqx.combine(jax.tree_util.tree_map(lambda x: x[s], nets), static)
        policies[f"ppo_seed{s}"] = lambda obs, p, net=net: jnp.clip(net(obs)[0], 0.0, p.max_c_rate)
    return policies


def load_protocol(run_dir: Path) -> ProtocolTable:
    data = np.load(run_dir / "protocol.npz", allow_pickle=False)
    table = ProtocolTable(tuple(data["soc_knots"]), tuple(data["temp_knots_degc"]))
    return eqx.tree_at(lambda t: t.logits, table, jnp.asarray(data["logits"]))


def charge_metrics(trace: dict, target_soc: float) -> dict:
    """Charge time to the target and the limits' extremes over the recorded (active) part of a rollout."""
    active = trace["active"]
    soc = trace["soc"][active]
    reached = np.flatnonzero(soc >= target_soc)
    return {
        "charge_time_s": float(trace["time_s"][active][reached[0]]) if reached.size else None,
        "final_soc": float(soc[-1]),
        "max_surface_temp_degc": float(trace["surface_temp_degc"][active].max()),
        "max_core_temp_degc": float(trace["core_temp_degc"][active].max()),
        "min_anode_potential_v": float(trace["anode_potential_v"][active].min()),
        "max_voltage_v": float(trace["voltage_v"][active].max()),
        "voltage_violations": int(np.sum(trace["voltage_violation"][active])),
        "temperature_violations": int(np.sum(trace["temperature_violation"][active])),
        "plating_violations": int(np.sum(trace["plating_violation"][active])),
        "invalid": bool(np.any(trace["invalid"][active])),
    }


def _trace(env, params, policy, n_steps):
    traces = jax.jit(lambda k: rollout(env, params, policy, k, n_steps))(jax.random.key(0))
    return {k: np.asarray(v) for k, v in traces.items()}


def _cccv_traces(env, params, c_rates, n_steps) -> dict[str, dict]:
    """CC-CV at every C-rate in one compiled, ``vmap``-ed rollout (the rate is traced, not baked in)."""
    many = jax.jit(jax.vmap(lambda c: rollout(env, params, cccv(c), jax.random.key(0), n_steps)))(
        jnp.asarray(c_rates, jnp.float32))
    return {f"cccv_{c:g}C": {k: np.asarray(v[i]) for k, v in many.items()} for i, c in enumerate(c_rates)}


def safe(metrics: dict) -> bool:
    """Reached the target with no plating, temperature or voltage violation and no invalid step."""
    return (metrics["charge_time_s"] is not None and not metrics["invalid"] and metrics["plating_violations"] == 0
            and metrics["temperature_violations"] == 0 and metrics["voltage_violations"] == 0)


def evaluate_run(run_dir: Path, plot: bool = True) -> dict:
    """Compare CC-CV (every configured C-rate), PPO and the protocol from the same initial conditions."""
    run_dir = Path(run_dir)
    config = RLConfig.model_validate_json((run_dir / "config.json").read_text())
    env, params, fixed = build(config)
    n_steps = int(fixed.max_steps_in_episode)
    policies = load_ppo_policies(config, env, params)
    policies["gradient_protocol"] = load_protocol(run_dir)
    traces = _cccv_traces(env, fixed, config.evaluation.cccv_c_rates, n_steps)
    traces.update({name: _trace(env, fixed, policy, n_steps) for name, policy in policies.items()})
    metrics = {name: charge_metrics(t, float(fixed.target_soc)) for name, t in traces.items()}
    cccv_safe = [n for n in metrics if n.startswith("cccv") and safe(metrics[n])]
    best_cccv = min(cccv_safe, key=lambda n: metrics[n]["charge_time_s"]) if cccv_safe else None
    ppo_names = [n for n in metrics if n.startswith("ppo")]
    ppo_safe = [n for n in ppo_names if safe(metrics[n])]
    best_ppo = min(ppo_safe, key=lambda n: metrics[n]["charge_time_s"]) if ppo_safe else (ppo_names[0] if ppo_names else None)
    report = {
        "run": str(run_dir), "target_soc": float(fixed.target_soc),
        "initial_soc": config.evaluation.initial_soc, "initial_temp_degc": config.evaluation.initial_temp_degc,
        "limits": {"voltage_max_v": float(fixed.voltage_max_v), "surface_temp_max_degc": float(fixed.surface_temp_max_degc),
                   "anode_potential_min_v": float(fixed.anode_potential_min_v)},
        "metrics": metrics, "best_safe_cccv": best_cccv, "best_ppo": best_ppo,
    }
    if best_cccv:
        base = metrics[best_cccv]["charge_time_s"]
        for name in (best_ppo, "gradient_protocol"):
            if name and metrics[name]["charge_time_s"]:
                report[f"{name}_faster_than_best_cccv_pct"] = 100 * (1 - metrics[name]["charge_time_s"] / base)
    out = run_dir / "eval"
    out.mkdir(exist_ok=True)
    if plot:
        shown = [n for n in (best_cccv, best_ppo, "gradient_protocol") if n]
        report["plot"] = str(_plot({n: traces[n] for n in shown}, fixed, out / "charging.png"))
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_report(report: dict) -> str:
    lines = [f"charge {report['initial_soc']:.0%} -> {report['target_soc']:.0%} SOC at {report['initial_temp_degc']} degC:",
             f"  {'policy':20s} {'time [min]':>10s} {'Tmax [C]':>9s} {'min anode [mV]':>14s} {'violations V/T/plating':>23s}"]
    for name, m in report["metrics"].items():
        minutes = f"{m['charge_time_s'] / 60:.1f}" if m["charge_time_s"] else "never"
        lines.append(f"  {name:20s} {minutes:>10s} {m['max_surface_temp_degc']:9.1f} {1e3 * m['min_anode_potential_v']:14.1f} "
                     f"{m['voltage_violations']:>9d}/{m['temperature_violations']}/{m['plating_violations']}")
    lines.append(f"best CC-CV within all limits: {report['best_safe_cccv']}")
    for key, value in report.items():
        if key.endswith("_faster_than_best_cccv_pct"):
            lines.append(f"{key.removesuffix('_faster_than_best_cccv_pct')}: {value:+.1f} % faster than it")
    return "\n".join(lines)


def _plot(traces: dict, params, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("c_rate", "current [C]"), ("voltage_v", "voltage [V]"), ("surface_temp_degc", "surface temp [°C]"),
            ("soc", "SOC"), ("anode_potential_v", "anode potential [V]")]
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 10), sharex=True)
    for name, t in traces.items():
        active = t["active"]
        minutes = t["time_s"][active] / 60
        for ax, (key, label) in zip(axes, rows):
            ax.plot(minutes, t[key][active], label=name, lw=1.3)
            ax.set_ylabel(label, fontsize=8)
    axes[1].axhline(params.voltage_max_v, color="k", lw=0.6, ls="--")
    axes[2].axhline(params.surface_temp_max_degc, color="k", lw=0.6, ls="--")
    axes[3].axhline(params.target_soc, color="k", lw=0.6, ls="--")
    axes[4].axhline(params.anode_potential_min_v, color="k", lw=0.6, ls="--")
    axes[0].legend(fontsize=8)
    axes[-1].set_xlabel("time [min]")
    fig.suptitle("fast charging: best safe CC-CV, PPO and the gradient-optimised protocol", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
