"""Bootstrapped ensembles (E-SINDy, Fasel et al. 2022): many sparse fits, one ``vmap``.

Member ``m`` fits rows drawn with replacement (bagging) and, optionally, a library with
``drop_terms`` randomly left out (library bagging). Over the members: the inclusion
probability of each term, and the median and the 2.5–97.5 % interval of its coefficient
(zeros included, so a rarely kept term has an interval that touches zero). The ensemble
model keeps the terms included in at least ``min_inclusion`` of the members.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from cellax.discovery.solvers import solver


@dataclass(frozen=True)
class Ensemble:
    """Per-term summaries over the members (arrays of length ``p``) and the members' coefficients."""

    coefficients: np.ndarray
    inclusion: np.ndarray
    median: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def support(self, min_inclusion: float = 0.5) -> np.ndarray:
        return self.inclusion >= min_inclusion


@functools.partial(jax.jit, static_argnames=("n_members", "drop_terms", "method"))
def ensemble_coefficients(g, y, threshold, key, n_members: int = 100, drop_terms: int = 0, method: str = "stlsq",
                          mask=None):
    """``(n_members, p)`` coefficients of bagged (and library-bagged) fits among the terms in ``mask``."""
    fn = solver(method)
    n, p = g.shape
    allowed = jnp.ones(p, bool) if mask is None else mask

    def member(k):
        rows_key, terms_key = jax.random.split(k)
        rows = jax.random.randint(rows_key, (n,), 0, n)
        keep = allowed & (jax.random.permutation(terms_key, p) >= drop_terms)
        return fn(g[rows], y[rows], threshold, mask=keep)

    return jax.vmap(member)(jax.random.split(key, n_members))


def summarize(coefficients) -> Ensemble:
    """Inclusion probabilities and coefficient intervals of ensemble coefficients."""
    c = np.asarray(coefficients)
    low, median, high = np.percentile(c, [2.5, 50, 97.5], axis=0)
    return Ensemble(c, np.mean(c != 0, axis=0), median, low, high)
