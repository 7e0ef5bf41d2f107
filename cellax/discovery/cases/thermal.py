"""Case a: the two-node thermal ODEs from current, voltage, OCV and the three temperatures.

Data: cellax's SPM (Chen2020, lumped two-node thermal) under a seeded pulse profile. The truth is

.. math::

    \\dot T = \\frac{1}{C}\\,I (U - V) - \\frac{hA}{C}(T - T_s), \\qquad
    \\dot T_s = \\frac{hA}{C_s}(T - T_s) - \\frac{1}{R_\\text{env} C_s}(T_s - T_\\text{amb}),

with Chen2020's zero entropic coefficients and negligible collector Joule heat
(:math:`\\sim 10^{-11}\\,\\Omega`). The SPM's heat source is :math:`I(\\eta_n - \\eta_p) = I(U^s - V)` with
:math:`U^s` the OCV at the particles' *surface*; the measured ``ocv_v`` is at their average. The
data therefore use solid diffusivities scaled up (``diffusivity_scale``, 1000 by default) so the
two coincide and the irreversible heat is the measurable :math:`I(U - V)`; with Chen2020's own
diffusivities the concentration overpotential is heat that no measured signal carries.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from cellax.discovery import library as lib
from cellax.signals import KELVIN

STATES = ("T", "Ts")
MEASURED = ("I", "V", "U", "T", "Ts", "Ta")


def simulate_thermal(n_samples: int = 2400, dt_s: float = 1.0, seed: int = 0, diffusivity_scale: float = 1000.0,
                     n_shells: int = 10, ambient_k: float = 298.15):
    """``(signals, truth)``: signals ``I V U T Ts Ta`` (A, V, V, K, K, K) and ``time_s``; truth maps
    ``(state, term) -> coefficient``."""
    from cellax.physics import load_parameter_set
    from cellax.physics.simulate import simulate
    from cellax.physics.spm import SPM

    params = load_parameter_set("Chen2020")
    s = params.scalars
    scales = ("neg_diffusivity_scale", "pos_diffusivity_scale")
    params = params.with_values({k: s[k] * diffusivity_scale for k in scales})
    current = pulse_profile(n_samples, seed)
    sol = simulate(SPM(n_shells), params, jnp.asarray(current), dt_s, 0.9, ambient_k, limits=False)
    out = {k: np.asarray(v) for k, v in sol.signals.items()}
    signals = {
        "time_s": out["time_s"], "I": out["current_a"], "V": out["voltage_v"], "U": out["ocv_v"],
        "T": out["core_temp_degc"] + KELVIN, "Ts": out["surface_temp_degc"] + KELVIN,
        "Ta": out["ambient_temp_degc"] + KELVIN,
    }
    heat_capacity = float(params.cell_heat_capacity(ambient_k))
    coupling = float(s["heat_transfer_coeff_w_m2k"] * s["cell_cooling_area_m2"])
    case = float(s["casing_heat_capacity_j_k"])
    truth = {
        ("T", "I*(U-V)"): 1 / heat_capacity,
        ("T", "(T-Ts)"): -coupling / heat_capacity,
        ("Ts", "(T-Ts)"): coupling / case,
        ("Ts", "(Ts-Ta)"): -1 / (float(s["environment_thermal_resistance_k_w"]) * case),
    }
    return signals, truth


def pulse_profile(n_samples: int, seed: int, hold: int = 120, low_a: float = -5.0, high_a: float = 10.0) -> np.ndarray:
    """Piecewise-constant current, a new uniform level every ``hold`` samples."""
    rng = np.random.default_rng(seed)
    return np.repeat(rng.uniform(low_a, high_a, n_samples // hold + 1), hold)[:n_samples]


def thermal_library() -> lib.Library:
    """Heat sources, exchanges and distractors: ``I*(U-V)``, ``I``, ``I^2``, ``I*T``, ``(T-Ts)``, ``(Ts-Ta)``,
    ``1`` (not ``1/T``: over a few kelvin it is a straight line, collinear with ``1`` and the temperatures)."""
    return lib.Library([
        lib.Term("I*(U-V)", lambda s: s["I"] * (s["U"] - s["V"])),
        lib.signal("I"),
        lib.Term("I^2", lambda s: s["I"] ** 2),
        lib.Term("I*T", lambda s: s["I"] * s["T"]),
        lib.difference("T", "Ts"),
        lib.difference("Ts", "Ta"),
        lib.constant(),
    ])


def score(equations, truth) -> dict:
    """Support recovered (exactly the true terms) and relative coefficient errors (%) per true term."""
    found = {(e.target, n): c for e in equations for n, c in e.terms().items()}
    support = set(found) == set(truth)
    errors = {f"{t}:{n}": 100 * abs(found.get((t, n), 0.0) / v - 1) for (t, n), v in truth.items()}
    return {"support_recovered": support, "coefficient_error_pct": errors,
            "max_error_pct": max(errors.values()), "found": {f"{t}:{n}": c for (t, n), c in found.items()}}
