"""Sessions of live cells and their crash-safe checkpoints.

A session is one cell streaming through one model: its state arrays, ``next_seq`` (the number
of samples it has consumed, i.e. the sequence number the next sample must carry) and when it
was last active. Every ``checkpoint_every`` samples (and when it is opened) the session is
written to ``state_dir/<id>.npz``: a temporary file, fsynced, renamed over the old one, then the
folder fsynced, so a ``kill -9`` leaves either the previous or the new checkpoint, never a torn
one. The answer to a checkpointing sample is sent only after the write, so a restart loses
fewer than ``checkpoint_every`` answered samples and tells the client ``next_seq`` to resume from.
Files hold arrays only (the metadata as JSON bytes); loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Session:
    id: str
    model: str
    state: list[np.ndarray]
    next_seq: int = 0
    checkpointed_seq: int = 0
    last_active: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)


def new_id() -> str:
    return secrets.token_hex(16)


def valid_id(session_id: str) -> bool:
    return bool(_ID.match(session_id))


class SessionStore:
    """Checkpoint files of sessions under one folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, session_id: str) -> Path:
        return self.folder / f"{session_id}.npz"

    def save(self, session_id: str, model: str, seq: int, state: list[np.ndarray]) -> None:
        meta = json.dumps({"id": session_id, "model": model, "next_seq": seq}).encode()
        arrays = {f"state_{i}": a for i, a in enumerate(state)}
        tmp = self.folder / f".{session_id}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.frombuffer(meta, np.uint8), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path(session_id))
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def delete(self, session_id: str) -> None:
        self.path(session_id).unlink(missing_ok=True)

    def load_all(self) -> list[tuple[str, str, int, list[np.ndarray]]]:
        """``(id, model, next_seq, state)`` of every complete checkpoint (temporary files are ignored)."""
        found = []
        for path in sorted(self.folder.glob("*.npz")):
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(data["meta"].tobytes())
                n = sum(1 for k in data.files if k.startswith("state_"))
                found.append((meta["id"], meta["model"], int(meta["next_seq"]), [data[f"state_{i}"] for i in range(n)]))
        return found
