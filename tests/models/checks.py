"""The contract every sequence model meets, as reusable assertions on a real (tiny) model."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from cellax.models import stream

N_FEATURES, N_OUTPUTS = 3, 2


@eqx.filter_jit
def apply(model, x: jax.Array) -> jax.Array:
    """``model(x)``, compiled (one compile per model structure and length: faster than eager here)."""
    return model(x)


def inputs(length: int, seed: int = 0, batch: tuple[int, ...] = ()) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (*batch, length, N_FEATURES), jnp.float32)


def assert_streams_like_forward(model, length: int = 24, atol: float = 1e-5) -> None:
    """``step`` from ``init_state`` under ``lax.scan`` gives the full forward's outputs."""
    x = inputs(length)
    full, streamed = apply(model, x), eqx.filter_jit(stream)(model, x)
    assert full.shape == streamed.shape == (length, N_OUTPUTS)
    assert full.dtype == streamed.dtype == jnp.float32
    np.testing.assert_allclose(streamed, full, atol=atol, rtol=0)


def assert_causal(model, length: int = 24, t: int = 9) -> None:
    """Changing ``x[t+1:]`` leaves ``y[:t+1]`` as it was and changes ``y[t+1:]``."""
    x = inputs(length)
    x_changed = x.at[t + 1 :].set(inputs(length - t - 1, seed=1))
    y, y_changed = apply(model, x), apply(model, x_changed)
    np.testing.assert_allclose(y_changed[: t + 1], y[: t + 1], atol=1e-6, rtol=0)
    assert not np.allclose(y_changed[t + 1 :], y[t + 1 :])


def assert_prefix_consistent(model, lengths: tuple[int, ...], atol: float = 1e-5) -> None:
    """Any length works, and a shorter sequence gives the longer one's first outputs."""
    longest = max(lengths)
    x = inputs(longest)
    y = apply(model, x)
    for length in lengths:
        np.testing.assert_allclose(apply(model, x[:length]), y[:length], atol=atol, rtol=0)


def assert_jit_vmap_batch(model, batch: int = 3, length: int = 24) -> None:
    """``jit(vmap(model))`` over a batch equals the model applied to each sequence."""
    xb = inputs(length, batch=(batch,))
    yb = eqx.filter_jit(lambda m, xb: jax.vmap(m)(xb))(model, xb)
    assert yb.shape == (batch, length, N_OUTPUTS)
    for i in range(batch):
        np.testing.assert_allclose(yb[i], apply(model, xb[i]), atol=1e-5, rtol=0)


def assert_finite_gradients(model, length: int = 24) -> None:
    """The MSE gradient reaches every floating parameter, finite and not all zero."""
    x, target = inputs(length), jnp.ones((length, N_OUTPUTS), jnp.float32)

    @eqx.filter_jit
    @eqx.filter_grad
    def grad(m):
        return jnp.mean((m(x) - target) ** 2)

    leaves = jax.tree.leaves(eqx.filter(grad(model), eqx.is_inexact_array))
    assert leaves and all(leaf.dtype == jnp.float32 for leaf in leaves)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves)
    assert sum(float(jnp.sum(jnp.abs(leaf))) for leaf in leaves) > 0


def assert_float32_params(model) -> None:
    leaves = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    assert leaves and all(leaf.dtype == jnp.float32 for leaf in leaves)
