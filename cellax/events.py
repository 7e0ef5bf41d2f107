"""TensorBoard event files beside a run's JSONL metrics (``tensorboard --logdir RUN``).

:class:`EventLog` flattens a JSON record such as ``{"loss": .., "val": {"loss": ..}}`` into
scalar tags ``loss`` and ``val/loss`` and writes them with tensorboardX at the record's step;
non-numeric and non-finite values are skipped (the JSONL keeps everything).
"""

from __future__ import annotations

import math
from pathlib import Path


def scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict as ``{"a/b": value}`` (bools and non-finite values left out)."""
    out = {}
    for key, value in record.items():
        tag = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(scalars(value, f"{tag}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[tag] = float(value)
    return out


class EventLog:
    """A tensorboardX writer into ``folder``; use as a context manager."""

    def __init__(self, folder: Path):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(folder), flush_secs=10)

    def write(self, step: int, record: dict, skip: tuple[str, ...] = ("step",)) -> None:
        for tag, value in scalars({k: v for k, v in record.items() if k not in skip}).items():
            self.writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
