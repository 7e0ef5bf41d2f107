"""Weak (integral) form: no derivative of noisy data is ever taken.

For :math:`\\dot x = \\Theta(x, u)\\,\\xi` and compact test functions :math:`\\phi_k` that vanish
at the ends of their support, integration by parts gives

.. math::

    -\\int \\dot\\phi_k(t)\\, x(t)\\,dt = \\Big(\\int \\phi_k(t)\\,\\Theta(t)\\,dt\\Big)\\,\\xi,

a linear system ``b = G ξ`` with one row per test function. For a field ``c(r, t)`` the test
functions are products :math:`\\phi_k(t)\\,\\psi_k(r)` and the integrals run over the particle's
shells with their volumes as weights; a spatial-derivative term of the library enters only through
:math:`\\langle \\psi_k, L c\\rangle = \\langle L^\\top \\psi_k, c\\rangle`, so the noise meets a smooth
weight, never a difference quotient. Test functions are the bumps
:math:`\\phi(s) = (1 - s^2)^p` on :math:`s \\in [-1, 1]`.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def bumps(n: int, n_test: int, half_width: int, power: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """``(phi, dphi_ds)``, each ``(n_test, n)``: bumps of ``half_width`` samples, centres evenly spread,
    and their derivatives per sample step (divide by ``dt_s`` for per second)."""
    if 2 * half_width + 1 > n:
        raise ValueError(f"weak form: test functions of half width {half_width} do not fit in {n} samples")
    centres = np.linspace(half_width, n - 1 - half_width, n_test)
    s = (np.arange(n)[None, :] - centres[:, None]) / half_width
    inside = np.abs(s) < 1
    base = np.where(inside, 1 - s**2, 0.0)
    phi = base**power
    dphi = np.where(inside, -2 * power * s * base ** (power - 1), 0.0) / half_width
    return phi, dphi


def weak_ode(x, theta, dt_s: float, n_test: int = 100, half_width: int = 20, power: int = 4):
    """``(b, G)`` of the weak form for samples ``x[t, m]`` (``m`` targets) and library ``theta[t, p]``."""
    phi, dphi = bumps(x.shape[0], n_test, half_width, power)
    phi, dphi = jnp.asarray(phi, x.dtype), jnp.asarray(dphi, x.dtype)
    return -dphi @ x, dt_s * (phi @ theta)


def weak_field(c, theta, dt_s: float, weights, n_test_t: int = 20, half_width_t: int = 10,
               n_test_r: int = 4, half_width_r: int = 3, power: int = 4):
    """``(b, G)`` for a field ``c[t, i]`` and a library ``theta[t, i, p]`` on the same (interior) nodes,
    with spatial quadrature ``weights[i]`` (shell volumes): test functions are all products of
    ``n_test_t`` bumps in time and ``n_test_r`` bumps across the nodes."""
    phi, dphi = bumps(c.shape[0], n_test_t, half_width_t, power)
    psi, _ = bumps(c.shape[1], n_test_r, half_width_r, power)
    psi = psi * np.asarray(weights)[None, :]
    phi, dphi, psi = (jnp.asarray(a, c.dtype) for a in (phi, dphi, psi))
    b = -jnp.einsum("kt,mi,ti->km", dphi, psi, c).reshape(-1)
    g = dt_s * jnp.einsum("kt,mi,tip->kmp", phi, psi, theta).reshape(-1, theta.shape[-1])
    return b, g

