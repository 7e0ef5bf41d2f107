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
:func:`cellax.physics.simulate.simulate` (one JVP per parameter), as a dense
matrix (:func:`forward_jacobian`).

Uncertainty: with residuals scaled by the noise levels, the Gauss–Newton
approximation of the Hessian is :math:`H = J^\\top J` in ``z``; the covariance
of ``θ`` is :math:`D H^{-1} D` with ``D = dθ/dz``, and the reported standard
deviations are its square-rooted diagonal.
"""

from __future__ import annotations

import functools
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

from cellax.physics.config import FitParameter
from cellax.physics.parameters import ParameterSet
from cellax.physics.simulate import simulate
from cellax.signals import error_units

END_TIME_SIGMA_S = 10.0  # weight of a cut-off time mismatch: 10 s counts like one sigma of one sample
MEASURED = {"voltage_v": "sigma_v", "surface_temp_degc": "sigma_temp_k", "core_temp_degc": "sigma_temp_k"}


def to_value(parameter: FitParameter, z):
    """``θ`` from the unconstrained ``z``: ``l + (u - l) σ(z)``, or the same on ``log θ``."""
    lo, hi = _ends(parameter)
    u = lo + (hi - lo) * jax.nn.sigmoid(z)
    return jnp.exp(u) if parameter.transform == "log" else u


def to_unconstrained(parameter: FitParameter, value: float) -> float:
    """The ``z`` with ``to_value(parameter, z) == value``."""
    lo, hi = _ends(parameter)
    u = math.log(value) if parameter.transform == "log" else value
    p = (u - lo) / (hi - lo)
    return math.log(p / (1 - p))


def _ends(parameter: FitParameter):
    if parameter.transform == "log":
        return math.log(parameter.lower), math.log(parameter.upper)
    return parameter.lower, parameter.upper


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


def forward_jacobian(fn):
    """``fn(z, args)`` whose derivative in ``z`` is its Jacobian, built in forward mode and applied as a matrix.

    Levenberg–Marquardt linearises the residuals and also transposes that linearisation; through the
    solver's time loop this compiled three times slower (the DFN's fit: 60 s against 21 s) than a dense
    ``(n_residuals, n_parameters)`` Jacobian, which is small with a few parameters, and equal to it in
    values. Derivatives with respect to ``args`` (the cell and the data) are not formed: the fit never asks.
    """

    @jax.custom_jvp
    def wrapped(z, args):
        return fn(z, args)

    @wrapped.defjvp
    def wrapped_jvp(primals, tangents):
        (z, args), (dz, _) = primals, tangents
        jacobian, value = jax.jacfwd(lambda z: (fn(z, args),) * 2, has_aux=True)(z)
        return value, jacobian @ dz

    return wrapped


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
    grouping = _group_members(data)
    groups = [_Group.of([data[i] for i in members], sigmas) for members in grouping]
    order = [i for members in grouping for i in members]

    def values_of(z):
        return {p.name: to_value(p, z[i]) for i, p in enumerate(parameters)}

    def residuals_and_predictions(z, args):
        cell, groups = args
        solved = [g.residuals(model, cell, values_of(z), with_signals=True) for g in groups]
        return jnp.concatenate([r for r, _ in solved]), [signals for _, signals in solved]

    def residuals(z, args):
        return residuals_and_predictions(z, args)[0]

    def solve(z, args):
        """The whole fit in one compiled call: LM, then the Jacobian and the predictions at its answer."""
        solution = optx.least_squares(forward_jacobian(residuals), optx.LevenbergMarquardt(rtol=rtol, atol=atol), z,
                                      args, max_steps=max_steps, throw=False)
        z = solution.value
        jacobian, predictions = jax.jacfwd(residuals_and_predictions, has_aux=True)(z, args)
        return z, solution.result, solution.stats["num_steps"], jacobian, predictions

    z0 = jnp.asarray([to_unconstrained(p, p.initial) for p in parameters], dtype=jnp.float64)
    args = (params, groups)
    started = time.perf_counter()
    compiled = jax.jit(solve).lower(z0, args).compile()
    compile_seconds = time.perf_counter() - started
    z, result, steps, jacobian, predictions = jax.block_until_ready(compiled(z0, args))
    seconds = time.perf_counter() - started

    covariance_z = jnp.linalg.pinv(jacobian.T @ jacobian)
    derivative = jnp.asarray([jax.grad(functools.partial(to_value, p))(z[i]) for i, p in enumerate(parameters)])
    std = jnp.sqrt(jnp.diag(covariance_z)) * jnp.abs(derivative)
    unstacked = [
        {k: np.asarray(v[j, : len(data[i].current_a)]) for k, v in pred.items()}
        for pred, members in zip(predictions, grouping) for j, i in enumerate(members)
    ]
    predictions = [pred for _, pred in sorted(zip(order, unstacked), key=lambda pair: pair[0])]
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


LENGTH_BUCKET_RATIO = 1.25  # profiles are padded to the longest of their bucket: at most 25 % more steps


def _group_members(data: Sequence[Measurement]) -> list[list[int]]:
    """Indices of the measurements simulated together in one ``vmap``: same sample step, signals,
    overrides and cut-off kind, and lengths within ``LENGTH_BUCKET_RATIO`` of the bucket's shortest
    (one compiled simulation per group, rather than one per profile)."""
    kinds: dict[tuple, list[int]] = {}
    for i, m in enumerate(data):
        key = (float(m.dt_s), tuple(sorted(m.signals)), tuple(sorted(m.overrides)), m.end_time_s is None)
        kinds.setdefault(key, []).append(i)
    groups = []
    for members in kinds.values():
        members = sorted(members, key=lambda i: len(data[i].current_a))
        bucket = [members[0]]
        for i in members[1:]:
            if len(data[i].current_a) > LENGTH_BUCKET_RATIO * len(data[bucket[0]].current_a):
                groups.append(bucket)
                bucket = []
            bucket.append(i)
        groups.append(bucket)
    return groups


class _Group(eqx.Module):
    """Measurements of one kind stacked along a leading axis of size ``b`` and zero-padded to ``n``
    samples (a padded sample is rest, after the measurement: the simulation is causal, so the samples
    before it are unchanged, and they are masked out of the residuals)."""

    current_a: Float[Array, "b n"]
    n_samples: Float[Array, " b"]
    initial_soc: Float[Array, " b"]
    ambient_temp_k: Float[Array, " b"]
    targets: dict[str, Float[Array, "b n"]]
    overrides: dict[str, Float[Array, " b"]]
    end_time_s: Float[Array, " b"] | None
    dt_s: float = eqx.field(static=True)
    scales: dict[str, float] = eqx.field(static=True)

    @classmethod
    def of(cls, members: Sequence[Measurement], sigmas: dict[str, float]) -> _Group:
        n = max(len(m.current_a) for m in members)

        def stacked(rows):
            return jnp.asarray(np.stack([np.pad(np.asarray(r, dtype=np.float64), (0, n - len(r))) for r in rows]))

        def column(values):
            return jnp.asarray(np.asarray(values, dtype=np.float64))

        first = members[0]
        return cls(
            stacked([m.current_a for m in members]),
            column([len(m.current_a) for m in members]),
            column([m.initial_soc for m in members]),
            column([m.ambient_temp_k for m in members]),
            {k: stacked([m.signals[k] for m in members]) for k in first.signals},
            {k: column([m.overrides[k] for m in members]) for k in first.overrides},
            None if first.end_time_s is None else column([m.end_time_s for m in members]),
            float(first.dt_s),
            {k: float(sigmas[MEASURED[k]]) for k in first.signals},
        )

    def solve(self, model, cell: ParameterSet, values: dict):
        def one(current_a, initial_soc, ambient_temp_k, overrides):
            params = cell.with_values({**overrides, **values})
            return simulate(model, params, current_a, self.dt_s, initial_soc, ambient_temp_k)

        return jax.vmap(one)(self.current_a, self.initial_soc, self.ambient_temp_k, self.overrides)

    def residuals(self, model, cell: ParameterSet, values: dict, with_signals: bool = False):
        """Signal residuals up to the model's own stop (a cut-off, or an invalid state) within each
        measurement, and, when the data end at a cut-off, the cut-off times' difference in units of
        ``END_TIME_SIGMA_S`` (the model's event time capped at the measurement's last sample, as an
        unpadded simulation reports it). ``with_signals``: also the simulated signals."""
        solution = self.solve(model, cell, values)
        index = jnp.arange(self.current_a.shape[1])
        valid = (index <= solution.stop_index[:, None]) & (index < self.n_samples[:, None])
        parts = [jnp.where(valid, (solution.signals[k] - v) / self.scales[k], 0.0).ravel()
                 for k, v in self.targets.items()]
        if self.end_time_s is not None:
            event_time_s = jnp.minimum(solution.event_time_s, (self.n_samples - 1) * self.dt_s)
            parts.append((event_time_s - self.end_time_s) / END_TIME_SIGMA_S)
        return (jnp.concatenate(parts), solution.signals) if with_signals else jnp.concatenate(parts)
