"""Run a cell model over a current profile, or advance it by one control interval.

:func:`simulate` takes the current as samples ``current_a[k]`` at ``k * dt_s``
(linear between samples, as the PyBaMM data backend does) or as a callable of
time, and returns the canonical signals on that grid. It stops at the voltage and
SOC windows like PyBaMM's events, and at states where the model is invalid
(electrolyte depleted, a stoichiometry leaving ``[0, 1]``, non-finite values),
saying which in ``Solution.status``. It is a pure function of its array
arguments: ``jit``, ``vmap`` (over parameters, profiles, initial conditions) and
``grad`` apply.

Two solvers:

- ``"ros2"`` (default): the fixed-step Rosenbrock–W scheme of
  :mod:`cellax.physics.stepping` on the sample grid (``substeps`` per sample),
  one ``lax.scan``: fast, vmappable, cheap to differentiate. With
  ``samples_per_step = m > 1`` it steps every ``m`` samples instead (the current
  linear between every ``m``-th sample: exact for constant or piecewise-linear
  currents with breakpoints on that grid) and fills the samples between steps by
  cubic Hermite interpolation of the signals (slopes by central differences):
  ``m`` times fewer steps for smooth inputs, with the output still on the sample grid.
- ``"kvaerno5"``: diffrax's adaptive L-stable ESDIRK with dense Newton and error
  control (``rtol``, ``atol``), stepping to every sample: the accurate reference.

:func:`advance` is the per-step control interface (for the RL environments):
hold a current for one interval and return the new state and its signals.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float

from cellax.physics.parameters import ParameterSet
from cellax.physics.particle import surface_value
from cellax.physics.model import AbstractCellModel
from cellax.physics.stepping import ros2_step
from cellax.status import STATUS

SOLVERS = ("ros2", "kvaerno5")


class Solution(eqx.Module):
    """Signals on the sample grid; samples after ``stop_index`` repeat the last valid one (no NaN).

    ``status`` indexes :data:`cellax.status.STATUS` (0: ran to the end). When an event ends the
    run, ``stop_index`` is the last sample before it and ``event_time_s`` the event
    time, interpolated between samples; otherwise ``event_time_s`` is the last
    sample time. ``final_state`` is the model state at ``stop_index`` (continue from it).
    """

    signals: dict[str, Array]
    status: Array
    stop_index: Array
    event_time_s: Array
    final_state: eqx.Module


def simulate(
    model: AbstractCellModel,
    params: ParameterSet,
    current_a: Float[Array, " n"] | Callable,
    dt_s: float,
    initial_soc,
    ambient_temp_k,
    *,
    initial_temp_k=None,
    n_samples: int | None = None,
    solver: str = "ros2",
    substeps: int = 1,
    samples_per_step: int = 1,
    soc_limits: tuple[float, float] = (0.0, 1.0),
    limits: bool = True,
    rtol: float = 1e-8,
    atol: float = 1e-8,
    max_steps: int = 100_000,
) -> Solution:
    """Simulate one cell over one current profile, in the dtype of ``params`` (float64 as loaded).

    The cell starts in equilibrium at ``initial_soc`` with both temperature nodes at
    ``initial_temp_k`` (default: ``ambient_temp_k``). ``current_a`` (A, positive
    discharges) is an array of samples or a callable of time in seconds, sampled
    at ``n_samples`` points ``k * dt_s``. ``limits=False`` runs through every limit and invalid state,
    stopping only where values turn non-finite; ``status`` then names the first limit crossed, for
    information (fitting needs residuals that stay informative past a cut-off; ``kvaerno5`` drops its events).
    ``samples_per_step > 1`` (``ros2`` only): one step per that many samples, signals interpolated between
    steps (module docstring); limits are checked at the steps, ``stop_index`` is the last sample before the
    interpolated event, and ``final_state`` the state at the last step at or before it.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
        raise ValueError(f"substeps must be a positive integer, got {substeps!r}")
    if isinstance(samples_per_step, bool) or not isinstance(samples_per_step, int) or samples_per_step < 1:
        raise ValueError(f"samples_per_step must be a positive integer, got {samples_per_step!r}")
    if samples_per_step > 1 and solver != "ros2":
        raise ValueError(f"samples_per_step > 1 needs solver='ros2', got solver={solver!r}")
    dtype = params.dtype
    current_fn = None
    if callable(current_a):
        if n_samples is None or n_samples < 2:
            raise ValueError("a callable current needs n_samples >= 2 (the length of the output grid)")
        current_fn = current_a
        _check_dt(dt_s)
        current_a = jax.vmap(current_fn)(jnp.arange(n_samples, dtype=dtype) * dt_s)
    _check_profile(current_a, dt_s)
    _check_conditions(ambient_temp_k, initial_temp_k)
    current_a = jnp.asarray(current_a, dtype=dtype)
    ambient_temp_k = jnp.asarray(ambient_temp_k, dtype=dtype)
    initial_temp_k = ambient_temp_k if initial_temp_k is None else jnp.asarray(initial_temp_k, dtype=dtype)
    y0 = model.initial_state(params, initial_soc, initial_temp_k)
    ts = jnp.arange(current_a.shape[0], dtype=dtype) * dt_s
    if solver == "ros2" and samples_per_step > 1:
        solution = _coarse_ros2(model, params, current_a, ts, dt_s, y0, ambient_temp_k, substeps, samples_per_step,
                                soc_limits, limits)
    elif solver == "ros2":
        solution = _ros2(model, params, current_a, ts, dt_s, y0, ambient_temp_k, substeps, soc_limits, limits)
    else:
        solution = _kvaerno5(model, params, current_a, current_fn, ts, y0, ambient_temp_k, soc_limits, limits, rtol,
                             atol, max_steps)
    valid = ((dt_s > 0) & (ambient_temp_k > 0) & (initial_temp_k > 0) & (initial_soc >= 0) & (initial_soc <= 1)
             & jnp.all(jnp.isfinite(current_a)))
    return _invalid_if(~valid, solution)


def _invalid_if(invalid, solution: Solution) -> Solution:
    """``solution`` with status ``invalid_input``, zero signals and stop index 0 where ``invalid`` (a traced check)."""
    return eqx.tree_at(
        lambda s: (s.signals, s.status, s.stop_index),
        solution,
        (jax.tree_util.tree_map(lambda x: jnp.where(invalid, jnp.zeros_like(x), x), solution.signals),
         jnp.where(invalid, STATUS.index("invalid_input"), solution.status).astype(solution.status.dtype),
         jnp.where(invalid, 0, solution.stop_index).astype(solution.stop_index.dtype)),
    )


def _check_conditions(ambient_temp_k, initial_temp_k) -> None:
    """Raise on concrete (not traced) temperatures that are not positive kelvins (the model checks a concrete SOC)."""
    checks = [("ambient_temp_k", ambient_temp_k, lambda x: np.all(np.isfinite(x) & (x > 0)), "finite and > 0 K"),
              ("initial_temp_k", initial_temp_k, lambda x: np.all(np.isfinite(x) & (x > 0)), "finite and > 0 K")]
    for name, value, ok, wanted in checks:
        if value is None or isinstance(value, jax.core.Tracer):
            continue
        if not ok(np.asarray(value, dtype=np.float64)):
            raise ValueError(f"{name} must be {wanted}, got {value}")


def advance(model: AbstractCellModel, params: ParameterSet, operators, state, current_a, dt_s, ambient_temp_k, substeps: int = 1):
    """Hold ``current_a`` for ``dt_s`` seconds from ``state``: ``(new_state, signals at the end)``.

    ``operators`` is ``model.stiff_operators(params)``, computed once per parameter set.
    No events are applied: the caller checks the returned signals (see :func:`check_state`).
    """
    h = dt_s / substeps
    for _ in range(substeps):
        state, _ = ros2_step(model, params, operators, state, current_a, current_a, h, ambient_temp_k)
    return state, model.outputs(params, state, current_a, ambient_temp_k)


def state_flags(model: AbstractCellModel, params: ParameterSet, state) -> dict[str, Array]:
    """The flags of :data:`~cellax.status.INVALID` that the state alone raises (no step, no outputs needed):
    electrolyte depleted, a stoichiometry out of ``(0, 1)``, a non-finite value (``solver_failed``)."""
    s = params.scalars
    sto = jnp.stack(
        [
            jnp.min(state.c_neg) / s["neg_max_conc_mol_m3"],
            jnp.max(state.c_neg) / s["neg_max_conc_mol_m3"],
            surface_value(state.c_neg) / s["neg_max_conc_mol_m3"],
            jnp.min(state.c_pos) / s["pos_max_conc_mol_m3"],
            jnp.max(state.c_pos) / s["pos_max_conc_mol_m3"],
            surface_value(state.c_pos) / s["pos_max_conc_mol_m3"],
        ]
    )
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(state)]))
    return {
        "electrolyte_depleted": model.electrolyte_depleted(state),
        "stoichiometry_out_of_range": jnp.any((sto <= 0) | (sto >= 1)),
        "solver_failed": ~finite,
    }


def check_state(model: AbstractCellModel, params: ParameterSet, state, signals: dict, soc_limits=(0.0, 1.0)) -> dict[str, Array]:
    """One flag per :data:`~cellax.status.STATUS` name (all but ``"completed"``): which limits and invalid
    states ``state`` and its ``signals`` raise. ``solver_failed`` flags a non-finite state or voltage."""
    s = params.scalars
    flags = state_flags(model, params, state)
    voltage, soc = signals["voltage_v"], signals["soc"]
    return {
        "voltage_min": voltage < s["voltage_min_v"],
        "voltage_max": voltage > s["voltage_max_v"],
        "soc_min": soc < soc_limits[0],
        "soc_max": soc > soc_limits[1],
        "electrolyte_depleted": flags["electrolyte_depleted"],
        "stoichiometry_out_of_range": flags["stoichiometry_out_of_range"],
        "solver_failed": flags["solver_failed"] | ~jnp.isfinite(voltage),
    }


def status_code(flags: dict[str, Array], names=None) -> Array:
    """The :data:`~cellax.status.STATUS` code of the first of ``names`` (default: every flag, in
    :data:`~cellax.status.STATUS` order) whose flag is raised (0 if none)."""
    names = [name for name in STATUS if name in flags] if names is None else names
    hits = jnp.stack([flags[name] for name in names])
    codes = jnp.asarray([STATUS.index(name) for name in names])
    return jnp.where(jnp.any(hits), codes[jnp.argmax(hits)], 0)


def _ros2(model, params, current_a, ts, dt_s, y0, ambient_temp_k, substeps, soc_limits, limits) -> Solution:
    operators = model.stiff_operators(params)
    n = current_a.shape[0]
    h = dt_s / substeps
    next_current = jnp.concatenate([current_a[1:], current_a[-1:]])
    first_out = model.outputs(params, y0, current_a[0], ambient_temp_k)
    s = params.scalars

    def sample(carry, inputs):
        state, previous, last_out, status, stop, halted = carry
        k, i_start, i_end = inputs
        i_start, i_end = jnp.where(halted, 0.0, i_start), jnp.where(halted, 0.0, i_end)
        stepped, out = state, None
        for m in range(substeps):
            a, b = i_start + (i_end - i_start) * m / substeps, i_start + (i_end - i_start) * (m + 1) / substeps
            stepped, out_m = ros2_step(model, params, operators, stepped, a, b, h, ambient_temp_k)
            out = out_m if out is None else out
        code = status_code(check_state(model, params, state, out, soc_limits))
        status = jnp.where((status == 0) & ~halted, code, status)
        halts = (code != 0) if limits else ~jnp.isfinite(out["voltage_v"])
        event = ~halted & halts
        halted = halted | halts
        stop = jnp.where(event, jnp.maximum(k - 1, 0), stop)
        emitted = _select(halted, last_out, out)
        carry = (
            _select(halted, previous, stepped),
            _select(halted, previous, state),
            emitted,
            status,
            stop,
            halted,
        )
        return carry, (emitted, out["voltage_v"])

    init = (y0, y0, first_out, jnp.asarray(0), jnp.asarray(n - 1), jnp.asarray(False))
    (_, final_state, _, status, stop, _), (signals, raw_voltage) = jax.lax.scan(
        sample, init, (jnp.arange(n), current_a, next_current)
    )
    signals["time_s"] = ts
    # the event lies between samples stop and stop + 1: interpolate the crossing for voltage events
    v0, v1 = raw_voltage[stop], raw_voltage[jnp.minimum(stop + 1, n - 1)]
    limit = jnp.where(status == 1, s["voltage_min_v"], s["voltage_max_v"])
    fraction = jnp.clip((v0 - limit) / jnp.where(v0 == v1, 1.0, v0 - v1), 0.0, 1.0)
    fraction = jnp.where((status == 1) | (status == 2), fraction, jnp.where(status == 0, 0.0, 1.0))
    event_time = ts[stop] + fraction * dt_s
    return Solution(signals, status, stop, event_time, final_state)


def _coarse_ros2(model, params, current_a, ts, dt_s, y0, ambient_temp_k, substeps, m, soc_limits, limits) -> Solution:
    """:func:`_ros2` on every ``m``-th sample (the current padded with its last value to a whole number of steps),
    the signals brought back to the sample grid by :func:`hermite_refine`."""
    n = current_a.shape[0]
    n_coarse = -(-(n - 1) // m) + 1
    padded = jnp.concatenate([current_a, jnp.broadcast_to(current_a[-1], ((n_coarse - 1) * m + 1 - n,))])
    coarse = _ros2(model, params, padded[::m], ts[0] + jnp.arange(n_coarse, dtype=ts.dtype) * (m * dt_s), m * dt_s,
                   y0, ambient_temp_k, substeps, soc_limits, limits)
    status = jnp.where(coarse.event_time_s > ts[-1], 0, coarse.status).astype(coarse.status.dtype)  # in the padding
    event_time = jnp.where(status == 0, ts[-1], coarse.event_time_s)
    fraction = (coarse.event_time_s - coarse.signals["time_s"][coarse.stop_index]) / (m * dt_s)
    stop = jnp.minimum(coarse.stop_index * m + jnp.clip(jnp.floor(fraction * m).astype(coarse.stop_index.dtype), 0, m - 1),
                       n - 1)
    fine = jnp.arange(n)
    signals = {k: hermite_refine(v, m, n, coarse.stop_index) for k, v in coarse.signals.items() if k not in ("time_s", "current_a")}
    signals = {k: jnp.where(fine <= stop, v, v[stop]) for k, v in signals.items()}
    signals["current_a"] = jnp.where(fine <= stop, current_a, current_a[stop])
    signals["time_s"] = ts
    return Solution(signals, status, stop, event_time, coarse.final_state)


def hermite_refine(values: Float[Array, " n_coarse"], m: int, n: int, last=None) -> Float[Array, " n"]:
    """Samples ``values[k]`` at ``k m`` (valid up to ``k = last``, default: all) brought to every index
    ``0 … n-1`` by cubic Hermite interpolation; the slope at each sample is the central difference
    ``(v_{k+1} - v_{k-1}) / 2``, and the second-order one-sided one at the first sample and from ``last`` on."""
    n_coarse = values.shape[0]
    last = n_coarse - 1 if last is None else jnp.maximum(last, 2)
    idx = jnp.arange(n_coarse)
    at = lambda i: values[jnp.clip(i, 0, n_coarse - 1)]  # noqa: E731
    central = 0.5 * (at(idx + 1) - at(idx - 1))
    backward = 0.5 * (3 * at(idx) - 4 * at(idx - 1) + at(idx - 2))
    forward = 0.5 * (-3 * at(idx) + 4 * at(idx + 1) - at(idx + 2))
    slopes = jnp.where(idx == 0, forward, jnp.where(idx >= last, backward, central))
    if n_coarse < 3:
        slopes = jnp.broadcast_to(values[-1] - values[0], values.shape)
    fine = jnp.arange(n)
    k = jnp.minimum(fine // m, n_coarse - 2)
    t = ((fine - k * m) / m).astype(values.dtype)
    t2, t3 = t * t, t * t * t
    return ((2 * t3 - 3 * t2 + 1) * values[k] + (t3 - 2 * t2 + t) * slopes[k]
            + (-2 * t3 + 3 * t2) * values[k + 1] + (t3 - t2) * slopes[k + 1])


def _kvaerno5(model, params, current_a, current_fn, ts, y0, ambient_temp_k, soc_limits, limits, rtol, atol, max_steps):
    current = current_fn if current_fn is not None else diffrax.LinearInterpolation(ts=ts, ys=current_a).evaluate
    s = params.scalars

    def vector_field(t, state, args):
        return model.vector_field(params, state, current(t), ambient_temp_k)

    def condition(name, bound, sign):
        def distance(t, y, args, **kwargs):
            return sign * (model.outputs(params, y, current(t), ambient_temp_k)[name] - bound)

        return distance

    conditions = [
        condition("voltage_v", s["voltage_min_v"], 1.0),
        condition("voltage_v", s["voltage_max_v"], -1.0),
        condition("soc", soc_limits[0], 1.0),
        condition("soc", soc_limits[1], -1.0),
    ]
    event = diffrax.Event(conditions, root_finder=optx.Newton(rtol=1e-8, atol=1e-8)) if limits else None
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        diffrax.Kvaerno5(),
        t0=ts[0],
        t1=ts[-1],
        dt0=None,
        y0=y0,
        saveat=diffrax.SaveAt(ts=ts, t1=True),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, jump_ts=ts),
        event=event,
        max_steps=max_steps,
        throw=False,
    )
    states = jax.tree_util.tree_map(lambda leaf: leaf[:-1], solution.ys)
    finite = jnp.isfinite(states.core_temp_k) & (ts <= solution.ts[-1])
    last = jnp.maximum(jnp.sum(finite) - 1, 0)
    states = jax.tree_util.tree_map(lambda leaf: jnp.where(_broadcast(finite, leaf), leaf, leaf[last]), states)
    signals = jax.vmap(lambda st, i: model.outputs(params, st, i, ambient_temp_k))(states, current_a)
    signals["time_s"] = ts
    mask = jnp.stack(solution.event_mask) if solution.event_mask is not None else jnp.zeros(4, bool)
    status = jnp.where(
        solution.result == diffrax.RESULTS.successful,
        0,
        jnp.where(solution.result == diffrax.RESULTS.event_occurred, 1 + jnp.argmax(mask), STATUS.index("solver_failed")),
    )
    final_state = jax.tree_util.tree_map(lambda leaf: leaf[last], states)
    return Solution(signals, status, last, jnp.where(status == 0, ts[-1], solution.ts[-1]), final_state)


def _check_dt(dt_s) -> None:
    if not isinstance(dt_s, jax.core.Tracer) and not float(dt_s) > 0:
        raise ValueError(f"dt_s must be positive, got {dt_s}")


def _check_profile(current_a, dt_s) -> None:
    if not isinstance(current_a, jax.core.Tracer):
        current = np.asarray(current_a)  # concrete, even when closed over inside jit
        if current.ndim != 1 or current.shape[0] < 2:
            raise ValueError(f"current_a must be 1-D with at least 2 samples, got shape {current.shape}")
        if not np.all(np.isfinite(current)):
            raise ValueError("current_a contains NaN or infinite samples")
    _check_dt(dt_s)


def _select(condition, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(condition, x, y), a, b)


def _broadcast(mask, leaf):
    return jnp.reshape(mask, mask.shape + (1,) * (leaf.ndim - 1))
