"""A GRU baseline: input projection, stacked GRU cells, linear regression head.

.. math::

    h^0_t = W_\\text{in} x_t, \\qquad
    s^l_t = \\text{GRU}^l(h^{l-1}_t, s^l_{t-1}), \\quad h^l_t = s^l_t, \\qquad
    y_t = W_\\text{out} h^L_t,

with the GRU cell of Cho et al. (2014) as ``equinox.nn.GRUCell`` computes it.
The full forward is ``lax.scan`` of :meth:`GRU.step`, so streaming and the full
forward are the same computation. Float32.
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray
from pydantic import Field

from cellax.config import Strict


class GRUConfig(Strict):
    """Hyperparameters of :class:`GRU`."""

    kind: Literal["gru"] = "gru"
    width: int = Field(64, gt=0, le=16_384, description="input projection and hidden size")
    n_layers: int = Field(1, gt=0, le=1024)


class GRU(eqx.Module):
    """Stacked GRU regressor: ``(T, n_features) → (T, n_outputs)``, causal."""

    config: GRUConfig = eqx.field(static=True)
    embed: eqx.nn.Linear
    cells: list[eqx.nn.GRUCell]
    head: eqx.nn.Linear

    def __init__(self, config: GRUConfig | dict, n_features: int, n_outputs: int, *, key: PRNGKeyArray):
        config = GRUConfig.model_validate(config)
        ke, kh, *kc = jax.random.split(key, config.n_layers + 2)
        self.config = config
        self.embed = eqx.nn.Linear(n_features, config.width, dtype=jnp.float32, key=ke)
        self.cells = [eqx.nn.GRUCell(config.width, config.width, dtype=jnp.float32, key=k) for k in kc]
        self.head = eqx.nn.Linear(config.width, n_outputs, dtype=jnp.float32, key=kh)

    def init_state(self) -> Float[Array, "layers width"]:
        """Zero hidden state of every layer."""
        return jnp.zeros((self.config.n_layers, self.config.width), jnp.float32)

    def step(
        self, state: Float[Array, "layers width"], x_t: Float[Array, " n_features"]
    ) -> tuple[Float[Array, " n_outputs"], Float[Array, "layers width"]]:
        """Consume one sample; returns ``(y_t, state)``."""
        h = self.embed(x_t.astype(jnp.float32))
        new = []
        for cell, s in zip(self.cells, state):
            h = cell(h, s)
            new.append(h)
        return self.head(h), jnp.stack(new)

    def __call__(self, x: Float[Array, "T n_features"]) -> Float[Array, "T n_outputs"]:
        """Outputs at every position: :meth:`step` scanned over ``x``."""

        def body(state, x_t):
            y_t, state = self.step(state, x_t)
            return state, y_t

        return jax.lax.scan(body, self.init_state(), x)[1]
