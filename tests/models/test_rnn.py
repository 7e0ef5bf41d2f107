"""GRU baseline: its forward is its streaming step scanned, so the two agree; causal; batched; trainable."""

import functools

import equinox as eqx
import jax

from cellax.models import GRU, GRUConfig

from .checks import (
    N_FEATURES,
    N_OUTPUTS,
    assert_causal,
    assert_finite_gradients,
    assert_jit_vmap_batch,
    assert_prefix_consistent,
    assert_streams_like_forward,
)


@functools.cache
def tiny() -> GRU:
    return GRU(GRUConfig(width=32, n_layers=2), N_FEATURES, N_OUTPUTS, key=jax.random.key(0))


def test_streaming_equals_the_full_forward():
    assert_streams_like_forward(tiny())


def test_outputs_depend_on_the_past_only():
    assert_causal(tiny())


def test_any_length_works():
    assert_prefix_consistent(tiny(), lengths=(1, 24))


def test_structure():
    model = tiny()
    assert all(isinstance(cell, eqx.nn.GRUCell) for cell in model.cells) and len(model.cells) == 2
    assert model.init_state().shape == (2, 32)


def test_jit_and_vmap_over_a_batch():
    assert_jit_vmap_batch(tiny())


def test_gradients_are_finite():
    assert_finite_gradients(tiny())
