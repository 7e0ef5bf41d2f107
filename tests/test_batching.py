"""blocked_vmap: the results of jax.vmap, block by block, padding included; bad sizes refused."""

import jax
import jax.numpy as jnp
import pytest

from cellax.batching import blocked_vmap


def step_through(x, y):
    def body(c, _):
        return jnp.tanh(c * x + y), c.sum()

    c, ys = jax.lax.scan(body, jnp.ones(3), None, 7)
    return {"c": c, "ys": ys}


@pytest.mark.parametrize("n, block, groups", [(12, 3, 2), (10, 3, 2), (5, 8, 1), (1, 1, 1)])
def test_blocked_vmap_equals_vmap(n, block, groups):
    x = jnp.linspace(-1.0, 1.0, n)
    y = jnp.linspace(0.0, 2.0, 3 * n).reshape(n, 3)
    expected = jax.vmap(step_through)(x, y)
    got = jax.jit(blocked_vmap(step_through, block, groups))(x, y)
    for key in expected:
        assert got[key].shape == expected[key].shape
        assert jnp.array_equal(got[key], expected[key])


@pytest.mark.parametrize("n, block", [(12, 3), (10, 4)])
def test_blocks_sorted_by_cost_and_run_on_devices_return_the_batch_in_order(n, block):
    """``cost`` reorders the work (here: most expensive first) and ``devices`` runs the lanes under shard_map;
    the results stay those of ``vmap``, in the batch's order, padding dropped."""
    x = jnp.linspace(-1.0, 1.0, n)
    y = jnp.linspace(0.0, 2.0, 3 * n).reshape(n, 3)
    expected = jax.vmap(step_through)(x, y)
    got = jax.jit(blocked_vmap(step_through, block, 1, cost=lambda x, y: -x, devices=jax.devices()[:1]))(x, y)
    for key in expected:
        assert jnp.array_equal(got[key], expected[key])


def test_bad_block_or_groups_is_refused():
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="block"):
            blocked_vmap(step_through, bad)
        with pytest.raises(ValueError, match="groups"):
            blocked_vmap(step_through, 2, bad)
    with pytest.raises(ValueError, match="one device per group"):
        blocked_vmap(step_through, 2, 2, devices=jax.devices()[:1])
