"""``cellax discover``: data → discovered equations → ``report.json``, ``pareto.png``, ``held_out.png``.

The report gives every equation as readable text with ± one standard deviation (the ensemble's
spread, or Gauss–Newton for refined circuits), inclusion probabilities, the Pareto front (terms,
error, criterion), the truth and errors where the source is a simulation, and timings.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from cellax.discovery import library as lib
from cellax.discovery.cases import circuit, particle, thermal
from cellax.discovery.checks import check_finite
from cellax.discovery.config import CASE_SIGNALS, DiscoverConfig
from cellax.discovery.noise import add_noise
from cellax.discovery.refine import simulate_library
from cellax.discovery.sindy import Equation, SindyConfig, discover
from cellax.signals import KELVIN

CANONICAL = {"I": "current_a", "V": "voltage_v", "U": "ocv_v", "T": "core_temp_degc", "Ts": "surface_temp_degc",
             "Ta": "ambient_temp_degc"}
EXTRA_TERMS = {
    "sinh": lambda: lib.sinh("I", 5.0),
    "arcsinh": lambda: lib.arcsinh("I", 5.0),
    "arrhenius": lambda: lib.arrhenius("T", 3e4),
    "inverse_T": lambda: lib.inverse("T"),
}


def sindy_config(config: DiscoverConfig) -> SindyConfig:
    s = config.solver
    return SindyConfig(form=s.form, method=s.method, criterion=s.criterion, n_test=s.n_test, half_width=s.half_width,
                       min_z=s.min_z, n_members=s.n_members, max_terms=s.max_terms)


def equation_report(eq: Equation) -> dict:
    std = eq.uncertainty()
    keep = eq.support
    out = {
        "text": str(eq),
        "terms": {n: {"coefficient": float(c), "std": float(s)}
                  for n, c, s, k in zip(eq.names, eq.coefficients, std, keep) if k},
        "pareto": [{"n_terms": int(k), "mse": float(m), "r2": float(r),
                    "terms": [n for n, s in zip(eq.names, sup) if s]}
                   for k, m, r, sup in zip(eq.front.n_terms, eq.front.mse, eq.front.r2, eq.front.supports)],
        "chosen": int(eq.front.chosen),
    }
    if eq.ensemble is not None:
        out["inclusion"] = {n: float(p) for n, p in zip(eq.names, eq.ensemble.inclusion)}
    return out


def thermal_signals(config: DiscoverConfig, held_out: bool):
    src = config.source
    if src.kind == "simulation":
        return thermal.simulate_thermal(src.n_samples, seed=src.held_out_seed if held_out else src.seed)
    from cellax.data.store import open_dataset

    with open_dataset(src.path) as ds:
        row = src.held_out_profile if held_out else src.profile
        if row >= len(ds):
            raise ValueError(f"profile {row} is not in {src.path} ({len(ds)} profiles)")
        raw = ds.profile(row, ["time_s", *CANONICAL.values()])
    signals = {k: np.asarray(raw[v], np.float64) for k, v in CANONICAL.items()}
    for k in ("T", "Ts", "Ta"):
        signals[k] = signals[k] + KELVIN
    signals["time_s"] = np.asarray(raw["time_s"], np.float64)
    return signals, None


def run_thermal(config: DiscoverConfig, out_dir: Path) -> dict:
    signals, truth = thermal_signals(config, held_out=False)
    check_finite(signals)
    noisy = add_noise(signals, config.signals or CASE_SIGNALS["thermal"], config.noise, config.noise_seed)
    library = thermal.thermal_library() + lib.Library([EXTRA_TERMS[k]() for k in config.library])
    start = time.perf_counter()
    equations = discover(noisy, thermal.STATES, library, noisy["time_s"], sindy_config(config))
    seconds = time.perf_counter() - start
    report = {"equations": [equation_report(e) for e in equations], "discover_seconds": seconds}
    if truth is not None:
        report["truth"] = {f"{t}:{n}": v for (t, n), v in truth.items()}
        report["score"] = thermal.score(equations, truth)
    held, _ = thermal_signals(config, held_out=True)
    xi = np.stack([e.coefficients for e in equations], axis=1)
    inputs = {k: held[k] for k in ("I", "V", "U", "Ta")}
    predicted = np.asarray(simulate_library(library, thermal.STATES, jnp.asarray(xi),
                                            jnp.array([held["T"][0], held["Ts"][0]]), held["time_s"], inputs))
    rmse = {s: float(np.sqrt(np.mean((predicted[:, m] - held[s]) ** 2))) for m, s in enumerate(thermal.STATES)}
    report["held_out_rmse_k"] = rmse
    curves = {s: (held["time_s"], held[s] - KELVIN, predicted[:, m] - KELVIN) for m, s in enumerate(thermal.STATES)}
    return report, equations, curves, "temperature [°C]"


def run_circuit(config: DiscoverConfig, out_dir: Path) -> dict:
    src = config.source
    signals = circuit.simulate_circuit(src.n_samples, seed=src.seed)
    noisy = add_noise(signals, config.signals or CASE_SIGNALS["circuit"], config.noise, config.noise_seed)
    start = time.perf_counter()
    result = circuit.discover_circuit(noisy)
    seconds = time.perf_counter() - start
    ref = result["refined"]
    text = f"V = U(soc) - ({ref['r0_ohm']:.5g} ± {ref['r0_std_ohm']:.2g}) Ω·I" + "".join(
        f" - v{j + 1}, dv{j + 1}/dt = -v{j + 1}/({t:.4g} ± {ts:.2g} s) + ({r:.4g} ± {rs:.2g} Ω)/τ·I"
        for j, (r, rs, t, ts) in enumerate(zip(ref["r_ohm"], ref["r_std_ohm"], ref["tau_s"], ref["tau_std_s"])))
    sparse = {**equation_report(result["equation"]), "text": text,
              "sparse_text": str(result["equation"]).replace("dU-V/dt", "U - V")}
    report = {"equations": [sparse], "circuit": ref,
              "pair_front": result["front"], "n_pairs": result["n_pairs"], "score": circuit.score(result),
              "truth": circuit.TRUTH, "discover_seconds": seconds}
    held = circuit.simulate_circuit(src.n_samples, seed=src.held_out_seed)
    predicted = np.asarray(circuit.circuit_voltage(ref["r0_ohm"], jnp.asarray(ref["r_ohm"]), jnp.asarray(ref["tau_s"]),
                                                   jnp.asarray(held["I"]), jnp.asarray(held["U"]), 1.0))
    report["held_out_rmse_mv"] = float(1e3 * np.sqrt(np.mean((predicted - held["V"]) ** 2)))
    return report, [result["equation"]], {"V": (held["time_s"], held["V"], predicted)}, "voltage [V]"


def run_particle(config: DiscoverConfig, out_dir: Path) -> dict:
    src = config.source
    u, nodes, volumes, radius, diffusivity = particle.simulate_particle(n_samples=src.n_samples, seed=src.seed)
    noisy = add_noise({"c": u}, ["c"], config.noise, config.noise_seed)["c"]
    start = time.perf_counter()
    result = particle.discover_diffusion(noisy, nodes, volumes, radius, 10.0, sindy_config(config))
    seconds = time.perf_counter() - start
    truth = float(diffusivity(jnp.asarray(0.5)))
    report = {"equations": [equation_report(result["equation"])], "spherical": result["spherical"],
              "diffusivity_m2_s": result["diffusivity_m2_s"],
              "diffusivity_std_m2_s": result.get("diffusivity_std_m2_s"),
              "truth_diffusivity_m2_s": truth, "discover_seconds": seconds}
    if result["diffusivity_m2_s"]:
        report["diffusivity_error_pct"] = 100 * abs(result["diffusivity_m2_s"] / truth - 1)
    held, *_ = particle.simulate_particle(n_samples=src.n_samples, seed=src.held_out_seed)
    t = np.arange(len(held)) * 10.0
    curves = {"surface c/c_max": (t, 1.5 * held[:, -1] - 0.5 * held[:, -2], None)}
    if result["diffusivity_m2_s"]:
        found = result["diffusivity_m2_s"]
        model, *_ = particle.simulate_particle(lambda x: found * jnp.ones_like(x), n_samples=src.n_samples,
                                               seed=src.held_out_seed)
        curves["surface c/c_max"] = (t, 1.5 * held[:, -1] - 0.5 * held[:, -2], 1.5 * model[:, -1] - 0.5 * model[:, -2])
        report["held_out_rmse_stoichiometry"] = float(np.sqrt(np.mean((model - held) ** 2)))
    return report, [result["equation"]], curves, "stoichiometry"


RUNNERS = {"thermal": run_thermal, "circuit": run_circuit, "particle": run_particle}


def run(config: DiscoverConfig, out_dir: Path | None = None) -> dict:
    """Run the configured discovery and write the report and pictures into ``out_dir``."""
    out_dir = Path(out_dir or config.out)
    report, equations, curves, ylabel = RUNNERS[config.source.case](config, out_dir)
    report["config"] = json.loads(config.model_dump_json())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=_plain) + "\n")
    plot(equations, curves, ylabel, out_dir, "\n".join(e["text"] for e in report["equations"]))
    return report


def _plain(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"not JSON: {type(value).__name__}")


def plot(equations, curves, ylabel, out_dir: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(equations), figsize=(5 * len(equations), 4), squeeze=False)
    for ax, eq in zip(axes[0], equations):
        ax.semilogy(eq.front.n_terms, eq.front.mse, "o-", color="0.4")
        ax.semilogy(eq.front.n_terms[eq.front.chosen], eq.front.mse[eq.front.chosen], "r*", ms=14, label="chosen")
        ax.set_xlabel("number of terms")
        ax.set_ylabel("mean-squared error")
        ax.set_title(f"d{eq.target}/dt" if eq.target != "U-V" else "U - V", fontsize=9)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "pareto.png", dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, (name, (t, measured, predicted)) in zip(axes[0], curves.items()):
        ax.plot(np.asarray(t) / 60, measured, color="0.5", lw=1.5, label="held-out data")
        if predicted is not None:
            ax.plot(np.asarray(t) / 60, predicted, "--", color="C3", lw=1.2, label="discovered model")
        ax.set_xlabel("time [min]")
        ax.set_ylabel(f"{name} {ylabel}")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=6)
    fig.tight_layout()
    fig.savefig(out_dir / "held_out.png", dpi=110)
    plt.close(fig)
