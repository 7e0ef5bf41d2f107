"""Spherical particle diffusion: the same discrete equations as PyBaMM's finite volumes."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cellax.physics.particle import FARADAY, SphericalMesh, diffusion_rhs, surface_value, volume_average

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
pybamm = pytest.importorskip("pybamm")
jax.config.update("jax_enable_x64", True)

RADIUS_M, CURRENT_DENSITY = 5.86e-6, 3.0


def diffusivity(c):
    return 3.3e-14 * (1.0 + c / 30000.0)  # concentration-dependent, to exercise the edge averaging


def pybamm_particle(n):
    c = pybamm.Variable("c", domain="negative particle")
    r = pybamm.SpatialVariable("r", domain=["negative particle"], coord_sys="spherical polar")
    d = diffusivity(c)
    model = pybamm.BaseModel()
    model.rhs = {c: -(1 / RADIUS_M**2) * pybamm.div(-d * pybamm.grad(c))}
    surface_gradient = -CURRENT_DENSITY * RADIUS_M / FARADAY / pybamm.surf(d)
    model.boundary_conditions = {c: {"left": (pybamm.Scalar(0), "Neumann"), "right": (surface_gradient, "Neumann")}}
    model.initial_conditions = {c: pybamm.Scalar(20000.0)}
    mesh = pybamm.Mesh({"negative particle": {r: {"min": 0, "max": 1}}},
                       {"negative particle": pybamm.Uniform1DSubMesh}, {r: n})
    disc = pybamm.Discretisation(mesh, {"negative particle": pybamm.FiniteVolume()})
    disc.process_model(model)
    model.variables = {"surface": disc.process_symbol(pybamm.surf(c)), "average": disc.process_symbol(pybamm.r_average(c))}
    return model


@pytest.mark.parametrize("n", [10, 20])
def test_rhs_surface_and_average_match_pybamm(n):
    model = pybamm_particle(n)
    mesh = SphericalMesh(n)
    rng = np.random.default_rng(0)
    c = 20000.0 + 5000.0 * np.sort(rng.uniform(size=n))
    expected = model.concatenated_rhs.evaluate(t=0.0, y=c[:, None]).ravel()
    got = diffusion_rhs(mesh, jnp.asarray(c), diffusivity(jnp.asarray(c)), CURRENT_DENSITY * RADIUS_M / FARADAY, RADIUS_M)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max())
    surface = model.variables["surface"].evaluate(t=0.0, y=c[:, None])
    average = model.variables["average"].evaluate(t=0.0, y=c[:, None])
    assert float(surface_value(jnp.asarray(c))) == pytest.approx(float(np.squeeze(surface)), rel=1e-13)
    assert float(volume_average(mesh, jnp.asarray(c))) == pytest.approx(float(np.squeeze(average)), rel=1e-13)


def test_lithium_is_conserved_except_through_the_surface():
    mesh = SphericalMesh(20)
    c = jnp.linspace(15000.0, 25000.0, 20)
    flux = CURRENT_DENSITY * RADIUS_M / FARADAY
    rate = diffusion_rhs(mesh, c, diffusivity(c), flux, RADIUS_M)
    # d/dt of the particle's lithium (per 4 pi R^3) equals minus the surface flux (per 4 pi R^2 / R)
    assert float(jnp.sum(mesh.shell_volumes * rate)) == pytest.approx(-flux / RADIUS_M**2, rel=1e-12)


def test_small_mesh_is_refused():
    with pytest.raises(ValueError, match="at least 3 shells"):
        SphericalMesh(2)
