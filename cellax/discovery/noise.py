"""Measurement noise for the case studies: Gaussian, ``level`` times each signal's standard deviation."""

from __future__ import annotations

import numpy as np


def add_noise(signals: dict, names, level: float, seed: int = 0) -> dict:
    """A copy of ``signals`` with ``N(0, (level · std(x))²)`` added to each signal in ``names``."""
    rng = np.random.default_rng(seed)
    out = dict(signals)
    for name in names:
        x = np.asarray(signals[name], dtype=np.float64)
        out[name] = x + level * np.nanstd(x) * rng.standard_normal(x.shape)
    return out
