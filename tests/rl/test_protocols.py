"""Baseline protocols (pure policies) and the scanned rollout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cellax.rl import EnvParams, cccv, constant_current, multistage_cc, rollout
from cellax.rl.fast_charge import VOLTAGE_SCALE_V


def observation(soc, voltage_v, c_rate, params=EnvParams()):
    """A FastCharge observation with the entries the protocols read."""
    return jnp.array(
        [soc, (voltage_v - params.voltage_max_v) / VOLTAGE_SCALE_V, -2.0, -2.0, 1.0, c_rate / params.max_c_rate, 0.1],
        jnp.float32,
    )


def test_policies_are_pure_functions_of_the_observation():
    params = EnvParams()
    policy = multistage_cc([(0.3, 2.0), (0.5, 1.5), (0.8, 1.0)])
    rates = [float(policy(observation(soc, 3.8, 2.0), params)[0]) for soc in (0.1, 0.3, 0.45, 0.7, 0.95)]
    assert rates == [2.0, 1.5, 1.5, 1.0, 1.0]
    assert policy(observation(0.1, 3.8, 2.0), params).shape == (1,)
    # at the voltage limit the CV controller takes current away: (V_cv - V) / R_C per step
    held = float(cccv(1.0)(observation(0.7, 4.2, 1.0), params)[0])
    assert held == pytest.approx(1.0 - 0.015 / 0.1, abs=1e-4)
    assert float(cccv(1.0)(observation(0.7, 4.5, 1.0), params)[0]) == 0.0
    assert float(constant_current(2.5)(observation(0.7, 4.5, 1.0), params)[0]) == 2.5
    batched = jax.vmap(cccv(1.0), in_axes=(0, None))(jnp.stack([observation(0.2, 3.7, 0.0)] * 3), params)
    assert batched.shape == (3, 1)
    with pytest.raises(ValueError, match="ascend"):
        multistage_cc([(0.5, 2.0), (0.3, 1.0)])


def test_cccv_1c_reaches_80_percent_in_about_45_minutes_within_limits(env, params):
    traces = jax.jit(lambda key: rollout(env, params, cccv(1.0), key, 120))(jax.random.key(0))
    active = np.asarray(traces["active"])
    n = int(active.sum())
    assert n < 120 and not active[n:].any()  # the episode ended and was held afterwards
    assert bool(traces["terminated"][n - 1]) and not np.asarray(traces["invalid"]).any()
    assert float(traces["soc"][n - 1]) >= params.target_soc
    charge_time_min = float(traces["time_s"][n - 1]) / 60
    assert 44.0 <= charge_time_min <= 50.0
    assert float(traces["voltage_v"].max()) <= params.voltage_max_v
    assert float(traces["anode_potential_v"].min()) >= params.anode_potential_min_v
    assert float(traces["surface_temp_degc"].max()) <= params.surface_temp_max_degc
    for flag in ("voltage_violation", "temperature_violation", "plating_violation"):
        assert not np.asarray(traces[flag]).any()
    c_rate = np.asarray(traces["c_rate"][:n])
    assert np.all(c_rate[:60] == 1.0) and c_rate[-1] < 0.9  # CC, then CV tapering
    current = np.asarray(traces["current_a"][:n])
    np.testing.assert_allclose(current, -5.0 * c_rate, rtol=1e-6)  # 5 Ah: current in A, negative = charge
    rewards = np.asarray(traces["reward"])
    assert np.all(rewards[n:] == 0.0) and not np.asarray(traces["done"])[n:].any()
    # progress reward telescopes: 100 per unit SOC up to the target, minus the time penalty
    expected = params.soc_reward * (params.target_soc - float(traces["obs"][0, 0])) - params.time_penalty * n
    assert rewards.sum() == pytest.approx(expected, rel=1e-4)
