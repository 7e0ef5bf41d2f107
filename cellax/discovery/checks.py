"""Checks of the data and the library before a fit; each failure names what is wrong.

:class:`DiscoveryError` is a ``ValueError`` whose message is one line naming the
signal, the time grid or the library terms at fault.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class DiscoveryError(ValueError):
    """Data or a library that discovery cannot use; the message names the culprit."""


class NoSparseModel(DiscoveryError):
    """No model with few terms explains the data: said instead of returning an arbitrary one."""


def check_finite(signals: dict) -> None:
    """Every signal finite."""
    for name, values in signals.items():
        values = np.asarray(values)
        bad = ~np.isfinite(values)
        if bad.any():
            first = int(np.argwhere(bad)[0][0])
            raise DiscoveryError(f"signal {name!r} has {int(bad.sum())} NaN/inf samples (first at index {first})")


def check_time(time_s, rtol: float = 1e-6) -> float:
    """Strictly increasing, uniform grid; returns its step ``dt_s``."""
    t = np.asarray(time_s, dtype=np.float64)
    if t.ndim != 1 or t.size < 3:
        raise DiscoveryError(f"time_s must be 1-D with at least 3 samples, got shape {t.shape}")
    check_finite({"time_s": t})
    dt = np.diff(t)
    if np.any(dt <= 0):
        k = int(np.argmax(dt <= 0))
        raise DiscoveryError(f"time_s is not increasing at index {k + 1} ({t[k]} -> {t[k + 1]})")
    if np.max(np.abs(dt - dt[0])) > rtol * dt[0] + 1e-12:
        k = int(np.argmax(np.abs(dt - dt[0])))
        raise DiscoveryError(f"time_s is not uniform: step {dt[k]} at index {k} vs {dt[0]} (resample first)")
    return float(dt[0])


def check_samples(n_samples: int, names: Sequence[str], per_term: int = 3) -> None:
    """At least ``per_term`` samples (or test functions) per library term."""
    if n_samples < per_term * len(names):
        raise DiscoveryError(
            f"too few samples for the library: {n_samples} rows for {len(names)} terms "
            f"(need >= {per_term * len(names)}); shorten the library or give more data"
        )


def check_conditioning(theta, names: Sequence[str], max_condition: float = 1e10) -> None:
    """The column-normalised library is well conditioned; otherwise name the collinear terms
    (the largest components of the right singular vector of the smallest singular value)."""
    theta = np.asarray(theta, dtype=np.float64).reshape(-1, len(names))
    norms = np.linalg.norm(theta, axis=0)
    zero = [n for n, v in zip(names, norms) if v == 0]
    if zero:
        raise DiscoveryError(f"library terms are identically zero on this data: {zero}")
    _, sv, vt = np.linalg.svd(theta / norms, full_matrices=False)
    if sv[-1] <= sv[0] / max_condition:
        v = np.abs(vt[-1])
        culprits = [names[i] for i in np.argsort(-v) if v[i] > 0.1 * v.max()]
        raise DiscoveryError(
            f"collinear library (condition number {sv[0] / max(sv[-1], 1e-300):.2e}): terms {culprits} "
            "are (nearly) linear combinations of each other; drop one"
        )
