"""The SwiGLU activation kernel: XLA's ``silu(g) ⊙ u`` in values and gradients, as one array each way."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cellax.models.mlp_kernel import kernel_swiglu, xla_swiglu
from cellax.models.transformer import resolve_swiglu


@pytest.mark.parametrize("shape", [(7, 2 * 176), (3, 5, 2 * 20), (2 * 3,)])  # whole and partial vectors, nested rows
def test_the_kernel_equals_xla_in_values_and_gradients(shape):
    gu = 4.0 * jax.random.normal(jax.random.key(0), shape)  # saturating gates both ways
    weights = jax.random.normal(jax.random.key(1), (*shape[:-1], shape[-1] // 2))
    np.testing.assert_allclose(jax.jit(kernel_swiglu)(gu), xla_swiglu(gu), rtol=2e-6, atol=1e-6)
    loss = lambda f: jax.jit(jax.grad(lambda x: jnp.sum(weights * jnp.tanh(f(x)))))
    np.testing.assert_allclose(loss(kernel_swiglu)(gu), loss(xla_swiglu)(gu), rtol=1e-5, atol=1e-6)


def test_vmap_moves_the_batch_into_the_kernel():
    gu = jax.random.normal(jax.random.key(2), (4, 9, 32))
    np.testing.assert_allclose(jax.jit(jax.vmap(kernel_swiglu))(gu), xla_swiglu(gu), rtol=2e-6, atol=1e-6)


def test_an_odd_last_axis_is_refused_and_auto_takes_the_kernel_on_cpu():
    with pytest.raises(ValueError, match="gate and up halves: an even size, got 5"):
        kernel_swiglu(jnp.ones((2, 5)))
    assert resolve_swiglu("auto") == "kernel" and resolve_swiglu("xla") == "xla"
