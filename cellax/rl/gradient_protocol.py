"""A charging protocol optimised by backpropagation through whole episodes of the cell model.

The protocol is a table of C-rates over state of charge and surface temperature,

.. math::

    c(\\text{soc}, T_s) = c_\\max \\, \\sigma\\bigl(\\text{bilinear}_{\\theta}(\\text{soc}, T_s)\\bigr),

``θ`` the logits at ``len(soc_knots) × len(temp_knots)`` knots (a few dozen
numbers), ``σ`` the logistic function. Its objective is the discounted return of
:class:`~cellax.rl.fast_charge.FastCharge` from fixed initial conditions,

.. math::

    J(\\theta) = \\sum_t \\gamma^t \\, a_t \\, r_t(\\theta), \\qquad a_t = \\prod_{s<t} (1 - d_s),

differentiated through ``step_env`` of the environment's transition-gradient copy
(gymnax's ``with_transition_gradients()``): the SPMe, its thermal model and the
reward's hinge penalties on voltage, temperature and anode potential. The
discount makes earlier progress worth more, so ``∇J`` pushes the current up
wherever the limits leave room. Optimised with optax Adam, its step size decayed
on a cosine to a tenth so that the last iterations settle rather than oscillate.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

from cellax.physics.simulate import gradient_where
from cellax.rl.fast_charge import EnvParams, check_params, decode_observation


class ProtocolTable(eqx.Module):
    """C-rate as a bilinear table over SOC and surface temperature; a policy ``(obs, params) -> (1,)``."""

    logits: Float[Array, "n_soc n_temp"]
    soc_knots: tuple[float, ...] = eqx.field(static=True)
    temp_knots_degc: tuple[float, ...] = eqx.field(static=True)

    def __init__(self, soc_knots=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8), temp_knots_degc=(15.0, 30.0, 45.0),
                 initial_c_rate: float = 1.0, max_c_rate: float = 3.0):
        self.soc_knots = tuple(float(k) for k in soc_knots)
        self.temp_knots_degc = tuple(float(k) for k in temp_knots_degc)
        logit = jnp.log(initial_c_rate / (max_c_rate - initial_c_rate))
        self.logits = jnp.full((len(self.soc_knots), len(self.temp_knots_degc)), logit, jnp.float32)

    def c_rate(self, soc, surface_temp_degc, max_c_rate):
        by_temp = jax.vmap(lambda row: jnp.interp(surface_temp_degc, jnp.asarray(self.temp_knots_degc), row))(self.logits)
        return max_c_rate * jax.nn.sigmoid(jnp.interp(soc, jnp.asarray(self.soc_knots), by_temp))

    def __call__(self, obs, params: EnvParams) -> jax.Array:
        seen = decode_observation(obs, params)
        return jnp.reshape(self.c_rate(seen["soc"], seen["surface_temp_degc"], params.max_c_rate), (1,)).astype(jnp.float32)


def episode_return(protocol: ProtocolTable, env, env_params: EnvParams, key, n_steps: int, gamma: float):
    """Discounted return of one episode, differentiable in ``protocol`` (no auto-reset; ends at termination: the
    steps after it pass no gradient)."""
    obs, state = env.reset_env(key, env_params)

    def body(carry, _):
        obs, state, alive, discount = carry
        live = alive > 0  # after the episode's end the steps go on but pass no gradient (their partials may overflow)
        obs, state, action = gradient_where((obs, state, protocol(obs, env_params)), live)
        obs, state, reward, terminated, _ = env.step_env(key, state, action, env_params)
        total = alive * discount * reward
        return (obs, state, alive * (1.0 - terminated.astype(jnp.float32)), discount * gamma), total

    init = (obs, state, jnp.float32(1.0), jnp.float32(1.0))
    _, rewards = jax.lax.scan(body, init, None, n_steps)
    return jnp.sum(rewards)


def optimise_protocol(
    env,
    env_params: EnvParams,
    iterations: int = 300,
    learning_rate: float = 0.1,
    gamma: float = 0.98,
    n_steps: int | None = None,
    protocol: ProtocolTable | None = None,
    seed: int = 0,
    log=None,
):
    """Gradient ascent on :func:`episode_return`; returns ``(protocol, history, seconds)``.

    ``env`` is made differentiable here (``with_transition_gradients()``); ``env_params`` should fix the
    initial conditions (equal ``initial_*_min`` and ``*_max``) so that every iteration sees the same episode.
    """
    check_params(env_params)
    env = env.with_transition_gradients()
    protocol = protocol or ProtocolTable(max_c_rate=float(env_params.max_c_rate))
    n_steps = n_steps or int(env_params.max_steps_in_episode)
    key = jax.random.key(seed)
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, iterations, alpha=0.1))
    opt_state = tx.init(protocol)

    @eqx.filter_jit
    def step(protocol, opt_state):
        value, grads = eqx.filter_value_and_grad(lambda p: -episode_return(p, env, env_params, key, n_steps, gamma))(protocol)
        updates, opt_state = tx.update(grads, opt_state, protocol)
        return eqx.apply_updates(protocol, updates), opt_state, -value

    history = []
    started = time.perf_counter()
    for i in range(iterations):
        protocol, opt_state, value = step(protocol, opt_state)
        history.append(float(value))
        if log and (i % 25 == 0 or i == iterations - 1):
            log(f"iteration {i + 1}/{iterations}: discounted return {float(value):.3f}")
    return protocol, history, time.perf_counter() - started
