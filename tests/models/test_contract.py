"""The contract every sequence model meets (``checks.py``), one parametrised test per clause."""

import functools

import jax
import pytest

from cellax.models import GRU, GRUConfig, Mamba, MambaConfig, Transformer, TransformerConfig

from .checks import (
    N_FEATURES,
    N_OUTPUTS,
    assert_causal,
    assert_finite_gradients,
    assert_jit_vmap_batch,
    assert_prefix_consistent,
    assert_streams_like_forward,
)

CONFIGS = {
    "gru": (GRU, GRUConfig(width=32, n_layers=2)),
    "mamba": (Mamba, MambaConfig(width=32, n_layers=2, state_size=8)),
    "transformer": (Transformer, TransformerConfig(width=32, n_layers=2, n_heads=4, n_kv_heads=2, max_len=24)),
}


@functools.cache
def tiny(kind: str):
    cls, config = CONFIGS[kind]
    return cls(config, N_FEATURES, N_OUTPUTS, key=jax.random.key(0))


@pytest.mark.parametrize("kind", CONFIGS)
def test_streaming_equals_the_full_forward(kind):
    assert_streams_like_forward(tiny(kind))


@pytest.mark.parametrize("kind", CONFIGS)
def test_outputs_depend_on_the_past_only(kind):
    assert_causal(tiny(kind))


@pytest.mark.parametrize("kind", CONFIGS)
def test_any_length_works(kind):
    assert_prefix_consistent(tiny(kind), lengths=(1, 5, 24))


@pytest.mark.parametrize("kind", CONFIGS)
def test_jit_and_vmap_over_a_batch(kind):
    assert_jit_vmap_batch(tiny(kind))


@pytest.mark.parametrize("kind", CONFIGS)
def test_gradients_are_finite(kind):
    assert_finite_gradients(tiny(kind))
