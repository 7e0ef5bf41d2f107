"""Orbax checkpoints of a run: ``latest`` (for resuming) and ``best`` (by validation rollout loss).

Each is an orbax ``CheckpointManager`` keeping one step: the model's arrays, the
optimiser state and the best validation loss so far. Orbax writes a step to a
temporary folder and renames it when complete, so a crash mid-save leaves the
previous checkpoint in place. Only arrays are stored (no pickle); the model's
structure comes from its config when restoring.
"""

from __future__ import annotations

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp


class Checkpoints:
    """``folder/latest`` and ``folder/best``."""

    def __init__(self, folder: Path):
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
        self.managers = {which: ocp.CheckpointManager(Path(folder).absolute() / which, options=options)
                         for which in ("latest", "best")}

    def save(self, which: str, step: int, model, opt_state, best: float) -> None:
        manager = self.managers[which]
        if step in manager.all_steps():
            manager.delete(step)
        tree = {"model": eqx.filter(model, eqx.is_array), "opt_state": opt_state, "best": jnp.asarray(best, jnp.float32)}
        manager.save(step, args=ocp.args.StandardSave(tree))
        manager.wait_until_finished()

    def latest_step(self) -> int | None:
        return self.managers["latest"].latest_step()

    def _restore(self, which: str, model, opt_state):
        manager = self.managers[which]
        step = manager.latest_step()
        if step is None:
            return None
        params, static = eqx.partition(model, eqx.is_array)
        template = {"model": params, "opt_state": opt_state, "best": jnp.asarray(0.0, jnp.float32)}
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
        tree = manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return eqx.combine(tree["model"], static), tree["opt_state"], step, float(tree["best"])

    def restore_latest(self, model, opt_state):
        """``(model, opt_state, step, best)`` from ``latest``, or None when there is none."""
        return self._restore("latest", model, opt_state)

    def restore_best(self, model, opt_state):
        """``(model, opt_state, step, best)`` from ``best``, or None."""
        return self._restore("best", model, opt_state)

    def close(self) -> None:
        for manager in self.managers.values():
            manager.close()
