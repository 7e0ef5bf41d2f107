"""Integrate a cell model over a current profile with diffrax.

:func:`simulate` takes the current as samples ``current_a[k]`` at ``k * dt_s``
(linearly interpolated between samples, as the PyBaMM data backend does) and
returns the canonical signals on that grid, stopping at the voltage window like
PyBaMM's events do. It is a pure function of its array arguments: ``jit``,
``vmap`` (over parameters, profiles, initial conditions) and ``grad`` apply.

The solver here is diffrax's adaptive ``Kvaerno5`` (L-stable ESDIRK, dense
Newton): the accurate reference path. Faster structure-aware stepping is a
separate solver choice.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Float

from cellax.physics.parameters import ParameterSet
from cellax.physics.spm import SPM
from cellax.physics.spme import SPMe


class Solution(eqx.Module):
    """Signals on the sample grid; samples after ``stop_index`` are NaN-free copies of the last valid one.

    ``status`` is 0 when the profile ran to its end, 1 at the lower and 2 at the
    upper voltage limit (the event time is ``time_s[stop_index]`` rounded down to the grid), 3 when
    the solver failed.
    """

    signals: dict[str, Array]
    status: Array
    stop_index: Array


def _check_profile(current_a, dt_s) -> None:
    if not isinstance(current_a, jax.core.Tracer):
        current = jnp.asarray(current_a)
        if current.ndim != 1 or current.shape[0] < 2:
            raise ValueError(f"current_a must be 1-D with at least 2 samples, got shape {current.shape}")
        if not bool(jnp.all(jnp.isfinite(current))):
            raise ValueError("current_a contains NaN or infinite samples")
    if not isinstance(dt_s, jax.core.Tracer) and not float(dt_s) > 0:
        raise ValueError(f"dt_s must be positive, got {dt_s}")


def simulate(
    model: SPM | SPMe,
    params: ParameterSet,
    current_a: Float[Array, " n"],
    dt_s: float,
    initial_soc,
    ambient_temp_k,
    rtol: float = 1e-8,
    atol: float = 1e-8,
    max_steps: int = 100_000,
) -> Solution:
    """Simulate one cell over one sampled current profile (float64).

    The cell starts in equilibrium at ``initial_soc`` with both temperature nodes
    at ``ambient_temp_k``.
    """
    _check_profile(current_a, dt_s)
    current_a = jnp.asarray(current_a, dtype=jnp.float64)
    n = current_a.shape[0]
    ts = jnp.arange(n, dtype=jnp.float64) * dt_s
    current = diffrax.LinearInterpolation(ts=ts, ys=current_a)
    ambient_temp_k = jnp.asarray(ambient_temp_k, dtype=jnp.float64)
    y0 = model.initial_state(params, initial_soc, ambient_temp_k)
    s = params.scalars

    def vector_field(t, state, args):
        return model.vector_field(params, state, current.evaluate(t), ambient_temp_k)

    def voltage(t, state):
        return model.outputs(params, state, current.evaluate(t), ambient_temp_k)["voltage_v"]

    def below(t, y, args, **kwargs):
        return voltage(t, y) - s["voltage_min_v"]

    def above(t, y, args, **kwargs):
        return s["voltage_max_v"] - voltage(t, y)

    event = diffrax.Event([below, above], root_finder=optx.Newton(rtol=1e-8, atol=1e-8))
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        diffrax.Kvaerno5(),
        t0=ts[0],
        t1=ts[-1],
        dt0=None,
        y0=y0,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, jump_ts=ts),
        event=event,
        max_steps=max_steps,
        throw=False,
    )
    states = solution.ys
    finite = jnp.isfinite(states.core_temp_k)
    last = jnp.maximum(jnp.sum(finite) - 1, 0)
    states = jax.tree_util.tree_map(lambda leaf: jnp.where(_broadcast(finite, leaf), leaf, leaf[last]), states)
    signals = jax.vmap(lambda st, i: model.outputs(params, st, i, ambient_temp_k))(states, current_a)
    signals["time_s"] = ts
    event_mask = solution.event_mask
    status = jnp.where(
        solution.result == diffrax.RESULTS.successful,
        0,
        jnp.where(
            solution.result == diffrax.RESULTS.event_occurred,
            jnp.where(event_mask[0], 1, 2),
            3,
        ),
    )
    return Solution(signals, status, last)


def _broadcast(mask, leaf):
    return jnp.reshape(mask, mask.shape + (1,) * (leaf.ndim - 1))
