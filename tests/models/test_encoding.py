"""Input encodings: normalisation inverts exactly; the short-time spectrum is causal and streams; the running
charge is a linear read-out of the charge passed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cellax.data.loader import NormStats
from cellax.models import Normaliser, causal_stft, hann, init_stft_buffer, running_charge, stft_step


def test_normaliser_standardises_each_feature_and_inverts():
    x = jnp.array([[1.0, 10.0], [3.0, 30.0]], jnp.float32)
    norm = Normaliser(mean=[2.0, 20.0], std=[1.0, 10.0])
    np.testing.assert_allclose(norm(x), [[-1.0, -1.0], [1.0, 1.0]])
    np.testing.assert_allclose(norm.inverse(norm(x)), x, rtol=1e-6)
    assert norm(x).dtype == jnp.float32
    assert jax.vmap(norm)(jnp.stack([x, x])).shape == (2, 2, 2)


def test_normaliser_from_loader_stats_follows_the_named_order():
    stats = NormStats(mean={"current_a": 1.0, "voltage_v": 3.7}, std={"current_a": 2.0, "voltage_v": 0.1})
    norm = Normaliser.from_stats(stats, ["voltage_v", "current_a"])
    np.testing.assert_allclose(norm.mean, [3.7, 1.0], rtol=1e-6)
    np.testing.assert_allclose(norm.inverse(jnp.zeros(2)), [3.7, 1.0], rtol=1e-6)


def test_normaliser_refuses_bad_statistics():
    with pytest.raises(ValueError, match="std"):
        Normaliser([0.0], [0.0])
    with pytest.raises(ValueError, match="shape"):
        Normaliser([0.0, 1.0], [1.0])


def test_stft_is_causal():
    signal = jax.random.normal(jax.random.key(0), (60,), jnp.float32)
    changed = signal.at[31:].set(5.0)
    before, after = causal_stft(signal, 16), causal_stft(changed, 16)
    assert before.shape == (60, 9)  # window // 2 + 1 bins
    np.testing.assert_array_equal(after[:31], before[:31])
    assert not np.allclose(after[31:], before[31:])


def test_stft_of_a_constant_is_its_level_in_bin_zero_once_the_window_is_full():
    spectrum = causal_stft(jnp.full(40, 2.5, jnp.float32), 8)
    np.testing.assert_allclose(spectrum[7:, 0], 2.5, rtol=1e-5)
    np.testing.assert_allclose(spectrum[7:, 2:], 0.0, atol=1e-5)  # Hann leaks into bin 1 only
    assert float(spectrum[0, 0]) < 2.5  # zero padding before the start


def test_stft_of_a_sinusoid_peaks_at_its_bin():
    t = jnp.arange(128, dtype=jnp.float32)
    spectrum = causal_stft(jnp.sin(2 * jnp.pi * 3 * t / 16), 16)
    assert set(np.argmax(spectrum[15:], axis=1).tolist()) == {3}


def test_stft_streams_sample_by_sample():
    signal = jax.random.normal(jax.random.key(1), (30,), jnp.float32)

    def body(buffer, s_t):
        features, buffer = stft_step(buffer, s_t)
        return buffer, features

    streamed = jax.lax.scan(body, init_stft_buffer(8), signal)[1]
    np.testing.assert_allclose(streamed, causal_stft(signal, 8), atol=1e-6)


def test_hann_weighs_the_oldest_sample_zero():
    np.testing.assert_allclose(hann(4), [0.0, 0.5, 1.0, 0.5], atol=1e-7)
    with pytest.raises(ValueError, match="window"):
        causal_stft(jnp.zeros(5), 1)


def test_float32_even_when_x64_is_enabled_globally():
    with jax.enable_x64(True):
        assert causal_stft(jnp.ones(10, jnp.float64), 4).dtype == jnp.float32
        assert Normaliser([0.0], [1.0])(jnp.ones((3, 1), jnp.float64)).dtype == jnp.float32


def test_running_charge_gives_the_charge_passed_as_a_linear_read_out():
    mean_a, std_a, dt_s = 1.5, 2.0, 1.0
    current_a = jax.random.normal(jax.random.key(3), (50,)) * 3.0 + 1.0
    q, r = running_charge((current_a - mean_a) / std_a).T
    charge_as = 50 * dt_s * (std_a * q + mean_a * r)
    np.testing.assert_allclose(charge_as, dt_s * np.cumsum(np.asarray(current_a)), rtol=1e-5, atol=1e-4)


def test_running_charge_is_causal():
    current = jax.random.normal(jax.random.key(4), (30,))
    full, prefix = running_charge(current), running_charge(current[:12])
    np.testing.assert_allclose(full[:12] * 30, prefix * 12, rtol=1e-6)
