"""The FastCharge environment on a trained hybrid: a run folder's model and its cell in one call.

:class:`~cellax.rl.fast_charge.FastCharge` takes any :class:`~cellax.physics.model.AbstractCellModel`;
this loads a ``cellax hybrid train`` run (its checkpoint, refused for another cell or mesh) and builds
the environment on that hybrid with the parameter set it was trained for (the dataset's cell: datasheet
cut-offs and thermal settings). ``with_baselines=True`` also returns the same environment on the run's plain
physics models (:func:`~cellax.hybrid.evaluate.physics_baselines`): the hybrid's own SPMe (same mesh, same
parameters: the like-for-like baseline), or, for a DFN backbone, the SPMe and the plain coarse DFN.
"""

from __future__ import annotations

from pathlib import Path

import equinox as eqx
import jax.numpy as jnp

from cellax.hybrid.evaluate import physics_baselines
from cellax.hybrid.train import load_run
from cellax.physics.dfn import DFN
from cellax.rl import make


def fast_charge_env(run_dir: str | Path, which: str = "best", substeps: int = 1, dtype=jnp.float64,
                    with_baselines: bool = False, solver: str = "etd2", implicit_reaction: bool = False):
    """``(env, env_params)`` of ``FastCharge-v0`` on the hybrid of ``run_dir`` (``"best"`` or ``"latest"``
    checkpoint), stepped as :class:`~cellax.rl.FastCharge` says; with ``with_baselines``,
    ``(env, {name: env on that plain model}, env_params)`` with the names of
    :func:`~cellax.hybrid.evaluate.physics_baselines` (``"spme"``, and ``"dfn"`` for a DFN backbone).
    ``implicit_reaction`` (a DFN backbone, ``solver="ros2"``): the DFN's reaction coupling in the W-matrix, stable
    with one step per 30 s interval; for protocol design to a few-mV plating margin keep ``substeps=3``
    (docs/hybrid.md)."""
    config, hybrid, params, _ = load_run(run_dir, which)
    if implicit_reaction:
        if config.model.backbone != "DFN" or solver != "ros2":
            raise ValueError("implicit_reaction needs a DFN backbone and solver='ros2'")
        dfn = hybrid.backbone
        hybrid = eqx.tree_at(lambda h: h.spme, hybrid, DFN(dfn.particle.n, dfn.x_counts, dfn.newton_iterations,
                                                            implicit_reaction=True))

    def build(model):
        return make("FastCharge-v0", parameter_set=params, model=model, substeps=substeps, dtype=dtype, solver=solver)

    env, env_params = build(hybrid)
    if not with_baselines:
        return env, env_params
    return env, {name: build(model)[0] for name, model in physics_baselines(config, hybrid).items()}, env_params
