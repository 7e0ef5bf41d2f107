"""Case b: the particle diffusion PDE from concentration fields ``c(r, t)``.

Data: the SPM's negative particle (Chen2020 radius and capacity, cellax's finite-volume mesh and
operator :func:`cellax.physics.particle.diffusion_rhs`) under a seeded pulse current, integrated by
diffrax's Kvaerno5 and sampled every ``dt_s``. On the dimensionless radius and with ``u = c / c_max``,

.. math::

    \\partial_t u = \\frac{D}{R^2}\\Big(\\partial_\\rho^2 u + \\frac{2}{\\rho}\\partial_\\rho u\\Big)
    \\quad\\text{(constant } D\\text{, the parameter set's)}, \\qquad
    \\partial_t u = \\frac{1}{R^2}\\nabla^2 G(u),\\; G(u) = \\int_0^u D \\quad(D(u) \\text{ polynomial}).

SINDy proposes the structure on the space–time weak form (:func:`cellax.discovery.weak.weak_field`,
two wide bumps across the interior nodes; the boundary nodes, where the flux conditions act, never
enter). Noise on ``c`` also enters the library columns, which biases least squares towards zero
(most the rougher ``d2c/dr2``), and overlapping test functions give correlated rows; the structure
is therefore decided, and ``D`` estimated, by maximum likelihood with every interior node a test
function (:func:`cellax.discovery.gtls.gtls`, generalised total least squares, over the records of
the experiment together): backward elimination of the library's terms by Wald tests (``min_z``
standard deviations) on the nodes the 10 s sampling resolves (:data:`ML_OUTER_NODES_LEFT_OUT`), then
the two spherical coefficients compared and ``D`` from ``lap(c)`` alone on all interior nodes, with the
noise's standard deviation :math:`\\hat\\sigma` estimated from the data (:func:`noise_std`).
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from cellax.discovery import library as lib
from cellax.discovery.cases.thermal import pulse_profile
from cellax.discovery.checks import check_conditioning, check_finite
from cellax.discovery.gtls import backward_elimination, field_system, gtls
from cellax.discovery.sindy import SindyConfig, fit_equation
from cellax.discovery.weak import weak_field

PROFILE_SEEDS = (0, 1, 2)
"""Case b's experiment: three records of 721 samples (2 h at 10 s), each from half-full under its own
seeded pulse profile. One record left ``D`` a standard error of 0.4–0.5 % at 5 % noise (the noise is
5 % of the record's spread, so a longer record adds as much noise as data); independent records add
information at the same noise."""


def simulate_particle(diffusivity=None, n_samples: int = 721, dt_s: float = 10.0, n_shells: int = 20, seed=0,
                      c_rate: float = 2.0):
    """``(u, nodes, volumes, radius_m, D_m2_s)``: stoichiometry field ``u[t, i]`` of the negative particle
    under the pulse profile of ``seed``, or records ``u[record, t, i]`` (one ``vmap``) for a sequence of seeds.

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
    seeds = np.atleast_1d(seed)
    currents = jnp.asarray(np.stack([c_rate * capacity_ah / 10.0 * pulse_profile(n_samples, int(k), hold=18, low_a=-10.0,
                                                                                  high_a=10.0) for k in seeds]))
    area = (3 * s["neg_active_frac"] / radius * s["neg_thickness_m"]
            * s["n_electrodes_parallel"] * s["electrode_area_m2"])
    ts = jnp.arange(n_samples) * dt_s

    def field(t, c, current):
        k = jnp.clip(jnp.floor(t / dt_s).astype(int), 0, n_samples - 1)
        return diffusion_rhs(mesh, c, diffusivity(c / c_max), current[k] / area * radius / FARADAY, radius)

    def solve(current):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(field), diffrax.Kvaerno5(), t0=0.0, t1=float(ts[-1]), dt0=1.0,
            y0=0.5 * c_max * jnp.ones(n_shells), args=current, saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-8, jump_ts=ts), max_steps=100_000,
        ).ys

    u = np.asarray(jax.vmap(solve)(currents)) / c_max
    return u if np.ndim(seed) else u[0], np.asarray(mesh.nodes), np.asarray(mesh.shell_volumes), radius, diffusivity


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
    :data:`SPACE_TESTS`) of a record ``u[t, j]`` or, rows stacked, of records ``u[record, t, j]``."""
    u = np.asarray(u)
    records = u[None] if u.ndim == 2 else u
    theta = library({"c": jnp.asarray(records)})
    check_conditioning(theta, library.names)
    parts = [weak_field(jnp.asarray(r[:, 1:-1]), th, dt_s, volumes[1:-1], n_test_t=config.n_test,
                        half_width_t=config.half_width, **(space or SPACE_TESTS)) for r, th in zip(records, theta)]
    return jnp.concatenate([b for b, _ in parts]), jnp.concatenate([g for _, g in parts])


def noise_std(u) -> float:
    """White-noise standard deviation of a field ``u[..., t, i]`` sampled finely in time, from the median of
    its second differences on the interior nodes (``var(Δ²n) = 6σ²``; the median of ``χ²₁`` is 0.4549)."""
    d2 = np.diff(np.asarray(u, np.float64)[..., 1:-1], 2, axis=-2)
    return float(np.sqrt(np.median(d2**2) / (6 * 0.4549)))


ML_TESTS = {"n_test_t": 80, "half_width_t": 20}
"""Time bumps of the maximum-likelihood fits. The estimate depends on the span of the test functions
only: 80–160 bumps of half width 15–40 samples gave the same standard error of ``D`` (0.38–0.39 % at
5 % noise, one record of 721 samples, every interior node a test function)."""
ML_OUTER_NODES_LEFT_OUT = 2
"""The choice of terms leaves out the two interior nodes next to the surface: their shells relax in
``h²R²/D ≈ 3 s``, under the 10 s sample step, after every current step; on noise-free data they
made the residual 4.6 times the estimated noise and kept the distractor ``dc/dr`` (−2 % of ``D``,
z = −20). Without them the noise-free residual is 0.01 of it and ``dc/dr`` −0.05 % of ``D``. They
carry most of the information (standard error of ``D`` 0.50 % instead of 0.39 % per record at 5 %
noise), so the coefficients of the chosen terms are fitted on all interior nodes."""


def ml_system(u, nodes, library: lib.Library, dt_s: float, left_out: int = 0):
    """The field system of :func:`cellax.discovery.gtls.field_system` of records ``u[record, t, j]`` (or
    one ``u[t, j]``) for ``library`` (terms linear in ``c``), with :data:`ML_TESTS` and
    :data:`ML_OUTER_NODES_LEFT_OUT`."""
    operators = library({"c": jnp.eye(len(nodes), dtype=jnp.float64)})
    space = np.eye(len(nodes) - 2)[: len(nodes) - 2 - left_out]
    return field_system(jnp.asarray(u, jnp.float64), operators, dt_s, space=space, **ML_TESTS)


FIELD_CONFIG = SindyConfig(n_test=80, half_width=40)
MAX_RATIO_GAP = 0.1
"""The structure is spherical diffusion when the two coefficients are within 10 % of each other."""


def discover_diffusion(u, nodes, volumes, radius_m: float, dt_s: float, config: SindyConfig = FIELD_CONFIG) -> dict:
    """Structure, then ``D``. ``equation`` is SINDy's on the weak form; the structure is the terms that
    backward elimination by maximum likelihood keeps (``structure``, ± its standard deviations); it is
    spherical diffusion when those are ``d2c/dr2`` and ``(2/r)dc/dr`` with coefficients within
    :data:`MAX_RATIO_GAP` of each other (``pair_ratio``; ``pair_difference_z`` is their difference in its
    own standard deviations). ``D`` is then the maximum-likelihood coefficient of ``lap(c)`` alone;
    ``diffusivity_given_structure_m2_s`` is that fit whether or not the structure was found. ``u[t, j]`` is
    one record, ``u[record, t, j]`` several (:data:`PROFILE_SEEDS`)."""
    check_finite({"c": u})
    u = np.asarray(u, np.float64)
    library = constant_library(nodes)
    b, g = weak_system(u, nodes, volumes, library, dt_s, config)
    eq = fit_equation(g, b, library.names, "c", config, jax.random.PRNGKey(config.seed))
    sigma = noise_std(u)
    start = np.linalg.lstsq(np.asarray(g, np.float64), np.asarray(b, np.float64), rcond=None)[0]
    support, xi, cov = backward_elimination(ml_system(u, nodes, library, dt_s, ML_OUTER_NODES_LEFT_OUT), start, sigma,
                                            config.min_z)
    if support[:2].all() and support.sum() == 2:
        xi, cov, _, _ = gtls(ml_system(u, nodes, library, dt_s), jnp.asarray(xi), jnp.asarray(support))
        xi, cov = np.asarray(xi), sigma**2 * np.asarray(cov)
    std = np.sqrt(np.diag(cov))
    out = {"equation": eq, "spherical": False, "diffusivity_m2_s": None, "noise_std": sigma,
           "structure": {n: {"coefficient": float(x), "std": float(s)}
                         for n, x, s, kept in zip(library.names, xi, std, support) if kept}}
    pair = ("d2c/dr2", "(2/r)dc/dr")
    if set(out["structure"]) == set(pair):
        i, j = (library.names.index(n) for n in pair)
        out["pair_ratio"] = float(xi[i] / xi[j])
        out["pair_difference_z"] = float((xi[i] - xi[j]) / np.sqrt(cov[i, i] + cov[j, j] - 2 * cov[i, j]))
        out["spherical"] = bool(abs(out["pair_ratio"] - 1) < MAX_RATIO_GAP)
    lap = lib.Library([lib.spherical_laplacian(nodes, "c", 1)])
    b1, g1 = (np.asarray(x, np.float64) for x in weak_system(u, nodes, volumes, lap, dt_s, config))
    system = ml_system(u, nodes, lap, dt_s)
    theta, cov1, chi2, _ = gtls(system, jnp.asarray([g1[:, 0] @ b1 / (g1[:, 0] @ g1[:, 0])]))
    out["diffusivity_given_structure_m2_s"] = float(theta[0] * radius_m**2)
    out["diffusivity_given_structure_std_m2_s"] = float(sigma * np.sqrt(cov1[0, 0]) * radius_m**2)
    out["chi2_per_row"] = float(chi2 / max(sigma, 1e-300) ** 2 / system.b.size)
    if out["spherical"]:
        out["diffusivity_m2_s"] = out["diffusivity_given_structure_m2_s"]
        out["diffusivity_std_m2_s"] = out["diffusivity_given_structure_std_m2_s"]
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
