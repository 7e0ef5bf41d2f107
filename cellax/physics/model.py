"""The cell-model contract: what :mod:`cellax.physics.stepping` and :mod:`cellax.physics.simulate` rely on.

A cell model is an Equinox module holding only its discretisation (meshes, static
sizes); parameters arrive as a :class:`~cellax.physics.parameters.ParameterSet` in
every call, so ``vmap``/``grad`` over parameters never rebuilds the model. Its state
is an Equinox module of arrays with at least the fields ``c_neg``, ``c_pos``
(particle shell concentrations, mol/m³), ``core_temp_k`` and ``surface_temp_k`` (K).

The model is the ODE ``dy/dt = f(y; I(t), T_amb)``, split for the linearly implicit
solver into a stiff linear part ``J`` (diffusion with a uniform coefficient, the
thermal network) and the rest (see :mod:`cellax.physics.stepping`).
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from cellax.physics.parameters import ParameterSet
from cellax.physics.stepping import StiffModes


class AbstractCellModel(eqx.Module):
    """A cell model: implemented by :class:`~cellax.physics.spm.SPM` and :class:`~cellax.physics.spme.SPMe`."""

    @abc.abstractmethod
    def initial_state(self, params: ParameterSet, soc, temp_k):
        """Equilibrium state at state of charge ``soc``, both temperature nodes at ``temp_k``."""

    @abc.abstractmethod
    def vector_field(self, params: ParameterSet, state, current_a, ambient_temp_k):
        """``f(y)``: the time derivative of ``state`` (same PyTree) at ``current_a`` (A, + discharge)."""

    @abc.abstractmethod
    def outputs(self, params: ParameterSet, state, current_a, ambient_temp_k) -> dict[str, Array]:
        """The canonical signals (:mod:`cellax.signals`) of ``state``; temperatures in °C."""

    def rest_outputs(self, params: ParameterSet, state, ambient_temp_k) -> dict[str, Array]:
        """:meth:`outputs` at zero current of a cell in equilibrium (as :meth:`initial_state` makes it); a model
        may override it with a cheaper form (the environment evaluates it at every reset)."""
        return self.outputs(params, state, jnp.zeros((), params.dtype), ambient_temp_k)

    @abc.abstractmethod
    def rates_and_outputs(self, params: ParameterSet, state, current_a, ambient_temp_k):
        """``(vector_field, outputs)`` sharing one evaluation of the model's algebra."""

    @abc.abstractmethod
    def stiff_operators(self, params: ParameterSet):
        """The diagonalised stiff blocks, computed once per parameter set (a PyTree of ``SpectralOperator``)."""

    @abc.abstractmethod
    def stiff_modes(self, params: ParameterSet, operators, state) -> StiffModes:
        """The block-diagonal stiff Jacobian ``J(state)`` in modal form (what both solvers of
        :mod:`cellax.physics.stepping` use)."""

    def solve_stiff(self, params: ParameterSet, operators, state, scale_s, rhs):
        """``x`` with ``(I - scale_s J(state)) x = rhs``."""
        return self.stiff_modes(params, operators, state).apply(lambda lam: 1.0 / (1.0 - scale_s * lam), rhs)

    def electrolyte_depleted(self, state) -> Array:
        """Whether the electrolyte concentration reached zero somewhere (never, for a model without one)."""
        return jnp.array(False)
