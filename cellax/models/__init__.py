"""Neural sequence models of the cell (Equinox, float32) and their input encodings.

Every model maps one sequence ``(T, n_features)`` to ``(T, n_outputs)`` causally
and streams: ``init_state()`` then ``step(state, x_t) -> (y_t, state)`` gives the
same outputs as the full forward. See ``docs/models.md``.
"""

from cellax.models.encoding import Normaliser, causal_stft, hann, init_stft_buffer, running_charge, stft_step
from cellax.models.mamba import (
    Mamba,
    MambaConfig,
    MambaState,
    linear_recurrence,
    linear_recurrence_sequential,
    selective_scan_sequential,
)
from cellax.models.registry import MODELS, ModelConfig, SequenceModel, make_model, parse_model_config, stream
from cellax.models.rnn import GRU, GRUConfig
from cellax.models.transformer import KVCache, Transformer, TransformerConfig

__all__ = [
    "GRU",
    "GRUConfig",
    "KVCache",
    "MODELS",
    "Mamba",
    "MambaConfig",
    "MambaState",
    "ModelConfig",
    "Normaliser",
    "SequenceModel",
    "Transformer",
    "TransformerConfig",
    "causal_stft",
    "running_charge",
    "hann",
    "init_stft_buffer",
    "linear_recurrence",
    "linear_recurrence_sequential",
    "selective_scan_sequential",
    "make_model",
    "parse_model_config",
    "stft_step",
    "stream",
]
