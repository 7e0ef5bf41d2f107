"""The hybrid cell model: cellax's SPMe with learned corrections inside it (Equinox modules).

Two corrections, both functions of the model's *state* ``y`` and *input* ``I`` only (never of
measured history), through dimensionless features ``z(y, I)`` (C-rate, average and surface
stoichiometries of both electrodes, electrolyte concentration at both current collectors and in
the separator relative to its initial value, both temperatures):

.. math::

    \\dot T_\\text{core} = f^\\text{SPMe}_T(y, I) + s_q\\, g_\\theta(z), \\qquad
    V = V^\\text{SPMe}(y, I) + s_v\\, h_\\phi(z)_1, \\qquad
    U_a = U_a^\\text{SPMe}(y, I) + s_v\\, h_\\phi(z)_2,

with ``g`` and ``h`` small MLPs whose last layers start at zero (the untrained hybrid *is* the SPMe),
``s_q`` in K/s and ``s_v`` in V. The heat closure only adds to the non-stiff part of the vector field,
so the SPMe's stiff blocks (particle and electrolyte diffusion, two-node thermal) and its ROS2 stage
solves are used unchanged, and the state is the SPMe's: :func:`cellax.physics.simulate.simulate`,
``advance``, ``check_state`` and their statuses apply as they are. The networks run in their own
dtype (float32 by default) and their outputs are cast to the parameter set's.
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


def features(model: SPMe, params: ParameterSet, state: SPMeState, current_a) -> Float[Array, " 11"]:
    """Dimensionless inputs ``z(y, I)`` of the corrections."""
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

    def __init__(self, out_size: int, width: int, depth: int, key, dtype=jnp.float32):
        mlp = eqx.nn.MLP(N_FEATURES, out_size, width, depth, activation=jax.nn.tanh, key=key, dtype=dtype)
        last = mlp.layers[-1]
        last = eqx.tree_at(lambda layer: (layer.weight, layer.bias), last,
                           (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))
        self.mlp = eqx.tree_at(lambda m: m.layers[-1], mlp, last)

    def __call__(self, z: Float[Array, " f"], dtype) -> Array:
        weight_dtype = self.mlp.layers[0].weight.dtype
        return self.mlp(z.astype(weight_dtype)).astype(dtype)


class HybridSPMe(AbstractCellModel):
    """SPMe + heat closure in the vector field + voltage / anode-potential output correction."""

    spme: SPMe
    heat: Correction
    output: Correction

    def __init__(self, spme: SPMe | None = None, width: int = 32, depth: int = 2, *, key, dtype=jnp.float32):
        heat_key, output_key = jax.random.split(key)
        self.spme = spme if spme is not None else SPMe()
        self.heat = Correction(1, width, depth, heat_key, dtype)
        self.output = Correction(2, width, depth, output_key, dtype)

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

    def initial_state(self, params: ParameterSet, soc, temp_k) -> SPMeState:
        """The SPMe's equilibrium state."""
        return self.spme.initial_state(params, soc, temp_k)

    def _heat_closure(self, params, state, current_a, rates: SPMeState) -> SPMeState:
        z = features(self.spme, params, state, current_a)
        extra = HEAT_SCALE_K_S * self.heat(z, params.dtype)[0]
        return eqx.tree_at(lambda r: r.core_temp_k, rates, rates.core_temp_k + extra)

    def _corrected(self, params, state, current_a, outputs: dict) -> dict:
        z = features(self.spme, params, state, current_a)
        dv, du = VOLTAGE_SCALE_V * self.output(z, params.dtype)
        return {**outputs, "voltage_v": outputs["voltage_v"] + dv, "anode_potential_v": outputs["anode_potential_v"] + du}

    def vector_field(self, params: ParameterSet, state: SPMeState, current_a, ambient_temp_k) -> SPMeState:
        """The SPMe's vector field plus the heat closure on the core temperature."""
        rates = self.spme.vector_field(params, state, current_a, ambient_temp_k)
        return self._heat_closure(params, state, current_a, rates)

    def outputs(self, params: ParameterSet, state: SPMeState, current_a, ambient_temp_k) -> dict[str, Array]:
        """The SPMe's signals with voltage and anode potential corrected."""
        return self._corrected(params, state, current_a, self.spme.outputs(params, state, current_a, ambient_temp_k))

    def rest_outputs(self, params: ParameterSet, state: SPMeState, ambient_temp_k) -> dict[str, Array]:
        """The SPMe's equilibrium signals at zero current, corrected as :meth:`outputs` corrects them."""
        zero = jnp.zeros((), params.dtype)
        return self._corrected(params, state, zero, self.spme.rest_outputs(params, state, ambient_temp_k))

    def rates_and_outputs(self, params: ParameterSet, state: SPMeState, current_a, ambient_temp_k):
        """``(vector_field, outputs)`` from one evaluation of the SPMe's fields."""
        rates, outputs = self.spme.rates_and_outputs(params, state, current_a, ambient_temp_k)
        return (self._heat_closure(params, state, current_a, rates),
                self._corrected(params, state, current_a, outputs))

    def stiff_operators(self, params: ParameterSet):
        """The SPMe's spectral diffusion operators."""
        return self.spme.stiff_operators(params)

    def solve_stiff(self, params: ParameterSet, operators, state: SPMeState, scale_s, rhs: SPMeState) -> SPMeState:
        """The SPMe's block-diagonal stage solve (the closures are non-stiff)."""
        return self.spme.solve_stiff(params, operators, state, scale_s, rhs)

    def electrolyte_depleted(self, state: SPMeState) -> Array:
        """The SPMe's check."""
        return self.spme.electrolyte_depleted(state)
