"""The Mamba streaming step as one hand-fused CPU kernel: the deployed step under 100 µs per sample.

XLA:CPU runs :meth:`cellax.models.Mamba.step` as ~77 kernels (22 matvecs and ~55 small
elementwise fusions, about a microsecond of dispatch each): 125 µs per sample on one core for the
~1 M-parameter model, of which streaming its 4 MB of weights is about half (docs/performance.md).
:class:`FusedMambaStep` computes the same step in one XLA FFI custom call (``kernels/mamba_step.cc``):

- the linear layers' weights packed once into panels of 64 rows (:func:`panels`), so each matvec
  keeps its outputs in registers while the weights stream by in order;
- the SSM update ``h ← exp(Δ A) ⊙ h + Δ u B``, ``y = C · h + D u`` fused per channel;
- ``exp``, ``log1p`` (softplus) and SiLU as vectorised polynomials.

It is a drop-in for the model in :class:`~cellax.deploy.step.DeployedStep` (the same ``init_state``,
``step`` and state array), float32, equal to the XLA step to ~1e-6; ``jit`` and ``vmap`` work on it
(a ``vmap`` loops over the cells inside the kernel).

The kernel is built on first use and cached (:mod:`cellax.kernels`). CPU only; ONNX and StableHLO files
cannot carry a custom call, so exports keep the XLA step.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from cellax.kernels import KernelUnavailable, register
from cellax.models.mamba import Mamba, MambaConfig, MambaState

__all__ = ["FusedMambaStep", "KernelUnavailable", "pack", "panels"]

TARGET = "cellax_mamba_step"
PANEL = 64
"""Rows per panel of a packed matrix: ``kPanel`` in the kernel."""


def _register() -> None:
    register("mamba_step", (("CellaxMambaStep", TARGET),))


def pack(model: Mamba) -> tuple[Float[np.ndarray, " P"], Float[np.ndarray, " S"]]:
    """The model's parameters in the kernel's order (see ``kernels/mamba_step.cc``): the linear layers'
    matrices as :func:`panels` in one float32 vector, everything else in another."""
    matrices = [model.embed.weight]
    small = [model.embed.bias]
    for norm, m in zip(model.norms, model.mixers):
        matrices += [m.in_proj.weight, m.x_proj.weight, m.dt_proj.weight, m.out_proj.weight]
        small += [norm.weight, m.conv_weight, m.conv_bias, m.dt_proj.bias, -jnp.exp(m.A_log), m.D]
    matrices.append(model.head.weight)
    small += [model.norm.weight, model.head.bias]
    return np.concatenate([panels(w) for w in matrices]), np.concatenate([np.asarray(p, np.float32).ravel() for p in small])


def panels(weight: Float[Array, "rows cols"]) -> Float[np.ndarray, " P"]:
    """``weight`` as the kernel's matvec reads it: rows zero-padded to a multiple of :data:`PANEL`,
    then each block of ``PANEL`` rows transposed to ``(cols, PANEL)``, row-major."""
    rows, cols = weight.shape
    padded = np.pad(np.asarray(weight, np.float32), ((0, -rows % PANEL), (0, 0)))
    return padded.reshape(-1, PANEL, cols).transpose(0, 2, 1).ravel()


class FusedMambaStep(eqx.Module):
    """:meth:`Mamba.step` as one fused CPU kernel; ``init_state`` and the state layout are the model's.

    Raises :class:`KernelUnavailable` at construction when the kernel cannot be built here.
    """

    config: MambaConfig = eqx.field(static=True)
    n_outputs: int = eqx.field(static=True)
    weights: Float[Array, " P"]
    small: Float[Array, " S"]

    def __init__(self, model: Mamba):
        if model.embed.bias is None or model.head.bias is None or any(n.weight is None for n in model.norms):
            raise ValueError("the fused Mamba step expects the Mamba layout (biased embed/head, weighted norms)")
        _register()
        self.config, self.n_outputs = model.config, model.head.out_features
        weights, small = pack(model)
        self.weights, self.small = jnp.asarray(weights), jnp.asarray(small)

    def init_state(self) -> MambaState:
        return jnp.zeros(self.config.state_shape, jnp.float32)

    def step(self, state: MambaState, x_t: Float[Array, " n_features"]) -> tuple[Float[Array, " n_outputs"], MambaState]:
        """One sample, as :meth:`Mamba.step`. Under ``vmap`` (over cells, nested or not) the kernel steps
        every cell in one call; a state shared by all cells is broadcast to each."""
        return _fused_call(self.config, self.n_outputs)(self.weights, self.small, state.astype(jnp.float32),
                                                        x_t.astype(jnp.float32))


@functools.cache
def _fused_call(config: MambaConfig, n_outputs: int):
    """``(weights, small, state, x) -> (y, state)`` for any leading cell axes of ``state`` and ``x``, with
    a ``vmap`` rule that moves the batch into those axes (the weights must stay unbatched)."""
    c = config
    attributes = {"width": np.int64(c.width), "layers": np.int64(c.n_layers), "inner": np.int64(c.inner),
                  "state_size": np.int64(c.state_size), "conv_kernel": np.int64(c.conv_kernel),
                  "rank": np.int64(c.rank), "eps": np.float32(c.norm_eps)}

    def cells(weights, small, state, x):
        out = (jax.ShapeDtypeStruct((*x.shape[:-1], n_outputs), jnp.float32),
               jax.ShapeDtypeStruct(state.shape, jnp.float32))
        return jax.ffi.ffi_call(TARGET, out, input_output_aliases={2: 1})(weights, small, state, x, **attributes)

    @jax.custom_batching.custom_vmap
    def call(weights, small, state, x):
        return cells(weights, small, state, x)

    @call.def_vmap
    def _rule(axis_size, in_batched, weights, small, state, x):
        if in_batched[0] or in_batched[1]:
            raise ValueError("the fused Mamba step holds one model's weights: vmap over cells, not over models")
        state, x = (v if batched else jnp.broadcast_to(v, (axis_size, *v.shape))
                    for v, batched in zip((state, x), in_batched[2:]))
        return call(weights, small, state, x), (True, True)

    return call
