"""Fixed-step linearly implicit integration on the sample grid: ROS2 with a structured Jacobian.

The cell models are stiff (the separator's electrolyte modes decay in a fraction
of a millisecond) but their stiffness is almost all *linear diffusion with a
uniform coefficient*: particle shells ``(D/R^2) W^{-1} A`` and electrolyte
``D_e (\\varepsilon w)^{-1} A_e``, plus the two-node thermal network. The
two-stage Rosenbrock–W method ROS2 (Verwer, Spee, Blom and Hundsdorfer, SIAM J.
Sci. Comput. 20, 1999)

.. math::

    (I - \\gamma\\tau J)\\, k_1 &= f(t_n, y_n), \\\\
    (I - \\gamma\\tau J)\\, k_2 &= f(t_{n+1}, y_n + \\tau k_1) - 2 k_1, \\\\
    y_{n+1} &= y_n + \\tfrac32 \\tau k_1 + \\tfrac12 \\tau k_2, \\qquad \\gamma = 1 + 1/\\sqrt2,

is second order for *any* matrix ``J`` (a W-method) and L-stable when ``J`` is
the exact Jacobian. We take ``J`` block diagonal: each diffusion block is its
uniform-coefficient operator ``d L`` with ``d`` the largest node coefficient at
``y_n`` (overestimating stiffness damps, never excites), and the thermal block is
exact in the temperatures. Everything else (kinetics, heat, migration,
concentration-dependent diffusivity, couplings between blocks) stays in ``f``.

``L = W^{-1} A`` with ``A`` symmetric and ``W`` positive diagonal, so
``L = V \\Lambda V^{-1}`` with ``V = W^{-1/2} Q`` from the symmetric eigenproblem of
``W^{-1/2} A W^{-1/2}``. It is computed once per parameter set
(:class:`SpectralOperator`); every stage solve is then two small matrix–vector
products and a diagonal scaling, ``(I - s L)^{-1} r = V (1 - s\\Lambda)^{-1} V^{-1} r``,
which batch into matrix–matrix products under ``vmap`` and differentiate as
plain linear algebra.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

GAMMA = 1.0 + 1.0 / math.sqrt(2.0)


class SpectralOperator(eqx.Module):
    """``L = W^{-1} A = V diag(eigenvalues) V^{-1}`` for symmetric ``A`` and positive weights ``W``."""

    vectors: Float[Array, "n n"]
    inverse: Float[Array, "n n"]
    eigenvalues: Float[Array, " n"]

    def __init__(self, stiffness: Float[Array, "n n"], weights: Float[Array, " n"], dtype=None):
        """Diagonalise in float64 when JAX has it (a float32 cell model still gets accurate modes); store in
        ``dtype`` (default: the inputs')."""
        dtype = dtype or jnp.result_type(stiffness)
        if jax.config.jax_enable_x64:
            stiffness, weights = stiffness.astype(jnp.float64), weights.astype(jnp.float64)
        root = jnp.sqrt(weights)
        eigenvalues, q = jnp.linalg.eigh(stiffness / root[:, None] / root[None, :])
        self.vectors = (q / root[:, None]).astype(dtype)
        self.inverse = (q.T * root[None, :]).astype(dtype)
        self.eigenvalues = eigenvalues.astype(dtype)

    def solve(self, scale, rhs: Float[Array, " n"]) -> Float[Array, " n"]:
        """``(I - scale L)^{-1} rhs``."""
        return self.vectors @ ((self.inverse @ rhs) / (1.0 - scale * self.eigenvalues))


def ros2_step(model, params, operators, state, current_start_a, current_end_a, dt_s, ambient_temp_k):
    """One ROS2 step of length ``dt_s`` with the current linear from ``current_start_a`` to ``current_end_a``.

    Returns ``(new_state, outputs)``; ``outputs`` are the canonical signals at the *start* of the step
    (they share the first vector-field evaluation).
    """
    scale = GAMMA * dt_s
    rates, outputs = model.rates_and_outputs(params, state, current_start_a, ambient_temp_k)
    k1 = model.solve_stiff(params, operators, state, scale, rates)
    stage = _axpy(dt_s, k1, state)
    rates = model.vector_field(params, stage, current_end_a, ambient_temp_k)
    k2 = model.solve_stiff(params, operators, state, scale, _axpy(-2.0, k1, rates))
    new_state = jax.tree_util.tree_map(lambda y, a, b: y + dt_s * (1.5 * a + 0.5 * b), state, k1, k2)
    return new_state, outputs


def _axpy(a, x, y):
    return jax.tree_util.tree_map(lambda u, v: a * u + v, x, y)
