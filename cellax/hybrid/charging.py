"""The FastCharge environment on a trained hybrid: a run folder's model and its cell in one call.

:class:`~cellax.rl.fast_charge.FastCharge` takes any :class:`~cellax.physics.model.AbstractCellModel`;
this loads a ``cellax hybrid train`` run (its checkpoint, refused for another cell or mesh) and builds
the environment on that hybrid with the parameter set it was trained for (the dataset's cell: datasheet
cut-offs and thermal settings). ``with_spme=True`` also returns the same environment on the hybrid's own
SPMe (same mesh, same parameters): the like-for-like baseline.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp

from cellax.hybrid.train import load_run
from cellax.rl import make


def fast_charge_env(run_dir: str | Path, which: str = "best", substeps: int = 1, dtype=jnp.float64,
                    with_spme: bool = False, solver: str = "etd2"):
    """``(env, env_params)`` of ``FastCharge-v0`` on the hybrid of ``run_dir`` (``"best"`` or ``"latest"``
    checkpoint), stepped as :class:`~cellax.rl.FastCharge` says; with ``with_spme``, ``(env, spme_env, env_params)``."""
    _, hybrid, params, _ = load_run(run_dir, which)
    env, env_params = make("FastCharge-v0", parameter_set=params, model=hybrid, substeps=substeps, dtype=dtype,
                           solver=solver)
    if not with_spme:
        return env, env_params
    spme_env, _ = make("FastCharge-v0", parameter_set=params, model=hybrid.spme, substeps=substeps,
                        dtype=dtype, solver=solver)
    return env, spme_env, env_params
