"""The one orbax wrapper: a folder holding the latest step of one PyTree of arrays.

An orbax ``CheckpointManager`` keeping one step, saving synchronously. Orbax writes
a step to a temporary folder and renames it when complete, so a crash mid-save
leaves the previous step in place. Only arrays are stored (no pickle): restoring
needs a template of the tree (arrays or ``jax.ShapeDtypeStruct``), which the
caller builds from its config.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class TreeCheckpoint:
    """The latest saved step of a PyTree in ``folder`` (created on first use)."""

    def __init__(self, folder: Path):
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(Path(folder).absolute(), options=options)

    def save(self, step: int, tree) -> None:
        """Write ``tree`` as ``step`` (replacing a step of that number), and wait until it is on disk."""
        if step in self.manager.all_steps():
            self.manager.delete(step)
        self.manager.save(step, args=ocp.args.StandardSave(tree))
        self.manager.wait_until_finished()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, template):
        """``(tree, step)`` of the latest step shaped like ``template``, or None when nothing is saved."""
        step = self.manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract)), step

    def close(self) -> None:
        self.manager.close()
