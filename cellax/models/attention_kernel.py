"""Causal self-attention for training on CPU as one C++ kernel each way (``cellax/kernels/attention.cc``).

The same algorithm as :func:`cellax.models.transformer.flash_attend` (FlashAttention: the forward keeps
the output and each query's log-sum-exp ``ℓ``, the backward recomputes ``P = exp(S − ℓ)``), but where
XLA:CPU runs that as hundreds of small kernels per step, here each (sequence, head) is one task on
XLA's CPU thread pool with its keys and values in cache-resident scratch. Values and gradients equal
the dense attention's to float32 rounding.

Float32, CPU only, positions ``0 … T-1`` (a whole sequence: only ``t − s`` matters); the ALiBi slopes
are constants (no gradient). ``vmap`` moves the batch into the kernel's leading axes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from cellax import kernels

FORWARD, BACKWARD = "cellax_attention_forward", "cellax_attention_backward"
MAX_HEAD_DIM = 128
"""The kernel's largest head dimension (``kMaxVectors × kLanes``)."""
SYMBOLS = (("CellaxAttentionForward", FORWARD), ("CellaxAttentionBackward", BACKWARD))


def _register() -> None:
    kernels.register("attention", SYMBOLS)


def available() -> bool:
    """Whether the kernel builds and runs here (a CPU backend and a C++ compiler); tried once per process."""
    return kernels.available("attention", SYMBOLS)


def _forward(qkv, slopes, heads: int, rope_theta: float):
    """``(out, ℓ)``: ``out`` ``(…, T, H, d)``, ``ℓ`` ``(…, H, T)``."""
    *batch, length, _, d = qkv.shape
    shapes = (jax.ShapeDtypeStruct((*batch, length, heads, d), jnp.float32),
              jax.ShapeDtypeStruct((*batch, heads, length), jnp.float32))
    return jax.ffi.ffi_call(FORWARD, shapes, vmap_method="broadcast_all")(
        qkv, slopes, heads=np.int64(heads), rope_theta=np.float32(rope_theta))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _attention(qkv, slopes, heads, rope_theta):
    return _forward(qkv, slopes, heads, rope_theta)[0]


def _attention_fwd(qkv, slopes, heads, rope_theta):
    out, lse = _forward(qkv, slopes, heads, rope_theta)
    return out, (qkv, slopes, out, lse)


def _attention_bwd(heads, rope_theta, residuals, dout):
    qkv, slopes, out, lse = residuals
    dqkv = jax.ffi.ffi_call(BACKWARD, jax.ShapeDtypeStruct(qkv.shape, jnp.float32), vmap_method="broadcast_all")(
        qkv, slopes, out, lse, dout, heads=np.int64(heads), rope_theta=np.float32(rope_theta))
    return dqkv, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def kernel_attend(
    qkv: Float[Array, "T heads+2*kv_heads d"],
    heads: int,
    slopes: Float[Array, " heads"] | None,
    rope_theta: float | None = None,
) -> Float[Array, "T heads*d"]:
    """Causal grouped-query attention ``softmax(q kᵀ/√d − m_h (t − s), s ≤ t) v`` by the CPU kernel.

    ``qkv`` is the attention's projection as one array: per position the ``heads`` query heads, then
    the key heads, then as many value heads (query head ``h`` reads key/value head ``h // (heads /
    kv_heads)``). With ``rope_theta``, queries and keys are first rotated by RoPE on the halves layout
    (:func:`cellax.models.transformer.rope_halves` at positions ``0 … T-1``), inside the kernel: no
    split, rotation or concatenation of the projection runs in XLA, either way. Raises
    :class:`~cellax.kernels.KernelUnavailable` where the kernel cannot be built.
    """
    length, rows, d = qkv.shape
    if d > MAX_HEAD_DIM:
        raise ValueError(f"the attention kernel takes head dimensions up to {MAX_HEAD_DIM}, got {d}; "
                         "use attention 'flash'")
    if rows <= heads or (rows - heads) % 2 or heads % ((rows - heads) // 2):
        raise ValueError(f"qkv has {rows} heads per position; {heads} query heads need 2 G more, G dividing {heads}")
    if rope_theta is not None and (d % 2 or rope_theta <= 0):
        raise ValueError(f"RoPE needs an even head dimension and rope_theta > 0, got d = {d}, rope_theta = {rope_theta}")
    _register()
    slopes = jnp.zeros(heads, jnp.float32) if slopes is None else jax.lax.stop_gradient(slopes).astype(jnp.float32)
    out = _attention(qkv.astype(jnp.float32), slopes, heads, float(rope_theta or 0.0))
    return out.reshape(length, heads * d).astype(qkv.dtype)
