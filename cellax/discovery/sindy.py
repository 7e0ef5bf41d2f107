"""Sparse identification of ODEs from sampled signals: the pieces of this package in one call.

``discover(signals, states, library)`` checks the data, evaluates the library, forms for every
state :math:`x_m` either the weak system (default) or a smoothed-derivative system, scans thresholds
into a Pareto front, chooses a model by the information criterion, and runs a bootstrapped ensemble
at the chosen threshold for inclusion probabilities and coefficient intervals. Terms of the chosen
model whose bagged coefficient lies within ``min_z`` standard deviations of zero are pruned first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from cellax.discovery.checks import check_conditioning, check_finite, check_samples, check_time
from cellax.discovery.derivatives import savitzky_golay
from cellax.discovery.ensemble import Ensemble, ensemble_coefficients, summarize
from cellax.discovery.library import Library
from cellax.discovery.pareto import Front, pareto, with_choice
from cellax.discovery.weak import weak_ode

FORMS = ("weak", "savgol")


@dataclass(frozen=True)
class Equation:
    """One discovered equation ``d target/dt = Σ coefficient * term``."""

    target: str
    names: tuple[str, ...]
    front: Front
    ensemble: Ensemble | None = None
    std: np.ndarray | None = None

    @property
    def coefficients(self) -> np.ndarray:
        return self.front.best

    @property
    def support(self) -> np.ndarray:
        return self.coefficients != 0

    def terms(self) -> dict[str, float]:
        return {n: float(c) for n, c in zip(self.names, self.coefficients) if c != 0}

    def uncertainty(self) -> np.ndarray:
        """Standard deviation per term: refinement's if given, else the ensemble's interval / 3.92."""
        if self.std is not None:
            return self.std
        if self.ensemble is not None:
            return (self.ensemble.high - self.ensemble.low) / 3.92
        return np.zeros(len(self.names))

    def __str__(self) -> str:
        std = self.uncertainty()
        parts = [f"({c:.5g} ± {s:.2g})·{n}" for n, c, s in zip(self.names, self.coefficients, std) if c != 0]
        return f"d{self.target}/dt = " + " + ".join(parts)


@dataclass(frozen=True)
class SindyConfig:
    form: str = "weak"
    method: str = "stlsq"
    criterion: str = "bic"
    thresholds: Sequence[float] | None = None
    max_terms: int | None = None
    min_r2: float = 0.9
    n_test: int = 150
    half_width: int = 60
    window: int = 21
    order: int = 3
    n_members: int = 200
    drop_terms: int = 0
    seed: int = 0
    max_condition: float = 1e10
    min_z: float = 3.0
    extra: dict = field(default_factory=dict)


def regression_system(signals: dict, states: Sequence[str], library: Library, time_s, config: SindyConfig):
    """``(b, G)``: targets ``(rows, m)`` and library rows ``(rows, p)`` after all checks."""
    if config.form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {config.form!r}")
    check_finite(signals)
    missing = [s for s in states if s not in signals]
    if missing:
        raise ValueError(f"states {missing} are not among the signals {sorted(signals)}")
    dt_s = check_time(time_s)
    theta = library({k: jnp.asarray(v) for k, v in signals.items()})
    x = jnp.stack([jnp.asarray(signals[s]) for s in states], axis=1)
    check_conditioning(theta, library.names, config.max_condition)
    if config.form == "weak":
        check_samples(config.n_test, library.names)
        return weak_ode(x, theta, dt_s, config.n_test, config.half_width)
    check_samples(x.shape[0], library.names)
    return savitzky_golay(x, dt_s, config.window, config.order), theta


def discover(signals: dict, states: Sequence[str], library: Library, time_s, config: SindyConfig = SindyConfig(),
             ensemble: bool = True) -> list[Equation]:
    """One :class:`Equation` per state (see the module docstring)."""
    b, g = regression_system(signals, states, library, time_s, config)
    key = jax.random.PRNGKey(config.seed)
    rows_per_sample = overlap(len(signals[states[0]]), config)
    return [fit_equation(g, b[:, m], library.names, name, config, jax.random.fold_in(key, m), rows_per_sample, ensemble)
            for m, name in enumerate(states)]


def fit_equation(g, y, names, target: str, config: SindyConfig, key, rows_per_sample: float = 1.0,
                 ensemble: bool = True) -> Equation:
    """Pareto scan, choice, pruning and ensemble for one target ``y ≈ G ξ``."""
    gm, ym = np.asarray(g), np.asarray(y)
    front = pareto(gm, ym, names, config.thresholds, config.method, config.criterion, config.max_terms,
                   config.min_r2, target=target)
    summary = None
    if ensemble:
        front = prune(gm, ym, front, key, config, rows_per_sample)
        coefs = ensemble_coefficients(jnp.asarray(g), jnp.asarray(y), chosen_threshold(gm, ym, front), key,
                                      config.n_members, config.drop_terms, config.method)
        summary = summarize(coefs)
    return Equation(target, tuple(names), front, summary)


def overlap(n_samples: int, config: SindyConfig) -> float:
    """How many rows share each sample (weak test functions or derivative windows), at least 1."""
    width = 2 * config.half_width + 1 if config.form == "weak" else config.window
    rows = config.n_test if config.form == "weak" else n_samples
    return max(1.0, rows * width / n_samples)


def prune(g, y, front: Front, key, config: SindyConfig, overlap: float = 1.0) -> Front:
    """Drop chosen terms whose bagged least-squares coefficient is within ``min_z`` standard deviations of
    zero, refit. The criterion counts correlated rows as independent and so keeps too much; rows that
    share samples ``overlap`` times make the bagged spread ``sqrt(overlap)`` too narrow, so it is widened."""
    support = front.supports[front.chosen].copy()
    for _ in range(support.sum()):
        coefs = np.asarray(ensemble_coefficients(jnp.asarray(g), jnp.asarray(y), 0.0, key, config.n_members, 0,
                                                 "stlsq", jnp.asarray(support)))
        z = np.abs(np.mean(coefs, axis=0)) / np.maximum(np.std(coefs, axis=0) * np.sqrt(overlap), 1e-300)
        z = np.where(support, z, np.inf)
        if z.min() >= config.min_z or support.sum() == 1:
            break
        support[np.argmin(z)] = False
    return with_choice(front, g, y, support)


def chosen_threshold(g, y, front: Front) -> float:
    """A threshold that reproduces the chosen support: half its smallest normalised coefficient."""
    g_scale = np.linalg.norm(np.asarray(g), axis=0)
    y_scale = np.linalg.norm(np.asarray(y))
    normalised = np.abs(front.best) * g_scale / y_scale
    return float(0.5 * normalised[front.best != 0].min())
