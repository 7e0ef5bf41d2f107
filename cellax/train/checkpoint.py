"""Checkpoints of a training run: ``latest`` (for resuming) and ``best`` (by validation rollout loss).

Each is a :class:`cellax.checkpoint.TreeCheckpoint` (one orbax step, crash-safe, with
SHA-256 checksums verified on restore): the model's arrays, the optimiser state and
the best validation loss so far. The model's structure comes from its config when restoring.
"""

from __future__ import annotations

from pathlib import Path

import equinox as eqx
import jax.numpy as jnp

from cellax.checkpoint import CheckpointError, TreeCheckpoint  # noqa: F401  (CheckpointError: re-exported)


class Checkpoints:
    """``folder/latest`` and ``folder/best``."""

    def __init__(self, folder: Path):
        self.managers = {which: TreeCheckpoint(Path(folder) / which) for which in ("latest", "best")}

    def save(self, which: str, step: int, model, opt_state, best: float) -> None:
        tree = {"model": eqx.filter(model, eqx.is_array), "opt_state": opt_state, "best": jnp.asarray(best, jnp.float32)}
        self.managers[which].save(step, tree)

    def latest_step(self) -> int | None:
        return self.managers["latest"].latest_step()

    def _restore(self, which: str, model, opt_state):
        params, static = eqx.partition(model, eqx.is_array)
        template = {"model": params, "opt_state": opt_state, "best": jnp.asarray(0.0, jnp.float32)}
        restored = self.managers[which].restore(template)
        if restored is None:
            return None
        tree, step = restored
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
