"""Refinement of a chosen structure through the solver, with Gauss–Newton uncertainties.

Sparse regression fits derivatives (or their weak integrals); refinement fits whole trajectories.
With ``predict(θ)`` the simulated signals and ``ŷ`` the measured ones, minimise

.. math::

    \\tfrac12 \\lVert r(z) \\rVert^2, \\qquad r(z) = \\text{predict}(\\theta_0 (1 + z)) - \\hat y,

by Levenberg–Marquardt (optimistix), the Jacobian by forward-mode derivatives through the solver, as
a dense matrix (:func:`cellax.physics.fit.forward_jacobian`).
As ``cellax fit`` reports them (:mod:`cellax.physics.fit`), the uncertainties are the Gauss–Newton
covariance :math:`s^2 (J^\\top J)^{-1}` with the residual variance :math:`s^2 = \\lVert r\\rVert^2/(n - p)`,
mapped to ``θ`` (``dθ/dz = θ_0``); the reported values are its square-rooted diagonal.

:func:`simulate_library` is the ``predict`` of a discovered ODE :math:`\\dot x = \\Theta(x, u)\\,\\Xi`:
diffrax's Tsit5 with error control, inputs ``u`` linear between samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from cellax.discovery.library import Library
from cellax.physics.fit import forward_jacobian


@dataclass(frozen=True)
class Refined:
    values: np.ndarray
    std: np.ndarray
    rmse: float
    steps: int
    converged: bool


def refine(predict: Callable, theta0, measured, max_steps: int = 50, rtol: float = 1e-8,
           atol: float = 1e-10) -> Refined:
    """Refine ``θ`` (1-D, no zero entries) so that ``predict(θ)`` matches ``measured`` (same shape)."""
    theta0 = jnp.asarray(theta0)
    measured = jnp.asarray(measured)
    if np.any(np.asarray(theta0) == 0):
        raise ValueError("refine: every refined coefficient needs a non-zero start (drop zero terms first)")

    def residuals(z, _):
        return (predict(theta0 * (1 + z)) - measured).reshape(-1)

    solver = optx.LevenbergMarquardt(rtol=rtol, atol=atol)
    z0 = jnp.zeros_like(theta0)
    solution = optx.least_squares(forward_jacobian(residuals), solver, z0, max_steps=max_steps, throw=False)
    z = solution.value
    jac, r = jax.jacfwd(lambda zz: (residuals(zz, None),) * 2, has_aux=True)(z)
    n, p = jac.shape
    s2 = jnp.sum(r**2) / max(n - p, 1)
    cov_z = s2 * jnp.linalg.pinv(jac.T @ jac)
    std = jnp.sqrt(jnp.clip(jnp.diag(cov_z), 0.0)) * jnp.abs(theta0)
    converged = bool(solution.result == optx.RESULTS.successful)
    return Refined(np.asarray(theta0 * (1 + z)), np.asarray(std), float(jnp.sqrt(jnp.mean(r**2))),
                   int(solution.stats["num_steps"]), converged)


def simulate_library(library: Library, states: Sequence[str], coefficients, y0, time_s, inputs: dict,
                     rtol: float = 1e-8, atol: float = 1e-8):
    """Trajectories ``(n, m)`` of :math:`\\dot x = \\Theta(x, u)\\,\\Xi` (``coefficients`` ``(p, m)``)
    from ``y0`` on ``time_s``, with ``inputs`` sampled on ``time_s``."""
    time_s = jnp.asarray(time_s)
    interps = {k: diffrax.LinearInterpolation(ts=time_s, ys=jnp.asarray(v)) for k, v in inputs.items()}

    def field(t, y, xi):
        signals = {k: f.evaluate(t) for k, f in interps.items()}
        signals.update({name: y[i] for i, name in enumerate(states)})
        return library(signals) @ xi

    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Tsit5(), t0=time_s[0], t1=time_s[-1], dt0=None, y0=jnp.asarray(y0),
        args=coefficients, saveat=diffrax.SaveAt(ts=time_s),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, jump_ts=time_s), max_steps=20_000,
        adjoint=diffrax.ForwardMode(),
    )
    return solution.ys
