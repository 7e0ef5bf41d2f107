"""Reinforcement-learning environments on :mod:`cellax.physics` (gymnax API) and baseline charging protocols.

``make("FastCharge-v0", **kwargs)`` returns ``(env, env.default_params)`` like
``gymnax.make``; importing this package also registers the environment with
gymnax, so ``gymnax.make("FastCharge-v0")`` works too. See ``docs/rl.md``.
"""

import gymnax

from cellax.rl.fast_charge import EnvParams, EnvState, FastCharge
from cellax.rl.protocols import cccv, constant_current, multistage_cc, rollout

ENVIRONMENTS = {"FastCharge-v0": FastCharge}
"""Environment names -> classes (constructor keyword arguments pass through :func:`make`)."""


def make(name: str, **kwargs):
    """``(env, env.default_params)`` for a registered environment name."""
    if name not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {name!r}; registered: {', '.join(ENVIRONMENTS)}")
    env = ENVIRONMENTS[name](**kwargs)
    return env, env.default_params


for _name, _factory in ENVIRONMENTS.items():
    if _name not in gymnax.registered_envs:
        gymnax.register(_name, _factory)

__all__ = [
    "ENVIRONMENTS",
    "EnvParams",
    "EnvState",
    "FastCharge",
    "cccv",
    "constant_current",
    "make",
    "multistage_cc",
    "rollout",
]
