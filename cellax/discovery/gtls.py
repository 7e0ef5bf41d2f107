"""Generalised total least squares for the weak form of a noisy field (maximum likelihood).

A field ``c[t, j]`` is observed with white noise ``n`` of standard deviation :math:`\\sigma`, and every
library term is linear in it (term ``p`` at interior node ``i`` is :math:`\\sum_j c_j L_p[j, i]`). With
time bumps :math:`\\phi_k` and the interior nodes themselves as spatial test functions, the residual
of the weak system is linear in the noise,

.. math::

    r(\\xi) = b - G\\xi = M(\\xi)\\,n, \\qquad
    M(\\xi) = -\\dot\\Phi \\otimes P - \\Delta t \\sum_p \\xi_p\\, \\Phi \\otimes L_p^\\top,

(``P`` picks the interior nodes). Profiling the true field out of the Gaussian likelihood under the
constraints :math:`M(\\xi)\\,c = 0` leaves

.. math::

    \\hat\\xi = \\arg\\min_\\xi\\; r(\\xi)^\\top C(\\xi)^{-1} r(\\xi), \\qquad C(\\xi) = M(\\xi) M(\\xi)^\\top,

which has no errors-in-variables bias (noise in ``G`` as well as in ``b``) and weights the correlated
rows of overlapping test functions. Its stationarity condition
:math:`G^\\top w + Y\\xi + y_0 = 0`, :math:`w = C^{-1} r`, :math:`Y_{pq} = (M_p^\\top w)\\cdot(M_q^\\top w)`,
:math:`y_{0,p} = (M_p^\\top w)\\cdot(M_0^\\top w)` is solved by the fixed-point iteration
:math:`\\xi \\leftarrow (G^\\top C^{-1} G - Y)^{-1}(G^\\top C^{-1} b + y_0)` (Chojnacki et al.'s FNS).
The covariance of :math:`\\hat\\xi` is :math:`\\sigma^2 (G^\\top C^{-1} G - Y)^{-1}` (``Y`` takes out
what the noise in ``G`` adds to :math:`G^\\top C^{-1} G`), and
:math:`r^\\top C^{-1} r / \\sigma^2` is :math:`\\chi^2` with about as many degrees of freedom as rows.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cellax.discovery.weak import bumps


class FieldSystem(NamedTuple):
    """Weak systems of independent records of a field (``b[record, row]``, ``g[record, row, term]``),
    with what :func:`gtls` needs of their noise (the same test functions for every record)."""

    b: jax.Array
    g: jax.Array
    phi: jax.Array
    dphi: jax.Array
    psi: jax.Array
    operators: jax.Array
    dt_s: float


def field_system(c, operators, dt_s: float, n_test_t: int = 80, half_width_t: int = 20, space=None,
                 power: int = 4) -> FieldSystem:
    """``b`` and ``G`` (rows: time bump ``k`` × spatial test ``m``) for records ``c[record, t, j]`` (or one
    record ``c[t, j]``) of a field on all nodes; ``operators[j, i, p]`` is term ``p`` at interior node ``i`` of a unit field at node ``j``. Spatial
    tests: every interior node (``space=None``), ``(n_test_r, half_width_r)`` bumps across them, or an
    array ``space[m, i]``."""
    c = jnp.asarray(c)
    c = c[None] if c.ndim == 2 else c
    ops = jnp.asarray(operators, c.dtype)
    phi, dphi = (jnp.asarray(a, c.dtype) for a in bumps(c.shape[1], n_test_t, half_width_t, power))
    n_i = ops.shape[1]
    psi = np.eye(n_i) if space is None else bumps(n_i, *space, power)[0] if isinstance(space, tuple) else space
    psi = jnp.asarray(psi, c.dtype)
    b = -(dphi @ c[:, :, 1:-1] @ psi.T).reshape(c.shape[0], -1)
    g = dt_s * jnp.einsum("kt,rtj,jip,mi->rkmp", phi, c, ops, psi).reshape(c.shape[0], -1, ops.shape[-1])
    return FieldSystem(b, g, phi, dphi, psi, ops, dt_s)


@functools.partial(jax.jit, static_argnames=("n_iter",))
def gtls(system: FieldSystem, xi0, mask=None, n_iter: int = 20):
    """``(xi, cov_per_var, chi2_per_var, last_step)``: the maximum-likelihood coefficients among the
    terms in ``mask`` (others held at zero), their covariance and the objective, both per unit noise
    variance (multiply by :math:`\\sigma^2`, divide by it), and the size of the last iteration's step.
    Records are independent: their normal equations add up, and ``C`` (one Cholesky factor) is shared."""
    b, g, phi, dphi, psi, ops, dt_s = system
    n_r, n, p = g.shape
    b_cols = b.T
    g_cols = jnp.moveaxis(g, 0, 1).reshape(n, n_r * p)
    keep = jnp.ones(p, bool) if mask is None else jnp.asarray(mask, bool)
    n_t, n_m = phi.shape[0], psi.shape[0]
    select = psi @ jnp.eye(ops.shape[0], dtype=g.dtype)[1:-1]
    pp, dp, dd = phi @ phi.T, dphi @ phi.T, dphi @ dphi.T

    def factor(xi):
        lx = psi @ jnp.einsum("p,jip->ij", xi, ops)
        cov = (jnp.kron(dd, select @ select.T) + dt_s * (jnp.kron(dp, select @ lx.T) + jnp.kron(dp.T, lx @ select.T))
               + dt_s**2 * jnp.kron(pp, lx @ lx.T))
        return jnp.linalg.cholesky(cov)

    def masked_solve(a, rhs):
        a = jnp.where(keep[:, None] & keep[None, :], a, jnp.eye(p, dtype=a.dtype))
        return jnp.where(keep, jnp.linalg.solve(a, jnp.where(keep, rhs, 0.0)), 0.0)

    def normal(xi):
        chol = factor(xi)
        solve = lambda v: jax.scipy.linalg.cho_solve((chol, True), v)
        w = solve(b_cols - jnp.einsum("rnp,p->nr", g, xi)).reshape(n_t, n_m, n_r)
        mp_w = -dt_s * jnp.einsum("kt,kmr,mi,jip->prtj", phi, w, psi, ops)
        m0_w = -jnp.einsum("kt,kmr,mj->rtj", dphi, w, select)
        y = jnp.einsum("prtj,qrtj->pq", mp_w, mp_w)
        y0 = jnp.einsum("prtj,rtj->p", mp_w, m0_w)
        cg = solve(g_cols).reshape(n, n_r, p)
        gcg = jnp.einsum("rnp,nrq->pq", g, cg)
        gcb = jnp.einsum("nrp,rn->p", cg, b)
        return gcg - y, gcb + y0, w

    def update(xi):
        a, rhs, _ = normal(xi)
        return masked_solve(a, rhs)

    xi = jax.lax.fori_loop(0, n_iter, lambda _, x: update(x), jnp.where(keep, jnp.asarray(xi0, g.dtype), 0.0))
    a, rhs, w = normal(xi)
    both = keep[:, None] & keep[None, :]
    cov = jnp.where(both, jnp.linalg.inv(jnp.where(both, a, jnp.eye(p, dtype=g.dtype))), 0.0)
    chi2 = jnp.sum(w * (b_cols - jnp.einsum("rnp,p->nr", g, xi)).reshape(w.shape))
    return xi, cov, chi2, jnp.max(jnp.abs(masked_solve(a, rhs) - xi))


def backward_elimination(system: FieldSystem, xi0, sigma: float, min_z: float = 3.0):
    """Terms kept by dropping, one at a time, the term whose coefficient is fewest standard deviations
    from zero while that is below ``min_z`` (Wald tests on :func:`gtls`): ``(support, xi, cov)``, the
    covariance for noise of standard deviation ``sigma``; the iteration starts from ``xi0``."""
    support = np.ones(system.g.shape[-1], bool)
    xi = np.asarray(xi0)
    while True:
        xi, cov, _, _ = gtls(system, jnp.asarray(xi), jnp.asarray(support))
        xi, cov = np.asarray(xi), sigma**2 * np.asarray(cov)
        z = np.where(support, np.abs(xi) / np.maximum(np.sqrt(np.clip(np.diag(cov), 0.0, None)), 1e-300), np.inf)
        if z.min() >= min_z or support.sum() == 1:
            return support, xi, cov
        support[np.argmin(z)] = False
