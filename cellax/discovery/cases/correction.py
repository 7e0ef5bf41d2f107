"""Case d: the SPMe's missing physics, discovered from DFN data as a compact voltage correction.

Data: PyBaMM's DFN (cellax's PyBaMM backend, Chen2020, lumped thermal) and cellax's JAX SPMe on the
same seeded pulse profiles. The SPMe's voltage error :math:`e = V_\\text{DFN} - V_\\text{SPMe}` is
regressed on a library of the SPMe's own states and inputs only: current ``I``, SOC, temperature
``T``, the SPMe's overpotential :math:`\\eta = U(\\bar x) - V_\\text{SPMe}`, its lowest electrolyte
concentration ``ce``, the slopes and curvatures of the electrodes' open-circuit potentials at its
SOC (``dUn``, ``d2Up``, ``dU`` of the cell), low-SOC factors :math:`1/(\\text{soc} + s_0)`, and
first-order filters :math:`F_\\tau[\\cdot]` of a few time constants. A filtered term is the
error-dynamics form: :math:`\\dot e_k = (\\theta_k - e_k)/\\tau`, a hidden first-order state of the
error driven by the SPMe's signals. Filtered
currents times OCP slopes and curvatures are the first- and second-order terms of the DFN's
through-thickness spread of lithiation, which smears the open-circuit potential where it bends.

Model selection, training profiles only: best subsets of ``1..max_terms`` terms by a greedy forward
pass from every term followed by swaps (least squares on the normal equations), the subset with
the lowest leave-one-profile-out error chosen; its coefficients and time constants (one per error
state) are then refined on the training trajectories (:func:`refine_correction`). On held-out
profiles the report is the share of the SPMe-vs-DFN mean-squared voltage error that :math:`V_\\text{SPMe} + \\Theta\\xi` removes, beside the
same share for the SPMe with its parameters refitted on the training profiles by
:func:`cellax.physics.fit.fit` (:func:`fitted_spme`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cellax.discovery import library as lib
from cellax.discovery.cases.circuit import filtered
from cellax.discovery.cases.thermal import pulse_profile
from cellax.discovery.refine import refine
from cellax.signals import KELVIN

TAUS_S = (10.0, 30.0, 100.0, 300.0, 1000.0)
SOC_OFFSET = 0.1
"""``s0`` of the low-SOC terms ``1/(soc + s0)``: of 0.02, 0.05, 0.1, 0.2 and 0.4 the lowest
leave-one-profile-out error on the training profiles."""
SPME_SIGNALS = ("I", "V_spme", "soc", "T", "eta", "ce", "dU", "dUn", "dUp", "d2Up")
FIT_PARAMETERS = ("neg_diffusivity_scale", "pos_diffusivity_scale", "neg_exchange_current_scale",
                  "pos_exchange_current_scale", "electrolyte_conductivity_scale", "electrolyte_diffusivity_scale")
"""The SPMe parameters :func:`fitted_spme` refits (log transform, bounds ``[0.1, 10]``, start ``1.2``)."""


def simulate_dfn(seeds, n_samples: int = 720, dt_s: float = 5.0, initial_soc: float = 0.6,
                 ambient_degc: float = 25.0) -> list[dict]:
    """Per seed: ``I`` and the DFN's voltage ``V`` on a pulse profile, up to the DFN's voltage cut-off."""
    from cellax.data.config import SimulationConfig
    from cellax.data.datasheet import datasheet_for
    from cellax.data.pybamm_backend import PybammBackend
    from cellax.physics import load_parameter_set

    h = float(load_parameter_set("Chen2020").scalars["heat_transfer_coeff_w_m2k"])
    backend = PybammBackend(SimulationConfig(model="DFN"), datasheet_for("Chen2020"))
    out = []
    for seed in seeds:
        current = pulse_profile(n_samples, seed, hold=24, low_a=-3.0, high_a=10.0)
        dfn = backend.simulate(current, dt_s, ambient_degc, h, initial_soc)
        n = len(dfn.signals.get("voltage_v", []))
        if n < n_samples // 2:
            raise RuntimeError(f"DFN profile {seed} stopped early: {dfn.status}")
        out.append({"I": np.asarray(current[:n]), "V": np.asarray(dfn.signals["voltage_v"]), "dt_s": dt_s,
                    "initial_soc": initial_soc, "ambient_degc": ambient_degc})
    return out


def spme_signals(profile: dict, params=None) -> dict:
    """The SPMe's signals on ``profile`` (:data:`SPME_SIGNALS`, float arrays as long as its current)."""
    from cellax.physics import initial_stoichiometries, load_parameter_set
    from cellax.physics.simulate import simulate
    from cellax.physics.spme import SPMe

    params = load_parameter_set("Chen2020") if params is None else params
    current = np.asarray(profile["I"])
    n = len(current)
    sol = simulate(SPMe(), params, jnp.asarray(current), profile["dt_s"], profile["initial_soc"],
                   profile["ambient_degc"] + KELVIN, limits=False)
    s = {k: np.asarray(v)[:n] for k, v in sol.signals.items()}

    def potentials(soc):
        x, y = initial_stoichiometries(params, soc)
        return jnp.stack([params.neg_ocp(x, 298.15), params.pos_ocp(y, 298.15)])

    soc = jnp.asarray(s["soc"])
    slope = jax.vmap(jax.jacfwd(potentials))(soc)
    curvature = jax.vmap(jax.jacfwd(jax.jacfwd(potentials)))(soc)
    return {"I": current, "V_spme": s["voltage_v"], "soc": s["soc"], "T": s["core_temp_degc"] + KELVIN,
            "eta": s["ocv_v"] - s["voltage_v"], "ce": s["min_electrolyte_conc_mol_m3"] / 1000.0,
            "dU": np.asarray(slope[:, 1] - slope[:, 0]), "dUn": np.asarray(slope[:, 0]),
            "dUp": np.asarray(slope[:, 1]), "d2Up": np.asarray(curvature[:, 1])}


def with_spme(profiles: list[dict], params=None) -> list[dict]:
    """``profiles`` with the SPMe's signals added."""
    return [{**p, **spme_signals(p, params)} for p in profiles]


STATIC_TERMS = (
    lib.constant(), lib.signal("I"), lib.Term("I^2", lambda s: s["I"] ** 2), lib.signal("soc"),
    lib.Term("I*soc", lambda s: s["I"] * s["soc"]), lib.Term("I/T", lambda s: s["I"] / s["T"]), lib.arcsinh("I", 5.0),
    lib.signal("eta"), lib.Term("I/ce", lambda s: s["I"] / s["ce"]), lib.Term("I*dU", lambda s: s["I"] * s["dU"]),
    lib.Term("I^2*dUn", lambda s: s["I"] ** 2 * s["dUn"]), lib.Term("I^2*dUp", lambda s: s["I"] ** 2 * s["dUp"]),
    lib.Term("I/(soc+s0)", lambda s: s["I"] / (s["soc"] + SOC_OFFSET)),
    lib.Term("I^2/(soc+s0)", lambda s: s["I"] ** 2 / (s["soc"] + SOC_OFFSET)),
)
FILTERED_TERMS = {  # name template ({t}: the time constant) -> term of the signals s and the filter f = F_tau
    "F{t}[I]": lambda s, f: f(s["I"]),
    "soc*F{t}[I]": lambda s, f: s["soc"] * f(s["I"]),
    "F{t}[I]/T": lambda s, f: f(s["I"]) / s["T"],
    "F{t}[I*dU]": lambda s, f: f(s["I"] * s["dU"]),
    "F{t}[eta]": lambda s, f: f(s["eta"]),
    "dUn*F{t}[I]^2": lambda s, f: s["dUn"] * f(s["I"]) ** 2,
    "d2Up*F{t}[I]^2": lambda s, f: s["d2Up"] * f(s["I"]) ** 2,
    "soc*F{t}[I*dU]": lambda s, f: s["soc"] * f(s["I"] * s["dU"]),
    "soc*F{t}[eta]": lambda s, f: s["soc"] * f(s["eta"]),
    "F{t}[I]/(soc+s0)": lambda s, f: f(s["I"]) / (s["soc"] + SOC_OFFSET),
    "F{t}[eta]/(soc+s0)": lambda s, f: f(s["eta"]) / (s["soc"] + SOC_OFFSET),
}


def _filtered_term(template: str, tau_s, dt_s: float):
    """``fn(signals)`` of a :data:`FILTERED_TERMS` entry at time constant ``tau_s`` (a float or a traced value)."""
    return lambda s: FILTERED_TERMS[template](s, lambda x: filtered(x, tau_s, dt_s))


def correction_library(dt_s: float) -> lib.Library:
    """:data:`STATIC_TERMS` of the SPMe's signals and, for every ``tau`` of :data:`TAUS_S`, the
    filtered (error-dynamics) :data:`FILTERED_TERMS`; readable names (``F100s[I*dU]``: ``I·dU/dsoc``
    through a 100 s filter)."""
    filtered_terms = [lib.Term(template.format(t=f"{tau:g}s"), _filtered_term(template, tau, dt_s))
                      for tau in TAUS_S for template in FILTERED_TERMS]
    return lib.Library(list(STATIC_TERMS) + filtered_terms)


def parse_term(name: str) -> tuple[str, float | None]:
    """``(template, tau_s)`` of a filtered term's name (``"F100s[I*dU]"`` → ``("F{t}[I*dU]", 100.0)``),
    ``(name, None)`` of a static one."""
    for template in FILTERED_TERMS:
        head, tail = template.split("{t}")
        if name.startswith(head) and name.endswith(tail) and name[len(head):len(name) - len(tail)].endswith("s"):
            try:
                return template, float(name[len(head):len(name) - len(tail) - 1])
            except ValueError:
                continue
    if name not in {t.name for t in STATIC_TERMS}:
        raise ValueError(f"unknown correction term {name!r}")
    return name, None


def normal_equations(profiles: list[dict], library: lib.Library):
    """Per profile ``(A, b, e·e, n)`` of ``e ≈ Θ ξ`` (``A = ΘᵀΘ``, ``b = Θᵀe``): sums of these are any
    union's least-squares problem."""
    out = []
    for p in profiles:
        theta = np.asarray(library({k: jnp.asarray(p[k]) for k in SPME_SIGNALS}), np.float64)
        e = np.asarray(p["V"] - p["V_spme"], np.float64)
        out.append((theta.T @ theta, theta.T @ e, float(e @ e), len(e)))
    return out


def _solve(a, b, support):
    s = np.flatnonzero(support)
    scale = np.sqrt(np.diag(a)[s])
    xi = np.zeros(len(b))
    xi[s] = np.linalg.lstsq(a[np.ix_(s, s)] / np.outer(scale, scale), b[s] / scale, rcond=1e-12)[0] / scale
    return xi


def _sse(system, xi):
    a, b, ee, _ = system
    return ee - 2 * xi @ b + xi @ a @ xi


def best_subsets(a, b, ee, max_terms: int) -> list[np.ndarray]:
    """Candidate supports of ``1..max_terms`` terms: from every term, greedy forward steps to each size,
    then single-term swaps while the training error falls."""
    p = len(b)

    def sse(support):
        return _sse((a, b, ee, 0), _solve(a, b, support))

    found = set()
    for start in range(p):
        support = np.zeros(p, bool)
        support[start] = True
        for size in range(1, max_terms + 1):
            if size > 1:
                trials = [(sse(support | (np.arange(p) == j)), j) for j in np.flatnonzero(~support)]
                support = support | (np.arange(p) == min(trials)[1])
            best, swapped = sse(support), support.copy()
            improved = True
            while improved:
                improved = False
                for i in np.flatnonzero(swapped):
                    for j in np.flatnonzero(~swapped):
                        trial = swapped.copy()
                        trial[i], trial[j] = False, True
                        value = sse(trial)
                        if value < best * (1 - 1e-9):
                            best, swapped, improved = value, trial, True
                            break
                    if improved:
                        break
            found.add(tuple(np.flatnonzero(swapped)))
    return [np.isin(np.arange(p), list(s)) for s in sorted(found, key=lambda s: (len(s), s))]


def cross_validated_mse(systems, support) -> float:
    """Leave-one-profile-out mean-squared error of the least-squares fit on ``support``."""
    a, b = sum(s[0] for s in systems), sum(s[1] for s in systems)
    sse = sum(_sse(s, _solve(a - s[0], b - s[1], support)) for s in systems)
    return float(sse / sum(s[3] for s in systems))


def correction_voltage(profiles: list[dict], terms, coefficients, tau_s: dict) -> list:
    """Per profile the correction :math:`\\sum_k \\xi_k \\theta_k` of ``terms`` (names), a filtered term's
    time constant replaced by ``tau_s[its grid tau]`` (a float or a traced value)."""
    static = {t.name: t for t in STATIC_TERMS}
    out = []
    for p in profiles:
        s = {k: jnp.asarray(p[k]) for k in SPME_SIGNALS}
        columns = []
        for name in terms:
            template, tau = parse_term(name)
            fn = static[template] if tau is None else _filtered_term(template, tau_s[tau], p["dt_s"])
            columns.append(jnp.broadcast_to(fn(s), s["I"].shape))
        out.append(jnp.stack(columns, -1) @ jnp.asarray(coefficients))
    return out


def refine_correction(train: list[dict], terms: dict, max_steps: int = 50) -> dict:
    """The chosen correction's coefficients and time constants (one per distinct ``tau`` of its filtered
    terms: one error state each) refined on the training profiles' whole error trajectories by
    :func:`cellax.discovery.refine.refine` (Levenberg–Marquardt through the filters' ``lax.scan``), with
    Gauss–Newton standard deviations."""
    names = list(terms)
    taus = sorted({tau for tau in (parse_term(n)[1] for n in names) if tau is not None})
    k = len(names)
    measured = jnp.concatenate([jnp.asarray(p["V"] - p["V_spme"]) for p in train])

    def predict(theta):
        return jnp.concatenate(correction_voltage(train, names, theta[:k], dict(zip(taus, theta[k:]))))

    result = refine(predict, np.concatenate([list(terms.values()), taus]), measured, max_steps=max_steps)
    tau_s = {tau: float(v) for tau, v in zip(taus, result.values[k:])}

    def renamed(name):
        template, tau = parse_term(name)
        return name if tau is None else template.format(t=f"{tau_s[tau]:.4g}s")

    return {"terms": {renamed(n): float(v) for n, v in zip(names, result.values[:k])},
            "std": {renamed(n): float(v) for n, v in zip(names, result.std[:k])},
            "tau_s": {f"{tau:g}": v for tau, v in tau_s.items()},
            "tau_std_s": {f"{tau:g}": float(v) for tau, v in zip(taus, result.std[k:])},
            "coefficients": result.values[:k], "tau_by_grid": tau_s, "train_rmse_mv": 1e3 * result.rmse,
            "steps": result.steps, "converged": result.converged}


def _share_removed(profiles, corrections) -> float:
    e = np.concatenate([p["V"] - p["V_spme"] for p in profiles])
    return float(1 - np.mean((e - np.concatenate([np.asarray(c) for c in corrections])) ** 2) / np.mean(e**2))


def discover_correction(train: list[dict], held_out: list[dict], max_terms: int = 5, refine_steps: int = 50) -> dict:
    """The correction (≤ ``max_terms`` terms, chosen by leave-one-profile-out error among best subsets,
    then refined by :func:`refine_correction`) and the share of the SPMe-vs-DFN mean-squared voltage
    error it removes on ``held_out``, before and after the refinement."""
    if len(train) < 2:
        raise ValueError("discover_correction: leave-one-profile-out selection needs at least 2 training profiles")
    library = correction_library(train[0]["dt_s"])
    systems = normal_equations(train, library)
    a, b, ee = (sum(s[i] for s in systems) for i in range(3))
    n = sum(s[3] for s in systems)
    candidates = best_subsets(a, b, ee, max_terms)
    rows = [{"n_terms": int(s.sum()), "terms": [library.names[j] for j in np.flatnonzero(s)],
             "train_mse": float(_sse((a, b, ee, n), _solve(a, b, s)) / n), "cv_mse": cross_validated_mse(systems, s),
             "support": s} for s in candidates]
    chosen = min(rows, key=lambda r: r["cv_mse"])
    xi = _solve(a, b, chosen["support"])
    held = normal_equations(held_out, library)
    mse_spme = sum(s[2] for s in held) / sum(s[3] for s in held)
    mse_grid = sum(_sse(s, xi) for s in held) / sum(s[3] for s in held)
    terms = {n: float(c) for n, c in zip(library.names, xi) if c != 0}
    refined = refine_correction(train, terms, refine_steps) if refine_steps else None
    if refined is not None:
        corrections = correction_voltage(held_out, list(terms), refined["coefficients"], refined["tau_by_grid"])
        share = _share_removed(held_out, corrections)
        train_share = _share_removed(train, correction_voltage(train, list(terms), refined["coefficients"],
                                                               refined["tau_by_grid"]))
        final = refined["terms"]
    else:
        share, train_share, final = 1 - mse_grid / mse_spme, 1 - chosen["train_mse"] * n / ee, terms
    front = [min((r for r in rows if r["n_terms"] == k), key=lambda r: r["cv_mse"]) for k in range(1, max_terms + 1)]
    return {"equation": "V_DFN - V_SPMe = " + " + ".join(f"{c:.4g}·{n}" for n, c in final.items()), "terms": final,
            "n_terms": len(final), "library_size": len(library), "candidate_subsets": len(rows),
            "front": [{k: v for k, v in r.items() if k != "support"} for r in front],
            "grid": {"terms": terms, "train_mse_share_removed": 1 - chosen["train_mse"] * n / ee,
                     "mse_share_removed": 1 - mse_grid / mse_spme},
            "refined": None if refined is None else {k: v for k, v in refined.items()
                                                     if k not in ("coefficients", "tau_by_grid")},
            "train_mse_share_removed": train_share, "held_out_rmse_spme_mv": 1e3 * mse_spme**0.5,
            "held_out_rmse_corrected_mv": 1e3 * (mse_spme * (1 - share)) ** 0.5, "mse_share_removed": share}


def fitted_spme(train: list[dict], held_out: list[dict], names=FIT_PARAMETERS, max_steps: int = 40) -> dict:
    """The plain fitted SPMe: ``names`` refitted by :func:`cellax.physics.fit.fit` on the training
    profiles' DFN voltage, and the share of the SPMe-vs-DFN mean-squared voltage error it removes on
    ``held_out``."""
    from cellax.physics import load_parameter_set
    from cellax.physics.config import FitParameter
    from cellax.physics.fit import Measurement, fit
    from cellax.physics.spme import SPMe

    params = load_parameter_set("Chen2020")
    parameters = [FitParameter(name=k, lower=0.1, upper=10.0, initial=1.2, transform="log") for k in names]
    data = [Measurement(current_a=p["I"], dt_s=p["dt_s"], initial_soc=p["initial_soc"],
                        ambient_temp_k=p["ambient_degc"] + KELVIN, signals={"voltage_v": p["V"]}) for p in train]
    result = fit(SPMe(), params, parameters, data, max_steps=max_steps)
    refitted = with_spme(held_out, params.with_values(result.values))
    errors = [np.concatenate([p["V"] - p["V_spme"] for p in profiles]) for profiles in (held_out, refitted)]
    mse_spme, mse_fitted = (float(np.mean(e**2)) for e in errors)
    return {"values": result.values, "std": result.std, "converged": result.converged, "steps": result.steps,
            "train_rmse_mv": 1e3 * result.rmse["voltage_v"], "compile_s": result.compile_seconds,
            "seconds": result.seconds, "held_out_rmse_fitted_mv": 1e3 * mse_fitted**0.5,
            "mse_share_removed": 1 - mse_fitted / mse_spme, "refitted_profiles": refitted}
