"""Sparse regression for one target ``y ≈ G ξ``: STLSQ and SR3 with an L0 penalty, both ``jit``-able
with static shapes (supports are masks), so ``vmap`` runs many thresholds or ensemble members at once.

Columns of ``G`` and the target are scaled to unit norm before thresholding: a threshold ``λ`` is
the smallest share of the target a kept term may carry, whatever the units.

- **STLSQ** (Brunton et al. 2016): least squares, zero every :math:`|\\xi_j| < \\lambda`, refit on
  the rest, repeat.
- **SR3** (Zheng et al. 2019) with :math:`R = \\lambda^2/2\\,\\lVert w \\rVert_0`:

  .. math::

      \\xi \\leftarrow (G^\\top G + I/\\nu)^{-1}(G^\\top y + w/\\nu), \\qquad
      w \\leftarrow H_{\\lambda}(\\xi) \\text{ (hard threshold)},

  then a least-squares refit on the support of ``w``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _scaled(g, y):
    g_scale = jnp.linalg.norm(g, axis=0)
    g_scale = jnp.where(g_scale > 0, g_scale, 1.0)
    y_scale = jnp.linalg.norm(y)
    y_scale = jnp.where(y_scale > 0, y_scale, 1.0)
    return g / g_scale, y / y_scale, g_scale, y_scale


def masked_lstsq(gram, rhs, mask, ridge=1e-12):
    """Least squares on the columns in ``mask`` (others exactly zero) from the normal equations."""
    both = mask[:, None] & mask[None, :]
    a = jnp.where(both, gram, 0.0) + jnp.diag(jnp.where(mask, ridge, 1.0))
    return jnp.where(mask, jnp.linalg.solve(a, jnp.where(mask, rhs, 0.0)), 0.0)


def stlsq(g, y, threshold, mask=None, iterations: int = 10, ridge: float = 1e-12):
    """Sequentially thresholded least squares; ``mask`` restricts the candidate terms. Returns ``ξ``."""
    gn, yn, g_scale, y_scale = _scaled(g, y)
    gram, rhs = gn.T @ gn, gn.T @ yn
    mask = jnp.ones(g.shape[1], bool) if mask is None else mask

    def step(xi, _):
        keep = mask & (jnp.abs(xi) >= threshold)
        return masked_lstsq(gram, rhs, keep, ridge), None

    xi, _ = jax.lax.scan(step, masked_lstsq(gram, rhs, mask, ridge), None, length=iterations)
    return xi * y_scale / g_scale


def sr3(g, y, threshold, mask=None, nu: float = 1.0, iterations: int = 100, ridge: float = 1e-12):
    """SR3 with an L0 penalty (hard-threshold prox), refit on its support. Returns ``ξ``."""
    gn, yn, g_scale, y_scale = _scaled(g, y)
    gram, rhs = gn.T @ gn, gn.T @ yn
    p = g.shape[1]
    mask = jnp.ones(p, bool) if mask is None else mask
    solve = jnp.linalg.inv(gram + jnp.eye(p) / nu)

    def step(w, _):
        xi = solve @ (rhs + w / nu)
        return jnp.where(mask & (jnp.abs(xi) >= threshold), xi, 0.0), None

    w, _ = jax.lax.scan(step, masked_lstsq(gram, rhs, mask, ridge), None, length=iterations)
    xi = masked_lstsq(gram, rhs, w != 0, ridge)
    return xi * y_scale / g_scale


SOLVERS = {"stlsq": stlsq, "sr3": sr3}


def solver(name: str):
    """The solver function called ``name`` (one of :data:`SOLVERS`)."""
    if name not in SOLVERS:
        raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {name!r}")
    return SOLVERS[name]


@functools.partial(jax.jit, static_argnames="method")
def threshold_scan(g, y, thresholds, method: str = "stlsq"):
    """``ξ`` for every threshold, ``(n_thresholds, p)``: one ``vmap``."""
    fn = solver(method)
    return jax.vmap(lambda lam: fn(g, y, lam))(jnp.asarray(thresholds, g.dtype))
