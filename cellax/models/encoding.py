"""Input encodings for the sequence models: per-feature normalisation and a causal short-time spectrum.

Both are causal and float32: the encoding at time ``t`` reads samples ``≤ t`` only,
so encoded inputs can be streamed sample by sample like the models themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float


class Normaliser(eqx.Module):
    """Per-feature affine map ``z = (x - mean) / std`` on the last axis, and its inverse.

    Use one for the inputs and :meth:`inverse` of another to map normalised model
    outputs back to units. The statistics are constants, not parameters: keep the
    normaliser outside the module you train.
    """

    mean: Float[Array, " n"]
    std: Float[Array, " n"]

    def __init__(self, mean: ArrayLike, std: ArrayLike):
        mean, std = np.asarray(mean, np.float32).reshape(-1), np.asarray(std, np.float32).reshape(-1)
        if mean.shape != std.shape:
            raise ValueError(f"mean and std differ in shape: {mean.shape} vs {std.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ValueError("mean must be finite and std finite and positive")
        self.mean, self.std = jnp.asarray(mean), jnp.asarray(std)

    @classmethod
    def from_stats(cls, stats, names: Sequence[str]) -> "Normaliser":
        """From per-signal ``stats.mean[name]`` / ``stats.std[name]`` (e.g. ``cellax.data.loader.NormStats``),
        features in the order of ``names``."""
        return cls([stats.mean[n] for n in names], [stats.std[n] for n in names])

    def __call__(self, x: Float[Array, "*batch n"]) -> Float[Array, "*batch n"]:
        return (jnp.asarray(x, jnp.float32) - self.mean) / self.std

    def inverse(self, z: Float[Array, "*batch n"]) -> Float[Array, "*batch n"]:
        return jnp.asarray(z, jnp.float32) * self.std + self.mean


def hann(window: int) -> Float[Array, " window"]:
    """Periodic Hann window ``w_n = sin²(π n / N)``, ``n = 0..N-1`` (``n = N-1`` is the newest sample)."""
    return jnp.sin(jnp.pi * jnp.arange(window, dtype=jnp.float32) / window) ** 2


def _spectrum(frames: Float[Array, "*T window"]) -> Float[Array, "*T n_bins"]:
    w = hann(frames.shape[-1])
    return jnp.abs(jnp.fft.rfft(frames * w, axis=-1)) / jnp.sum(w)


def causal_stft(signal: Float[Array, " T"], window: int) -> Float[Array, "T n_bins"]:
    """Magnitude spectrum of the last ``window`` samples at every time step.

    .. math::

        S_t(k) = \\frac{1}{\\sum_n w_n}\\Bigl|\\sum_{n=0}^{N-1} w_n\\, s_{t-N+1+n}\\,
                 e^{-2\\pi i k n / N}\\Bigr|, \\qquad k = 0..\\lfloor N/2 \\rfloor,

    with ``s_{<0} = 0`` (zero padding at the start) and ``w`` the Hann window, so
    ``S_t(0)`` is the Hann-weighted mean of the recent signal. ``n_bins = window // 2 + 1``.
    Causal by construction: ``S_t`` reads ``s_{t-N+1..t}`` only.
    """
    if window < 2:
        raise ValueError(f"window must be at least 2 samples, got {window}")
    signal = jnp.asarray(signal, jnp.float32)
    padded = jnp.concatenate([jnp.zeros(window - 1, jnp.float32), signal])
    rows = jnp.arange(signal.shape[0])[:, None] + jnp.arange(window)[None, :]
    return _spectrum(padded[rows])


def init_stft_buffer(window: int) -> Float[Array, " window"]:
    """The streaming buffer of :func:`stft_step` before the first sample: all zeros."""
    return jnp.zeros(window, jnp.float32)


def stft_step(buffer: Float[Array, " window"], s_t: Float[Array, ""]) -> tuple[Float[Array, " n_bins"], Array]:
    """Push sample ``s_t`` into the buffer of the last ``window`` samples; returns ``(S_t, buffer)``."""
    buffer = jnp.concatenate([buffer[1:], jnp.asarray(s_t, jnp.float32)[None]])
    return _spectrum(buffer), buffer


def running_charge(current: Float[Array, " T"]) -> Float[Array, "T 2"]:
    """Coulomb counting as two causal channels: ``q_t = Σ_{s≤t} c_s / T`` and ``r_t = (t + 1) / T``.

    With the normalised current ``c = (I − μ)/σ`` sampled every ``dt``, the charge
    passed since the start of the sequence is linear in them,

    .. math::

        \\int_0^t I \\, dt' ≈ dt \\sum_{s \\le t} I_s = T\\,dt\\,(σ\\, q_t + μ\\, r_t),

    so ``SOC_t = SOC_0 − ∫I/(3600 Q)`` is a linear read-out of the inputs instead of
    a sum the network must learn to keep over thousands of steps. The task applies
    it per chunk (``T = chunk_len``, restarting at every chunk start, where the chunk's
    initial SOC is given), so streaming keeps the sum and the index since the chunk
    start and divides by ``chunk_len``: ``O(1)`` state.
    """
    current = jnp.asarray(current, jnp.float32)
    length = current.shape[0]
    ramp = jnp.arange(1, length + 1, dtype=jnp.float32)
    return jnp.stack([jnp.cumsum(current), ramp], axis=-1) / length
