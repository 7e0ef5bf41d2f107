"""Case d: the SPMe's missing physics, discovered from DFN data as a compact voltage correction.

Data: PyBaMM's DFN (cellax's PyBaMM backend, Chen2020, lumped thermal) and cellax's JAX SPMe on the
same seeded pulse profiles. The SPMe's voltage error :math:`e = V_\\text{DFN} - V_\\text{SPMe}` is
regressed on a library of the SPMe's own signals (current, SOC, temperature, current through
first-order filters of a few time constants, their products, ``arcsinh``) with at most
``max_terms`` terms, on training profiles; on held-out profiles the report is the share of the
SPMe-vs-DFN mean-squared voltage error that :math:`V_\\text{SPMe} + \\Theta\\xi` removes.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from cellax.discovery import library as lib
from cellax.discovery.cases.circuit import filtered
from cellax.discovery.cases.thermal import pulse_profile
from cellax.discovery.pareto import refit, score
from cellax.signals import KELVIN

TAUS_S = (10.0, 100.0, 1000.0)


def simulate_pair(seeds, n_samples: int = 720, dt_s: float = 5.0, initial_soc: float = 0.6, ambient_degc: float = 25.0):
    """Per seed: signals of the DFN (``V``) and the SPMe (``V_spme``, ``I``, ``soc``, ``T``) on one profile."""
    from cellax.data.config import SimulationConfig
    from cellax.data.datasheet import datasheet_for
    from cellax.data.pybamm_backend import PybammBackend
    from cellax.physics import load_parameter_set
    from cellax.physics.simulate import simulate
    from cellax.physics.spme import SPMe

    params = load_parameter_set("Chen2020")
    h = float(params.scalars["heat_transfer_coeff_w_m2k"])
    backend = PybammBackend(SimulationConfig(model="DFN"), datasheet_for("Chen2020"))
    model = SPMe()
    out = []
    for seed in seeds:
        current = pulse_profile(n_samples, seed, hold=24, low_a=-3.0, high_a=10.0)
        dfn = backend.simulate(current, dt_s, ambient_degc, h, initial_soc)
        n = len(dfn.signals.get("voltage_v", []))
        if n < n_samples // 2:
            raise RuntimeError(f"DFN profile {seed} stopped early: {dfn.status}")
        sol = simulate(model, params, jnp.asarray(current), dt_s, initial_soc, ambient_degc + KELVIN, limits=False)
        s = {k: np.asarray(v)[:n] for k, v in sol.signals.items()}
        out.append({"I": current[:n], "V": dfn.signals["voltage_v"], "V_spme": s["voltage_v"], "soc": s["soc"],
                    "T": s["core_temp_degc"] + KELVIN, "dt_s": dt_s})
    return out


def correction_library(dt_s: float) -> lib.Library:
    """Current, filtered currents, SOC and temperature terms, products and ``arcsinh`` (readable names)."""
    terms = [lib.constant(), lib.signal("I"), lib.Term("I^2", lambda s: s["I"] ** 2), lib.signal("soc"),
             lib.Term("I*soc", lambda s: s["I"] * s["soc"]), lib.Term("I/T", lambda s: s["I"] / s["T"]),
             lib.arcsinh("I", 5.0), lib.Term("soc^2", lambda s: s["soc"] ** 2)]
    for tau in TAUS_S:
        terms.append(lib.Term(f"F{tau:g}s[I]", lambda s, t=tau: filtered(s["I"], t, dt_s)))
        terms.append(lib.Term(f"soc*F{tau:g}s[I]", lambda s, t=tau: s["soc"] * filtered(s["I"], t, dt_s)))
    return lib.Library(terms)


def stack(profiles, library):
    thetas, errors = [], []
    for p in profiles:
        thetas.append(np.asarray(library({k: jnp.asarray(v) for k, v in p.items() if k != "dt_s"})))
        errors.append(p["V"] - p["V_spme"])
    return np.concatenate(thetas), np.concatenate(errors)


def forward_selection(g, y, max_terms: int) -> list[np.ndarray]:
    """Supports of 1..``max_terms`` terms, each the best one-term extension of the last (least squares)."""
    support, supports = np.zeros(g.shape[1], bool), []
    for _ in range(max_terms):
        best, best_mse = None, np.inf
        for j in np.flatnonzero(~support):
            trial = support.copy()
            trial[j] = True
            mse = np.mean((g[:, trial] @ np.linalg.lstsq(g[:, trial], y, rcond=None)[0] - y) ** 2)
            if mse < best_mse:
                best, best_mse = j, mse
        support = support.copy()
        support[best] = True
        supports.append(support)
    return supports


def discover_correction(train, held_out, max_terms: int = 5) -> dict:
    """The correction (≤ ``max_terms`` terms, forward selection scored by BIC; thresholded fits of this
    collinear library jump past five terms) and the share of held-out MSE it removes."""
    library = correction_library(train[0]["dt_s"])
    g, e = stack(train, library)
    g_scale = np.linalg.norm(g, axis=0)
    front = []
    for support in forward_selection(g / g_scale, e, max_terms):
        xi = np.zeros(g.shape[1])
        xi[support] = refit(g, e, support)[support]
        mse = float(np.mean((g @ xi - e) ** 2))
        front.append({"n_terms": int(support.sum()), "mse": mse,
                      "score": float(score(mse, support.sum(), len(e), "bic")),
                      "xi": xi})
    chosen = min(front, key=lambda row: row["score"])
    xi = chosen["xi"]
    g_h, e_h = stack(held_out, library)
    mse_spme = float(np.mean(e_h**2))
    mse_corrected = float(np.mean((e_h - g_h @ xi) ** 2))
    terms = {n: float(c) for n, c in zip(library.names, xi) if c != 0}
    return {"equation": "V_DFN - V_SPMe = " + " + ".join(f"{c:.4g}·{n}" for n, c in terms.items()), "terms": terms,
            "n_terms": len(terms), "front": [{k: v for k, v in row.items() if k != "xi"} for row in front],
            "held_out_rmse_spme_mv": 1e3 * mse_spme**0.5, "held_out_rmse_corrected_mv": 1e3 * mse_corrected**0.5,
            "mse_share_removed": 1 - mse_corrected / mse_spme}
