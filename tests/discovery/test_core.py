"""Libraries, derivatives, weak form, solvers, ensembles, Pareto and the bad-input checks, on small
synthetic systems with known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cellax.discovery import library as lib
from cellax.discovery.checks import DiscoveryError, NoSparseModel, check_conditioning
from cellax.discovery.derivatives import savitzky_golay, total_variation
from cellax.discovery.ensemble import ensemble_coefficients, summarize
from cellax.discovery.pareto import pareto
from cellax.discovery.refine import refine, simulate_library
from cellax.discovery.sindy import SindyConfig, discover
from cellax.discovery.solvers import sr3, stlsq, threshold_scan


def damped(n=1500, dt=0.01):
    """x' = -0.5 x + 2 y, y' = -2 x - 0.5 y sampled exactly."""
    t = np.arange(n) * dt
    x = np.exp(-0.5 * t) * np.cos(2 * t)
    y = -np.exp(-0.5 * t) * np.sin(2 * t)
    return {"time_s": t, "x": x, "y": y}


def test_library_names_products_and_spherical_laplacian():
    poly = lib.polynomial(["x", "y"], 2)
    assert poly.names == ("1", "x", "y", "x^2", "x*y", "y^2")
    combined = poly + lib.Library([lib.sinh("x", 0.5), lib.arcsinh("y"), lib.inverse("x"), lib.arrhenius("x", 3e4)])
    assert "sinh(x/0.5)" in combined.names and "1/x" in combined.names and len(combined) == 10
    assert (lib.Library([lib.signal("x")]) * lib.Library([lib.signal("y")])).names == ("x*y",)
    with pytest.raises(ValueError, match="named twice"):
        lib.Library([lib.signal("x"), lib.signal("x")])
    # on c = r^2 the spherical Laplacian is 6, its parts 2 and 4 away from the centre
    nodes = (np.arange(20) + 0.5) / 20
    parts = np.asarray(lib.spherical_terms(nodes)({"c": jnp.asarray(nodes**2)}))
    assert np.allclose(parts.sum(-1), 6.0, rtol=1e-5)
    assert np.allclose(parts[-1], [2.0, 4.0], rtol=2e-3)


def test_smoothed_derivatives_follow_a_noisy_sine():
    t = np.arange(600) * 0.01
    x = np.sin(t) + 0.001 * np.random.default_rng(0).standard_normal(t.size)
    sg = np.asarray(savitzky_golay(jnp.asarray(x), 0.01, window=51, order=3))
    assert np.max(np.abs(sg[30:-30] - np.cos(t[30:-30]))) < 0.02
    tv = np.asarray(total_variation(jnp.asarray(x), 0.01, alpha=0.1))
    assert np.sqrt(np.mean((tv[30:-30] - np.cos(t[30:-30])) ** 2)) < 0.01


def test_stlsq_sr3_ensemble_and_pareto_recover_a_linear_oscillator():
    data = damped()
    library = lib.polynomial(["x", "y"], 2)
    equations = discover(data, ["x", "y"], library, data["time_s"], SindyConfig(n_test=100, half_width=30))
    assert equations[0].terms().keys() == {"x", "y"}
    assert np.allclose([equations[0].terms()["x"], equations[0].terms()["y"]], [-0.5, 2.0], rtol=1e-3)
    assert np.allclose([equations[1].terms()["x"], equations[1].terms()["y"]], [-2.0, -0.5], rtol=1e-3)
    assert "dx/dt = (" in str(equations[0])
    theta = np.asarray(library({k: jnp.asarray(v) for k, v in data.items()}))
    target = np.gradient(data["x"], 0.01)
    for fn in (stlsq, sr3):
        xi = np.asarray(fn(jnp.asarray(theta), jnp.asarray(target), 0.05))
        assert set(np.flatnonzero(xi)) == {1, 2}
    scan = np.asarray(threshold_scan(jnp.asarray(theta), jnp.asarray(target), jnp.geomspace(1e-3, 0.5, 8)))
    assert scan.shape == (8, 6)
    members = ensemble_coefficients(jnp.asarray(theta), jnp.asarray(target), 0.05, jax.random.PRNGKey(0), 50, 1)
    summary = summarize(members)
    assert summary.inclusion[1] > 0.6 and summary.inclusion[0] < 0.5
    assert summary.low[2] < 2.0 < summary.high[2] or abs(summary.median[2] - 2) < 0.01


def test_no_sparse_model_is_said_not_returned():
    rng = np.random.default_rng(0)
    theta = rng.standard_normal((200, 4))
    with pytest.raises(NoSparseModel, match="no sparse model found"):
        pareto(theta, rng.standard_normal(200), ["a", "b", "c", "d"], target="z")


def test_bad_input_is_named():
    data = damped(200)
    library = lib.polynomial(["x", "y"], 1)
    bad = dict(data, x=np.where(np.arange(200) == 7, np.nan, data["x"]))
    with pytest.raises(DiscoveryError, match="signal 'x' has 1 NaN/inf samples \\(first at index 7\\)"):
        discover(bad, ["x", "y"], library, data["time_s"])
    t = data["time_s"].copy()
    t[50] = t[49]
    with pytest.raises(DiscoveryError, match="not increasing at index 50"):
        discover(data, ["x", "y"], library, t)
    t = data["time_s"].copy()
    t[100:] += 0.005
    with pytest.raises(DiscoveryError, match="not uniform"):
        discover(data, ["x", "y"], library, t)
    with pytest.raises(DiscoveryError, match="too few samples"):
        discover(data, ["x", "y"], lib.polynomial(["x", "y"], 4), data["time_s"], SindyConfig(n_test=20, half_width=5))
    collinear = lib.Library([lib.signal("x"), lib.signal("y"), lib.Term("2x", lambda s: 2 * s["x"])])
    with pytest.raises(DiscoveryError, match=r"collinear library .*\['2x', 'x'\]|collinear library .*\['x', '2x'\]"):
        discover(data, ["x", "y"], collinear, data["time_s"])
    with pytest.raises(DiscoveryError, match="identically zero"):
        check_conditioning(np.zeros((10, 1)), ["z"])


def test_refinement_through_diffrax_recovers_rates_with_uncertainty():
    data = damped(400, 0.02)
    library = lib.Library([lib.signal("x"), lib.signal("y")])
    truth = np.array([[-0.5, -2.0], [2.0, -0.5]])
    noisy = np.stack([data["x"], data["y"]], 1) + 0.002 * np.random.default_rng(1).standard_normal((400, 2))

    def predict(theta):
        xi = jnp.array([[theta[0], theta[2]], [theta[1], theta[3]]])
        return simulate_library(library, ["x", "y"], xi, noisy[0] * 0 + jnp.array([1.0, 0.0]), data["time_s"], {})

    refined = refine(predict, jnp.array([-0.45, 2.1, -2.1, -0.45]), noisy)
    assert np.allclose(refined.values, [-0.5, 2.0, -2.0, -0.5], atol=5 * refined.std.max())
    assert np.all(refined.std > 0) and np.all(refined.std < 0.02)
    assert truth.shape == (2, 2)
