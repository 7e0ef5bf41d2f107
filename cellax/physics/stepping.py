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

The same modal form gives any function of ``J``, so the linear part can also be
integrated *exactly*: the exponential integrator ETD2 (ETDRK2 of Cox and Matthews,
J. Comput. Phys. 176, 2002; Hochbruck and Ostermann, Acta Numerica 19, 2010) writes
``f(y) = J y + g(y)`` with ``J`` frozen at ``y_n`` and takes

.. math::

    a &= y_n + \\tau \\varphi_1(\\tau J) f(t_n, y_n), \\\\
    y_{n+1} &= a + \\tau \\varphi_2(\\tau J)\\,\\bigl(f(t_{n+1}, a) - f(t_n, y_n) - J (a - y_n)\\bigr),
    \\qquad \\varphi_1(z) = \\frac{e^z - 1}{z}, \\; \\varphi_2(z) = \\frac{e^z - 1 - z}{z^2},

second order for any ``J``, and exact for ``y' = J y + c``: a particle of uniform
diffusivity under a constant current (temperature held) is integrated without error
however long the step, where ROS2's rational approximation of ``e^{\\tau\\lambda}``
errs most on the modes with ``\\tau|\\lambda| \\approx 1``. In modal coordinates
(``F = V^{-1} f``, ``z = \\tau\\lambda``) it takes what ROS2 takes, two field evaluations and
two transforms each way, plus the ``φ`` functions (1.1–1.2× a ROS2 step measured):
``y_{n+1} = y_n + \\tau V[(\\varphi_1 - \\varphi_2 - z\\varphi_1\\varphi_2) F_0 + \\varphi_2 F_1]``.
On the environment's 30 s control steps one ETD2 step is at least as accurate as three ROS2
steps (``docs/rl.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

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

    def to_modes(self, x: Float[Array, " n"]) -> Float[Array, " n"]:
        """``V^{-1} x``."""
        return self.inverse @ x

    def from_modes(self, modes: Float[Array, " n"]) -> Float[Array, " n"]:
        """``V m``."""
        return self.vectors @ modes


class StiffModes(NamedTuple):
    """A model's stiff Jacobian at one state in modal form, ``J = V diag(eigenvalues) V^{-1}``.

    ``to_modes`` maps a state-shaped PyTree ``x`` to ``V^{-1} x``, ``from_modes`` back; ``eigenvalues`` (1/s)
    is a PyTree shaped like ``to_modes(x)``. Any function of ``J`` is then elementwise in the modes."""

    eigenvalues: Any
    to_modes: Callable
    from_modes: Callable

    def apply(self, function: Callable, rhs):
        """``function(J) rhs``, ``function`` acting elementwise on the eigenvalues."""
        modes = self.to_modes(rhs)
        return self.from_modes(jax.tree_util.tree_map(lambda m, lam: function(lam) * m, modes, self.eigenvalues))


def phi_functions(z):
    """``(φ1(z), φ2(z))`` with ``φ1 = (e^z - 1)/z``, ``φ2 = (e^z - 1 - z)/z^2``, ``φ_k(z) = Σ_j z^j / (j + k)!``: that
    series (to ``z^10``, below float64's rounding) for ``|z| < 0.2``, where the closed forms cancel; finite
    gradients at ``z = 0``."""
    small = jnp.abs(z) < 0.2
    z_safe = jnp.where(small, 1.0, z)
    e = jnp.expm1(z_safe)
    series = [jnp.polyval(jnp.asarray(_PHI_SERIES[k], z.dtype), z) for k in (1, 2)]
    return jnp.where(small, series[0], e / z_safe), jnp.where(small, series[1], (e - z_safe) / z_safe**2)


_PHI_SERIES = {k: [1.0 / math.factorial(j + k) for j in reversed(range(11))] for k in (1, 2)}


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


def etd2_step(model, params, operators, state, current_start_a, current_end_a, dt_s, ambient_temp_k):
    """One ETD2 step (module docstring): :func:`ros2_step`'s signature and returns."""
    modes = model.stiff_modes(params, operators, state)
    tree_map = jax.tree_util.tree_map
    z = tree_map(lambda lam: dt_s * lam, modes.eigenvalues)
    phi1 = tree_map(lambda x: phi_functions(x)[0], z)
    phi2 = tree_map(lambda x: phi_functions(x)[1], z)
    rates, outputs = model.rates_and_outputs(params, state, current_start_a, ambient_temp_k)
    f0 = modes.to_modes(rates)
    stage = tree_map(jnp.add, state, modes.from_modes(tree_map(lambda p, f: dt_s * p * f, phi1, f0)))
    f1 = modes.to_modes(model.vector_field(params, stage, current_end_a, ambient_temp_k))
    increment = tree_map(lambda p, q, x, a, b: dt_s * ((p - q - x * p * q) * a + q * b), phi1, phi2, z, f0, f1)
    return tree_map(jnp.add, state, modes.from_modes(increment)), outputs


STEPPERS = {"ros2": ros2_step, "etd2": etd2_step}
"""The one-step methods of the fixed-step solvers, by name (same signature)."""


def stepper(solver: str):
    """The one-step method called ``solver``; a ``ValueError`` naming the choices for any other name."""
    if solver not in STEPPERS:
        raise ValueError(f"solver must be one of {tuple(STEPPERS)}, got {solver!r}")
    return STEPPERS[solver]


def _axpy(a, x, y):
    return jax.tree_util.tree_map(lambda u, v: a * u + v, x, y)
