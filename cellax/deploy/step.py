"""The deployed streaming step of a trained run: one sample in physical units in, estimates out.

A run predicts in chunks (:func:`cellax.train.task.rollout`): every ``chunk_len`` samples
the model restarts from its initial state and is told the chunk's initial conditions,
its own last prediction. Streaming reproduces that exactly, one sample at a time, with
the normalisation folded in:

.. math::

    z_t = (u_t - μ_u) / σ_u, \\qquad
    f_t = [z_t,\\; S_t,\\; q_t,\\; r_t,\\; c,\\; φ], \\qquad
    \\hat y_t = m(f_t) + ρ\\, c, \\qquad y_t = σ_y \\hat y_t + μ_y,

with ``S_t`` the causal STFT of the normalised current (if configured), ``q_t = Σ z_I / L``
and ``r_t = (k + 1) / L`` the running charge since the chunk start (``k`` samples into a
chunk of ``L``), ``c`` the chunk's normalised initial conditions, ``φ`` their known-flag and
``ρ = 1`` for residual tasks. After the chunk's last sample the model state restarts,
``c ← \\hat y_t``, ``φ ← 1``. The Transformer's KV cache is therefore ``chunk_len`` rows: a
fixed window rewound at every chunk start (its position set to 0; rows after the position are
masked, so the stale ones need no clearing), as in training.

:class:`StreamState` is a PyTree of fixed-shape arrays (float32, and the int32 index), so
the step is exported as a function of flat arrays (:meth:`DeployedStep.flat`) and vmapped
over cells by the service.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from cellax.models import KVCache, Normaliser, Transformer, hann, init_stft_buffer
from cellax.models.transformer import sinusoidal
from cellax.train.task import Task


class StreamState(eqx.Module):
    """Everything one cell's stream carries between samples."""

    model: Any
    initial: Float[Array, " n_out"]
    flag: Float[Array, ""]
    index: Int[Array, ""]
    charge: Float[Array, ""]
    stft: Float[Array, " window"] | None


def _transformer_step(model: Transformer, cache: KVCache, x_t):
    """``Transformer.step`` without its full-cache check (a host callback, which neither ONNX nor a
    serialized StableHLO module can carry); the deployed cache never fills, it restarts every chunk."""
    c = model.config
    h = model.embed(x_t.astype(jnp.float32))
    if c.positional == "sinusoidal":
        h = h + sinusoidal(cache.pos[None], c.width)[0]
    ks, vs = [], []
    for block, k, v in zip(model.blocks, cache.k, cache.v):
        h, k, v = block.step(h, cache.pos, k, v)
        ks.append(k)
        vs.append(v)
    return model.head(model.norm(h)), KVCache(k=tuple(ks), v=tuple(vs), pos=cache.pos + 1)


class DeployedStep(eqx.Module):
    """A trained model, its task and its train statistics as one streaming function of physical units."""

    model: Any
    task: Task = eqx.field(static=True)
    inputs: Normaliser
    outputs: Normaliser

    def __init__(self, model, task: Task, stats):
        if isinstance(model, Transformer) and model.config.compute_dtype != "float32":
            raise ValueError("export supports float32 Transformers (compute_dtype 'float32')")
        self.model, self.task = model, task
        self.inputs, self.outputs = _normaliser(stats, task.inputs), _normaliser(stats, task.outputs)

    @property
    def n_inputs(self) -> int:
        return len(self.task.inputs)

    def _model_state(self):
        if isinstance(self.model, Transformer):
            return self.model.init_cache(self.task.chunk_len)
        return self.model.init_state()

    def init(self, initial_outputs: Float[Array, " n_out"]) -> StreamState:
        """The state before the first sample; ``initial_outputs`` (physical units) count only for
        ``simulate`` tasks, an estimator starts from zeros with the flag 0."""
        t = self.task
        z0 = self.outputs(initial_outputs)
        known = jnp.float32(t.known_initial)
        return StreamState(
            model=self._model_state(),
            initial=z0 * known,
            flag=known,
            index=jnp.zeros((), jnp.int32),
            charge=jnp.zeros((), jnp.float32),
            stft=init_stft_buffer(t.stft_window) if t.stft_window else None,
        )

    def __call__(self, state: StreamState, inputs: Float[Array, " n_in"]) -> tuple[Float[Array, " n_out"], StreamState]:
        """One sample ``inputs`` (``task.inputs``, physical units) → ``(outputs in physical units, state)``."""
        t = self.task
        z = self.inputs(inputs)
        features, stft, charge = [z], state.stft, state.charge
        if t.stft_window:
            stft = jnp.concatenate([state.stft[1:], z[t.inputs.index("current_a")][None]])
            spectrum = _spectrum(stft)
            features.append(spectrum)
        if t.charge_channels:
            charge = charge + z[t.inputs.index("current_a")]
            ramp = (state.index + 1).astype(jnp.float32)
            features.append(jnp.stack([charge, ramp]) / t.chunk_len)
        features += [state.initial, state.flag[None]]
        x_t = jnp.concatenate(features)
        if isinstance(self.model, Transformer):
            y, model_state = _transformer_step(self.model, state.model, x_t)
        else:
            y, model_state = self.model.step(state.model, x_t)
        if t.residual:
            y = y + state.initial
        done = state.index + 1 == t.chunk_len
        if isinstance(model_state, KVCache):  # rows at and after pos are masked: rewinding pos restarts the cache
            model_state = eqx.tree_at(lambda c: c.pos, model_state, jnp.where(done, 0, model_state.pos))
        else:
            model_state = jax.tree.map(lambda fresh, new: jnp.where(done, fresh, new), self._model_state(), model_state)
        state = StreamState(
            model=model_state,
            initial=jnp.where(done, y, state.initial),
            flag=jnp.where(done, jnp.float32(1), state.flag),
            index=jnp.where(done, 0, state.index + 1).astype(jnp.int32),
            charge=jnp.where(done, jnp.float32(0), charge),
            stft=stft,
        )
        return self.outputs.inverse(y), state

    def state_spec(self) -> list[tuple[str, tuple[int, ...], str]]:
        """``(name, shape, dtype)`` of each flat state array, in :meth:`flat` order."""
        leaves = jax.tree_util.tree_leaves_with_path(self.init(jnp.zeros(self.task.n_outputs)))
        return [(_leaf_name(path), tuple(leaf.shape), str(leaf.dtype)) for path, leaf in leaves]

    def flat(self):
        """``(init_fn, step_fn)`` on flat arrays: ``init_fn(initial_outputs) -> state...`` and
        ``step_fn(inputs, *state) -> (outputs, *state)``; what the exporters trace."""
        treedef = jax.tree.structure(self.init(jnp.zeros(self.task.n_outputs)))

        def init_fn(initial_outputs):
            return tuple(jax.tree.leaves(self.init(initial_outputs)))

        def step_fn(inputs, *state):
            y, new = self(jax.tree.unflatten(treedef, state), inputs)
            return (y, *jax.tree.leaves(new))

        return init_fn, step_fn


def rollout_stream(step: DeployedStep, inputs: Float[Array, "T n_in"], initial_outputs) -> Float[Array, "T n_out"]:
    """The deployed step scanned over a profile (physical units): the in-process streaming reference."""

    def body(state, u_t):
        y, state = step(state, u_t)
        return state, y

    return jax.lax.scan(body, step.init(initial_outputs), jnp.asarray(inputs, jnp.float32))[1]


def _spectrum(frame: Float[Array, " window"]) -> Float[Array, " n_bins"]:
    """:func:`cellax.models.stft_step`'s magnitude spectrum as two real matrix products,
    ``|Σ_n w_n s_n e^{-2πikn/N}| / Σ w``: ONNX has no complex numbers for an FFT."""
    window = frame.shape[0]
    angle = 2 * np.pi * np.outer(np.arange(window), np.arange(window // 2 + 1)) / window
    w = hann(window)
    weighted = frame * w
    real, imag = weighted @ jnp.asarray(np.cos(angle), jnp.float32), weighted @ jnp.asarray(np.sin(angle), jnp.float32)
    return jnp.sqrt(real**2 + imag**2) / jnp.sum(w)


def _normaliser(stats, names) -> Normaliser:
    """Per-name mean/std from the run's statistics; names without statistics (one-hot conditions) pass as they are."""
    return Normaliser([stats.mean.get(n, 0.0) for n in names], [stats.std.get(n, 1.0) for n in names])


def _leaf_name(path) -> str:
    parts = []
    for key in path:
        name = getattr(key, "name", None) or getattr(key, "key", None)
        parts.append(str(name) if name is not None else str(getattr(key, "idx", key)))
    return "state." + ".".join(parts)
