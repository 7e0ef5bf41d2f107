"""Run a cell model over a current profile, or advance it by one control interval.

:func:`simulate` takes the current as samples ``current_a[k]`` at ``k * dt_s``
(linear between samples, as the PyBaMM data backend does) or as a callable of
time, and returns the canonical signals on that grid. It stops at the voltage and
SOC windows like PyBaMM's events, and at states where the model is invalid
(electrolyte depleted, a stoichiometry leaving ``[0, 1]``, non-finite values),
saying which in ``Solution.status``. It is a pure function of its array
arguments: ``jit``, ``vmap`` (over parameters, profiles, initial conditions) and
``grad`` apply.

Three solvers:

- ``"ros2"`` (default): the fixed-step Rosenbrock–W scheme of
  :mod:`cellax.physics.stepping` on the sample grid (``substeps`` per sample),
  one ``lax.scan``: fast, vmappable, cheap to differentiate. With
  ``samples_per_step = m > 1`` it steps every ``m`` samples instead (the current
  linear between every ``m``-th sample: exact for constant or piecewise-linear
  currents with breakpoints on that grid) and fills the samples between steps by
  cubic Hermite interpolation of the signals (slopes by central differences):
  ``m`` times fewer steps for smooth inputs, with the output still on the sample grid.
  With ``max_samples_per_step = m`` the steps follow the input instead: each ends at
  the next *kink* of the current (a sample where its slope changes) or after at most
  ``m`` samples, and after every kink the steps grow 1, 2, 4, ... samples, so the
  transient a current step starts is resolved like on the sample grid while
  constant-current and rest segments take long steps; drive-cycle segments, whose
  current changes every sample, keep a step per sample. Exact in the input (the
  current is linear inside every step), with the step size's error measured in
  ``benchmarks/rom_vs_pybamm.py``.
- ``"etd2"``: the exponential integrator of :mod:`cellax.physics.stepping` in place of ROS2, everything else
  (``substeps``, ``samples_per_step``, ``max_samples_per_step``) the same: exact in the linear diffusion, so
  more accurate on long steps at the cost of one ROS2 step.
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
from cellax.physics.stepping import STEPPERS, stepper
from cellax.status import STATUS

SOLVERS = ("ros2", "etd2", "kvaerno5")


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
    max_samples_per_step: int | None = None,
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
    ``samples_per_step > 1`` (``ros2``, ``etd2``): one step per that many samples, signals interpolated between
    steps (module docstring); limits are checked at the steps, ``stop_index`` is the last sample before the
    interpolated event, and ``final_state`` the state at the last step at or before it.
    ``max_samples_per_step`` (``ros2``, ``etd2``): steps chosen from the input instead, each ending at the next kink of
    the current or after up to that many samples, growing 1, 2, 4, ... samples after every kink (module
    docstring); the signals are interpolated between steps as above. Not differentiable (a ``while_loop``
    chooses the steps): ``grad`` and ``jvp`` through it raise ``NotImplementedError``; differentiate a run on the
    sample grid.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
        raise ValueError(f"substeps must be a positive integer, got {substeps!r}")
    if isinstance(samples_per_step, bool) or not isinstance(samples_per_step, int) or samples_per_step < 1:
        raise ValueError(f"samples_per_step must be a positive integer, got {samples_per_step!r}")
    if samples_per_step > 1 and solver not in STEPPERS:
        raise ValueError(f"samples_per_step > 1 needs a fixed-step solver {tuple(STEPPERS)}, got solver={solver!r}")
    if max_samples_per_step is not None:
        if (isinstance(max_samples_per_step, bool) or not isinstance(max_samples_per_step, int)
                or max_samples_per_step < 1):
            raise ValueError(f"max_samples_per_step must be a positive integer, got {max_samples_per_step!r}")
        if solver not in STEPPERS or samples_per_step > 1:
            raise ValueError(f"max_samples_per_step needs a fixed-step solver {tuple(STEPPERS)} and samples_per_step=1, got "
                             f"solver={solver!r}, samples_per_step={samples_per_step}")
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
    stepping = (STEPPERS.get(solver), substeps)
    if solver in STEPPERS and max_samples_per_step is not None:
        solution = _adaptive_steps(model, params, current_a, ts, dt_s, y0, ambient_temp_k, stepping, max_samples_per_step,
                                   soc_limits, limits)
    elif solver in STEPPERS and samples_per_step > 1:
        solution = _coarse_steps(model, params, current_a, ts, dt_s, y0, ambient_temp_k, stepping, samples_per_step,
                                 soc_limits, limits)
    elif solver in STEPPERS:
        solution = _grid_steps(model, params, current_a, ts, dt_s, y0, ambient_temp_k, stepping, soc_limits, limits)
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


def advance(model: AbstractCellModel, params: ParameterSet, operators, state, current_a, dt_s, ambient_temp_k,
            substeps: int = 1, solver: str = "ros2"):
    """Hold ``current_a`` for ``dt_s`` seconds from ``state``: ``(new_state, signals at the end)``.

    ``operators`` is ``model.stiff_operators(params)``, computed once per parameter set; ``substeps`` equal
    steps of ``solver`` (``"ros2"`` or ``"etd2"``, :mod:`cellax.physics.stepping`), in a ``lax.scan`` when there
    are several (one compiled step however many).
    No events are applied: the caller checks the returned signals (see :func:`check_state`).
    """
    step = stepper(solver)
    h = dt_s / substeps

    def one(state, _):
        return step(model, params, operators, state, current_a, current_a, h, ambient_temp_k)[0], None

    state = one(state, None)[0] if substeps == 1 else jax.lax.scan(one, state, None, length=substeps)[0]
    return state, model.outputs(params, state, current_a, ambient_temp_k)


def gradient_where(tree, trusted):
    """``tree`` whose float arrays pass gradient only where ``trusted``: a select against ``stop_gradient``, so the
    NaN cotangents of a computation that left validity (a zero cotangent times an infinite partial is NaN) stop here
    instead of reaching the parameters."""
    return jax.tree_util.tree_map(
        lambda leaf: jnp.where(trusted, leaf, jax.lax.stop_gradient(leaf)) if eqx.is_inexact_array(leaf) else leaf, tree)


def state_flags(model: AbstractCellModel, params: ParameterSet, state) -> dict[str, Array]:
    """The flags of :data:`~cellax.status.INVALID` that the state alone raises (no step, no outputs needed):
    electrolyte depleted, a stoichiometry out of ``(0, 1)``, a non-finite value (``solver_failed``)."""
    s = params.scalars
    sto = jnp.stack(
        [
            jnp.min(state.c_neg) / s["neg_max_conc_mol_m3"],
            jnp.max(state.c_neg) / s["neg_max_conc_mol_m3"],
            jnp.min(surface_value(state.c_neg)) / s["neg_max_conc_mol_m3"],
            jnp.max(surface_value(state.c_neg)) / s["neg_max_conc_mol_m3"],
            jnp.min(state.c_pos) / s["pos_max_conc_mol_m3"],
            jnp.max(state.c_pos) / s["pos_max_conc_mol_m3"],
            jnp.min(surface_value(state.c_pos)) / s["pos_max_conc_mol_m3"],
            jnp.max(surface_value(state.c_pos)) / s["pos_max_conc_mol_m3"],
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


def _sample_step(model, params, operators, stepping, soc_limits, limits):
    """The body shared by the fixed-step loops: check the state at a knot, emit its signals, step to the next knot
    (``stepping = (one-step method, substeps)``).

    ``carry = (state, previous, last_out, status, stop, halted)``; ``k`` is the knot's index, ``h_s`` the
    step's length, the current linear from ``i_start`` to ``i_end`` over it. Returns the new carry, the
    emitted signals (held at the last valid ones once halted) and the raw voltage at the knot."""

    def step(carry, k, i_start, i_end, h_s, ambient_temp_k):
        state, previous, last_out, status, stop, halted = carry
        i_start, i_end = jnp.where(halted, 0.0, i_start), jnp.where(halted, 0.0, i_end)
        stepped, out = state, None
        method, substeps = stepping
        for m in range(substeps):
            a, b = i_start + (i_end - i_start) * m / substeps, i_start + (i_end - i_start) * (m + 1) / substeps
            stepped, out_m = method(model, params, operators, stepped, a, b, h_s / substeps, ambient_temp_k)
            out = out_m if out is None else out
        code = status_code(check_state(model, params, state, out, soc_limits))
        status = jnp.where((status == 0) & ~halted, code, status)
        halts = (code != 0) if limits else ~jnp.isfinite(out["voltage_v"])
        event = ~halted & halts
        halted = halted | halts
        stop = jnp.where(event, jnp.maximum(k - 1, 0), stop)
        emitted = _select(halted, last_out, out)
        carry = (_select(halted, previous, stepped), _select(halted, previous, state), emitted, status, stop, halted)
        return carry, emitted, out["voltage_v"]

    return step


def _event_time(params, status, raw_voltage, stop, knot_times):
    """The event between knots ``stop`` and ``stop + 1``: voltage crossings interpolated linearly, other
    events at the later knot, ``knot_times[stop]`` when the run completed."""
    s = params.scalars
    last = knot_times.shape[0] - 1
    v0, v1 = raw_voltage[stop], raw_voltage[jnp.minimum(stop + 1, last)]
    limit = jnp.where(status == 1, s["voltage_min_v"], s["voltage_max_v"])
    fraction = jnp.clip((v0 - limit) / jnp.where(v0 == v1, 1.0, v0 - v1), 0.0, 1.0)
    fraction = jnp.where((status == 1) | (status == 2), fraction, jnp.where(status == 0, 0.0, 1.0))
    return knot_times[stop] + fraction * (knot_times[jnp.minimum(stop + 1, last)] - knot_times[stop])


def _grid_steps(model, params, current_a, ts, dt_s, y0, ambient_temp_k, stepping, soc_limits, limits) -> Solution:
    operators = model.stiff_operators(params)
    n = current_a.shape[0]
    next_current = jnp.concatenate([current_a[1:], current_a[-1:]])
    first_out = model.outputs(params, y0, current_a[0], ambient_temp_k)
    step = _sample_step(model, params, operators, stepping, soc_limits, limits)

    def sample(carry, inputs):
        k, i_start, i_end = inputs
        carry, emitted, raw = step(carry, k, i_start, i_end, dt_s, ambient_temp_k)
        return carry, (emitted, raw)

    init = (y0, y0, first_out, jnp.asarray(0), jnp.asarray(n - 1), jnp.asarray(False))
    (_, final_state, _, status, stop, _), (signals, raw_voltage) = jax.lax.scan(
        sample, init, (jnp.arange(n), current_a, next_current)
    )
    signals["time_s"] = ts
    event_time = _event_time(params, status, raw_voltage, stop, jnp.concatenate([ts, ts[-1:] + dt_s]))
    return Solution(signals, status, stop, event_time, final_state)


def _adaptive_steps(model, params, current_a, ts, dt_s, y0, ambient_temp_k, stepping, max_m, soc_limits,
                    limits) -> Solution:
    """Steps on knots chosen from the input: a step ends at the next kink of the current (a sample where its
    second difference is not zero) or after ``min(max_m, 2^j)`` samples, ``j`` counting the steps since the
    last kink, so steps grow 1, 2, 4, ... samples after every change of slope and the fast transients it
    starts are resolved. The steps run in a ``lax.while_loop`` until the last sample (or the first event);
    the signals are brought to every sample by :func:`hermite_fill`, with one-sided slopes at the kinks."""
    n = current_a.shape[0]
    dtype = current_a.dtype
    dynamic, static = eqx.partition((model, params), eqx.is_array)
    loop = _knot_loop(static, stepping, max_m, soc_limits, limits)
    dt = jnp.asarray(dt_s, dtype)
    (status, stop, halted, final_state), count, knots, signals, raw_voltage = loop(dynamic, current_a, y0,
                                                                                     ambient_temp_k, dt)
    kink = _input_kinks(current_a)[0]
    fine = jnp.arange(n)
    last = count - 1
    stop = jnp.where(halted, stop, last)  # knots after the last one written repeat the last sample
    knot_times = knots.astype(dtype) * dt
    event_time = _event_time(params, status, raw_voltage, stop, knot_times)
    span = jnp.maximum(knots[jnp.minimum(stop + 1, n - 1)] - knots[stop], 1)
    fraction = (event_time - knot_times[stop]) / (span.astype(dtype) * dt)
    fine_stop = jnp.where(status == 0, n - 1, knots[stop] + jnp.clip(jnp.floor(fraction * span).astype(stop.dtype), 0,
                                                                       span - 1))
    fine_stop = jnp.minimum(fine_stop, n - 1)
    values = {k: hermite_fill(knots, v, n, stop, kink[knots], count) for k, v in signals.items()}
    values = {k: jnp.where(fine <= fine_stop, v, v[fine_stop]) for k, v in values.items()}
    values["current_a"] = jnp.where(fine <= fine_stop, current_a, current_a[fine_stop])
    values["time_s"] = ts
    return Solution(values, status, fine_stop, jnp.where(status == 0, ts[-1], event_time), final_state)


def _knot_loop(static, stepping, max_m, soc_limits, limits):
    """The stepping loop of :func:`_adaptive_steps` for one cell: ``loop(dynamic, current_a, y0, ambient_temp_k,
    dt_s) -> ((status, stop, halted, final_state), count, knots, signals, raw_voltage)``, knots and signals in
    buffers of one entry per sample (the first ``count`` written); ``dynamic`` holds the arrays of ``(model,
    params)``.

    Under ``vmap`` a ``while_loop`` whose cells finish at different steps gets a batched predicate, and JAX then
    selects every carried buffer, whole, at every step: for 1 h of signals that costs more than the step. So the
    loop is written for a batch (cells step together until the last one is done, a finished cell writing nothing)
    and ``custom_vmap`` sends a ``vmap`` of it, however nested, to that batch form. Parameters shared by the batch
    stay shared (one set of stiff operators, batched products); parameters that vary per cell (a ``vmap`` over
    them) are carried per cell."""

    def batch_impl(dynamic, current_a, y0, ambient_temp_k, dt_s, per_cell):
        """``per_cell``: a pytree like ``dynamic`` of bools, True where a leaf has a leading cell axis."""
        cells, n = current_a.shape
        dtype = current_a.dtype
        varies = any(jax.tree_util.tree_leaves(per_cell))
        axes = jax.tree_util.tree_map(lambda cell: 0 if cell else None, per_cell)

        def cell_model(d):
            return eqx.combine(d, static)

        def operators_of(d):
            model, params = cell_model(d)
            return model.stiff_operators(params)

        operators_axis = None
        if not varies:
            operators = operators_of(dynamic)
        else:  # shared unless they depend on a leaf that varies (a thermal parameter does not)
            try:
                operators = jax.vmap(operators_of, in_axes=(axes,), out_axes=None)(dynamic)
            except ValueError:
                operators, operators_axis = jax.vmap(operators_of, in_axes=(axes,))(dynamic), 0
        model_axes = (axes, operators_axis)

        def cell_step(d, ops, *args):
            model, params = cell_model(d)
            return _sample_step(model, params, ops, stepping, soc_limits, limits)(*args)

        def cell_outputs(d, y, i, a):
            model, params = cell_model(d)
            return model.outputs(params, y, i, a)

        kink, first_kink = jax.vmap(_input_kinks)(current_a)
        next_knot = jax.vmap(lambda k, f, b, g: _next_knot(k, f, b, g, max_m))
        step_all = jax.vmap(cell_step, in_axes=(*model_axes, 0, 0, 0, 0, 0, 0))
        step = lambda *args: step_all(dynamic, operators, *args)  # noqa: E731
        first_out = jax.vmap(cell_outputs, in_axes=(axes, 0, 0, 0))(dynamic, y0, current_a[:, 0], ambient_temp_k)
        rows = jnp.arange(cells)
        zeros = jnp.zeros(cells, jnp.asarray(0).dtype)
        kept = [k for k in first_out if k != "current_a"]  # signals kept at the knots (the current is the input)

        def body(loop):
            carry, j, b, grade, knots, signals, raw_voltage = loop
            active = (b < n) & ~carry[5]
            e, next_grade = next_knot(kink, first_kink, jnp.minimum(b, n - 1), grade)
            h = jnp.where(active, (e - b).astype(dtype) * dt_s, 0.0)
            stepped, emitted, raw = step(carry, j, current_a[rows, jnp.minimum(b, n - 1)], current_a[rows, e], h,
                                         ambient_temp_k)
            at = jnp.where(active, j, n)  # column n collects the writes of finished cells

            def write(buffer, x):
                return buffer.at[rows, at].set(x)

            emitted = {k: emitted[k] for k in kept}
            return (_select(active, stepped, carry), j + active, jnp.where(active, jnp.where(b == n - 1, n, e), b),
                    jnp.where(active, next_grade, grade), write(knots, b), jax.tree_util.tree_map(write, signals, emitted),
                    write(raw_voltage, raw))

        def running(loop):
            carry, _, b = loop[:3]
            return jnp.any((b < n) & ~carry[5])

        buffer = lambda x: jnp.zeros((cells, n + 1) + x.shape[1:], x.dtype)  # noqa: E731
        carry = (y0, y0, first_out, zeros, jnp.full(cells, n - 1, zeros.dtype), jnp.zeros(cells, bool))
        init = (carry, zeros, zeros, zeros, jnp.full((cells, n + 1), n - 1, zeros.dtype),
                {k: buffer(first_out[k]) for k in kept}, buffer(first_out["voltage_v"]))
        (_, final_state, _, status, stop, halted), count, _, _, knots, signals, raw_voltage = jax.lax.while_loop(
            running, body, init)
        knots, signals, raw_voltage = jax.tree_util.tree_map(lambda x: x[:, :n], (knots, signals, raw_voltage))
        return (status, stop, halted, final_state), count, knots, signals, raw_voltage

    def make_rule(flatten, per_cell):
        def rule(axis_size, in_batched, dynamic, *cell_args):
            cell_args = jax.tree_util.tree_map(
                lambda x, batched: x if batched else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x)),
                cell_args, tuple(in_batched[1:]))
            shape = jax.tree_util.tree_leaves(cell_args)[0].shape[:2] if flatten else None
            if flatten:
                cell_args = jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), cell_args)

            def leaf(x, batched, cell):
                """A leaf of ``(model, params)`` for the flat batch, and whether it now has a cell axis."""
                if not flatten:
                    return x, batched
                if batched and not cell:  # one value per outer element, for each of its cells
                    x = jnp.broadcast_to(x[:, None], (axis_size, shape[1]) + x.shape[1:])
                elif cell and not batched:  # per cell inside, the same for every outer element
                    x = jnp.broadcast_to(x, (axis_size,) + x.shape)
                elif not cell:
                    return x, False
                return x.reshape((-1,) + x.shape[2:]), True

            inner = jax.tree_util.tree_map(lambda x, b, c: leaf(x, b, c)[1], dynamic, in_batched[0], per_cell)
            dynamic = jax.tree_util.tree_map(lambda x, b, c: leaf(x, b, c)[0], dynamic, in_batched[0], per_cell)
            out = batch_for(inner)(dynamic, *cell_args)
            if flatten:
                out = jax.tree_util.tree_map(lambda x: x.reshape(shape + x.shape[1:]), out)
            return out, jax.tree_util.tree_map(lambda _: True, out)

        return rule

    def batch_for(per_cell):
        """``batch_impl`` for this pattern of per-cell leaves, with its own ``vmap`` rule."""
        batch = jax.custom_batching.custom_vmap(lambda d, *cells: batch_impl(d, *cells, per_cell))
        batch.def_vmap(make_rule(True, per_cell))
        return batch

    def one_impl(dynamic, current_a, y0, ambient_temp_k, dt_s):
        cells = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], (current_a, y0, ambient_temp_k, dt_s))
        shared = jax.tree_util.tree_map(lambda _: False, dynamic)
        return jax.tree_util.tree_map(lambda x: x[0], batch_for(shared)(dynamic, *cells))

    def one_rule(axis_size, in_batched, dynamic, *cell_args):
        shared = jax.tree_util.tree_map(lambda _: False, dynamic)
        return make_rule(False, shared)(axis_size, in_batched, dynamic, *cell_args)

    one = jax.custom_batching.custom_vmap(one_impl)
    one.def_vmap(one_rule)

    @jax.custom_jvp
    def loop(dynamic, current_a, y0, ambient_temp_k, dt_s):
        return one(dynamic, current_a, y0, ambient_temp_k, dt_s)

    @loop.defjvp
    def _no_derivatives(primals, tangents):
        raise NotImplementedError(
            "simulate(..., max_samples_per_step=...) is not differentiable (its steps come from a while_loop); "
            "differentiate a run on the sample grid (the default) or with samples_per_step instead")

    return loop


def _input_kinks(current_a: Float[Array, " n"]):
    """``(kink, first_kink)``: whether the current's slope changes at each sample (both ends count), and the
    first such sample at or after each."""
    n = current_a.shape[0]
    scale = jnp.maximum(jnp.max(jnp.abs(current_a)), jnp.finfo(current_a.dtype).tiny)
    second = jnp.abs(current_a[2:] - 2 * current_a[1:-1] + current_a[:-2]) > 64 * jnp.finfo(current_a.dtype).eps * scale
    kink = jnp.concatenate([jnp.ones(1, bool), second, jnp.ones(1, bool)])
    return kink, jax.lax.cummin(jnp.where(kink, jnp.arange(n), n - 1), reverse=True)


def _next_knot(kink, first_kink, b, grade, max_m: int):
    """The end of the step from sample ``b`` taken ``grade`` steps after the last kink (``min(max_m, 2^grade)``
    samples at most, never past a kink), and the next step's grade."""
    n = kink.shape[0]
    e = jnp.minimum(jnp.minimum(b + jnp.minimum(2**grade, max_m), first_kink[jnp.minimum(b + 1, n - 1)]), n - 1)
    return e, jnp.where(kink[e], 0, jnp.minimum(grade + 1, max_m.bit_length()))


def adaptive_step_count(current_a: Float[Array, " n"], max_samples_per_step: int) -> Array:
    """How many ROS2 steps ``simulate(..., max_samples_per_step=m)`` takes on ``current_a`` when no event stops
    it: its cost, to sort a batch by (:func:`cellax.batching.blocked_vmap`'s ``cost``). Cheap: scalar work only."""
    current_a = jnp.asarray(current_a)
    n = current_a.shape[0]
    kink, first_kink = _input_kinks(current_a)

    def body(loop):
        count, b, grade = loop
        e, grade = _next_knot(kink, first_kink, b, grade, max_samples_per_step)
        return count + 1, jnp.where(b == n - 1, n, e), grade

    zero = jnp.asarray(0)
    return jax.lax.while_loop(lambda loop: loop[1] < n, body, (zero, zero, zero))[0]


def _coarse_steps(model, params, current_a, ts, dt_s, y0, ambient_temp_k, stepping, m, soc_limits, limits) -> Solution:
    """:func:`_grid_steps` on every ``m``-th sample (the current padded with its last value to a whole number of steps),
    the signals brought back to the sample grid by :func:`hermite_fill`."""
    n = current_a.shape[0]
    n_coarse = -(-(n - 1) // m) + 1
    padded = jnp.concatenate([current_a, jnp.broadcast_to(current_a[-1], ((n_coarse - 1) * m + 1 - n,))])
    coarse = _grid_steps(model, params, padded[::m], ts[0] + jnp.arange(n_coarse, dtype=ts.dtype) * (m * dt_s), m * dt_s,
                        y0, ambient_temp_k, stepping, soc_limits, limits)
    status = jnp.where(coarse.event_time_s > ts[-1], 0, coarse.status).astype(coarse.status.dtype)  # in the padding
    event_time = jnp.where(status == 0, ts[-1], coarse.event_time_s)
    fraction = (coarse.event_time_s - coarse.signals["time_s"][coarse.stop_index]) / (m * dt_s)
    stop = jnp.minimum(coarse.stop_index * m + jnp.clip(jnp.floor(fraction * m).astype(coarse.stop_index.dtype), 0, m - 1),
                       n - 1)
    fine = jnp.arange(n)
    knots = jnp.arange(n_coarse) * m
    signals = {k: hermite_fill(knots, v, n, coarse.stop_index) for k, v in coarse.signals.items()
               if k not in ("time_s", "current_a")}
    signals = {k: jnp.where(fine <= stop, v, v[stop]) for k, v in signals.items()}
    signals["current_a"] = jnp.where(fine <= stop, current_a, current_a[stop])
    signals["time_s"] = ts
    return Solution(signals, status, stop, event_time, coarse.final_state)


def hermite_fill(knots, values, n: int, last=None, kinks=None, n_valid=None) -> Float[Array, " n"]:
    """Values at increasing sample indices ``knots[j]`` (the first ``n_valid`` of them written, default: all;
    the signal valid up to ``j = last``, default: the last written) brought to every index ``0 … n-1`` by cubic
    Hermite interpolation.

    The slope at a knot is the three-point one, ``(h_j δ_{j-1} + h_{j-1} δ_j) / (h_{j-1} + h_j)`` with the
    secants ``δ`` and spacings ``h``, where the signal is smooth across it. At the first knot, at ``last``
    and beyond, and at ``kinks`` (knots where the input's slope changes, so the signal's may), each side
    takes the second-order one-sided slope from its own two segments, or that segment's secant when its
    other end is a kink too. Past knot ``last`` (the segment where an event stopped the run, whose far end holds
    the last valid values) the signal continues linearly with its slope arriving at ``last``. Uniform knots
    without kinks give the central difference ``(v_{j+1} - v_{j-1})/2``."""
    n_knots = values.shape[0]
    dtype = values.dtype
    idx = jnp.arange(n_knots)
    n_valid = n_knots if n_valid is None else n_valid
    last = n_valid - 1 if last is None else last
    kinks = jnp.zeros(n_knots, bool) if kinks is None else kinks
    at = lambda x, i: x[jnp.clip(i, 0, n_knots - 1)]  # noqa: E731
    h = (at(knots, idx + 1) - knots).astype(dtype)  # h[j]: spacing from knot j to j+1 (0 past the end)
    delta = (at(values, idx + 1) - values) / jnp.where(h > 0, h, 1.0)
    h_prev, delta_prev = at(h, idx - 1), at(delta, idx - 1)
    cut = kinks | (idx == 0) | (idx >= last) | (h_prev <= 0) | (h <= 0)
    central = (h * delta_prev + h_prev * delta) / jnp.where(h + h_prev > 0, h + h_prev, 1.0)
    h_next, delta_next = at(h, idx + 1), at(delta, idx + 1)
    forward = delta + (delta - delta_next) * h / jnp.where(h + h_next > 0, h + h_next, 1.0)
    backward = delta_prev + (delta_prev - at(delta, idx - 2)) * h_prev / jnp.where(
        h_prev + at(h, idx - 2) > 0, h_prev + at(h, idx - 2), 1.0)
    right = jnp.where(~cut, central, jnp.where(~at(cut, idx + 1) & (idx + 1 < n_knots), forward, delta))
    left = jnp.where(~cut, central, jnp.where(~at(cut, idx - 1) & (idx >= 2), backward, delta_prev))
    if n_knots < 3:
        right = left = jnp.broadcast_to(delta[0], values.shape)
    fine = jnp.arange(n)
    k = jnp.clip(jnp.searchsorted(knots, fine, side="right") - 1, 0, jnp.maximum(n_valid - 2, 0))
    span = h[k]
    t = ((fine - knots[k]) / jnp.where(span > 0, span, 1.0)).astype(dtype)
    t2, t3 = t * t, t * t * t
    inside = ((2 * t3 - 3 * t2 + 1) * values[k] + (t3 - 2 * t2 + t) * span * right[k]
              + (-2 * t3 + 3 * t2) * values[k + 1] + (t3 - t2) * span * left[k + 1])
    beyond = values[last] + left[last] * (fine - knots[last]).astype(dtype)  # past `last` (an event): extrapolated
    return jnp.where(k >= last, beyond, inside)


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
    """``a`` where ``condition`` else ``b``, leaf by leaf; ``condition`` a scalar or one per row (leading axis)."""
    return jax.tree_util.tree_map(lambda x, y: jnp.where(_broadcast(condition, x), x, y), a, b)


def _broadcast(mask, leaf):
    return jnp.reshape(mask, mask.shape + (1,) * (leaf.ndim - 1))
