"""The fused Mamba kernel: the same streaming step as ``Mamba.step``, in one call."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cellax.deploy.export import DeployError, load_step
from cellax.deploy.fused_mamba import FusedMambaStep
from cellax.deploy.step import rollout_stream
from cellax.models import Mamba
from tests.deploy.test_export import assert_close, held_out


def rollout(step_fn, state, inputs):
    step = jax.jit(step_fn)
    outputs = []
    for x_t in inputs:
        y, state = step(state, x_t)
        outputs.append(y)
    return np.stack(outputs), np.asarray(state)


@pytest.mark.parametrize("config", [
    {"width": 32, "n_layers": 2, "state_size": 16, "conv_kernel": 4},  # one vector per channel
    {"width": 24, "n_layers": 1, "state_size": 4, "conv_kernel": 2, "expand": 3},  # short tails everywhere
    {"width": 16, "n_layers": 2, "state_size": 20, "conv_kernel": 1, "dt_rank": 3},  # no conv history; N > 16
])
def test_the_fused_step_is_the_model_step(config):
    model = Mamba(config, 5, 3, key=jax.random.key(0))
    fused = FusedMambaStep(model)
    inputs = jax.random.normal(jax.random.key(1), (40, 5))
    reference, reference_state = rollout(lambda s, x: model.step(s, x), model.init_state(), inputs)
    outputs, state = rollout(lambda s, x: fused.step(s, x), fused.init_state(), inputs)
    assert np.abs(outputs - reference).max() <= 1e-5 * max(1.0, np.abs(reference).max())
    assert np.abs(state - reference_state).max() <= 1e-5 * max(1.0, np.abs(reference_state).max())


def test_a_vmap_over_cells_steps_each_cell_as_alone():
    model = Mamba({"width": 16, "n_layers": 2, "state_size": 8}, 4, 2, key=jax.random.key(2))
    fused = FusedMambaStep(model)
    inputs = jax.random.normal(jax.random.key(3), (2, 3, 4))  # 2 x 3 cells, one sample each
    states = jax.random.normal(jax.random.key(4), (2, 3, *fused.init_state().shape))
    y, new = jax.jit(jax.vmap(jax.vmap(lambda s, x: fused.step(s, x))))(states, inputs)
    for group, cell in np.ndindex(2, 3):
        y_alone, new_alone = model.step(states[group, cell], inputs[group, cell])
        np.testing.assert_allclose(y[group, cell], y_alone, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new[group, cell], new_alone, rtol=1e-5, atol=1e-6)


def test_a_state_shared_by_the_cells_is_broadcast_and_a_vmap_over_models_refused():
    model = Mamba({"width": 16, "n_layers": 1, "state_size": 4}, 4, 2, key=jax.random.key(2))
    fused = FusedMambaStep(model)
    inputs = jax.random.normal(jax.random.key(3), (3, 4))
    y, _ = jax.vmap(lambda x: fused.step(fused.init_state(), x))(inputs)
    np.testing.assert_allclose(y, jax.vmap(lambda x: model.step(model.init_state(), x)[0])(inputs), rtol=1e-5,
                               atol=1e-6)
    two_models = jax.tree.map(lambda a: jnp.stack([a, a]), fused)
    with pytest.raises(ValueError, match="vmap over cells, not over models"):
        jax.vmap(lambda m, x: m.step(m.init_state(), x))(two_models, inputs[:2])


def test_a_trained_run_streams_the_same_with_the_fused_step(runs):
    inputs, first, reference, scale = held_out(runs["mamba"])
    deployed, _ = load_step(runs["mamba"], fused=True)
    assert isinstance(deployed.model, FusedMambaStep)
    assert_close(np.asarray(jax.jit(rollout_stream)(deployed, inputs, first)), reference, scale)


def test_the_fused_step_is_refused_for_other_models(runs):
    with pytest.raises(DeployError, match="for Mamba runs; this run's model is a GRU"):
        load_step(runs["gru"], fused=True)
