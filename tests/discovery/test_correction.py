"""Case d's model selection (best subsets, leave-one-profile-out) on planted corrections."""

import numpy as np

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
