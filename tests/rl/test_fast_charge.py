"""FastCharge-v0: the gymnax API, batching, bad actions, invalid states and transition gradients."""

import inspect

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import environment
from gymnax.wrappers.purerl import FlattenObservationWrapper, LogWrapper

import cellax.rl
from cellax.status import STATUS
from cellax.rl import EnvParams, EnvState, FastCharge, make
from tests.rl.conftest import COARSE_MESH

KEY = jax.random.key(0)
ONE_C = jnp.array([1.0], jnp.float32)  # actions in the action space's dtype: one compiled step


def test_gymnax_signatures_and_spaces(env, params):
    assert isinstance(env, environment.Environment)
    for method in ("step_env", "reset_env", "step", "reset", "observe", "is_truncated"):
        assert list(inspect.signature(getattr(env, method)).parameters) == list(
            inspect.signature(getattr(environment.Environment, method)).parameters
        )[1:]
    assert env.name == "FastCharge-v0" and env.num_actions == 1
    assert env.supports_transition_gradients and not env.transition_gradients_enabled

    obs, state = env.reset(KEY, params)
    assert isinstance(state, EnvState) and isinstance(params, EnvParams)
    assert obs.shape == env.observation_space(params).shape == (7,) and obs.dtype == jnp.float32
    assert bool(env.observation_space(params).contains(obs))
    assert float(obs[0]) == pytest.approx(0.1)

    action_space = env.action_space(params)
    assert action_space.shape == (1,) and action_space.low == 0.0 and action_space.high == params.max_c_rate
    action = action_space.sample(KEY)
    assert bool(action_space.contains(action))

    out = env.step(KEY, state, action, params)
    assert len(out) == 6
    obs, state, reward, terminated, truncated, info = out
    assert obs.shape == (7,) and reward.shape == () and reward.dtype == jnp.float32
    assert terminated.dtype == truncated.dtype == jnp.bool_
    assert bool(env.observation_space(params).contains(obs))
    for name in ("charge_time_s", "soc", "invalid", "n_voltage_violations", "n_plating_violations",
                 "n_temperature_violations", "final_observation", "terminated", "truncated", "discount"):
        assert name in info
    assert int(state.time) == 1 and float(info["charge_time_s"]) == params.control_interval_s
    assert float(state.soc) > 0.1


def test_make_and_gymnax_registry(env, chen2020):
    made, default = make("FastCharge-v0", parameter_set=chen2020, mesh=(10, (6, 4, 6)))
    assert isinstance(made, FastCharge) and default == made.default_params
    assert default.voltage_max_v == pytest.approx(4.2)
    assert "FastCharge-v0" in gymnax.registered_envs
    via_gymnax, _ = gymnax.make("FastCharge-v0", parameter_set=chen2020, mesh=(10, (6, 4, 6)))
    assert isinstance(via_gymnax, FastCharge)
    with pytest.raises(ValueError, match="unknown environment"):
        cellax.rl.make("FastCharge-v9")
    with pytest.raises(ValueError, match="substeps"):
        FastCharge(chen2020, substeps=0)
    with pytest.raises(ValueError, match="solver must be one of"):
        FastCharge(chen2020, solver="euler")


def test_truncation_and_auto_reset(env, params):
    short = params.replace(max_steps_in_episode=2)
    obs, state = env.reset(KEY, short)
    action = ONE_C
    obs, state, _, terminated, truncated, info = env.step(KEY, state, action, short)
    assert not bool(truncated) and int(state.time) == 1
    obs, state, _, terminated, truncated, info = env.step(KEY, state, action, short)
    assert bool(truncated) and not bool(terminated)
    assert int(state.time) == 0 and float(state.charge_time_s) == 0.0  # auto-reset
    assert float(obs[0]) == pytest.approx(0.1) and float(info["final_observation"][0]) > 0.1
    assert float(info["charge_time_s"]) == 2 * short.control_interval_s


def test_wrappers_scan_and_log_episodes(env, params):
    wrapped = LogWrapper(FlattenObservationWrapper(env))
    short = params.replace(max_steps_in_episode=3)

    def run(key):
        obs, state = wrapped.reset(key, short)

        def body(carry, key):
            obs, state = carry
            obs, state, reward, terminated, truncated, info = wrapped.step(key, state, ONE_C, short)
            return (obs, state), (reward, info["returned_episode"], info["returned_episode_lengths"])

        return jax.lax.scan(body, (obs, state), jax.random.split(key, 7))

    (obs, state), (rewards, ended, lengths) = jax.jit(run)(KEY)
    assert obs.shape == (7,)
    assert np.asarray(ended).tolist() == [False, False, True, False, False, True, False]
    assert int(lengths[-1]) == 3 and bool(state.returned_episode_valid)
    assert np.all(np.isfinite(np.asarray(rewards)))


def test_jit_vmap_256_envs(env):
    params = env.default_params  # random initial SOC and temperature per environment
    n = 256

    @jax.jit
    def run(key):
        keys = jax.random.split(key, n)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)

        def body(state, key):
            key_action, key_step = jax.random.split(key)
            actions = jax.random.uniform(key_action, (n, 1), jnp.float32, minval=0.0, maxval=2.0)
            obs, state, reward, terminated, truncated, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(key_step, n), state, actions, params
            )
            return state, (obs, reward, info["soc"])

        return obs, jax.lax.scan(body, state, jax.random.split(key, 4))

    obs0, (state, (obs, rewards, soc)) = run(KEY)
    assert obs0.shape == (n, 7) and obs.shape == (4, n, 7) and rewards.shape == (4, n)
    assert np.all(np.isfinite(np.asarray(obs))) and np.all(np.isfinite(np.asarray(rewards)))
    soc0 = np.asarray(obs0[:, 0])
    assert soc0.min() >= params.initial_soc_min - 1e-6 and soc0.max() <= params.initial_soc_max + 1e-6
    assert np.unique(soc0).size == n  # every environment starts elsewhere
    assert np.all(np.asarray(soc[-1]) > soc0)


@pytest.mark.parametrize("action, c_rate", [(jnp.nan, 0.0), (jnp.inf, 0.0), (-jnp.inf, 0.0), (-5.0, 0.0), (100.0, 3.0)])
def test_bad_actions_keep_the_state_finite(env, params, action, c_rate):
    obs, state = env.reset(KEY, params)
    obs, state, reward, terminated, truncated, info = env.step(KEY, state, jnp.array([action], jnp.float32), params)
    assert float(info["c_rate"]) == c_rate
    leaves = jax.tree_util.tree_leaves(state) + [obs, reward]
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in leaves)


BAD_PARAMS = [
    ({"max_c_rate": jnp.nan}, "max_c_rate"),
    ({"max_c_rate": 0.0}, "max_c_rate"),
    ({"target_soc": jnp.nan}, "target_soc"),
    ({"target_soc": 1.2}, "target_soc"),
    ({"initial_soc_min": -0.1}, "initial_soc_min"),
    ({"initial_soc_max": 1.5}, "initial_soc_max"),
    ({"initial_soc_min": 0.5, "initial_soc_max": 0.3}, "initial_soc_min"),
    ({"initial_temp_min_degc": -300.0}, "initial_temp_min_degc"),
    ({"ambient_temp_degc": jnp.inf}, "ambient_temp_degc"),
    ({"control_interval_s": 0.0}, "control_interval_s"),
    ({"time_penalty": jnp.nan}, "time_penalty"),
    ({"max_steps_in_episode": 0}, "max_steps_in_episode"),
]


@pytest.mark.parametrize("changes, field", BAD_PARAMS, ids=[f for _, f in BAD_PARAMS])
def test_concrete_bad_params_raise_before_any_work(env, params, changes, field):
    from cellax.rl.fast_charge import check_params

    bad = params.replace(**changes)
    for call in (lambda: env.reset(KEY, bad), lambda: env.step(KEY, None, ONE_C, bad), lambda: check_params(bad),
                 lambda: jax.jit(lambda key: env.reset(key, bad))(KEY)):  # closed over: concrete under jit too
        with pytest.raises(ValueError, match=f"EnvParams.{field} must be"):
            call()


def test_traced_bad_params_end_the_episode_with_status_invalid_input(env, params):
    """Inside jit the values cannot raise: the episode starts invalid and ends at once, all finite."""
    batch = [params] + [params.replace(**changes) for changes, _ in BAD_PARAMS]
    stacked = jax.tree_util.tree_map(lambda *leaves: jnp.asarray(leaves), *batch)

    @jax.jit
    @jax.vmap
    def first_step(p):
        obs0, state = env.reset(KEY, p)
        obs, state, reward, terminated, info = env.step_env(KEY, state, ONE_C, p)
        return obs0, state.invalid, obs, reward, terminated, info["status"], info["soc"]

    obs0, invalid, obs, reward, terminated, status, soc = first_step(stacked)
    for value in (obs0, obs, reward, soc):
        assert np.all(np.isfinite(np.asarray(value)))
    assert not bool(invalid[0]) and STATUS[int(status[0])] == "completed" and float(soc[0]) > 0.1
    assert np.all(np.asarray(invalid[1:])) and np.all(np.asarray(terminated[1:]))
    assert {STATUS[int(code)] for code in status[1:]} == {"invalid_input"}
    assert np.all(np.asarray(reward[1:]) == 0.0) and np.all(np.asarray(obs[1:]) == 0.0)


def test_action_clipping(env, params):
    from cellax.rl.fast_charge import action_to_c_rate

    rates = [float(action_to_c_rate(jnp.asarray(a), params)) for a in (jnp.nan, jnp.inf, -jnp.inf, -1.0, 1.5, 9.0)]
    assert rates == [0.0, 0.0, 0.0, 0.0, 1.5, params.max_c_rate]
    assert float(action_to_c_rate(2, params)) == 2.0  # integer and scalar actions too


def test_electrolyte_depletion_ends_the_episode_with_finite_observations(env, params):
    """Chen2020's SPMe depletes its electrolyte within a minute or two above ~2.5C: the episode ends as invalid."""
    fast = params.replace(max_c_rate=4.0)
    obs, state = env.reset(KEY, fast)
    step = jax.jit(env.step_env)  # without auto-reset, to see the final state
    for k in range(10):
        previous = state
        obs, state, reward, terminated, info = step(KEY, state, jnp.array([4.0], jnp.float32), fast)
        if bool(terminated):
            break
    assert bool(terminated) and bool(info["invalid"]) and bool(state.invalid)
    assert STATUS[int(info["status"])] == "electrolyte_depleted"
    assert not bool(info["reached_target"]) and float(info["discount"]) == 0.0
    assert float(reward) <= -fast.invalid_penalty
    assert np.all(np.isfinite(np.asarray(obs)))
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree_util.tree_leaves(state))
    # the invalid step was discarded: the cell is the last valid one
    np.testing.assert_array_equal(np.asarray(state.cell.c_e), np.asarray(previous.cell.c_e))
    assert float(state.soc) == float(previous.soc) and float(state.current_a) == 0.0
    assert not bool(env.is_terminated(previous, fast)) and bool(env.is_terminated(state, fast))


def test_transition_gradients_match_finite_differences(chen2020, params):
    """Reverse-mode gradients of state, reward and observation w.r.t. the action, through ``step``;
    finite (zero) through an invalid step; detached by default (gymnax's convention).

    One ROS2 step per interval: a third of the default's compile time, the same code path."""
    env = FastCharge(chen2020, mesh=COARSE_MESH, substeps=1)
    grad_env = env.with_transition_gradients()
    assert grad_env.transition_gradients_enabled and not env.transition_gradients_enabled

    def outcome(c_rate, state, params):
        obs, new, reward, terminated, truncated, info = grad_env.step(KEY, state, jnp.reshape(c_rate, (1,)), params)
        return jnp.stack([new.soc, new.voltage_v, new.core_temp_degc, reward, obs[1]]), (info["invalid"], new)

    @jax.jit  # one compiled function for values and Jacobian (XLA shares the forward pass)
    def evaluate(c_rate, state, params):
        return outcome(c_rate, state, params), jax.jacrev(lambda c: outcome(c, state, params)[0])(c_rate)

    _, state = env.reset(KEY, params)
    for _ in range(3):
        state = evaluate(1.0, state, params)[0][1][1]
    c_rate, h = 1.3, 1e-3
    gradient = np.asarray(evaluate(c_rate, state, params)[1])
    plus, minus = evaluate(c_rate + h, state, params)[0][0], evaluate(c_rate - h, state, params)[0][0]
    finite_difference = np.asarray((plus - minus) / (2 * h))
    assert np.all(gradient != 0.0)
    # soc, voltage and core temperature are float64; reward and observation float32
    np.testing.assert_allclose(gradient[:3], finite_difference[:3], rtol=1e-5)
    np.testing.assert_allclose(gradient[3:], finite_difference[3:], rtol=1e-3)

    # a step that depletes the electrolyte: finite values, zero gradient (the step is discarded, then reset)
    fast = params.replace(max_c_rate=6.0)
    _, rested = env.reset(KEY, fast)
    (value, (invalid, _)), gradient = evaluate(6.0, rested, fast)
    assert bool(invalid) and np.all(np.isfinite(np.asarray(value)))
    assert np.all(np.asarray(gradient) == 0.0)

    # gymnax's default detaches what step_env returns
    def through_policy(x, e):
        obs, state = e._apply_transition_gradient_policy(x, {"soc": 2 * x})
        return obs + state["soc"]

    assert float(jax.grad(through_policy)(1.0, env)) == 0.0 and float(jax.grad(through_policy)(1.0, grad_env)) == 3.0
