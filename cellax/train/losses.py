"""The feature-wise loss: per-output elementwise loss on normalised signals, weighted.

.. math::

    L = \\frac{\\sum_j w_j \\,\\overline{\\ell(\\hat y_j - y_j)}}{\\sum_j w_j}, \\qquad
    \\ell(e) = e^2 \\;\\text{(mse)}, \\quad
    \\begin{cases} e^2 / 2\\beta & |e| < \\beta \\\\ |e| - \\beta/2 & \\text{else} \\end{cases} \\;\\text{(smooth_l1)}, \\quad
    \\log\\cosh e \\;\\text{(log_cosh)},

the bar a mean over batch and time. Training and evaluation call the same function.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax
from jaxtyping import Array, Float


def elementwise(error: Array, kind: str, beta: float = 1.0) -> Array:
    """``ℓ(error)`` from optax's losses (smooth L1 is Huber over ``β``)."""
    if kind == "mse":
        return optax.squared_error(error)
    if kind == "smooth_l1":
        return optax.huber_loss(error, delta=beta) / beta
    if kind == "log_cosh":
        return optax.log_cosh(error)
    raise ValueError(f"unknown loss kind {kind!r}")


def feature_loss(
    prediction: Float[Array, "... n_out"], target: Float[Array, "... n_out"], weights: Float[Array, " n_out"],
    kind: str = "mse", beta: float = 1.0,
) -> tuple[Array, Float[Array, " n_out"]]:
    """``(weighted loss, per-output loss)``."""
    per_output = jnp.mean(elementwise(prediction - target, kind, beta).reshape(-1, prediction.shape[-1]), axis=0)
    return jnp.sum(weights * per_output) / jnp.sum(weights), per_output


def loss_weights(outputs, weights: dict[str, float]) -> Array:
    """The weight vector of ``outputs`` (1 where not given)."""
    return jnp.asarray([weights.get(name, 1.0) for name in outputs], dtype=jnp.float32)
