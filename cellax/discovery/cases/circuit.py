"""Case c: an equivalent circuit (series resistance and RC pairs) from voltage, current and OCV.

.. math::

    V = U(\\text{soc}) - R_0 I - \\sum_k v_k, \\qquad \\dot v_k = -\\frac{v_k}{\\tau_k} + \\frac{I}{C_k},
    \\quad \\tau_k = R_k C_k .

The RC voltages are hidden, but each is the current through a first-order filter: with the current
held over a sample (zero-order hold), :math:`v_k = R_k\\, F_{\\tau_k}[I]` with
:math:`F_\\tau[I]_{n+1} = e^{-\\Delta t/\\tau} F_\\tau[I]_n + (1 - e^{-\\Delta t/\\tau}) I_n`. So the
overpotential :math:`U - V` is *linear* in a library of ``I`` and filtered currents on a grid of time
constants, and sparse regression picks the few that matter. Neighbouring grid constants are nearly
collinear, so the sparse fit only *proposes* time constants; :func:`cellax.discovery.refine.refine`
fits ``R_0, R_k, τ_k`` of circuits with 1, 2, 3 pairs to the voltage trajectory (Gauss–Newton
uncertainties) and the BIC of those fits sets the number of pairs.

The OCV is the parameter set's, ``U_p(y(soc)) - U_n(x(soc))`` on its electrode-SOH window, and soc
counts coulombs against ``capacity_ah``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cellax.discovery import library as lib
from cellax.discovery.checks import NoSparseModel, check_finite, check_time
from cellax.discovery.cases.thermal import pulse_profile
from cellax.discovery.refine import refine
from cellax.discovery.sindy import SindyConfig, fit_equation

TRUTH = {"r0_ohm": 0.015, "r_ohm": (0.010, 0.020), "tau_s": (15.0, 300.0)}
CONFIG = SindyConfig(form="savgol", min_r2=0.5)
FLOOR = 1e-5
"""Error floor of the pair-count BIC, a share of the voltage's variance (as in :mod:`cellax.discovery.pareto`)."""


def filtered(current_a, tau_s, dt_s: float):
    """:math:`F_\\tau[I]` (zero-order hold), starting at rest."""
    decay = jnp.exp(-dt_s / tau_s)

    def step(f, i):
        return decay * f + (1 - decay) * i, f

    _, out = jax.lax.scan(step, jnp.zeros_like(decay), current_a)
    return out


def circuit_voltage(r0_ohm, r_ohm, tau_s, current_a, ocv_v, dt_s: float):
    """Terminal voltage of the circuit (``r_ohm``, ``tau_s`` arrays, one entry per pair)."""
    rc = jax.vmap(lambda r, tau: r * filtered(current_a, tau, dt_s))(jnp.asarray(r_ohm), jnp.asarray(tau_s))
    return ocv_v - r0_ohm * current_a - jnp.sum(rc, axis=0)


def ocv_function(parameter_set: str = "Chen2020"):
    """``U(soc)`` (V) of a parameter set at 25 °C."""
    from cellax.physics import initial_stoichiometries, load_parameter_set

    params = load_parameter_set(parameter_set)

    def ocv(soc):
        x, y = initial_stoichiometries(params, soc)
        return params.pos_ocp(y, 298.15) - params.neg_ocp(x, 298.15)

    return ocv


def simulate_circuit(n_samples: int = 3600, dt_s: float = 1.0, seed: int = 0, capacity_ah: float = 5.0,
                     initial_soc: float = 0.9, truth: dict = TRUTH):
    """``signals`` (``time_s``, ``I``, ``V``, ``soc``, ``U``) of the circuit under a seeded pulse profile."""
    ocv = ocv_function()
    current = jnp.asarray(pulse_profile(n_samples, seed, hold=60, low_a=-5.0, high_a=10.0))
    soc = initial_soc - jnp.concatenate([jnp.zeros(1), jnp.cumsum(current[:-1])]) * dt_s / (3600 * capacity_ah)
    u = ocv(soc)
    v = circuit_voltage(truth["r0_ohm"], jnp.asarray(truth["r_ohm"]), jnp.asarray(truth["tau_s"]), current, u, dt_s)
    return {"time_s": np.arange(n_samples) * dt_s, "I": np.asarray(current), "V": np.asarray(v), "soc": np.asarray(soc),
            "U": np.asarray(u)}


def tau_grid(dt_s: float, n_samples: int, per_decade: int = 3) -> np.ndarray:
    """Time constants from ``2 dt`` to a fifth of the record, ``per_decade`` per decade."""
    low, high = np.log10(2 * dt_s), np.log10(n_samples * dt_s / 5)
    return np.logspace(low, high, int(np.ceil((high - low) * per_decade)) + 1)


def circuit_library(taus, dt_s: float) -> lib.Library:
    """``I`` and ``F_tau[I]`` for every ``tau`` of the grid."""
    terms = [lib.signal("I")]
    terms += [lib.Term(f"F{tau:.3g}s[I]", lambda s, t=float(tau): filtered(s["I"], t, dt_s)) for tau in taus]
    return lib.Library(terms)


def candidates(taus, coefficients) -> list[tuple[float, float]]:
    """``(R, tau)`` starts from selected filter terms, largest first: runs of positive grid neighbours are
    one pair (resistances summed, time constants averaged in log weighted by resistance)."""
    pairs, run = [], []
    for k, c in enumerate(list(coefficients) + [0.0]):
        if c > 0:
            run.append(k)
        elif run:
            r, t = np.array([coefficients[j] for j in run]), np.array([taus[j] for j in run])
            pairs.append((float(r.sum()), float(np.exp(np.sum(r / r.sum() * np.log(t))))))
            run = []
    return sorted(pairs, key=lambda p: -p[0])


def discover_circuit(signals: dict, config: SindyConfig = CONFIG, max_pairs: int = 3, refine_steps: int = 50) -> dict:
    """Number of RC pairs and their values (see the module docstring): the sparse fit proposes time
    constants; circuits of ``1..max_pairs`` pairs started from them are refined on the voltage
    trajectory and the pair count is the one with the lowest BIC, ``n ln(mse + floor) + (1 + 2k) ln n``
    (``floor``: :data:`FLOOR` times the voltage's variance), among circuits whose values are all at
    least ``config.min_z`` standard deviations from zero (one pair is always allowed)."""
    check_finite({k: signals[k] for k in ("I", "V", "U")})
    dt_s = check_time(signals["time_s"])
    n = len(signals["I"])
    taus = tau_grid(dt_s, n)
    library = circuit_library(taus, dt_s)
    theta = library({"I": jnp.asarray(signals["I"])})
    target = jnp.asarray(signals["U"] - signals["V"])
    eq = fit_equation(theta, target, library.names, "U-V", config, jax.random.PRNGKey(config.seed))
    r0 = float(eq.coefficients[0])
    proposed = candidates(taus, eq.coefficients[1:])
    out = {"equation": eq, "sparse": {"r0_ohm": r0, "pairs": proposed}, "front": []}
    if not proposed or r0 <= 0:
        raise NoSparseModel("U-V: the sparse fit found no positive series resistance and RC pair; no circuit found")
    current, ocv, measured = jnp.asarray(signals["I"]), jnp.asarray(signals["U"]), jnp.asarray(signals["V"])
    best = None
    for k in range(1, max_pairs + 1):
        starts = (proposed + [(0.1 * r0, float(t)) for t in taus[:: max(1, len(taus) // k)]])[:k]
        start = np.array([r0] + [p[0] for p in starts] + [p[1] for p in starts])

        def predict(theta, k=k):
            return circuit_voltage(theta[0], theta[1:1 + k], theta[1 + k:], current, ocv, dt_s)

        refined = refine(predict, start, measured, max_steps=refine_steps)
        bic = n * np.log(refined.rmse**2 + FLOOR * np.var(signals["V"])) + (1 + 2 * k) * np.log(n)
        order = np.argsort(refined.values[1 + k:])
        z = np.abs(refined.values) / np.maximum(refined.std, 1e-300)
        row = {
            "n_pairs": k, "bic": float(bic), "rmse_v": refined.rmse, "converged": refined.converged,
            "min_z": float(z.min()), "resolved": bool(k == 1 or z.min() >= config.min_z),
            "r0_ohm": float(refined.values[0]), "r0_std_ohm": float(refined.std[0]),
            "r_ohm": refined.values[1:1 + k][order].tolist(), "r_std_ohm": refined.std[1:1 + k][order].tolist(),
            "tau_s": refined.values[1 + k:][order].tolist(), "tau_std_s": refined.std[1 + k:][order].tolist(),
        }
        out["front"].append(row)
        if row["resolved"] and (best is None or bic < best["bic"]):
            best = row
    out["refined"], out["n_pairs"] = best, best["n_pairs"]
    return out


def score(result: dict, truth: dict = TRUTH) -> dict:
    """Pair count right, and the largest relative error (%) of the refined ``R_0, R_k, τ_k``."""
    n_true = len(truth["r_ohm"])
    out = {"n_pairs": result["n_pairs"], "n_pairs_true": n_true, "support_recovered": result["n_pairs"] == n_true}
    if out["support_recovered"] and "refined" in result:
        ref = result["refined"]
        errors = {"r0": abs(ref["r0_ohm"] / truth["r0_ohm"] - 1)}
        for j in range(n_true):
            errors[f"r{j + 1}"] = abs(ref["r_ohm"][j] / truth["r_ohm"][j] - 1)
            errors[f"tau{j + 1}"] = abs(ref["tau_s"][j] / truth["tau_s"][j] - 1)
        out["coefficient_error_pct"] = {k: 100 * v for k, v in errors.items()}
        out["max_error_pct"] = 100 * max(errors.values())
    return out
