"""Transformer: causal, any length up to max_len, streaming through the KV cache equals the full forward."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cellax.models import KVCache, Transformer, TransformerConfig, stream
from cellax.models.transformer import alibi_slopes, attend, causal_self_attend, flash_attend, fused_attend, rope, self_attend

from .checks import (
    N_FEATURES,
    N_OUTPUTS,
    apply,
    assert_causal,
    assert_float32_params,
    assert_prefix_consistent,
    assert_streams_like_forward,
    inputs,
)

ENCODINGS = ["sinusoidal", "alibi", "none"]  # rope, the default: test_contract.py


@functools.cache
def tiny(positional: str = "rope", **overrides) -> Transformer:
    fields = dict(width=32, n_layers=2, n_heads=4, n_kv_heads=2, positional=positional, max_len=24) | overrides
    config = TransformerConfig(**fields)
    return Transformer(config, N_FEATURES, N_OUTPUTS, key=jax.random.key(0))


@pytest.mark.parametrize("positional", ENCODINGS)
def test_streaming_equals_the_full_forward(positional):
    assert_streams_like_forward(tiny(positional))


@pytest.mark.parametrize("positional", ENCODINGS)
def test_outputs_depend_on_the_past_only(positional):
    assert_causal(tiny(positional))


@pytest.mark.parametrize("positional", ENCODINGS)
def test_every_length_up_to_max_len_works(positional):
    assert_prefix_consistent(tiny(positional), lengths=(1, 11, 24))


def test_a_sequence_longer_than_max_len_is_refused():
    with pytest.raises(ValueError, match="exceeds max_len 24"):
        tiny()(inputs(25))


def test_a_full_kv_cache_is_refused_also_under_jit():
    model = tiny()
    cache = model.init_cache(3)
    step = eqx.filter_jit(model.step)
    for x_t in inputs(3):
        _, cache = step(cache, x_t)
    assert int(cache.pos) == 3
    with pytest.raises(Exception, match="KV cache is full"):
        jax.block_until_ready(step(cache, inputs(1)[0]))
    with pytest.raises(ValueError, match="max_len"):
        model.init_cache(25)


def test_the_cache_has_static_shapes_and_an_array_position():
    cache = tiny().init_cache(8)
    assert isinstance(cache, KVCache) and len(cache.k) == len(cache.v) == 2
    assert cache.k[0].shape == (2, 8, 8)  # (n_kv_heads, max_len, width / n_heads)
    assert cache.pos.shape == () and cache.pos.dtype == jnp.int32


def test_a_jitted_step_can_donate_the_cache_and_update_it_in_place():
    model = tiny()
    cache = model.init_cache(8)
    leaves = [*cache.k, *cache.v]
    assert len({leaf.unsafe_buffer_pointer() for leaf in leaves}) == len(leaves)  # no buffer donated twice
    params, static = eqx.partition(model, eqx.is_array)
    step = jax.jit(lambda p, c, x: eqx.combine(p, static).step(c, x), donate_argnums=1)
    x = inputs(2)
    expected, _ = model.step(model.step(model.init_cache(8), x[0])[1], x[1])
    _, cache = step(params, cache, x[0])
    assert all(leaf.is_deleted() for leaf in leaves)
    y, cache = step(params, cache, x[1])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_layer_norm_and_multi_query_attention_stream_exactly():
    assert_streams_like_forward(tiny("alibi", norm="layer", n_kv_heads=1, mlp_hidden=40))


def test_structure_is_llama_like():
    model = tiny()
    assert isinstance(model.norm, eqx.nn.RMSNorm)
    assert isinstance(tiny("alibi", norm="layer", n_kv_heads=1, mlp_hidden=40).blocks[1].mlp_norm, eqx.nn.LayerNorm)
    norms = [id(n.weight) for b in model.blocks for n in (b.attn_norm, b.mlp_norm)]
    assert len(set(norms)) == 4  # every block owns its two norms
    assert model.embed.weight.shape == (32, N_FEATURES)
    assert model.head.weight.shape == (N_OUTPUTS, 32)  # a separate head, not tied to the input projection
    attn = model.blocks[0].attn
    assert attn.wq.weight.shape == (32, 32) and attn.wk.weight.shape == (16, 32)  # 2 kv heads of 8
    assert model.blocks[0].mlp.w1.weight.shape == (88, 32)  # 8/3 * 32 rounded up to a multiple of 8




def test_bfloat16_compute_keeps_float32_parameters_and_outputs():
    model = tiny(compute_dtype="bfloat16")
    assert_float32_params(model)
    x = inputs(24)
    y = apply(model, x)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, apply(tiny(), x), atol=0.1)
    np.testing.assert_allclose(eqx.filter_jit(stream)(model, x), y, atol=0.1)


def test_rope_makes_attention_scores_depend_on_relative_position_only():
    q, k = jax.random.normal(jax.random.key(1), (2, 1, 1, 8))

    def score(t, s):
        at = lambda x, p: rope(x, jnp.array([p], jnp.int32), 10_000.0)  # noqa: E731
        return jnp.sum(at(q, t) * at(k, s))

    np.testing.assert_allclose(score(7, 3), score(107, 103), rtol=1e-4)
    assert not np.isclose(score(7, 3), score(7, 5))


def test_rope_on_halves_with_reordered_projections_is_rope_on_pairs():
    """The model computes RoPE on contiguous halves from projections whose rows are reordered per head; each head's
    queries are then the interleaved ones permuted, so every q·k, hence attention, is unchanged."""
    from cellax.models.transformer import _halves_rows, _to_halves, rope_halves

    x = jax.random.normal(jax.random.key(4), (12, 32))
    w = jax.random.normal(jax.random.key(5), (4 * 8, 32))
    positions = jnp.arange(12)
    pairs = rope((x @ w.T).reshape(12, 4, 8), positions, 10_000.0)
    halves = rope_halves((x @ _halves_rows(w, 4).T).reshape(12, 4, 8), positions, 10_000.0)
    np.testing.assert_allclose(halves, _to_halves(pairs), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jnp.einsum("thd,shd->hts", halves, halves), jnp.einsum("thd,shd->hts", pairs, pairs),
                               rtol=1e-4, atol=1e-4)


def test_alibi_slopes_follow_the_paper():
    np.testing.assert_allclose(alibi_slopes(8), [2.0**-h for h in range(1, 9)])
    np.testing.assert_allclose(alibi_slopes(6), [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3])


@pytest.mark.parametrize("slopes", [None, alibi_slopes(4)])
def test_blockwise_causal_attention_equals_the_dense_one(slopes):
    kq, kk, kv = jax.random.split(jax.random.key(3), 3)
    q = jax.random.normal(kq, (96, 4, 8))
    k, v = jax.random.normal(kk, (2, 96, 8)), jax.random.normal(kv, (2, 96, 8))
    positions = jnp.arange(96)
    dense = attend(q, k, v, positions, positions, slopes)
    np.testing.assert_allclose(causal_self_attend(q, k, v, positions, slopes, block=16), dense, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(causal_self_attend(q, k, v, positions, slopes, block=40), dense)  # dense fallback


def _qkv(length: int = 96):
    kq, kk, kv = jax.random.split(jax.random.key(3), 3)
    q = jax.random.normal(kq, (length, 4, 8))
    return q, jax.random.normal(kk, (2, length, 8)), jax.random.normal(kv, (2, length, 8)), jnp.arange(length)


def _position_major(attention):
    """``attention`` taking keys and values head-major, as :func:`attend` does."""
    return lambda q, k, v, positions, slopes: attention(q, k.transpose(1, 0, 2), v.transpose(1, 0, 2), positions, slopes)


@pytest.mark.parametrize("slopes", [None, alibi_slopes(4)])
@pytest.mark.parametrize("attention", [functools.partial(flash_attend, block=16), _position_major(fused_attend),
                                       _position_major(functools.partial(self_attend, implementation="kernel"))])
def test_flash_fused_and_kernel_attention_equal_the_dense_one_in_values_and_gradients(attention, slopes):
    q, k, v, positions = _qkv()
    w = jax.random.normal(jax.random.key(4), (96, 32))  # a loss that weighs every output differently

    def loss(f):
        return jax.jit(jax.value_and_grad(lambda q, k, v: jnp.sum(w * jnp.tanh(f(q, k, v, positions, slopes))), (0, 1, 2)))

    dense = attend(q, k, v, positions, positions, slopes)
    np.testing.assert_allclose(attention(q, k, v, positions, slopes), dense, rtol=1e-5, atol=1e-5)
    (value, grads), (dense_value, dense_grads) = loss(attention)(q, k, v), loss(causal_self_attend)(q, k, v)
    np.testing.assert_allclose(value, dense_value, rtol=1e-5)
    for grad, dense_grad in zip(grads, dense_grads):
        assert float(jnp.max(jnp.abs(dense_grad))) > 0
        np.testing.assert_allclose(grad, dense_grad, rtol=1e-4, atol=1e-5)


def test_every_attention_implementation_gives_the_same_model():
    x = jax.random.normal(jax.random.key(5), (64, N_FEATURES))
    models = [tiny("alibi", max_len=64, attention=a) for a in ("flash", "blockwise", "fused", "kernel", "auto")]
    for model in models[1:]:
        np.testing.assert_allclose(apply(model, x), apply(models[0], x), rtol=1e-5, atol=1e-5)
    q, k, v, positions = _qkv(40)  # not a multiple of the block: the dense path
    k_rows, v_rows = k.transpose(1, 0, 2), v.transpose(1, 0, 2)  # self_attend takes them as projected: (T, kv_heads, d)
    np.testing.assert_allclose(self_attend(q, k_rows, v_rows, positions, None, "flash"),
                               attend(q, k, v, positions, positions, None))


@pytest.mark.parametrize("positional", ["rope", "alibi"])
def test_the_cpu_kernels_give_the_xla_models_outputs_and_parameter_gradients(positional):
    """Attention (RoPE rotated inside the kernel) and SwiGLU by the C++ kernels against flash attention and XLA's
    activation, the same weights: the whole model's outputs and the gradient of a loss in every parameter."""
    x = jax.random.normal(jax.random.key(6), (3, 40, N_FEATURES))
    kernels, xla = (tiny(positional, max_len=64, attention=a, swiglu=m) for a, m in (("kernel", "kernel"), ("flash", "xla")))

    def loss_and_grads(model):
        loss = lambda m: jnp.sum(jnp.tanh(jax.vmap(m)(x)) ** 2)
        return eqx.filter_jit(eqx.filter_value_and_grad(loss))(model)

    np.testing.assert_allclose(jax.vmap(kernels)(x), jax.vmap(xla)(x), rtol=1e-5, atol=1e-5)
    (value, grads), (xla_value, xla_grads) = loss_and_grads(kernels), loss_and_grads(xla)
    np.testing.assert_allclose(value, xla_value, rtol=1e-5)
    for grad, xla_grad in zip(jax.tree.leaves(grads), jax.tree.leaves(xla_grads), strict=True):
        np.testing.assert_allclose(grad, xla_grad, rtol=1e-4, atol=1e-5)


def test_streaming_equals_a_full_forward_long_enough_to_attend_blockwise():
    model = tiny("alibi", max_len=192)
    assert_streams_like_forward(model, length=192)  # three blocks of 64
    assert_causal(model, length=192, t=100)
