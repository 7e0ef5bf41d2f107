"""What a model sees and predicts, and the chunked free-running rollout used in training and evaluation.

A task maps input signals to output signals (DESIGN.md names, normalised with
the dataset's train statistics). The model runs in chunks of ``chunk_len``
samples; each chunk's input carries *initial conditions*: the output values at
the chunk's start and a flag saying whether they are known. For ``"simulate"``
the first chunk gets the measured outputs at ``t = 0`` (flag 1), for
``"estimate"`` zeros (flag 0: an estimator must not know the state); every later
chunk gets the model's *own* last prediction (flag 1). With ``charge_channels``
each chunk also sees the charge passed since its start (:func:`running_charge`),
so coulomb counting from the chunk's initial SOC is a linear read-out. (Chunk 0's initial
conditions are the values *at* its first sample, later chunks' the prediction one sample
*before* theirs; the running charge counts from each chunk's first sample either way, a
one-sample offset, ~0.03 % SOC at 5 A and 1 s, that training absorbs.) With ``residual`` the model
predicts the change from the chunk's initial conditions, ``y_t = y_0 + f_t``: a model that starts each
chunk from a cold state then only has to output ~0 at first, not reproduce ``y_0``, so chunk
boundaries show no jumps. Training windows of
``chunks_per_window`` chunks and evaluation over whole profiles both use
:func:`rollout`, so what is trained is what is evaluated: free running, no
teacher forcing after ``t = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from cellax.models.encoding import causal_stft, running_charge


@dataclass(frozen=True)
class Task:
    """Static description of a task: signal names, chunking, optional STFT and running charge of the current."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    known_initial: bool
    chunk_len: int
    stft_window: int | None = None
    charge_channels: bool = False
    residual: bool = False

    def __post_init__(self):
        needs_current = self.charge_channels or self.stft_window
        if needs_current and "current_a" not in self.inputs:
            raise ValueError(f"charge_channels and stft need current_a among the inputs {self.inputs}")

    @classmethod
    def from_config(cls, config) -> Task:
        return cls(
            tuple(config.input_signals),
            tuple(config.output_signals),
            config.task == "simulate",
            config.chunk_len,
            config.stft.window if config.stft else None,
            config.charge_throughput,
            config.residual,
        )

    @property
    def n_features(self) -> int:
        stft = self.stft_window // 2 + 1 if self.stft_window else 0
        return len(self.inputs) + stft + 2 * self.charge_channels + len(self.outputs) + 1

    @property
    def n_outputs(self) -> int:
        return len(self.outputs)

    def split(self, signals: dict[str, Array]) -> tuple[Float[Array, "T n_in"], Float[Array, "T n_out"]]:
        """Stack normalised ``{name: (T,)}`` signals into inputs (with STFT channels) and targets."""
        x = jnp.stack([signals[k] for k in self.inputs], axis=-1).astype(jnp.float32)
        if self.stft_window:
            x = jnp.concatenate([x, causal_stft(signals["current_a"], self.stft_window)], axis=-1)
        y = jnp.stack([signals[k] for k in self.outputs], axis=-1).astype(jnp.float32)
        return x, y

    def initial(self, targets: Float[Array, "T n_out"]) -> Float[Array, " n_out"]:
        """The first chunk's initial conditions: measured at t = 0 (simulate) or zeros (estimate)."""
        return targets[0] if self.known_initial else jnp.zeros_like(targets[0])


def rollout(model, task: Task, x: Float[Array, "T n_in"], initial: Float[Array, " n_out"]) -> Float[Array, "T n_out"]:
    """Free-running predictions over ``T`` samples (a multiple of ``task.chunk_len``)."""
    n_chunks = x.shape[0] // task.chunk_len
    chunks = x.reshape(n_chunks, task.chunk_len, x.shape[-1])
    flags = jnp.zeros(n_chunks, jnp.float32).at[0].set(1.0 if task.known_initial else 0.0).at[1:].set(1.0)

    def chunk(carry, inputs):
        x_c, flag = inputs
        if task.charge_channels:
            x_c = jnp.concatenate([x_c, running_charge(x_c[:, task.inputs.index("current_a")])], axis=-1)
        conditions = jnp.broadcast_to(jnp.concatenate([carry, flag[None]]), (task.chunk_len, carry.shape[0] + 1))
        y = model(jnp.concatenate([x_c, conditions], axis=-1))
        if task.residual:
            y = y + carry
        return y[-1], y

    _, y = jax.lax.scan(chunk, initial, (chunks, flags))
    return y.reshape(-1, y.shape[-1])
