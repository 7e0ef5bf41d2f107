"""Mamba: the parallel scan is the recurrence; variants stream like the full forward (contract: ``test_contract.py``)."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cellax.models import Mamba, MambaConfig, linear_recurrence, linear_recurrence_sequential, selective_scan_sequential
from cellax.models.mamba import causal_conv

from .checks import N_FEATURES, N_OUTPUTS, assert_streams_like_forward


@functools.cache
def tiny(**overrides) -> Mamba:
    config = MambaConfig(**(dict(width=32, n_layers=2, state_size=8) | overrides))
    return Mamba(config, N_FEATURES, N_OUTPUTS, key=jax.random.key(0))


def test_parallel_scan_equals_the_sequential_recurrence():
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.uniform(ka, (33, 4, 3), jnp.float32, 0.5, 1.0)  # decays, as exp(ΔA) with A < 0
    b = jax.random.normal(kb, (33, 4, 3), jnp.float32)
    parallel = jax.jit(linear_recurrence)(a, b)
    np.testing.assert_allclose(parallel, jax.jit(linear_recurrence_sequential)(a, b), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(parallel[10], a[10] * parallel[9] + b[10], rtol=1e-6)
    np.testing.assert_allclose(parallel[0], b[0])


def test_the_fused_selective_scan_equals_discretise_then_parallel_scan():
    k = jax.random.split(jax.random.key(1), 4)
    T, D, N = 29, 5, 3
    delta = jax.nn.softplus(jax.random.normal(k[0], (T, D)))
    u, B, C = jax.random.normal(k[1], (T, D)), jax.random.normal(k[2], (T, N)), jax.random.normal(k[3], (T, N))
    A = -jnp.broadcast_to(jnp.arange(1.0, N + 1), (D, N))
    h = linear_recurrence(jnp.exp(delta[:, :, None] * A), (delta * u)[:, :, None] * B[:, None, :])
    np.testing.assert_allclose(jax.jit(selective_scan_sequential)(delta, u, B, C, A), jnp.einsum("tdn,tn->td", h, C),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scan", ["parallel", "sequential"])
def test_both_full_forward_scans_give_the_same_model_outputs(scan):
    x = jax.random.normal(jax.random.key(2), (40, N_FEATURES))
    reference = tiny(scan="parallel" if scan == "sequential" else "sequential")
    model = tiny(scan=scan)  # same key, so the same weights
    np.testing.assert_allclose(eqx.filter_jit(model)(x), eqx.filter_jit(reference)(x), rtol=1e-4, atol=1e-5)
    assert MambaConfig(scan="auto").parallel_scan == (jax.default_backend() != "cpu")


def test_causal_conv_weighs_the_present_with_the_last_tap():
    u = jnp.arange(1.0, 6.0, dtype=jnp.float32)[:, None]  # one channel: 1, 2, 3, 4, 5
    weight = jnp.array([[1.0], [10.0], [100.0]], jnp.float32)  # oldest ... newest
    np.testing.assert_allclose(causal_conv(u, weight, jnp.zeros(1))[:, 0], [100, 210, 321, 432, 543])


@pytest.mark.parametrize("variant", [dict(scan="parallel"), dict(conv_kernel=1, dt_rank=3, n_layers=1)])
def test_streaming_equals_the_full_forward_in_other_variants(variant):
    assert_streams_like_forward(tiny(**variant))




def test_initialisation_is_s4d_real_with_log_uniform_step_sizes():
    mixer = tiny().mixers[0]
    np.testing.assert_allclose(-jnp.exp(mixer.A_log), -jnp.broadcast_to(jnp.arange(1.0, 9.0), (64, 8)), rtol=1e-6)
    dt = jax.nn.softplus(mixer.dt_proj.bias)
    assert bool(jnp.all((dt >= 1e-3 * 0.999) & (dt <= 0.1 * 1.001)))
    np.testing.assert_allclose(mixer.D, 1.0)
    assert mixer.conv_weight.shape == (4, 64)  # kernel 4, depthwise over expand * width channels


def test_streaming_state_is_constant_size():
    model = tiny()
    state = model.init_state()
    assert state.shape == (2, 64, 3 + 8)  # layers, channels, kernel - 1 conv inputs + SSM states
    _, state = model.step(state, jnp.ones(model.embed.in_features))
    assert state.shape == (2, 64, 3 + 8)




def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="dt_max"):
        MambaConfig(dt_min=0.1, dt_max=0.01)
    with pytest.raises(ValueError, match="state_size"):
        MambaConfig(state_size=0)
