"""Orbax checkpoints of a run: ``latest`` (for resuming) and ``best`` (by validation rollout loss).

Each is an orbax ``CheckpointManager`` keeping one step: the model's arrays, the
optimiser state and the best validation loss so far. Orbax writes a step to a
temporary folder and renames it when complete, so a crash mid-save leaves the
previous checkpoint in place. Only arrays are stored (no pickle); the model's
structure comes from its config when restoring.

Integrity: after each save, the SHA-256 of every file of the step is written to
``<step>/sha256.json``; a restore first recomputes them and refuses a damaged step
(:class:`CheckpointError` naming the file) instead of loading flipped bits as weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp


CHECKSUMS = "sha256.json"


class CheckpointError(ValueError):
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
        write_checksums(Path(manager.directory) / str(step))

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
        verify_checksums(Path(manager.directory) / str(step))
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
