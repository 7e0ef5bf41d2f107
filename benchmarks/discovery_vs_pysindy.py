"""Equation discovery: cellax.discovery against PySINDy on the same data, in one run.

Cases a–c (thermal two-node ODEs from an SPM simulation, particle diffusion on the SPM's mesh,
equivalent circuit) at 0, 1 and 5 % Gaussian noise (σ = level × each signal's standard deviation).
For each: cellax's full pipeline (weak form, Pareto + BIC, pruning, ensemble; refinement for the
circuit) with support recovered and coefficient errors; PySINDy's STLSQ on the *same* regression
system at cellax's chosen threshold, and PySINDy's own strong-form pipeline (Savitzky–Golay
derivatives, ``SmoothedFiniteDifference``) for the thermal case; ensemble fits (200 bagged STLSQ
fits) timed on both: cellax warm (compile reported apart), PySINDy ``EnsembleOptimizer``.
Case d: the discovered SPMe correction (≤ 5 terms) beside the plain fitted SPMe on the
same held-out DFN profiles. Writes ``benchmarks/results/discovery.json`` with
``os.getloadavg()`` (the machine is shared).

    PYTHONPATH=. python benchmarks/discovery_vs_pysindy.py [--quick] [--cases d] [--dfn-cache PATH.npz] [--fit-cache PATH.json]

``--cases`` runs some cases and keeps the others from the existing JSON; case d's 12 DFN profiles
can be kept in ``--dfn-cache`` between runs, and the fitted SPMe's values in ``--fit-cache`` (its compile
dominates the case's wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cellax.discovery.cases import circuit, correction, particle, thermal
from cellax.discovery.checks import DiscoveryError
from cellax.discovery.ensemble import ensemble_coefficients, summarize
from cellax.discovery.noise import add_noise
from cellax.discovery.sindy import SindyConfig, chosen_threshold, discover, regression_system

LEVELS = (0.0, 0.01, 0.05)
N_MEMBERS = 200
OUT = Path(__file__).parent / "results" / "discovery.json"
CASES = ("a", "b", "c", "d")
D_TRAIN, D_HELD_OUT = tuple(range(14)), (14, 15, 16, 17, 18, 19, 20, 21)


def pysindy_stlsq(g, y, threshold):
    import pysindy as ps

    opt = ps.STLSQ(threshold=threshold * float(np.linalg.norm(y)), alpha=1e-12, normalize_columns=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.fit(np.asarray(g), np.asarray(y))
    return np.asarray(opt.coef_).reshape(-1)


def pysindy_ensemble(g, y, threshold, n_models=N_MEMBERS):
    import pysindy as ps

    opt = ps.EnsembleOptimizer(
        ps.STLSQ(threshold=threshold * float(np.linalg.norm(y)), alpha=1e-12, normalize_columns=True),
        bagging=True, n_models=n_models)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.fit(np.asarray(g), np.asarray(y))
    seconds = time.perf_counter() - start
    coefs = np.stack([np.asarray(c).reshape(-1) for c in opt.coef_list])
    return coefs, seconds


def cellax_ensemble(g, y, threshold, repeats=3):
    key = jax.random.PRNGKey(0)
    args = (jnp.asarray(g), jnp.asarray(y), threshold, key, N_MEMBERS)
    start = time.perf_counter()
    ensemble_coefficients(*args).block_until_ready()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = ensemble_coefficients(*args).block_until_ready()
        times.append(time.perf_counter() - start)
    warm = float(np.median(times))
    return np.asarray(out), warm, max(first - warm, 0.0)


def compare_ensembles(g, y, threshold, names, truth: dict) -> dict:
    ours, warm, compile_s = cellax_ensemble(g, y, threshold)
    theirs, their_s = pysindy_ensemble(g, y, threshold)
    out = {"cellax_warm_s": warm, "cellax_compile_s": compile_s, "pysindy_s": their_s,
           "speedup": their_s / warm if warm > 0 else None}
    for label, coefs in (("cellax", ours), ("pysindy", theirs)):
        s = summarize(coefs)
        support = {n for n, p in zip(names, s.inclusion) if p >= 0.5}
        median = {n: float(m) for n, m in zip(names, s.median)}
        out[label] = {"support": sorted(support), "support_recovered": support == set(truth),
                      "coefficient_error_pct": {n: 100 * abs(median[n] / v - 1) for n, v in truth.items()}}
    return out


def errors(found: dict, truth: dict) -> dict:
    return {n: 100 * abs(found.get(n, 0.0) / v - 1) for n, v in truth.items()}


def case_thermal(quick: bool) -> dict:
    import pysindy as ps

    signals, truth = thermal.simulate_thermal(1200 if quick else 2400)
    library = thermal.thermal_library()
    config = SindyConfig()
    rows = {}
    for level in LEVELS:
        noisy = add_noise(signals, thermal.MEASURED, level, seed=1)
        start = time.perf_counter()
        try:
            equations = discover(noisy, thermal.STATES, library, noisy["time_s"], config)
        except DiscoveryError as err:
            rows[f"{level:g}"] = {"cellax": {"support_recovered": False, "said": str(err)}}
            continue
        seconds = time.perf_counter() - start
        row = {"cellax": {**thermal.score(equations, truth), "seconds_incl_compile": seconds}}
        b, g = regression_system(noisy, thermal.STATES, library, noisy["time_s"], config)
        theta = np.asarray(library({k: jnp.asarray(v) for k, v in noisy.items()}))
        x = np.stack([noisy["T"], noisy["Ts"]], 1)
        x_dot = np.asarray(ps.SmoothedFiniteDifference(smoother_kws={"window_length": 21, "polyorder": 3})(x, t=1.0))
        same, strong, ens = {}, {}, {}
        for m, (eq, state) in enumerate(zip(equations, thermal.STATES)):
            truth_m = {n: v for (t, n), v in truth.items() if t == state}
            lam = chosen_threshold(g, b[:, m], eq.front)
            xi = pysindy_stlsq(g, b[:, m], lam)
            same.update({f"{state}:{n}": float(c) for n, c in zip(library.names, xi) if c != 0})
            xi = pysindy_stlsq(theta, x_dot[:, m], lam)
            strong.update({f"{state}:{n}": float(c) for n, c in zip(library.names, xi) if c != 0})
            ens[state] = compare_ensembles(g, b[:, m], lam, library.names, truth_m)
        flat_truth = {f"{t}:{n}": v for (t, n), v in truth.items()}
        for label, found in (("pysindy_same_weak_system", same), ("pysindy_strong_form_savgol", strong)):
            err = errors(found, flat_truth)
            row[label] = {"support_recovered": set(found) == set(flat_truth), "coefficient_error_pct": err,
                          "max_error_pct": max(err.values()), "found": found}
        row["ensemble"] = ens
        rows[f"{level:g}"] = row
    return {"truth": {f"{t}:{n}": v for (t, n), v in truth.items()}, "levels": rows}


def particle_row(result: dict, truth_d: float) -> dict:
    d, given = result["diffusivity_m2_s"], result["diffusivity_given_structure_m2_s"]
    return {"support_recovered": bool(result["spherical"]), "sindy_equation": str(result["equation"]),
            "structure": result["structure"], "pair_ratio": result.get("pair_ratio"),
            "pair_difference_z": result.get("pair_difference_z"), "noise_std_estimated": result["noise_std"],
            "chi2_per_row": result["chi2_per_row"], "diffusivity_m2_s": d,
            "diffusivity_error_pct": 100 * abs(d / truth_d - 1) if d else None,
            "diffusivity_given_structure_error_pct": 100 * abs(given / truth_d - 1),
            "diffusivity_given_structure_std_pct": 100 * result["diffusivity_given_structure_std_m2_s"] / truth_d}


def case_particle(quick: bool) -> dict:
    u, nodes, volumes, radius, diffusivity = particle.simulate_particle(n_samples=361 if quick else 721,
                                                                        seed=particle.PROFILE_SEEDS)
    truth_d = float(diffusivity(jnp.asarray(0.5)))
    rows = {}
    for level in LEVELS:
        noisy = add_noise({"c": u}, ["c"], level, seed=0)["c"]
        start = time.perf_counter()
        result = particle.discover_diffusion(noisy, nodes, volumes, radius, 10.0)
        seconds = time.perf_counter() - start
        row = {"cellax": {**particle_row(result, truth_d), "seconds_incl_compile": seconds}}
        if level > 0:
            seeds = [particle_row(particle.discover_diffusion(add_noise({"c": u}, ["c"], level, seed=s)["c"], nodes, volumes,
                                                              radius, 10.0), truth_d) for s in range(1, 6)]
            row["cellax"]["other_noise_seeds"] = {"seeds": [1, 2, 3, 4, 5], **{
                k: [r[k] for r in seeds] for k in ("support_recovered", "diffusivity_error_pct",
                                                   "diffusivity_given_structure_error_pct", "pair_ratio",
                                                   "pair_difference_z")}}
        library = particle.constant_library(nodes)
        b, g = particle.weak_system(noisy, nodes, volumes, library, 10.0, particle.FIELD_CONFIG)
        lam = chosen_threshold(g, b, result["equation"].front)
        xi = dict(zip(library.names, pysindy_stlsq(g, b, lam)))
        found = {n: c for n, c in xi.items() if c != 0}
        spherical = set(found) == {"d2c/dr2", "(2/r)dc/dr"}
        row["pysindy_same_weak_system"] = {
            "support_recovered": spherical, "found": found,
            "diffusivity_error_pct_mean_of_two": 100 * abs((found.get("d2c/dr2", 0) + found.get("(2/r)dc/dr", 0)) / 2
                                                           * radius**2 / truth_d - 1)}
        row["ensemble"] = compare_ensembles(g, b, lam, library.names,
                                            {"d2c/dr2": truth_d / radius**2, "(2/r)dc/dr": truth_d / radius**2})
        rows[f"{level:g}"] = row
    return {"truth_diffusivity_m2_s": truth_d, "records": {"pulse_seeds": particle.PROFILE_SEEDS, "n_samples": u.shape[1]},
            "levels": rows}


def case_circuit(quick: bool) -> dict:
    signals = circuit.simulate_circuit(1800 if quick else 2400)
    rows = {}
    for level in LEVELS:
        noisy = add_noise(signals, ["I", "V"], level, seed=1)
        start = time.perf_counter()
        result = circuit.discover_circuit(noisy)
        seconds = time.perf_counter() - start
        row = {"cellax": {**circuit.score(result), "refined": result["refined"], "seconds_incl_compile": seconds,
                          "front": [{k: r[k] for k in ("n_pairs", "bic", "rmse_v", "min_z", "resolved")}
                                    for r in result["front"]]}}
        if level > 0:
            row["cellax"]["other_noise_seeds"] = {
                "seeds": [2, 3, 4], "n_pairs": [circuit.discover_circuit(add_noise(signals, ["I", "V"], level, seed=s))["n_pairs"]
                                                for s in (2, 3, 4)]}
        taus = circuit.tau_grid(1.0, len(noisy["I"]))
        library = circuit.circuit_library(taus, 1.0)
        g = np.asarray(library({"I": jnp.asarray(noisy["I"])}))
        y = noisy["U"] - noisy["V"]
        lam = chosen_threshold(g, y, result["equation"].front)
        xi = pysindy_stlsq(g, y, lam)
        pairs = circuit.candidates(taus, xi[1:])
        row["pysindy_same_library"] = {"r0_ohm": float(xi[0]), "n_positive_pairs_proposed": len(pairs),
                                       "pairs_r_tau": pairs,
                                       "r0_error_pct": 100 * abs(xi[0] / circuit.TRUTH["r0_ohm"] - 1)}
        row["ensemble"] = compare_ensembles(g, y, lam, library.names, {"I": circuit.TRUTH["r0_ohm"]})
        rows[f"{level:g}"] = row
    return {"truth": circuit.TRUTH, "levels": rows}


def dfn_profiles(seeds, n_samples, cache: Path | None) -> list[dict]:
    """Case d's DFN profiles, simulated or read from ``cache`` (an .npz that records the PyBaMM backend's
    ``VERSION``; profiles of another version are simulated again). New profiles are added to the cache."""
    from cellax.data.pybamm_backend import VERSION

    stored = {}
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            stored = {k: z[k] for k in z.files}
        if int(stored.get("backend_version", 1)) != VERSION:
            print(f"d: {cache} holds backend_version {int(stored.get('backend_version', 1))}, not {VERSION}: simulating again")
            stored = {}
    missing = [s for s in seeds if f"{s}_I" not in stored]
    if missing:
        for s, p in zip(missing, correction.simulate_dfn(missing, n_samples=n_samples)):
            stored.update({f"{s}_I": p["I"], f"{s}_V": p["V"]})
        if cache is not None:
            np.savez(cache, **{**stored, "backend_version": np.asarray(VERSION)})
    return [{"I": stored[f"{s}_I"], "V": stored[f"{s}_V"], "dt_s": 5.0, "initial_soc": 0.6, "ambient_degc": 25.0}
            for s in seeds]


def fitted_spme(train, held, cache: Path | None):
    """:func:`correction.fitted_spme`, or its fitted values read from ``cache`` (a JSON written by an earlier
    run with the same training seeds and parameters; the fit's timing is the earlier run's) and scored again."""
    from cellax.data.pybamm_backend import VERSION
    from cellax.physics import load_parameter_set

    key = {"train_seeds": list(D_TRAIN), "parameters": list(correction.FIT_PARAMETERS), "backend_version": VERSION}
    if cache is not None and cache.exists():
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            fitted = stored["fitted"]
            refitted = correction.with_spme(held, load_parameter_set("Chen2020").with_values(fitted["values"]))
            errors = [np.concatenate([p["V"] - p["V_spme"] for p in profiles]) for profiles in (held, refitted)]
            mse_spme, mse_fitted = (float(np.mean(e**2)) for e in errors)
            fitted.update(held_out_rmse_fitted_mv=1e3 * mse_fitted**0.5, mse_share_removed=1 - mse_fitted / mse_spme,
                          read_from_cache=str(cache))
            return fitted, refitted
    fitted = correction.fitted_spme(train, held)
    refitted = fitted.pop("refitted_profiles")
    if cache is not None:
        plain = lambda v: v.tolist() if hasattr(v, "tolist") else v
        cache.write_text(json.dumps({"key": key, "fitted": {k: plain(v) for k, v in fitted.items()}}, default=plain))
    return fitted, refitted


def case_correction(quick: bool, cache: Path | None, fit_cache: Path | None = None) -> dict:
    """The discovered correction, the plain fitted SPMe, and the correction discovered on top of the
    fitted SPMe, all scored on the same held-out profiles."""
    from cellax.physics import load_parameter_set

    n = 360 if quick else 720
    train, held = (correction.with_spme(dfn_profiles(seeds, n, cache)) for seeds in (D_TRAIN, D_HELD_OUT))
    out = {"dfn_cache": str(cache) if cache else None, "train_seeds": D_TRAIN, "held_out_seeds": D_HELD_OUT, "target_mse_share_removed": 0.8, "max_terms": 5,
           "held_out_samples": int(sum(len(p["I"]) for p in held))}
    start = time.perf_counter()
    out["discovered"] = correction.discover_correction(train, held)
    out["discovered"]["seconds"] = time.perf_counter() - start
    print("d: discovered", out["discovered"]["mse_share_removed"], flush=True)
    fitted, refitted_held = fitted_spme(train, held, fit_cache)
    out["fitted_spme"] = fitted
    print("d: fitted SPMe", fitted["mse_share_removed"], flush=True)
    refitted_train = correction.with_spme(train, load_parameter_set("Chen2020").with_values(fitted["values"]))
    on_fitted = correction.discover_correction(refitted_train, refitted_held)
    mse_spme = float(np.mean(np.concatenate([p["V"] - p["V_spme"] for p in held]) ** 2))
    mse_both = (on_fitted["held_out_rmse_corrected_mv"] / 1e3) ** 2
    out["fitted_spme_plus_discovered"] = {**{k: on_fitted[k] for k in ("equation", "terms", "n_terms")},
                                          "mse_share_removed": 1 - mse_both / mse_spme}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller records (a smoke run)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES),
                        help="cases to run; others are kept from an existing --out")
    parser.add_argument("--dfn-cache", type=Path, help="case d: an .npz of the DFN profiles, written if absent")
    parser.add_argument("--fit-cache", type=Path, help="case d: a JSON of the fitted SPMe's values, written if absent")
    args = parser.parse_args()
    import pysindy

    cases = set(args.cases)
    load_before = os.getloadavg()
    report = json.loads(args.out.read_text()) if cases != set(CASES) and args.out.exists() else {}
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_start": load_before}
    report.update({"versions": {"jax": jax.__version__, "pysindy": pysindy.__version__},
                   "noise": "Gaussian, sigma = level x the signal's standard deviation", "n_ensemble_members": N_MEMBERS})
    report.setdefault("machine", {})
    for name, fn in (("a_thermal", case_thermal), ("b_particle", case_particle), ("c_circuit", case_circuit)):
        if name[0] not in cases:
            continue
        start, load = time.perf_counter(), os.getloadavg()
        report[name] = fn(args.quick)
        report[name].update(wall_s=time.perf_counter() - start, loadavg_start_end=[load, os.getloadavg()])
        print(name, "done", flush=True)
    if {"a", "b", "c"} <= cases:
        report["machine"].update(machine)
    speedups = [e["speedup"] for case in ("a_thermal", "b_particle", "c_circuit")
                for row in report[case]["levels"].values() if "ensemble" in row
                for e in (row["ensemble"].values() if case == "a_thermal" else [row["ensemble"]])]
    report["ensemble_speedup_median"] = float(np.median(speedups))
    report["ensemble_speedup_min"] = float(np.min(speedups))
    if "d" in cases:
        start = time.perf_counter()
        report["d_spme_missing_physics"] = {**case_correction(args.quick, args.dfn_cache, args.fit_cache),
                                            "wall_s": time.perf_counter() - start}
        print("d done", flush=True)
    if {"a", "b", "c"} <= cases:
        report["machine"]["loadavg_end"] = os.getloadavg()
    if "d" in cases:
        report["d_spme_missing_physics"]["loadavg_start_end"] = [load_before, os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plain = lambda v: v.tolist() if hasattr(v, "tolist") else str(v)  # noqa: E731
    args.out.write_text(json.dumps(report, indent=2, default=plain) + "\n")
    print(f"wrote {args.out}: ensemble speed-up median {report['ensemble_speedup_median']:.1f}x")


if __name__ == "__main__":
    main()
