"""Case b: the particle diffusion PDE from concentration fields ``c(r, t)``.

Data: the SPM's negative particle (Chen2020 radius and capacity, cellax's finite-volume mesh and
operator :func:`cellax.physics.particle.diffusion_rhs`) under a seeded pulse current, integrated by
diffrax's Kvaerno5 and sampled every ``dt_s``. On the dimensionless radius and with ``u = c / c_max``,

.. math::

    \\partial_t u = \\frac{D}{R^2}\\Big(\\partial_\\rho^2 u + \\frac{2}{\\rho}\\partial_\\rho u\\Big)
    \\quad\\text{(constant } D\\text{, the parameter set's)}, \\qquad
    \\partial_t u = \\frac{1}{R^2}\\nabla^2 G(u),\\; G(u) = \\int_0^u D \\quad(D(u) \\text{ polynomial}).

Discovery uses the space–time weak form (:func:`cellax.discovery.weak.weak_field`) on the interior
nodes; the boundary nodes, where the flux conditions act, never enter. Noise on ``c`` also enters
the library columns, which biases least squares towards zero (most the rougher ``d2c/dr2``);
the coefficients of the chosen structure and ``D`` are therefore refitted bias-compensated,
:math:`(G^\\top G - \\hat\\sigma^2 E)^{-1} G^\\top b` (:func:`cellax.discovery.weak.field_noise_gram`),
with the noise's standard deviation :math:`\\hat\\sigma` estimated from the data (:func:`noise_std`).
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from cellax.discovery import library as lib
from cellax.discovery.cases.thermal import pulse_profile
from cellax.discovery.checks import check_conditioning, check_finite
from cellax.discovery.sindy import SindyConfig, fit_equation
from cellax.discovery.weak import field_noise_gram, weak_field


def simulate_particle(diffusivity=None, n_samples: int = 721, dt_s: float = 10.0, n_shells: int = 20, seed: int = 0,
                      c_rate: float = 2.0):
    """``(u[t, i], nodes, volumes, radius_m, D_m2_s)``: stoichiometry field of the negative particle.

    ``diffusivity(u)`` in m²/s (default: the parameter set's, constant for Chen2020)."""
    from cellax.physics import load_parameter_set
    from cellax.physics.particle import FARADAY, SphericalMesh, diffusion_rhs

    params = load_parameter_set("Chen2020")
    s = {k: float(v) for k, v in params.scalars.items()}
    c_max, radius = s["neg_max_conc_mol_m3"], s["neg_particle_radius_m"]
    if diffusivity is None:
        d0 = float(params.neg_diffusivity(jnp.asarray(0.5), 298.15))
        diffusivity = lambda u: d0 * jnp.ones_like(u)  # noqa: E731
    mesh = SphericalMesh(n_shells)
    capacity_ah = 5.0
    current = c_rate * capacity_ah / 10.0 * pulse_profile(n_samples, seed, hold=18, low_a=-10.0, high_a=10.0)
    area = (3 * s["neg_active_frac"] / radius * s["neg_thickness_m"]
            * s["n_electrodes_parallel"] * s["electrode_area_m2"])
    ts = jnp.arange(n_samples) * dt_s

    def field(t, c, _):
        k = jnp.clip(jnp.floor(t / dt_s).astype(int), 0, n_samples - 1)
        j = jnp.asarray(current)[k] / area
        return diffusion_rhs(mesh, c, diffusivity(c / c_max), j * radius / FARADAY, radius)

    c0 = 0.5 * c_max * jnp.ones(n_shells)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Kvaerno5(), t0=0.0, t1=float(ts[-1]), dt0=1.0, y0=c0,
        saveat=diffrax.SaveAt(ts=ts), stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-8, jump_ts=ts),
        max_steps=100_000,
    )
    u = np.asarray(sol.ys) / c_max
    return u, np.asarray(mesh.nodes), np.asarray(mesh.shell_volumes), radius, diffusivity


def constant_library(nodes) -> lib.Library:
    """``d2c/dr2``, ``(2/r)dc/dr`` and distractors ``c``, ``dc/dr`` (not ``1``, ``c^2``: over the narrow
    range of a particle's stoichiometry they are collinear with ``c``)."""
    h = nodes[1] - nodes[0]
    first = lib.Term("dc/dr", lambda s: (s["c"][..., 2:] - s["c"][..., :-2]) / (2 * h))
    return lib.spherical_terms(nodes, "c") + lib.Library([lib.interior("c"), first])


def polynomial_library(nodes, degree: int = 4) -> lib.Library:
    """``lap(c^k)`` for ``k = 1..degree`` and distractors ``c``, ``c^2``."""
    return lib.Library([lib.spherical_laplacian(nodes, "c", k) for k in range(1, degree + 1)]
                       + [lib.interior("c"), lib.interior("c", 2)])


def diffusivity_polynomial(coefficients: dict, radius_m: float) -> np.ndarray:
    """``D(u) = R² Σ_k k b_k u^{k-1}`` (constant first) from the ``lap(c^k)`` terms of ``coefficients``."""
    powers = {name: int(name[6:-1]) if name.startswith("lap(c^") else 1
              for name in coefficients if name.startswith("lap(c")}
    out = np.zeros(max(powers.values(), default=1))
    for name, k in powers.items():
        out[k - 1] = k * coefficients[name] * radius_m**2
    return out


SPACE_TESTS = {"n_test_r": 2, "half_width_r": 8}
"""Test functions across the 18 interior nodes for ``D``: two wide bumps (the narrower, the noisier
``d2c/dr2``). The ``D(c)`` polynomial keeps narrower ones (``half_width_r`` 6), which separate the
powers ``lap(c^k)`` better."""
POLYNOMIAL_SPACE_TESTS = {"n_test_r": 2, "half_width_r": 6}


def weak_system(u, nodes, volumes, library: lib.Library, dt_s: float, config: SindyConfig, space=None):
    """``(b, G)`` of the space–time weak form on the interior nodes (spatial tests ``space``, default
    :data:`SPACE_TESTS`)."""
    theta = library({"c": jnp.asarray(u)})
    check_conditioning(theta, library.names)
    return weak_field(jnp.asarray(u[:, 1:-1]), theta, dt_s, volumes[1:-1], n_test_t=config.n_test,
                      half_width_t=config.half_width, **(space or SPACE_TESTS))


def noise_std(u) -> float:
    """White-noise standard deviation of a field ``u[t, i]`` sampled finely in time, from the median of its
    second differences on the interior nodes (``var(Δ²n) = 6σ²``; the median of ``χ²₁`` is 0.4549)."""
    d2 = np.diff(np.asarray(u, np.float64)[:, 1:-1], 2, axis=0)
    return float(np.sqrt(np.median(d2**2) / (6 * 0.4549)))


def debiased(u, nodes, volumes, library: lib.Library, dt_s: float, config: SindyConfig, sigma: float) -> np.ndarray:
    """Coefficients of ``library`` (all terms linear in ``c``) by bias-compensated least squares."""
    b, g = (np.asarray(x, np.float64) for x in weak_system(u, nodes, volumes, library, dt_s, config))
    operators = library({"c": jnp.eye(len(nodes), dtype=jnp.float64)})
    e = field_noise_gram(operators, u.shape[0], dt_s, volumes[1:-1], config.n_test, config.half_width, **SPACE_TESTS)
    return np.linalg.solve(g.T @ g - sigma**2 * e, g.T @ b)


FIELD_CONFIG = SindyConfig(n_test=80, half_width=40)


def discover_diffusion(u, nodes, volumes, radius_m: float, dt_s: float, config: SindyConfig = FIELD_CONFIG) -> dict:
    """Structure, then ``D``: the constant library's equation; when it is spherical diffusion (both
    derivative terms kept, their bias-compensated coefficients within 10 % of each other), the shared
    coefficient refitted bias-compensated on ``lap(c)`` alone (its ± from the ensemble of that fit).
    ``diffusivity_given_structure_m2_s`` is that refit whether or not the structure was found."""
    check_finite({"c": u})
    u = np.asarray(u, np.float64)
    library = constant_library(nodes)
    b, g = weak_system(u, nodes, volumes, library, dt_s, config)
    eq = fit_equation(g, b, library.names, "c", config, jax.random.PRNGKey(config.seed))
    sigma = noise_std(u)
    out = {"equation": eq, "spherical": False, "diffusivity_m2_s": None, "noise_std": sigma}
    if set(eq.terms()) == {"d2c/dr2", "(2/r)dc/dr"}:
        pair = lib.spherical_terms(nodes, "c")
        second, radial = debiased(u, nodes, volumes, pair, dt_s, config, sigma)
        out["debiased"] = {"d2c/dr2": float(second), "(2/r)dc/dr": float(radial)}
        out["spherical"] = bool(0.9 < second / radial < 1.1)
    lap = lib.Library([lib.spherical_laplacian(nodes, "c", 1)])
    out["diffusivity_given_structure_m2_s"] = float(debiased(u, nodes, volumes, lap, dt_s, config, sigma)[0] * radius_m**2)
    if out["spherical"]:
        b1, g1 = weak_system(u, nodes, volumes, lap, dt_s, config)
        out["shared"] = fit_equation(g1, b1, lap.names, "c", config, jax.random.PRNGKey(config.seed))
        out["diffusivity_m2_s"] = out["diffusivity_given_structure_m2_s"]
        out["diffusivity_std_m2_s"] = float(out["shared"].uncertainty()[0] * radius_m**2)
    return out


def discover_diffusivity(u, nodes, volumes, radius_m: float, dt_s: float, degree: int = 3,
                         config: SindyConfig = FIELD_CONFIG) -> dict:
    """``D(u)`` as a polynomial from the ``lap(c^k)`` library; its largest relative deviation from
    ``truth(u)`` over the data is for the caller to measure."""
    check_finite({"c": u})
    library = polynomial_library(nodes, degree)
    b, g = weak_system(u, nodes, volumes, library, dt_s, config, POLYNOMIAL_SPACE_TESTS)
    eq = fit_equation(g, b, library.names, "c", config, jax.random.PRNGKey(config.seed))
    return {"equation": eq, "polynomial_m2_s": diffusivity_polynomial(eq.terms(), radius_m)}
