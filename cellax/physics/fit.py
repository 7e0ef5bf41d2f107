"""Parameter identification: weighted least squares through the differentiable solver.

Given measured profiles (current in, voltage and temperatures out) and bounded
parameters :math:`\\theta_j \\in [l_j, u_j]`, minimise

.. math::

    \\tfrac12 \\sum_{\\text{profiles}} \\sum_k \\Big(\\frac{V_k(\\theta) - \\hat V_k}{\\sigma_V}\\Big)^2
        + \\Big(\\frac{T_k(\\theta) - \\hat T_k}{\\sigma_T}\\Big)^2

with Levenberg–Marquardt (optimistix) on unconstrained coordinates ``z``:
``θ = l + (u - l) σ(z)`` ("linear") or ``log θ = log l + (log u - log l) σ(z)``
("log", for quantities spanning decades such as diffusivities), ``σ`` the
logistic function. The Jacobian comes from forward-mode derivatives through
:func:`cellax.physics.simulate.simulate` (one JVP per parameter).

Uncertainty: with residuals scaled by the noise levels, the Gauss–Newton
approximation of the Hessian is :math:`H = J^\\top J` in ``z``; the covariance
of ``θ`` is :math:`D H^{-1} D` with ``D = dθ/dz``, and the reported standard
deviations are its square-rooted diagonal.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float

from cellax.physics.parameters import ParameterSet
from cellax.physics.simulate import simulate
from cellax.signals import error_units

TRANSFORMS = ("log", "linear")
END_TIME_SIGMA_S = 10.0  # weight of a cut-off time mismatch: 10 s counts like one sigma of one sample
MEASURED = {"voltage_v": "sigma_v", "surface_temp_degc": "sigma_temp_k", "core_temp_degc": "sigma_temp_k"}


@dataclass(frozen=True)
class FitParameter:
    """A scalar of the :class:`ParameterSet` to identify, with bounds, a start value and a transform."""

    name: str
    lower: float
    upper: float
    initial: float
    transform: str = "log"

    def __post_init__(self):
        if self.transform not in TRANSFORMS:
            raise ValueError(f"{self.name}: transform must be one of {TRANSFORMS}, got {self.transform!r}")
        if not (math.isfinite(self.lower) and math.isfinite(self.upper) and self.lower < self.upper):
            raise ValueError(f"{self.name}: bounds must be finite with lower < upper, got [{self.lower}, {self.upper}]")
        if self.transform == "log" and self.lower <= 0:
            raise ValueError(f"{self.name}: a log transform needs a positive lower bound, got {self.lower}")
        if not self.lower < self.initial < self.upper:
            raise ValueError(f"{self.name}: initial value {self.initial} must lie strictly inside [{self.lower}, {self.upper}]")

    def _ends(self):
        if self.transform == "log":
            return math.log(self.lower), math.log(self.upper)
        return self.lower, self.upper

    def to_value(self, z):
        lo, hi = self._ends()
        u = lo + (hi - lo) * jax.nn.sigmoid(z)
        return jnp.exp(u) if self.transform == "log" else u

    def to_unconstrained(self, value: float) -> float:
        lo, hi = self._ends()
        u = math.log(value) if self.transform == "log" else value
        p = (u - lo) / (hi - lo)
        return math.log(p / (1 - p))


@dataclass(frozen=True)
class Measurement:
    """One measured profile: current samples (A, + discharge) every ``dt_s`` and the measured signals.

    ``signals`` maps canonical names (``voltage_v``, ``surface_temp_degc``, ``core_temp_degc``) to arrays as
    long as the current; the profile starts at rest at ``initial_soc`` with both nodes at ``ambient_temp_k``.
    ``overrides`` are this profile's own parameter values (e.g. its heat-transfer coefficient), applied
    before the fitted ones. ``end_time_s``: when the measurement ended at the cell's voltage cut-off, that
    time; the fit then also matches the model's own cut-off time (capacity is mostly seen there), and
    compares signals only up to the model's stop.
    """

    current_a: np.ndarray
    dt_s: float
    initial_soc: float
    ambient_temp_k: float
    signals: dict[str, np.ndarray]
    overrides: dict[str, float] = field(default_factory=dict)
    end_time_s: float | None = None

    def __post_init__(self):
        n = len(self.current_a)
        unknown = sorted(set(self.signals) - set(MEASURED))
        if unknown:
            raise ValueError(f"measurement: cannot fit signal(s) {unknown}; known: {sorted(MEASURED)}")
        if not self.signals:
            raise ValueError("measurement: no measured signals")
        for name, values in self.signals.items():
            if np.shape(values) != (n,):
                raise ValueError(f"measurement: {name} has shape {np.shape(values)}, the current has ({n},)")
            if not np.all(np.isfinite(values)):
                raise ValueError(f"measurement: {name} contains NaN or infinite values")


@dataclass
class FitResult:
    """Identified values and their standard deviations (Gauss–Newton), with the fit's diagnostics."""

    values: dict[str, float]
    std: dict[str, float]
    rmse: dict[str, float]
    steps: int
    converged: bool
    seconds: float
    compile_seconds: float
    predictions: list[dict[str, np.ndarray]] = field(repr=False)

    def summary(self) -> str:
        lines = [f"{'parameter':32s} {'value':>12s} {'± std':>12s}"]
        lines += [f"{k:32s} {v:12.5g} {self.std[k]:12.3g}" for k, v in self.values.items()]
        lines += [f"RMSE {k}: {v * error_units(k)[0]:.3f} {error_units(k)[1]}" for k, v in self.rmse.items()]
        lines.append(f"{self.steps} Levenberg–Marquardt steps, {'converged' if self.converged else 'NOT converged'}, "
                     f"{self.seconds:.1f} s (of which compile {self.compile_seconds:.1f} s)")
        return "\n".join(lines)


def fit(
    model,
    params: ParameterSet,
    parameters: Sequence[FitParameter],
    data: Sequence[Measurement],
    sigma_v: float = 2e-3,
    sigma_temp_k: float = 0.1,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    max_steps: int = 100,
) -> FitResult:
    """Identify ``parameters`` of ``params`` from ``data`` (see the module docstring); float64."""
    names = [p.name for p in parameters]
    unknown = sorted(set(names) - set(params.scalars))
    if unknown:
        raise ValueError(f"fit: unknown parameter(s) {unknown}; known: {sorted(params.scalars)}")
    if len(set(names)) != len(names):
        raise ValueError(f"fit: parameters named twice in {names}")
    if not data:
        raise ValueError("fit: no measurements")
    sigmas = {"sigma_v": sigma_v, "sigma_temp_k": sigma_temp_k}
    batches = [_Batch.of(m, sigmas) for m in data]

    def values_of(z):
        return {p.name: p.to_value(z[i]) for i, p in enumerate(parameters)}

    def residuals(z, args):
        cell, batches = args
        values = values_of(z)
        return jnp.concatenate([b.residuals(model, cell.with_values({**b.overrides, **values})) for b in batches])

    def solve(z, args):
        """The whole fit in one compiled call: LM, then the Jacobian and the predictions at its answer."""
        solution = optx.least_squares(residuals, optx.LevenbergMarquardt(rtol=rtol, atol=atol), z, args,
                                      max_steps=max_steps, throw=False)
        z = solution.value
        cell, batches = args
        values = values_of(z)
        predictions = [b.solve(model, cell.with_values({**b.overrides, **values})).signals for b in batches]
        return z, solution.result, solution.stats["num_steps"], jax.jacfwd(residuals)(z, args), predictions

    z0 = jnp.asarray([p.to_unconstrained(p.initial) for p in parameters], dtype=jnp.float64)
    args = (params, batches)
    started = time.perf_counter()
    compiled = jax.jit(solve).lower(z0, args).compile()
    compile_seconds = time.perf_counter() - started
    z, result, steps, jacobian, predictions = jax.block_until_ready(compiled(z0, args))
    seconds = time.perf_counter() - started

    covariance_z = jnp.linalg.pinv(jacobian.T @ jacobian)
    derivative = jnp.asarray([jax.grad(p.to_value)(z[i]) for i, p in enumerate(parameters)])
    std = jnp.sqrt(jnp.diag(covariance_z)) * jnp.abs(derivative)
    predictions = [{k: np.asarray(v) for k, v in pred.items()} for pred in predictions]
    rmse = {}
    for name in MEASURED:
        pairs = [(pred[name], m.signals[name]) for pred, m in zip(predictions, data) if name in m.signals]
        if pairs:
            err = np.concatenate([a - b for a, b in pairs])
            rmse[name] = float(np.sqrt(np.mean(err**2)))
    return FitResult(
        values={k: float(v) for k, v in values_of(z).items()},
        std={p.name: float(s) for p, s in zip(parameters, std)},
        rmse=rmse,
        steps=int(steps),
        converged=bool(result == optx.RESULTS.successful),
        seconds=seconds,
        compile_seconds=compile_seconds,
        predictions=predictions,
    )


class _Batch(eqx.Module):
    """One measurement as arrays: the residual function's data."""

    current_a: Float[Array, " n"]
    dt_s: float = eqx.field(static=True)
    initial_soc: float = eqx.field(static=True)
    ambient_temp_k: float = eqx.field(static=True)
    targets: dict[str, Array]
    overrides: dict[str, Array]
    scales: dict[str, float] = eqx.field(static=True)
    end_time_s: float | None = eqx.field(static=True)

    @classmethod
    def of(cls, m: Measurement, sigmas: dict[str, float]) -> _Batch:
        return cls(
            jnp.asarray(m.current_a, dtype=jnp.float64),
            float(m.dt_s),
            float(m.initial_soc),
            float(m.ambient_temp_k),
            {k: jnp.asarray(v, dtype=jnp.float64) for k, v in m.signals.items()},
            {k: jnp.asarray(v, dtype=jnp.float64) for k, v in m.overrides.items()},
            {k: float(sigmas[MEASURED[k]]) for k in m.signals},
            None if m.end_time_s is None else float(m.end_time_s),
        )

    def solve(self, model, params):
        return simulate(model, params, self.current_a, self.dt_s, self.initial_soc, self.ambient_temp_k)

    def residuals(self, model, params):
        """Signal residuals up to the model's own stop (a cut-off, or an invalid state), and, when the data
        end at a cut-off, the cut-off times' difference in units of ``END_TIME_SIGMA_S``."""
        solution = self.solve(model, params)
        valid = jnp.arange(self.current_a.shape[0]) <= solution.stop_index
        parts = [jnp.where(valid, (solution.signals[k] - v) / self.scales[k], 0.0) for k, v in self.targets.items()]
        if self.end_time_s is not None:
            parts.append(jnp.reshape((solution.event_time_s - self.end_time_s) / END_TIME_SIGMA_S, (1,)))
        return jnp.concatenate(parts)
