"""make_model builds any model from a validated config; bad configs fail naming the field."""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from pydantic import BaseModel, ValidationError

from cellax.models import (
    GRU,
    Mamba,
    ModelConfig,
    Transformer,
    TransformerConfig,
    make_model,
    parse_model_config,
    stream,
)

TINY = {
    "transformer": {"kind": "transformer", "width": 32, "n_layers": 2, "n_heads": 4, "max_len": 16},
    "mamba": {"kind": "mamba", "width": 32, "n_layers": 2},
    "gru": {"kind": "gru", "width": 32, "n_layers": 2},
}


@pytest.mark.parametrize("kind, cls", [("transformer", Transformer), ("mamba", Mamba), ("gru", GRU)])
def test_make_model_builds_the_kind_named(kind, cls):
    model = make_model(TINY[kind], n_features=3, n_outputs=2, key=jax.random.key(0))
    assert isinstance(model, cls) and model.config.kind == kind
    assert eqx.filter_eval_shape(model, jnp.zeros((7, 3))).shape == (7, 2)


@pytest.mark.parametrize("kind", TINY)
def test_models_are_float32_even_when_x64_is_enabled_globally(kind):
    with jax.enable_x64(True):
        model = make_model(TINY[kind] | {"width": 8, "n_layers": 1}, 2, 1, jax.random.key(0))
        params = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
        assert {leaf.dtype for leaf in params} == {jnp.dtype("float32")}
        x = jnp.ones((5, 2), jnp.float64)
        assert eqx.filter_eval_shape(model, x).dtype == jnp.float32
        assert eqx.filter_eval_shape(stream, model, x).dtype == jnp.float32


def test_make_model_accepts_a_config_object():
    config = TransformerConfig(width=16, n_layers=1, n_heads=2, positional="alibi")
    assert make_model(config, 3, 2, jax.random.key(0)).config is config


def test_model_config_is_a_field_type_for_larger_configs():
    class Run(BaseModel):
        model: ModelConfig

    assert Run.model_validate({"model": TINY["mamba"]}).model.kind == "mamba"
    with pytest.raises(ValidationError, match=r"model\.transformer\.n_heads"):
        Run.model_validate({"model": {"kind": "transformer", "width": 30, "n_heads": 4}})


@pytest.mark.parametrize(
    "data, field, words",
    [
        ({"kind": "lstm"}, "kind", "'transformer', 'mamba', 'gru'"),
        ({"width": 32}, "kind", "discriminator"),
        ({"kind": "transformer", "width": 30, "n_heads": 4}, "transformer.n_heads", "must divide width"),
        ({"kind": "transformer", "n_heads": 4, "n_kv_heads": 3}, "transformer.n_kv_heads", "must divide n_heads"),
        ({"kind": "transformer", "positional": "learned"}, "transformer.positional", "'rope', 'alibi'"),
        ({"kind": "transformer", "width": 12, "n_heads": 4}, "transformer.positional", "even head dimension"),
        ({"kind": "transformer", "norm": "batch"}, "transformer.norm", "'rms' or 'layer'"),
        ({"kind": "gru", "widht": 32}, "gru.widht", "Extra inputs"),
        ({"kind": "mamba", "n_layers": 0}, "mamba.n_layers", "greater than 0"),
    ],
)
def test_config_errors_name_the_field(data, field, words):
    with pytest.raises(ValidationError) as err:
        parse_model_config(data)
    assert field in str(err.value) and words in str(err.value)
    assert isinstance(err.value, ValueError)


def test_sizes_must_be_positive_integers():
    with pytest.raises(ValueError, match="n_features"):
        make_model(TINY["gru"], 0, 2, jax.random.key(0))
    with pytest.raises(ValueError, match="n_outputs"):
        make_model(TINY["gru"], 3, 1.5, jax.random.key(0))


def test_configs_are_frozen_and_hashable_so_models_can_hold_them_static():
    config = parse_model_config(TINY["transformer"])
    assert hash(config) == hash(parse_model_config(TINY["transformer"]))
    with pytest.raises(ValidationError):
        config.width = 64
