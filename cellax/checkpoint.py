"""The one orbax wrapper: a folder holding the latest step of one PyTree of arrays.

An orbax ``CheckpointManager`` keeping one step, saving synchronously. Orbax writes
a step to a temporary folder and renames it when complete, so a crash mid-save
leaves the previous step in place. Only arrays are stored (no pickle): restoring
needs a template of the tree (arrays or ``jax.ShapeDtypeStruct``), which the
caller builds from its config.

Integrity: after each save, the SHA-256 of every file of the step is written to
``<step>/sha256.json``; a restore first recomputes them and refuses a damaged step
(:class:`CheckpointError` naming the file) instead of loading flipped bits as weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from cellax.config import UserError


CHECKSUMS = "sha256.json"


class CheckpointError(ValueError, UserError):
    """A checkpoint whose files do not match their recorded checksums."""


def _digests(step_dir: Path) -> dict[str, str]:
    out = {}
    for path in sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != CHECKSUMS):
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        out[str(path.relative_to(step_dir))] = digest.hexdigest()
    return out


def write_checksums(step_dir: Path) -> None:
    """Record the SHA-256 of every file of a finished orbax step in ``step_dir/sha256.json``."""
    (step_dir / CHECKSUMS).write_text(json.dumps(_digests(step_dir), indent=1))


def verify_checksums(step_dir: Path) -> None:
    """Raise :class:`CheckpointError` naming the first file that differs from ``sha256.json`` (absent: old run, passed)."""
    listed = step_dir / CHECKSUMS
    if not listed.exists():
        return
    try:
        expected = json.loads(listed.read_text())
    except ValueError:
        raise CheckpointError(f"{listed} is damaged (not JSON)") from None
    found = _digests(step_dir)
    for name, digest in expected.items():
        if found.get(name) != digest:
            state = "missing" if name not in found else "damaged (SHA-256 differs)"
            raise CheckpointError(f"checkpoint {step_dir}: {name} is {state}; restore the run folder from a copy "
                                  "or start a new run")


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
        write_checksums(self.step_dir(step))

    def step_dir(self, step: int) -> Path:
        return Path(self.manager.directory) / str(step)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, template):
        """``(tree, step)`` of the latest step shaped like ``template``, or None when nothing is saved."""
        step = self.manager.latest_step()
        if step is None:
            return None
        verify_checksums(self.step_dir(step))
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract)), step

    def close(self) -> None:
        self.manager.close()
