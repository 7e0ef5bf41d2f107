"""One config type for every model, a factory, and the streaming protocol they share.

``ModelConfig`` is a pydantic union discriminated by ``kind``, so a training config
can hold a ``model: ModelConfig`` field and YAML chooses the architecture::

    model: {kind: transformer, width: 64, n_layers: 4, n_heads: 4, positional: rope}
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

import jax
from jaxtyping import Array, Float, PRNGKeyArray
from pydantic import ConfigDict, Field, TypeAdapter

from cellax.models.mamba import Mamba, MambaConfig
from cellax.models.rnn import GRU, GRUConfig
from cellax.models.transformer import Transformer, TransformerConfig

ModelConfig = Annotated[TransformerConfig | MambaConfig | GRUConfig, Field(discriminator="kind")]
MODELS = {"transformer": Transformer, "mamba": Mamba, "gru": GRU}
_ADAPTER = TypeAdapter(ModelConfig, config=ConfigDict(title="ModelConfig"))


class SequenceModel(Protocol):
    """What every model offers: a causal full forward and an exactly matching streaming step."""

    def __call__(self, x: Float[Array, "T n_features"]) -> Float[Array, "T n_outputs"]: ...

    def init_state(self) -> Any: ...

    def step(self, state: Any, x_t: Float[Array, " n_features"]) -> tuple[Float[Array, " n_outputs"], Any]: ...


def parse_model_config(data: dict | TransformerConfig | MambaConfig | GRUConfig) -> ModelConfig:
    """Validate ``data`` into the config of its ``kind``; ``pydantic.ValidationError`` names the bad field."""
    return _ADAPTER.validate_python(data)


def make_model(config: dict | ModelConfig, n_features: int, n_outputs: int, key: PRNGKeyArray) -> SequenceModel:
    """The model ``config.kind`` names, mapping ``(T, n_features)`` to ``(T, n_outputs)``."""
    for name, value in (("n_features", n_features), ("n_outputs", n_outputs)):
        if not (isinstance(value, int) and value > 0):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    config = parse_model_config(config)
    return MODELS[config.kind](config, n_features, n_outputs, key=key)


def stream(model: SequenceModel, x: Float[Array, "T n_features"]) -> Float[Array, "T n_outputs"]:
    """Run ``model`` one sample at a time from :meth:`init_state` under ``lax.scan``; equals ``model(x)``."""

    def body(state, x_t):
        y_t, state = model.step(state, x_t)
        return state, y_t

    return jax.lax.scan(body, model.init_state(), x)[1]
