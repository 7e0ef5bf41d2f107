"""Tasks: the chunked rollout restarts the running charge at every chunk and counts its features."""

import jax.numpy as jnp
import numpy as np
import pytest

from cellax.train.task import Task, rollout


def test_charge_channels_count_the_charge_passed_since_each_chunk_start():
    task = Task(inputs=("ambient_temp_degc", "current_a"), outputs=("soc",), known_initial=True, chunk_len=4,
                charge_channels=True)
    assert task.n_features == 2 + 2 + 1 + 1  # inputs, running charge, initial conditions, known flag
    x = jnp.stack([jnp.zeros(8), jnp.arange(8.0)], axis=-1)
    echo_charge = lambda features: features[:, 2:3]  # a "model" that outputs the running-charge channel
    y = rollout(echo_charge, task, x, jnp.zeros(1))[:, 0]
    np.testing.assert_allclose(y, [0, 0.25, 0.75, 1.5, 1.0, 2.25, 3.75, 5.5])


def test_without_charge_channels_the_features_are_inputs_and_conditions():
    task = Task(inputs=("current_a",), outputs=("soc", "voltage_v"), known_initial=False, chunk_len=4)
    assert task.n_features == 1 + 2 + 1
    y = rollout(lambda f: f[:, 1:3] + f[:, 3:4], task, jnp.ones((8, 1)), jnp.zeros(2))
    np.testing.assert_allclose(y[:4], 0.0)  # estimate: the first chunk's conditions are unknown (flag 0)
    np.testing.assert_allclose(y[4:], 1.0)  # later chunks get the previous prediction (0) and flag 1


def test_charge_channels_without_a_current_input_are_refused():
    with pytest.raises(ValueError, match="current_a"):
        Task(inputs=("ambient_temp_degc",), outputs=("soc",), known_initial=True, chunk_len=4, charge_channels=True)


def test_a_residual_task_predicts_the_change_from_each_chunks_initial_conditions():
    task = Task(inputs=("current_a",), outputs=("soc",), known_initial=True, chunk_len=4, residual=True)
    y = rollout(lambda f: jnp.full((4, 1), 0.5), task, jnp.ones((12, 1)), jnp.array([2.0]))[:, 0]
    np.testing.assert_allclose(y, [2.5] * 4 + [3.0] * 4 + [3.5] * 4)  # each chunk starts from the last output
