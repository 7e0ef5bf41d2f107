"""Model selection: error against number of terms over a threshold scan, chosen by an information
criterion.

Every distinct support found by the scan is refitted by least squares; its mean-squared error
``mse_k`` with ``k`` terms on ``n`` rows scores

.. math::

    \\text{AICc} = n \\ln(\\text{mse}_k) + 2k + \\frac{2k(k+1)}{n-k-1}, \\qquad
    \\text{BIC} = n \\ln(\\text{mse}_k) + k \\ln n .

The chosen model has the lowest score among supports of at most ``max_terms`` terms that explain
at least ``min_r2`` of the target's variance; when none does, :class:`NoSparseModel` is raised.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import jax.numpy as jnp
import numpy as np

from cellax.discovery.checks import NoSparseModel
from cellax.discovery.solvers import threshold_scan

CRITERIA = ("aicc", "bic")


@dataclass(frozen=True)
class Front:
    """Distinct supports of a scan: masks ``(m, p)``, refitted coefficients, error, score, the choice."""

    supports: np.ndarray
    coefficients: np.ndarray
    mse: np.ndarray
    r2: np.ndarray
    score: np.ndarray
    chosen: int

    @property
    def n_terms(self) -> np.ndarray:
        return self.supports.sum(axis=1)

    @property
    def best(self) -> np.ndarray:
        return self.coefficients[self.chosen]


def refit(g, y, support) -> np.ndarray:
    """Least-squares coefficients on ``support`` (zeros elsewhere)."""
    g, y = np.asarray(g, np.float64), np.asarray(y, np.float64)
    xi = np.zeros(g.shape[1])
    if support.any():
        xi[support] = np.linalg.lstsq(g[:, support], y, rcond=None)[0]
    return xi


def score(mse, k, n, criterion: str = "aicc"):
    """The information criterion of a fit with ``k`` terms on ``n`` rows (lower is better)."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    base = n * np.log(np.maximum(mse, 1e-300))
    if criterion == "bic":
        return base + k * np.log(n)
    return base + 2 * k + 2 * k * (k + 1) / np.maximum(n - k - 1, 1)


def pareto(g, y, names, thresholds=None, method: str = "stlsq", criterion: str = "aicc",
           max_terms: int | None = None, min_r2: float = 0.9, target: str = "y", floor: float = 1e-5) -> Front:
    """Scan ``thresholds`` (default: 40 from 1e-4 to 0.9, geometric), refit, score, choose."""
    thresholds = np.geomspace(1e-4, 0.9, 40) if thresholds is None else np.asarray(thresholds)
    xis = np.asarray(threshold_scan(jnp.asarray(g), jnp.asarray(y), thresholds, method))
    supports = np.unique(xis != 0, axis=0)
    supports = supports[supports.any(axis=1)]
    if supports.size == 0:
        raise NoSparseModel(f"{target}: every threshold removed every term; no sparse model found")
    n = len(y)
    coefficients = np.stack([refit(g, y, s) for s in supports])
    g64, y64 = np.asarray(g, np.float64), np.asarray(y, np.float64)
    mse = np.mean((g64 @ coefficients.T - y64[:, None]) ** 2, axis=0)
    r2 = 1 - mse / max(np.var(y64), 1e-300)
    k = supports.sum(axis=1)
    scores = score(mse + floor * np.var(y64), k, n, criterion)
    allowed = (r2 >= min_r2) & (k <= (max_terms or len(names)))
    if not allowed.any():
        raise NoSparseModel(
            f"{target}: no sparse model found: the best model with <= {max_terms or len(names)} terms explains "
            f"R2={np.max(np.where(k <= (max_terms or len(names)), r2, -np.inf)):.3f} < {min_r2} of the data "
            f"(library: {list(names)})"
        )
    chosen = int(np.argmin(np.where(allowed, scores, np.inf)))
    order = np.argsort(k, kind="stable")
    return Front(supports[order], coefficients[order], mse[order], r2[order], scores[order],
                 int(np.argsort(order)[chosen]))


def with_choice(front: Front, g, y, support) -> Front:
    """``front`` with ``support`` (refitted, added if new) as its choice."""
    support = np.asarray(support, bool)
    match = np.flatnonzero((front.supports == support).all(axis=1))
    if match.size:
        return replace(front, chosen=int(match[0]))
    xi = refit(g, y, support)
    g64, y64 = np.asarray(g, np.float64), np.asarray(y, np.float64)
    mse = np.mean((g64 @ xi - y64) ** 2)
    return replace(front, supports=np.vstack([front.supports, support]),
                   coefficients=np.vstack([front.coefficients, xi]),
                   mse=np.append(front.mse, mse), r2=np.append(front.r2, 1 - mse / max(np.var(y64), 1e-300)),
                   score=np.append(front.score, np.nan), chosen=len(front.mse))
