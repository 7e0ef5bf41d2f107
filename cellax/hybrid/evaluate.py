"""Held-out accuracy of a cell model against DFN profiles, per C-rate and ambient band.

Each model runs through :func:`cellax.physics.simulate.simulate` (ROS2, events on), vmapped over the
profiles, from the DFN's initial SOC at its ambient and heat-transfer coefficient. A sample counts
where the DFN has data and the model has not stopped (``k <= stop_index``); the report gives RMSE
(and max) over those samples, in mV and K.
"""

from __future__ import annotations

import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from cellax.hybrid.data import TARGETS, Profiles
from cellax.signals import ERROR_UNITS, KELVIN

UNITS = {name: ERROR_UNITS[name][0] for name in ("voltage_v", "anode_potential_v", "core_temp_degc", "surface_temp_degc")}
"""Scale of each compared signal to its error unit (mV, K)."""
SHORT = {"voltage_v": "voltage_mv", "anode_potential_v": "anode_potential_mv", "core_temp_degc": "core_temp_k",
         "surface_temp_degc": "surface_temp_k"}
C_RATE_BANDS = {"<0.5C": (0.0, 0.5), "0.5-1C": (0.5, 1.0), ">=1C": (1.0, np.inf)}
AMBIENT_BANDS = {"0-10 degC": (0.0, 10.0), "10-35 degC": (10.0, 35.0), "35-45 degC": (35.0, 45.01)}


@eqx.filter_jit
def simulate_profiles(model, params, dt_s: float, current, ambient_k, h, soc):
    """``(signals, stop_index)`` of ``model`` over a batch of profiles."""
    from cellax.physics.simulate import simulate

    def one(c, a, hh, s):
        p = params.with_values({"heat_transfer_coeff_w_m2k": hh})
        solution = simulate(model, p, c, dt_s, s, a)
        return {k: solution.signals[k] for k in TARGETS}, solution.stop_index

    return jax.vmap(one)(current, ambient_k, h, soc)


def run_model(model, params, profiles: Profiles, batch: int = 16) -> tuple[dict, np.ndarray]:
    """Signals (numpy) of ``model`` on every profile, in batches of ``batch``."""
    signals, stops = [], []
    for lo in range(0, len(profiles), batch):
        part = profiles.take(np.arange(lo, min(lo + batch, len(profiles))))
        out, stop = simulate_profiles(
            model, params, part.dt_s, jnp.asarray(part.current_a), jnp.asarray(part.ambient_temp_degc + KELVIN),
            jnp.asarray(part.heat_transfer_coeff), jnp.asarray(part.initial_soc),
        )
        signals.append(jax.device_get(out))
        stops.append(np.asarray(stop))
    return {k: np.concatenate([s[k] for s in signals]) for k in TARGETS}, np.concatenate(stops)


def errors(signals: dict, stop: np.ndarray, profiles: Profiles) -> dict:
    """Per-profile sums of squared errors, max errors and sample counts (display units) of the signals in
    ``signals`` (a model without anode potential leaves it out)."""
    valid = profiles.mask & (np.arange(profiles.mask.shape[1])[None, :] <= stop[:, None])
    out = {"n": valid.sum(1), "dfn_samples": profiles.mask.sum(1)}
    for name in (k for k in TARGETS if k in signals):
        e = np.where(valid, (signals[name] - profiles.targets[name]) * UNITS[name], 0.0)
        out[f"sse_{name}"] = (e**2).sum(1)
        out[f"max_{name}"] = np.abs(e).max(1)
    return out


def summarise(err: dict, rows: np.ndarray) -> dict:
    """RMSE and max of each signal over the samples of ``rows``."""
    if not len(rows):
        return {"profiles": 0}
    n = max(int(err["n"][rows].sum()), 1)
    out = {"profiles": int(len(rows)), "coverage": float(err["n"][rows].sum() / max(err["dfn_samples"][rows].sum(), 1))}
    for name in (k for k in TARGETS if f"sse_{k}" in err):
        out[f"rmse_{SHORT[name]}"] = float(np.sqrt(err[f"sse_{name}"][rows].sum() / n))
        out[f"max_{SHORT[name]}"] = float(err[f"max_{name}"][rows].max())
    return out


def band_table(err: dict, profiles: Profiles, capacity_ah: float, rows: np.ndarray) -> dict:
    """Overall, per C-rate band (RMS current) and per ambient band."""
    c_rate = profiles.rms_current_a / capacity_ah
    table = {"all": summarise(err, rows)}
    for label, (lo, hi) in C_RATE_BANDS.items():
        table[f"C-rate {label}"] = summarise(err, rows[(c_rate[rows] >= lo) & (c_rate[rows] < hi)])
    for label, (lo, hi) in AMBIENT_BANDS.items():
        amb = profiles.ambient_temp_degc[rows]
        table[f"ambient {label}"] = summarise(err, rows[(amb >= lo) & (amb < hi)])
    return table


def plot_report(run_dir: Path, profiles: Profiles, results: dict, signals: dict, rows: np.ndarray, capacity_ah: float):
    """``error_vs_band.png`` (voltage RMSE per profile vs C-rate and ambient) and ``overlay.png`` (hardest profile)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c_rate = profiles.rms_current_a / capacity_ah
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, err in results.items():
        rmse = np.sqrt(err["sse_voltage_v"][rows] / np.maximum(err["n"][rows], 1))
        axes[0].scatter(c_rate[rows], rmse, label=name)
        axes[1].scatter(profiles.ambient_temp_degc[rows], rmse, label=name)
    axes[0].set(xlabel="RMS C-rate", ylabel="voltage RMSE vs DFN (mV)", yscale="log")
    axes[1].set(xlabel="ambient (degC)", yscale="log")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(run_dir / "error_vs_band.png", dpi=100)
    plt.close(fig)
    first = next(iter(results))
    hard = rows[np.argmax(results[first]["sse_voltage_v"][rows] / np.maximum(results[first]["n"][rows], 1))]
    n = int(profiles.mask[hard].sum())
    t = np.arange(n) * profiles.dt_s / 60
    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for ax, name in zip(axes, ("voltage_v", "anode_potential_v")):
        ax.plot(t, profiles.targets[name][hard, :n], "k", lw=2, label="DFN")
        for model_name, sig in signals.items():
            if name in sig:
                ax.plot(t, sig[name][hard, :n], lw=1, label=model_name)
        ax.set_ylabel(name)
    axes[0].legend()
    axes[1].set_xlabel(f"time (min), profile {int(profiles.profile_id[hard])}")
    fig.tight_layout()
    fig.savefig(run_dir / "overlay.png", dpi=100)
    plt.close(fig)


def held_out(config) -> tuple[Profiles, dict[str, np.ndarray], int]:
    """``(profiles, rows, n_train)``: the held-out profiles of a :class:`~cellax.hybrid.config.HybridConfig`'s split
    (test, then holdout), the rows of each set among them, and the number of training profiles."""
    from cellax.hybrid.data import config_split, load_profiles

    profiles, _ = load_profiles(config.data)
    rows = config_split(config, profiles)
    data = profiles.take(np.concatenate([rows["test"], rows["holdout"]]))
    local = {"test": np.arange(len(rows["test"])), "holdout": len(rows["test"]) + np.arange(len(rows["holdout"]))}
    return data, local, int(rows["train"].size)


def tables(results: dict, profiles: Profiles, capacity_ah: float, rows: dict[str, np.ndarray]) -> dict:
    """``{set: {model: band_table}}`` of each model's :func:`errors` on each set of ``rows``."""
    return {set_name: {name: band_table(err, profiles, capacity_ah, set_rows) for name, err in results.items()}
            for set_name, set_rows in rows.items()}


def physics_baselines(config, hybrid) -> dict:
    """``{name: model}`` of the plain physics models a hybrid is compared with: the SPMe (the backbone itself, or
    on its default mesh), and the backbone when it is another model (``"dfn"``)."""
    from cellax.hybrid.config import BACKBONE_MESH
    from cellax.physics.spme import SPMe

    if config.model.backbone == "SPMe":
        return {"spme": hybrid.backbone}
    return {"spme": SPMe(config.model.n_shells, BACKBONE_MESH["SPMe"]), config.model.backbone.lower(): hybrid.backbone}


def evaluate_run(run_dir: str | Path, pictures: bool = True) -> dict:
    """The plain physics models (:func:`physics_baselines`) and the run's hybrid on its held-out profiles:
    ``report.json`` (+ pictures) in ``run_dir``."""
    from cellax.hybrid.train import load_run

    run_dir = Path(run_dir)
    config, hybrid, params, _ = load_run(run_dir)
    data, local, n_train = held_out(config)
    capacity = float(params.scalars["nominal_capacity_ah"])
    results, signals = {}, {}
    for name, model in (*physics_baselines(config, hybrid).items(), ("hybrid", hybrid)):
        sig, stop = run_model(model, params, data)
        signals[name], results[name] = sig, errors(sig, stop, data)
    report = {"run": str(run_dir), "n_train_profiles": n_train, **tables(results, data, capacity, local)}
    learned = hybrid.learned(params)
    if learned:
        report["learned"] = learned
    (run_dir / "report.json").write_text(json.dumps(report, indent=1))
    if pictures:
        plot_report(run_dir, data, results, signals, np.arange(len(data)), capacity)
    return report


def format_report(report: dict) -> str:
    """Overall voltage / anode-potential / temperature RMSE of each model on each held-out set."""
    lines = [f"{'set':8} {'model':7} {'V mV':>7} {'Vmax mV':>8} {'Ua mV':>7} {'Tcore K':>8} {'Tsurf K':>8} profiles"]
    for split_name in ("test", "holdout"):
        for name, table in report[split_name].items():
            row = table["all"]
            if not row["profiles"]:
                continue
            lines.append(
                f"{split_name:8} {name:7} {row['rmse_voltage_mv']:7.2f} {row['max_voltage_mv']:8.2f} "
                f"{row['rmse_anode_potential_mv']:7.2f} {row['rmse_core_temp_k']:8.3f} {row['rmse_surface_temp_k']:8.3f} "
                f"{row['profiles']}"
            )
    return "\n".join(lines)
