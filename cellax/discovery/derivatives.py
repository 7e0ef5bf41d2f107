"""Time derivatives of noisy samples on a uniform grid.

- :func:`savitzky_golay`: the derivative of a local least-squares polynomial of degree
  ``order`` over ``window`` samples, a convolution
  :math:`\\dot x_k \\approx \\frac{1}{\\Delta t}\\sum_j h_j x_{k+j}`; edges use shifted windows.
- :func:`total_variation`: Chartrand's regularised derivative,

  .. math::

      u = \\arg\\min_u \\tfrac12 \\lVert A u - (x - x_0) \\rVert^2 + \\alpha \\sum_k \\sqrt{(D u)_k^2 + \\epsilon},

  ``A`` the cumulative trapezoidal integral and ``D`` the forward difference, minimised by L-BFGS.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


def savgol_matrix(n: int, window: int, order: int, dt_s: float) -> np.ndarray:
    """The ``(n, n)`` matrix that maps samples to their Savitzky–Golay derivative."""
    if window % 2 == 0 or window <= order or window > n:
        raise ValueError(f"savitzky_golay: window must be odd, > order ({order}) and <= n ({n}); got {window}")
    half = window // 2
    offsets = np.arange(-half, half + 1)
    out = np.zeros((n, n))
    for k in range(n):
        start = min(max(k - half, 0), n - window)
        x = offsets + (start + half - k)
        vander = np.vander(x, order + 1, increasing=True)
        # derivative at x=0 of the least-squares polynomial: row 1 of the pseudo-inverse
        out[k, start:start + window] = np.linalg.pinv(vander)[1]
    return out / dt_s


def savitzky_golay(x, dt_s: float, window: int = 11, order: int = 3):
    """Smoothed derivative of ``x`` along axis 0 (``x[k]`` at ``k * dt_s``)."""
    x = jnp.asarray(x)
    matrix = jnp.asarray(savgol_matrix(x.shape[0], window, order, dt_s), dtype=x.dtype)
    return jnp.tensordot(matrix, x, axes=1)


def total_variation(x, dt_s: float, alpha: float = 1e-2, eps: float = 1e-8, steps: int = 300):
    """TV-regularised derivative of a 1-D signal ``x`` (see the module docstring)."""
    x = jnp.asarray(x)
    scale = jnp.maximum(jnp.std(x), jnp.finfo(x.dtype).tiny)
    y = (x - x[0]) / scale

    def integrate(u):
        return jnp.concatenate([jnp.zeros(1, u.dtype), jnp.cumsum(0.5 * (u[1:] + u[:-1])) * dt_s])

    def loss(u):
        fit = 0.5 * jnp.sum((integrate(u) - y) ** 2)
        return fit + alpha * jnp.sum(jnp.sqrt(jnp.diff(u) ** 2 * dt_s**2 + eps))

    optimiser = optax.lbfgs()
    u0 = jnp.gradient(y, dt_s)
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        u, state = carry
        value, grad = value_and_grad(u, state=state)
        updates, state = optimiser.update(grad, state, u, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(u, updates), state), None

    (u, _), _ = jax.lax.scan(step, (u0, optimiser.init(u0)), None, length=steps)
    return u * scale
