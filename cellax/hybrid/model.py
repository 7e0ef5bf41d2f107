"""The hybrid cell model: cellax's SPMe with learned corrections inside it (Equinox modules).

Two corrections, both functions of the model's *state* ``y`` and *input* ``I`` only (never of
measured history), through dimensionless features ``z(y, I)`` (C-rate, average and surface
stoichiometries of both electrodes, electrolyte concentration at both current collectors and in
the separator relative to its initial value, both temperatures, and the history states ``ξ``):

.. math::

    \\dot T_\\text{core} = f^\\text{SPMe}_T(y, I) + s_q\\, g_\\theta(z), \\qquad
    V = V^\\text{SPMe}(y, I) + s_v\\, h_\\phi(z)_1, \\qquad
    U_a = U_a^\\text{SPMe}(y, I) + s_v\\, h_\\phi(z)_2,

with ``g`` and ``h`` small MLPs whose last layers start at zero (the untrained hybrid *is* the SPMe),
``s_q`` in K/s and ``s_v`` in V (defaults :data:`HEAT_SCALE_K_S`, :data:`VOLTAGE_SCALE_V`; larger ones for
data where the SPMe's gap is larger). Optional *history states* (``time_constants_s`` = ``(τ_1..τ_k)``, default
none) extend the state by the C-rate low-passed with each ``τ_k``,

.. math::

    \\dot\\xi_k = (I / Q_\\text{nom} - \\xi_k) / \\tau_k, \\qquad \\xi_k(0) = 0,

a stand-in for what the single particle cannot hold: how non-uniform the DFN's electrodes are after the recent
current (they relax over minutes after a high-rate step). They are part of the model's state (a
:class:`HybridState`), integrated by the same ROS2 step (their linear decay is solved exactly in the stage
solve). The heat closure only adds to the non-stiff part of the vector field, so the SPMe's stiff blocks
(particle and electrolyte diffusion, two-node thermal) and its ROS2 stage solves are used unchanged;
:func:`cellax.physics.simulate.simulate`, ``advance``, ``check_state`` and their statuses apply as they are
(a :class:`HybridState` shows the SPMe's fields). The networks run in their own dtype (float32 by default)
and their outputs are cast to the parameter set's.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from cellax.physics.model import AbstractCellModel
from cellax.physics.parameters import ParameterSet
from cellax.physics.particle import surface_value, volume_average
from cellax.physics.spme import SPMe, SPMeState

N_FEATURES = 11
VOLTAGE_SCALE_V = 0.01
HEAT_SCALE_K_S = 1e-4


class HybridState(eqx.Module):
    """The SPMe's state and the history states ``ξ`` (dimensionless C-rates); reads like an :class:`SPMeState`."""

    spme: SPMeState
    history: Float[Array, " k"]

    @property
    def c_neg(self):
        return self.spme.c_neg

    @property
    def c_pos(self):
        return self.spme.c_pos

    @property
    def c_e(self):
        return self.spme.c_e

    @property
    def core_temp_k(self):
        return self.spme.core_temp_k

    @property
    def surface_temp_k(self):
        return self.spme.surface_temp_k


def features(model: SPMe, params: ParameterSet, state: SPMeState, current_a) -> Float[Array, " 11"]:
    """Dimensionless inputs ``z(y, I)`` of the corrections (without the history states)."""
    s = params.scalars
    c_n, c_p = s["neg_max_conc_mol_m3"], s["pos_max_conc_mol_m3"]
    n, m, _ = model.x_counts
    c_e = state.c_e / s["electrolyte_init_conc_mol_m3"]
    return jnp.stack(
        [
            current_a / s["nominal_capacity_ah"],
            volume_average(model.particle, state.c_neg) / c_n,
            surface_value(state.c_neg) / c_n,
            volume_average(model.particle, state.c_pos) / c_p,
            surface_value(state.c_pos) / c_p,
            c_e[0] - 1.0,
            c_e[n + m // 2] - 1.0,
            c_e[-1] - 1.0,
            c_e[n - 1] - 1.0,
            (state.core_temp_k - 298.15) / 20.0,
            (state.surface_temp_k - 298.15) / 20.0,
        ]
    )


class Correction(eqx.Module):
    """An MLP ``z -> R^out`` whose last layer starts at zero."""

    mlp: eqx.nn.MLP

    def __init__(self, out_size: int, width: int, depth: int, key, dtype=jnp.float32, in_size: int = N_FEATURES):
        mlp = eqx.nn.MLP(in_size, out_size, width, depth, activation=jax.nn.tanh, key=key, dtype=dtype)
        last = mlp.layers[-1]
        last = eqx.tree_at(lambda layer: (layer.weight, layer.bias), last,
                           (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))
        self.mlp = eqx.tree_at(lambda m: m.layers[-1], mlp, last)

    def __call__(self, z: Float[Array, " f"], dtype) -> Array:
        weight_dtype = self.mlp.layers[0].weight.dtype
        return self.mlp(z.astype(weight_dtype)).astype(dtype)


class HybridSPMe(AbstractCellModel):
    """SPMe + heat closure in the vector field + voltage / anode-potential output correction (+ history states)."""

    spme: SPMe
    heat: Correction
    output: Correction
    voltage_scale_v: float = eqx.field(static=True, default=VOLTAGE_SCALE_V)
    heat_scale_k_s: float = eqx.field(static=True, default=HEAT_SCALE_K_S)
    time_constants_s: tuple[float, ...] = eqx.field(static=True, default=())

    def __init__(self, spme: SPMe | None = None, width: int = 32, depth: int = 2, *, key, dtype=jnp.float32,
                 voltage_scale_v: float = VOLTAGE_SCALE_V, heat_scale_k_s: float = HEAT_SCALE_K_S,
                 time_constants_s: tuple[float, ...] = ()):
        heat_key, output_key = jax.random.split(key)
        n_in = N_FEATURES + len(time_constants_s)
        self.spme = spme if spme is not None else SPMe()
        self.heat = Correction(1, width, depth, heat_key, dtype, n_in)
        self.output = Correction(2, width, depth, output_key, dtype, n_in)
        self.voltage_scale_v = float(voltage_scale_v)
        self.heat_scale_k_s = float(heat_scale_k_s)
        self.time_constants_s = tuple(float(t) for t in time_constants_s)

    @property
    def particle(self):
        return self.spme.particle

    @property
    def x_counts(self) -> tuple[int, int, int]:
        return self.spme.x_counts

    @property
    def pybamm_var_pts(self) -> dict[str, int]:
        return self.spme.pybamm_var_pts

    def cell_mesh(self, params: ParameterSet):
        return self.spme.cell_mesh(params)

    def _split(self, state):
        """``(SPMe state, history states)``; no history states: the state is the SPMe's."""
        return (state.spme, state.history) if self.time_constants_s else (state, None)

    def _join(self, spme_state: SPMeState, history):
        return HybridState(spme_state, history) if self.time_constants_s else spme_state

    def _z(self, params, state, current_a):
        spme_state, history = self._split(state)
        z = features(self.spme, params, spme_state, current_a)
        return z if history is None else jnp.concatenate([z, history.astype(z.dtype)])

    def initial_state(self, params: ParameterSet, soc, temp_k):
        """The SPMe's equilibrium state (history states at zero)."""
        spme_state = self.spme.initial_state(params, soc, temp_k)
        return self._join(spme_state, jnp.zeros(len(self.time_constants_s), params.dtype))

    def _rates(self, params, state, current_a, rates: SPMeState):
        """The heat closure added to the SPMe's rates, and the history states' rates."""
        extra = self.heat_scale_k_s * self.heat(self._z(params, state, current_a), params.dtype)[0]
        rates = eqx.tree_at(lambda r: r.core_temp_k, rates, rates.core_temp_k + extra)
        _, history = self._split(state)
        if history is None:
            return rates
        c_rate = current_a / params.scalars["nominal_capacity_ah"]
        return HybridState(rates, (c_rate - history) / jnp.asarray(self.time_constants_s, params.dtype))

    def _corrected(self, params, state, current_a, outputs: dict) -> dict:
        dv, du = self.voltage_scale_v * self.output(self._z(params, state, current_a), params.dtype)
        return {**outputs, "voltage_v": outputs["voltage_v"] + dv, "anode_potential_v": outputs["anode_potential_v"] + du}

    def vector_field(self, params: ParameterSet, state, current_a, ambient_temp_k):
        """The SPMe's vector field plus the heat closure on the core temperature (and the history states' rates)."""
        rates = self.spme.vector_field(params, self._split(state)[0], current_a, ambient_temp_k)
        return self._rates(params, state, current_a, rates)

    def outputs(self, params: ParameterSet, state, current_a, ambient_temp_k) -> dict[str, Array]:
        """The SPMe's signals with voltage and anode potential corrected."""
        return self._corrected(params, state, current_a,
                               self.spme.outputs(params, self._split(state)[0], current_a, ambient_temp_k))

    def rest_outputs(self, params: ParameterSet, state, ambient_temp_k) -> dict[str, Array]:
        """The SPMe's equilibrium signals at zero current, corrected as :meth:`outputs` corrects them."""
        zero = jnp.zeros((), params.dtype)
        return self._corrected(params, state, zero, self.spme.rest_outputs(params, self._split(state)[0], ambient_temp_k))

    def rates_and_outputs(self, params: ParameterSet, state, current_a, ambient_temp_k):
        """``(vector_field, outputs)`` from one evaluation of the SPMe's fields."""
        rates, outputs = self.spme.rates_and_outputs(params, self._split(state)[0], current_a, ambient_temp_k)
        return self._rates(params, state, current_a, rates), self._corrected(params, state, current_a, outputs)

    def stiff_operators(self, params: ParameterSet):
        """The SPMe's spectral diffusion operators."""
        return self.spme.stiff_operators(params)

    def solve_stiff(self, params: ParameterSet, operators, state, scale_s, rhs):
        """The SPMe's block-diagonal stage solve (the closures are non-stiff); the history states' linear decay
        ``J = -1/τ`` exactly: ``x = rhs / (1 + scale_s / τ)``."""
        spme_state, history = self._split(state)
        rhs_spme, rhs_history = self._split(rhs)
        solved = self.spme.solve_stiff(params, operators, spme_state, scale_s, rhs_spme)
        if history is None:
            return solved
        return HybridState(solved, rhs_history / (1 + scale_s / jnp.asarray(self.time_constants_s, params.dtype)))

    def electrolyte_depleted(self, state) -> Array:
        """The SPMe's check."""
        return self.spme.electrolyte_depleted(self._split(state)[0])
