"""Baseline charging protocols as pure policies, and a scanned rollout that records their traces.

A policy is a pure function ``policy(obs, params) -> action`` of a
:class:`~cellax.rl.fast_charge.FastCharge` observation and its ``EnvParams``;
the action is a ``(1,)`` C-rate. Both protocols here hold the voltage limit the
same way (constant voltage, CV): from the observed voltage ``V`` and the
previous C-rate ``c``, the next C-rate is

.. math::

    c' = \\min\\bigl(c_\\text{wanted},\\; c + (V_\\text{cv} - V) / R_C\\bigr), \\qquad
    V_\\text{cv} = V_\\text{max} - \\text{margin},

an integral controller on the voltage error with the cell's short-time
resistance ``R_C`` (V per C; 0.1 V/C suits Chen2020's 5 Ah cell: its voltage
steps by about that much per C within one 30 s interval). The margin absorbs the
voltage's rise within one interval, so the limit is held at the interval ends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from cellax.rl.fast_charge import EnvParams, decode_observation

Policy = Callable[[jax.Array, EnvParams], jax.Array]


def _held(c_wanted, obs, params: EnvParams, margin_v: float, resistance_v_per_c: float) -> jax.Array:
    """``c_wanted`` limited by the CV controller of the module docstring, as a ``(1,)`` action."""
    seen = decode_observation(obs, params)
    headroom_v = params.voltage_max_v - margin_v - seen["voltage_v"]
    c_rate = jnp.minimum(c_wanted, seen["c_rate"] + headroom_v / resistance_v_per_c)
    return jnp.reshape(jnp.clip(c_rate, 0.0, params.max_c_rate), (1,)).astype(jnp.float32)


def constant_current(c_rate: float) -> Policy:
    """Constant current at ``c_rate`` with no voltage control (limits are the agent's problem)."""

    def policy(obs, params: EnvParams) -> jax.Array:
        return jnp.full((1,), c_rate, jnp.float32)

    return policy


def cccv(c_rate: float = 1.0, margin_v: float = 0.015, resistance_v_per_c: float = 0.1) -> Policy:
    """Constant current at ``c_rate`` until the voltage reaches ``voltage_max_v - margin_v``, then constant voltage."""

    def policy(obs, params: EnvParams) -> jax.Array:
        return _held(c_rate, obs, params, margin_v, resistance_v_per_c)

    return policy


def multistage_cc(
    stages: Sequence[tuple[float, float]], margin_v: float = 0.015, resistance_v_per_c: float = 0.1
) -> Policy:
    """Multi-stage constant current: ``stages`` are ``(soc_threshold, c_rate)``, each rate applies while
    ``soc < soc_threshold`` (thresholds ascending; above the last, its rate), ending in CV at the voltage limit."""
    if not stages:
        raise ValueError("multistage_cc needs at least one (soc_threshold, c_rate) stage")
    thresholds = jnp.asarray([s for s, _ in stages], jnp.float32)
    rates = jnp.asarray([c for _, c in stages], jnp.float32)
    if bool(jnp.any(jnp.diff(thresholds) <= 0)):
        raise ValueError(f"stage SOC thresholds must ascend, got {thresholds.tolist()}")

    def policy(obs, params: EnvParams) -> jax.Array:
        stage = jnp.minimum(jnp.sum(obs[0] >= thresholds), len(stages) - 1)
        return _held(rates[stage], obs, params, margin_v, resistance_v_per_c)

    return policy


TRACED = ("soc", "voltage_v", "surface_temp_degc", "core_temp_degc", "anode_potential_v", "current_a", "c_rate")
FLAGS = ("reward", "terminated", "truncated", "done", "voltage_violation", "temperature_violation", "plating_violation")


def rollout(env, env_params: EnvParams, policy: Policy, key: jax.Array, n_steps: int, stop_at_done: bool = True):
    """Run ``policy`` for ``n_steps`` (``lax.scan``, jit- and vmap-able) from ``env.reset(key)``.

    Returns per-step traces, each of length ``n_steps``: the signals at the end of each
    interval (``soc``, ``voltage_v``, ``surface_temp_degc``, ``core_temp_degc``,
    ``anode_potential_v``, ``current_a``, ``c_rate``), ``time_s`` (end of the interval),
    ``reward``, ``terminated``, ``truncated``, ``done``, ``invalid``, the step's limit flags
    (``voltage_violation``, ``temperature_violation``, ``plating_violation``), ``obs`` (the
    observation the policy saw) and ``active``. With ``stop_at_done`` the first episode is
    recorded: after it ends, ``active`` is False, rewards and flags are 0 and the signals hold
    their final values.
    """
    key_reset, key_steps = jax.random.split(key)
    obs, state = env.reset(key_reset, env_params)

    def record_of(obs_seen, reward, terminated, truncated, info):
        record = {name: info[name] for name in TRACED}
        record.update(
            voltage_violation=info["voltage_violation"],
            temperature_violation=info["temperature_violation"],
            plating_violation=info["plating_violation"],
            time_s=info["charge_time_s"],
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            done=terminated | truncated,
            invalid=info["invalid"],
            obs=obs_seen,
        )
        return record

    def body(carry, step_key):
        obs, state, active, last = carry
        action = policy(obs, env_params)
        next_obs, next_state, reward, terminated, truncated, info = env.step(step_key, state, action, env_params)
        record = record_of(obs, reward, terminated, truncated, info)
        if stop_at_done:
            record = jax.tree_util.tree_map(lambda new, old: jnp.where(active, new, old), record, last)
            for flag in FLAGS:
                record[flag] = jnp.where(active, record[flag], jnp.zeros_like(record[flag]))
            next_active = active & ~(terminated | truncated)
        else:
            next_active = active
        record["active"] = active
        return (next_obs, next_state, next_active, {k: v for k, v in record.items() if k != "active"}), record

    # a placeholder record with the right structure for the first step's "last"
    template = jax.eval_shape(
        lambda: record_of(obs, *env.step(key_steps, state, policy(obs, env_params), env_params)[2:])
    )
    last = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), template)
    _, traces = jax.lax.scan(body, (obs, state, jnp.array(True), last), jax.random.split(key_steps, n_steps))
    return traces
