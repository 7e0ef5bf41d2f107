"""PPO for continuous actions, PureJaxRL-style: rollouts and updates in one jitted ``lax.scan``.

One *update* collects ``num_steps`` transitions from ``num_envs`` environments
(``vmap``), computes generalised advantages

.. math::

    \\delta_t = r_t + \\gamma V(s_{t+1})(1 - d_t) - V(s_t), \\qquad
    \\hat A_t = \\delta_t + \\gamma\\lambda (1 - d_t) \\hat A_{t+1},

and takes ``update_epochs`` passes of minibatch gradient steps on the clipped
surrogate :math:`\\min(\\rho_t \\hat A_t, \\operatorname{clip}(\\rho_t, 1\\pm\\epsilon) \\hat A_t)`
plus ``vf_coef`` times a clipped value loss minus ``ent_coef`` times the entropy.
The policy is a diagonal Gaussian (state-independent log-std); the environment
clips the sampled action to its Box. With ``env_block`` the rollout runs in blocks
of that many environments, each scanning all ``num_steps`` before the next block
(:mod:`cellax.batching`: a block's environment states stay in cache); the policy is
fixed during a rollout, so only the order and the random streams differ.

:func:`make_train` returns ``init(key)`` and ``segment(runner)``: ``segment`` runs
``updates_per_segment`` updates under one ``jit`` and is ``vmap``-ed over seeds
by the caller; :func:`train` loops over segments only to show progress, log the
learning curve and checkpoint between them (the same compiled function each time).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from cellax.events import EventLog
from cellax.rl.config import PPOConfig


class ActorCritic(eqx.Module):
    """Two tanh MLPs (policy mean, value) and a state-independent log standard deviation."""

    actor: eqx.nn.MLP
    critic: eqx.nn.MLP
    log_std: jax.Array

    def __init__(self, obs_size: int, action_size: int, hidden: int, init_log_std: float, *, key):
        ka, kc = jax.random.split(key)
        self.actor = eqx.nn.MLP(obs_size, action_size, hidden, 2, activation=jnp.tanh, key=ka)
        self.critic = eqx.nn.MLP(obs_size, "scalar", hidden, 2, activation=jnp.tanh, key=kc)
        self.log_std = jnp.full(action_size, init_log_std, jnp.float32)

    def __call__(self, obs):
        return self.actor(obs), self.log_std, self.critic(obs)


def gaussian_log_prob(x, mean, log_std):
    return jnp.sum(-0.5 * ((x - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def make_train(config: PPOConfig, env, env_params):
    """``(init, segment, static)``: pure functions over array-only runner states, and the networks'
    non-array structure (``eqx.combine(runner[0], static)`` is the actor-critic); see the module docstring."""
    obs_size = env.observation_space(env_params).shape[0]
    action_size = env.action_space(env_params).shape[0]
    batch = config.num_envs * config.num_steps
    minibatch = batch // config.num_minibatches
    steps_per_update = config.update_epochs * config.num_minibatches

    def schedule(count):
        frac = 1.0 - (count // steps_per_update) / config.total_updates
        return config.learning_rate * (frac if config.anneal_lr else 1.0)

    tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(schedule, eps=1e-5))
    template = ActorCritic(obs_size, action_size, config.hidden, config.init_log_std, key=jax.random.key(0))
    static = eqx.partition(template, eqx.is_array)[1]  # the carry holds arrays only: lax.scan needs that
    reset = jax.vmap(env.reset, in_axes=(0, None))
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def init(key):
        k_net, k_env, k_run = jax.random.split(key, 3)
        net = eqx.filter(ActorCritic(obs_size, action_size, config.hidden, config.init_log_std, key=k_net), eqx.is_array)
        obs, env_state = reset(jax.random.split(k_env, config.num_envs), env_params)
        return (net, tx.init(net), env_state, obs, k_run)

    def act_and_step(net, env_state, obs, k_act, k_step):
        """One policy sample and environment step for a batch of environments: ``(state, obs, transition)``."""
        mean, log_std, value = jax.vmap(eqx.combine(net, static))(obs)
        action = mean + jnp.exp(log_std) * jax.random.normal(k_act, mean.shape)
        log_prob = gaussian_log_prob(action, mean, log_std)
        next_obs, next_state, reward, terminated, truncated, info = step(
            jax.random.split(k_step, obs.shape[0]), env_state, action, env_params
        )
        # keep the carry's dtypes (with jax_enable_x64 some environments promote float32 state to float64)
        next_state = jax.tree_util.tree_map(lambda new, old: new.astype(old.dtype), next_state, env_state)
        transition = dict(obs=obs, action=action, log_prob=log_prob, value=value, reward=reward,
                          done=jnp.logical_or(terminated, truncated), terminated=terminated, info=info)
        return next_state, next_obs.astype(obs.dtype), transition

    def collect(carry, _):
        net, opt_state, env_state, obs, key = carry
        key, k_act, k_step = jax.random.split(key, 3)
        env_state, obs, transition = act_and_step(net, env_state, obs, k_act, k_step)
        return (net, opt_state, env_state, obs, key), transition

    def blocked_rollout(carry):
        """The ``num_steps`` of ``collect`` for blocks of ``env_block`` environments, one block after another."""
        net, opt_state, env_state, obs, key = carry
        key, k_blocks = jax.random.split(key)
        n_blocks = config.num_envs // config.env_block

        def one_block(block):
            state, block_obs, block_key = block

            def transition(c, _):
                state, block_obs, k = c
                k, k_act, k_step = jax.random.split(k, 3)
                state, block_obs, t = act_and_step(net, state, block_obs, k_act, k_step)
                return (state, block_obs, k), t

            (state, block_obs, _), traj = jax.lax.scan(transition, (state, block_obs, block_key), None, config.num_steps)
            return state, block_obs, traj

        split = lambda x: x.reshape(n_blocks, config.env_block, *x.shape[1:])  # noqa: E731
        env_state, obs, traj = jax.lax.map(
            one_block, (jax.tree_util.tree_map(split, env_state), split(obs), jax.random.split(k_blocks, n_blocks)))
        merge = lambda x: x.reshape(config.num_envs, *x.shape[2:])  # noqa: E731
        traj = jax.tree_util.tree_map(
            lambda x: jnp.swapaxes(x, 0, 1).reshape(config.num_steps, config.num_envs, *x.shape[3:]), traj)
        return (net, opt_state, jax.tree_util.tree_map(merge, env_state), merge(obs), key), traj

    def advantages(traj, last_value):
        def back(carry, t):
            gae, next_value = carry
            delta = t["reward"] + config.gamma * next_value * (1 - t["terminated"]) - t["value"]
            gae = delta + config.gamma * config.gae_lambda * (1 - t["done"]) * gae
            return (gae, t["value"]), gae

        _, adv = jax.lax.scan(back, (jnp.zeros_like(last_value), last_value), traj, reverse=True)
        return adv, adv + traj["value"]

    def loss_fn(net, mb):
        mean, log_std, value = jax.vmap(eqx.combine(net, static))(mb["obs"])
        log_prob = gaussian_log_prob(mb["action"], mean, log_std)
        ratio = jnp.exp(log_prob - mb["log_prob"])
        adv = (mb["adv"] - mb["adv"].mean()) / (mb["adv"].std() + 1e-8)
        actor = -jnp.mean(jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps) * adv))
        clipped = mb["value"] + jnp.clip(value - mb["value"], -config.clip_eps, config.clip_eps)
        critic = 0.5 * jnp.mean(jnp.maximum((value - mb["target"]) ** 2, (clipped - mb["target"]) ** 2))
        entropy = jnp.sum(log_std + 0.5 * jnp.log(2 * jnp.pi * jnp.e))
        return actor + config.vf_coef * critic - config.ent_coef * entropy, (actor, critic, entropy)

    def update(carry, _):
        if config.env_block and config.env_block < config.num_envs:
            carry, traj = blocked_rollout(carry)
        else:
            carry, traj = jax.lax.scan(collect, carry, None, config.num_steps)
        net, opt_state, env_state, obs, key = carry
        _, _, last_value = jax.vmap(eqx.combine(net, static))(obs)
        adv, target = advantages(traj, last_value)
        data = {k: traj[k] for k in ("obs", "action", "log_prob", "value")} | {"adv": adv, "target": target}
        data = jax.tree_util.tree_map(lambda x: x.reshape(batch, *x.shape[2:]), data)

        def epoch(state, _):
            net, opt_state, key = state
            key, k_perm = jax.random.split(key)
            perm = jax.random.permutation(k_perm, batch)
            shuffled = jax.tree_util.tree_map(lambda x: x[perm].reshape(config.num_minibatches, minibatch, *x.shape[1:]), data)

            def minibatch_step(state, mb):
                net, opt_state = state
                (loss, parts), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(net, mb)
                updates, opt_state = tx.update(grads, opt_state, net)
                return (eqx.apply_updates(net, updates), opt_state), loss

            (net, opt_state), losses = jax.lax.scan(minibatch_step, (net, opt_state), shuffled)
            return (net, opt_state, key), losses

        (net, opt_state, key), losses = jax.lax.scan(epoch, (net, opt_state, key), None, config.update_epochs)
        info = traj["info"]
        finished = info["returned_episode"]
        count = finished.sum()
        mean_over_finished = lambda x: jnp.where(count > 0, jnp.sum(x * finished) / jnp.maximum(count, 1), jnp.nan)  # noqa: E731
        metrics = {
            "loss": losses.mean(),
            "episode_return": mean_over_finished(info["returned_episode_returns"]),
            "episode_length": mean_over_finished(info["returned_episode_lengths"]),
            "episodes": finished.sum(),
            "reward": traj["reward"].mean(),
        }
        return (net, opt_state, env_state, obs, key), metrics

    def segment(runner):
        return jax.lax.scan(update, runner, None, config.updates_per_segment)

    return init, segment, static


def train(config: PPOConfig, env, env_params, out: Path | None = None, progress: bool = True, log=print):
    """Run PPO over ``config.num_seeds`` seeds at once; returns ``(networks (leading seed axis), learning curve)``.

    With ``out``: ``learning_curve.jsonl`` (one line per update, mean over seeds) and an orbax checkpoint of the
    networks after every segment in ``out/checkpoints``.
    """
    init, segment, static = make_train(config, env, env_params)
    keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
    runner = jax.jit(jax.vmap(init))(keys)
    run_segment = jax.jit(jax.vmap(segment))
    curve = []
    manager = events = None
    if out is not None:
        from cellax.checkpoint import TreeCheckpoint

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ppo_config.json").write_text(config.model_dump_json(indent=2))
        manager = TreeCheckpoint(out / "checkpoints")
        events = EventLog(out / "events")
    bar = tqdm(total=config.total_updates, disable=not progress, unit="update", desc="PPO")
    started = time.perf_counter()
    segments = config.total_updates // config.updates_per_segment
    for s in range(segments):
        runner, metrics = run_segment(runner)
        metrics = jax.device_get(metrics)
        for u in range(config.updates_per_segment):
            row = {k: float(np.nanmean(v[:, u])) if np.isfinite(v[:, u]).any() else None for k, v in metrics.items()}
            row.update(update=s * config.updates_per_segment + u + 1, time_s=time.perf_counter() - started,
                       env_steps=(s * config.updates_per_segment + u + 1) * config.num_envs * config.num_steps)
            curve.append(row)
        bar.update(config.updates_per_segment)
        recent = [r["episode_return"] for r in curve[-config.updates_per_segment:] if r["episode_return"] is not None]
        if recent:
            bar.set_postfix(episode_return=f"{recent[-1]:.2f}")
        if manager is not None:
            manager.save((s + 1) * config.updates_per_segment, runner[0])
            with (out / "learning_curve.jsonl").open("a") as f:
                for row in curve[-config.updates_per_segment:]:
                    f.write(json.dumps(row) + "\n")
                    events.write(row["update"], row, skip=("update",))
    bar.close()
    if manager is not None:
        manager.close()
        events.close()
    return eqx.combine(runner[0], static), curve
