"""SwiGLU's activation ``silu(g) ⊙ u`` as one C++ kernel each way on CPU (``cellax/kernels/swiglu.cc``).

Takes the gate and up projections as the one array the fused matmul makes, ``gu = [g, u]``, and returns
``h = g σ(g) u``; its gradient ``d(gu) = [dh u σ (1 + g (1 − σ)), dh g σ]`` comes back as one array too. XLA:CPU
runs the same as four to five elementwise passes (slicing the projection, concatenating the gradient) per
layer; the kernel makes one each way. Float32 (other dtypes are cast), CPU only; ``vmap`` moves the batch
into the kernel's leading axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from cellax import kernels

FORWARD, BACKWARD = "cellax_swiglu_forward", "cellax_swiglu_backward"
SYMBOLS = (("CellaxSwigluForward", FORWARD), ("CellaxSwigluBackward", BACKWARD))


def _register() -> None:
    kernels.register("swiglu", SYMBOLS)


def available() -> bool:
    """Whether the kernel builds and runs here (a CPU backend and a C++ compiler); tried once per process."""
    return kernels.available("swiglu", SYMBOLS)


@jax.custom_vjp
def _swiglu(gu):
    shape = jax.ShapeDtypeStruct((*gu.shape[:-1], gu.shape[-1] // 2), jnp.float32)
    return jax.ffi.ffi_call(FORWARD, shape, vmap_method="broadcast_all")(gu)


def _swiglu_fwd(gu):
    return _swiglu(gu), gu


def _swiglu_bwd(gu, dh):
    return (jax.ffi.ffi_call(BACKWARD, jax.ShapeDtypeStruct(gu.shape, jnp.float32), vmap_method="broadcast_all")(gu, dh),)


_swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


def kernel_swiglu(gu: Float[Array, "*rows 2n"]) -> Float[Array, "*rows n"]:
    """``silu(g) ⊙ u`` for ``gu = [g, u]`` on the last axis, by the CPU kernel. Raises
    :class:`~cellax.kernels.KernelUnavailable` where the kernel cannot be built."""
    if gu.shape[-1] % 2:
        raise ValueError(f"gu's last axis holds the gate and up halves: an even size, got {gu.shape[-1]}")
    _register()
    return _swiglu(gu.astype(jnp.float32)).astype(gu.dtype)


def xla_swiglu(gu: Float[Array, "*rows 2n"]) -> Float[Array, "*rows n"]:
    """The same in XLA: ``silu(g) ⊙ u``."""
    gate, up = jnp.split(gu, 2, axis=-1)
    return jax.nn.silu(gate) * up
