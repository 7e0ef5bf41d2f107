"""FastCharge-v0 on the hybrid: the rl environment works through the cell-model contract only."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.wrappers.purerl import FlattenObservationWrapper, LogWrapper

from cellax.hybrid import HybridSPMe
from cellax.physics import load_parameter_set
from cellax.physics.spme import SPMe
from cellax.rl import FastCharge, make

MESH = (10, (6, 4, 6))
N_ENVS, N_STEPS = 6, 12


@pytest.fixture(scope="module")
def chen2020():
    return load_parameter_set("Chen2020")


def _with_last_layers(hybrid: HybridSPMe, key) -> HybridSPMe:
    """The same hybrid with deterministic non-zero last layers (non-zero corrections)."""
    for i, pick in enumerate((lambda m: m.heat.mlp.layers[-1].weight, lambda m: m.output.mlp.layers[-1].weight)):
        weight = pick(hybrid)
        hybrid = eqx.tree_at(pick, hybrid, 0.5 * jax.random.normal(jax.random.fold_in(key, i), weight.shape, weight.dtype))
    return hybrid


@pytest.fixture(scope="module")
def envs(chen2020):
    """FastCharge on the SPMe, on a fresh hybrid (zero corrections) and on one with non-zero corrections."""
    spme = SPMe(*MESH)
    zero = HybridSPMe(spme, width=8, depth=1, key=jax.random.PRNGKey(3))
    return {name: FastCharge(chen2020, model=model) for name, model in
            (("spme", spme), ("hybrid_zero", zero), ("hybrid", _with_last_layers(zero, jax.random.PRNGKey(4))))}


def _episodes(env):
    """``N_ENVS`` cells (random initial SOC and temperature) under random C-rates in [0, 3.2], through
    gymnax's ``LogWrapper(FlattenObservationWrapper(env))``, auto-reset included, under jit + vmap."""
    wrapped = LogWrapper(FlattenObservationWrapper(env))
    params = env.default_params.replace(max_steps_in_episode=8)

    def one(key):
        obs, state = wrapped.reset(key, params)

        def body(carry, key):
            obs, state = carry
            action = jax.random.uniform(key, (1,), jnp.float32, 0.0, 3.2)
            obs, state, reward, terminated, truncated, info = wrapped.step(key, state, action, params)
            keep = {k: info[k] for k in ("soc", "voltage_v", "anode_potential_v", "surface_temp_degc", "status",
                                         "invalid", "plating_violation", "returned_episode_returns")}
            return (obs, state), (obs, reward, terminated, truncated, keep)

        return jax.lax.scan(body, (obs, state), jax.random.split(key, N_STEPS))[1]

    out = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), N_ENVS))
    return jax.tree_util.tree_map(np.asarray, out)


@pytest.fixture(scope="module")
def runs(envs):
    return {name: _episodes(env) for name, env in envs.items()}


def test_zero_corrections_give_the_spme_env_exactly(runs):
    """The spec: with zero corrections, observations, rewards, termination, truncation, limit flags and
    statuses are the SPMe's, bit for bit. The float64 signals in ``info`` may differ in the last bit
    (measured: the anode potential by 7e-17 V), as XLA fuses the larger program differently."""
    spme, zero = runs["spme"], runs["hybrid_zero"]
    for a, b in zip(jax.tree_util.tree_leaves(spme), jax.tree_util.tree_leaves(zero)):
        if a.dtype == np.float64:
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
        else:
            np.testing.assert_array_equal(a, b)
    obs, reward, terminated, truncated, info = spme
    assert obs.shape == (N_ENVS, N_STEPS, 7) and np.all(np.isfinite(obs)) and np.all(np.isfinite(reward))
    assert truncated.any() and info["plating_violation"].any()  # the episodes reach limits and auto-reset


def test_corrections_act_in_the_env(runs, envs, chen2020):
    """Non-zero corrections change voltage and anode potential (by the output network) and stay finite."""
    spme, hybrid = runs["spme"], runs["hybrid"]
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(hybrid))
    assert np.abs(hybrid[4]["voltage_v"] - spme[4]["voltage_v"]).max() > 1e-3
    env = envs["hybrid"]
    params = env.default_params
    _, state = env.reset(jax.random.key(1), params)
    signals = env.model.outputs(env.parameter_set, state.cell, jnp.zeros(()), jnp.asarray(298.15))
    plain = env.model.spme.outputs(env.parameter_set, state.cell, 0.0, 298.15)
    assert float(state.voltage_v) == pytest.approx(float(signals["voltage_v"]), abs=1e-12)
    assert abs(float(state.voltage_v) - float(plain["voltage_v"])) > 1e-4


def test_transition_gradients_through_the_hybrid(envs):
    env = envs["hybrid"]
    grad_env = env.with_transition_gradients()
    params = env.default_params.replace(initial_soc_min=0.2, initial_soc_max=0.2)
    _, state = env.reset(jax.random.key(0), params)

    def anode(c_rate):
        return grad_env.step_env(jax.random.key(0), state, jnp.reshape(c_rate, (1,)), params)[1].anode_potential_v

    g = jax.grad(anode)(1.5)
    h = 1e-3
    fd = (anode(1.5 + h) - anode(1.5 - h)) / (2 * h)
    assert float(g) < 0 and float(g) == pytest.approx(float(fd), rel=1e-3)


def test_make_takes_a_model_and_refuses_others(chen2020):
    env, params = make("FastCharge-v0", parameter_set=chen2020, model=SPMe(*MESH))
    assert env.model.x_counts == MESH[1] and params.voltage_max_v == 4.2
    with pytest.raises(TypeError, match="AbstractCellModel"):
        FastCharge(chen2020, model="SPMe")
    with pytest.raises(ValueError, match="not both"):
        FastCharge(chen2020, mesh=MESH, model=SPMe(*MESH))


def test_env_on_a_trained_run(trained_run):
    """``cellax.hybrid.charging.fast_charge_env``: the run's hybrid and cell, and the like-for-like SPMe (the
    hybrid's own backbone)."""
    from cellax.hybrid.charging import fast_charge_env
    from cellax.hybrid.train import load_run

    run_dir, _ = trained_run
    env, baselines, params = fast_charge_env(run_dir, which="latest", with_baselines=True)
    _, hybrid, cell, _ = load_run(run_dir, "latest")
    spme_env = baselines["spme"]
    assert isinstance(env.model, HybridSPMe) and list(baselines) == ["spme"] and spme_env.model == hybrid.spme
    np.testing.assert_array_equal(env.model.output.mlp.layers[-1].weight, hybrid.output.mlp.layers[-1].weight)
    assert float(env.parameter_set.scalars["voltage_max_v"]) == float(cell.scalars["voltage_max_v"])
    start = params.replace(initial_soc_min=0.3, initial_soc_max=0.3)
    obs, _ = env.reset(jax.random.key(0), start)
    obs_spme, _ = spme_env.reset(jax.random.key(0), start)
    assert obs[0] == obs_spme[0] and obs[1] != obs_spme[1]  # same SOC; the trained correction moves the voltage
    with pytest.raises(ValueError, match="needs a DFN backbone"):
        fast_charge_env(run_dir, which="latest", solver="ros2", implicit_reaction=True)  # this run's is the SPMe
