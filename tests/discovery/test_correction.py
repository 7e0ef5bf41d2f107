"""Case d's model selection (best subsets, leave-one-profile-out) on planted corrections."""

import numpy as np
import pytest

from cellax.discovery.cases import correction


def _systems(rng, truth, n_profiles=4, n=400, p=12, noise=0.05):
    systems = []
    for _ in range(n_profiles):
        base = rng.standard_normal((n, 3))
        theta = np.concatenate([base, base @ rng.standard_normal((3, p - 3)) + 0.3 * rng.standard_normal((n, p - 3))], 1)
        e = theta @ truth + noise * rng.standard_normal(n)
        systems.append((theta.T @ theta, theta.T @ e, float(e @ e), n))
    return systems


def test_best_subsets_and_cross_validation_recover_a_planted_support():
    rng = np.random.default_rng(0)
    truth = np.zeros(12)
    truth[[1, 5, 9]] = [0.8, -0.5, 0.3]
    systems = _systems(rng, truth)
    a, b, ee = (sum(s[i] for s in systems) for i in range(3))
    candidates = correction.best_subsets(a, b, ee, max_terms=5)
    assert {int(s.sum()) for s in candidates} == {1, 2, 3, 4, 5}
    chosen = min(candidates, key=lambda s: correction.cross_validated_mse(systems, s))
    assert set(np.flatnonzero(chosen)) == {1, 5, 9}
    xi = correction._solve(a, b, chosen)
    assert np.allclose(xi[[1, 5, 9]], truth[[1, 5, 9]], rtol=0.05)


def test_correction_library_names_are_readable_and_unique():
    library = correction.correction_library(5.0)
    assert {"I^2*dUn", "F30s[I*dU]", "d2Up*F1000s[I]^2", "soc*F100s[I]", "F300s[eta]"} <= set(library.names)
    assert len(set(library.names)) == len(library)


def _profile(seed, n=360):
    rng = np.random.default_rng(seed)
    current = np.repeat(rng.uniform(-3.0, 10.0, n // 24 + 1), 24)[:n]
    soc = 0.6 - np.cumsum(current) * 5.0 / 3600 / 5.0
    signals = {k: np.zeros(n) for k in correction.SPME_SIGNALS}
    signals.update(I=current, soc=soc, T=np.full(n, 298.15), ce=np.ones(n), dU=0.8 + soc)
    return {**signals, "dt_s": 5.0}


def test_refinement_recovers_a_planted_time_constant_and_coefficients():
    truth = {"I": 0.01, "soc*F60s[I]": 0.004, "F60s[I*dU]": -0.002}
    profiles = [_profile(seed) for seed in (1, 2)]
    planted = correction.correction_voltage(profiles, list(truth), list(truth.values()), {60.0: 60.0})
    for p, v in zip(profiles, planted):
        p["V"] = p["V_spme"] + np.asarray(v)
    start = {"I": 0.009, "soc*F100s[I]": 0.003, "F100s[I*dU]": -0.0015}
    refined = correction.refine_correction(profiles, start)
    assert abs(refined["tau_s"]["100"] / 60.0 - 1) < 0.01
    assert refined["tau_std_s"]["100"] < 1.0
    assert np.allclose(refined["coefficients"], list(truth.values()), rtol=0.01)
    assert set(refined["terms"]) == {"I", "soc*F60s[I]", "F60s[I*dU]"}


def test_term_names_parse_back_to_their_template_and_time_constant():
    for name in correction.correction_library(5.0).names:
        template, tau = correction.parse_term(name)
        assert (name if tau is None else template.format(t=f"{tau:g}s")) == name
    assert correction.parse_term("d2Up*F1000s[I]^2") == ("d2Up*F{t}[I]^2", 1000.0)
    with pytest.raises(ValueError, match="unknown correction term"):
        correction.parse_term("F100s[nope]")
