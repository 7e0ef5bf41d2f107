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
current (they relax over minutes after a high-rate step). Optional *latent states* (``latent_time_constants_s``
= ``(τ_1..τ_m)``, default none) relax towards a learned target instead,

.. math::

    \\dot\\zeta_j = (\\tanh r_\\psi(z)_j - \\zeta_j) / \\tau_j, \\qquad \\zeta_j(0) = 0,

(``r`` an MLP like ``g``, last layer at zero), and ``learn_time_constants`` makes every ``τ`` trainable
(``τ = exp(log τ)``, so it stays positive). Both are part of the model's state (a :class:`HybridState`),
integrated by the same ROS2 step (their linear decay is solved exactly in the stage solve, the target
explicitly). ``fit_parameters`` (default none) makes chosen positive physics parameters trainable as
log-multipliers, ``θ_j = θ_j^0 m_j exp(λ_j)`` with ``λ_j(0) = 0`` and the initial multiplier ``m_j`` from the
config (1, or e.g. ``cellax fit``'s values): the SPMe's own physics is fitted jointly with the corrections.
``heat_times_current`` (default off) makes the heat closure ``s_q (I/Q_nom) g_θ(z)``: no heat at rest, where the
DFN's and the SPMe's heat agree, and of the current's order like the ohmic and reaction heat it corrects.
``voltage_heat`` (default off) adds the heat of the voltage correction itself, ``-I s_v h_φ(z)_1 / C_core(T)``: the
irreversible heat ``I (U - V)`` of the corrected voltage (energy-consistent; no new parameters).
``redistribution_scale_1_s`` (default none) adds a closure on the particle dynamics: a learned, lithium-conserving
transfer between each particle's surface shell and its interior,

.. math::

    \\dot c_i = \\dot c^\\text{SPMe}_i + c_{i,\\max}\\, s_c\\, q_\\chi(z)_i\\, w, \\qquad
    w = \\mathbf e_\\text{surf} - \\frac{W_\\text{surf}}{\\sum_k W_k} \\mathbf 1, \\qquad \\textstyle\\sum_k W_k w_k = 0,

for each electrode ``i`` (shells ``c_i``, ``W`` the shell volumes, ``q`` an MLP like ``g``, last layer at zero, ``s_c`` in 1/s):
what the DFN's non-uniform reaction does to the mean surface stoichiometry, as a state of the model (it decays by
the particle's own diffusion) rather than an output offset.
The heat closure only adds to the non-stiff part of the vector field, so the SPMe's stiff blocks (particle and
electrolyte diffusion, two-node thermal) and its ROS2 stage solves are used unchanged;
:func:`cellax.physics.simulate.simulate`, ``advance``, ``check_state`` and their statuses apply as they are
(a :class:`HybridState` shows the SPMe's fields). The networks run in their own dtype (float32 by default)
and their outputs are cast to the parameter set's.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from cellax.physics.dfn import DFN, DFNState
from cellax.physics.model import AbstractCellModel
from cellax.physics.parameters import ParameterSet
from cellax.physics.particle import SphericalMesh, surface_value, volume_average
from cellax.physics.spme import SPMe, SPMeState
from cellax.physics.stepping import StiffModes

N_FEATURES = 11
VOLTAGE_SCALE_V = 0.01
HEAT_SCALE_K_S = 1e-4
FITTABLE = ("neg_diffusivity_scale", "pos_diffusivity_scale", "neg_exchange_current_scale", "pos_exchange_current_scale",
            "electrolyte_diffusivity_scale", "electrolyte_conductivity_scale", "cell_heat_capacity_scale",
            "heat_transfer_coeff_w_m2k", "environment_thermal_resistance_k_w", "casing_heat_capacity_j_k")
"""Positive physics parameters the hybrid can fit jointly with its corrections (``fit_parameters``)."""


class HybridState(eqx.Module):
    """The physics model's state and the history states ``ξ`` (dimensionless C-rates, then the latent ``ζ``); reads
    like an :class:`SPMeState`."""

    spme: SPMeState | DFNState
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


def features(model: SPMe | DFN, params: ParameterSet, state: SPMeState | DFNState, current_a) -> Float[Array, " 11"]:
    """Dimensionless inputs ``z(y, I)`` of the corrections (without the history states); with the DFN as the
    backbone the particle stoichiometries are means over its particles."""
    s = params.scalars
    c_n, c_p = s["neg_max_conc_mol_m3"], s["pos_max_conc_mol_m3"]
    n, m, _ = model.x_counts
    c_e = state.c_e / s["electrolyte_init_conc_mol_m3"]
    return jnp.stack(
        [
            current_a / s["nominal_capacity_ah"],
            jnp.mean(volume_average(model.particle, state.c_neg)) / c_n,
            jnp.mean(surface_value(state.c_neg)) / c_n,
            jnp.mean(volume_average(model.particle, state.c_pos)) / c_p,
            jnp.mean(surface_value(state.c_pos)) / c_p,
            c_e[0] - 1.0,
            c_e[n + m // 2] - 1.0,
            c_e[-1] - 1.0,
            c_e[n - 1] - 1.0,
            (state.core_temp_k - 298.15) / 20.0,
            (state.surface_temp_k - 298.15) / 20.0,
        ]
    )


def surface_transfer(mesh: SphericalMesh, dtype) -> Float[Array, " n"]:
    """``w = e_surf - W_surf / ΣW``: moves lithium into the surface shell from the whole particle, ``Σ W w = 0``."""
    volumes = mesh.shell_volumes.astype(dtype)
    return jnp.zeros_like(volumes).at[-1].set(1.0) - volumes[-1] / jnp.sum(volumes)


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
    """SPMe + heat closure in the vector field + voltage / anode-potential output correction (+ history and latent
    states, + jointly fitted physics parameters, + the particle closure).

    The physics model (field ``spme``, also :attr:`backbone`) is the SPMe by default, or the coarse
    :class:`~cellax.physics.dfn.DFN`: the corrections are the same, on its state and outputs."""

    spme: SPMe | DFN
    heat: Correction
    output: Correction
    latent: Correction | None
    log_multipliers: Array | None
    log_time_constants: Array | None
    voltage_scale_v: float = eqx.field(static=True, default=VOLTAGE_SCALE_V)
    heat_scale_k_s: float = eqx.field(static=True, default=HEAT_SCALE_K_S)
    time_constants_s: tuple[float, ...] = eqx.field(static=True, default=())
    latent_time_constants_s: tuple[float, ...] = eqx.field(static=True, default=())
    fit_parameters: tuple[tuple[str, float], ...] = eqx.field(static=True, default=())
    heat_times_current: bool = eqx.field(static=True, default=False)
    voltage_heat: bool = eqx.field(static=True, default=False)
    redistribution: Correction | None = None
    redistribution_scale_1_s: float | None = eqx.field(static=True, default=None)

    def __init__(self, spme: SPMe | DFN | None = None, width: int = 32, depth: int = 2, *, key, dtype=jnp.float32,
                 voltage_scale_v: float = VOLTAGE_SCALE_V, heat_scale_k_s: float = HEAT_SCALE_K_S,
                 time_constants_s: tuple[float, ...] = (), latent_time_constants_s: tuple[float, ...] = (),
                 learn_time_constants: bool = False, fit_parameters: dict[str, float] | None = None,
                 heat_times_current: bool = False, voltage_heat: bool = False,
                 redistribution_scale_1_s: float | None = None):
        heat_key, output_key, latent_key = jax.random.split(key, 3)
        unknown = sorted(set(fit_parameters or {}) - set(FITTABLE))
        if unknown:
            raise ValueError(f"fit_parameters: cannot fit {unknown}; fittable: {list(FITTABLE)}")
        n_in = N_FEATURES + len(time_constants_s) + len(latent_time_constants_s)
        self.spme = spme if spme is not None else SPMe()
        self.heat = Correction(1, width, depth, heat_key, dtype, n_in)
        self.output = Correction(2, width, depth, output_key, dtype, n_in)
        self.latent = Correction(len(latent_time_constants_s), width, depth, latent_key, dtype, n_in) \
            if latent_time_constants_s else None
        self.voltage_scale_v = float(voltage_scale_v)
        self.heat_scale_k_s = float(heat_scale_k_s)
        self.time_constants_s = tuple(float(t) for t in time_constants_s)
        self.latent_time_constants_s = tuple(float(t) for t in latent_time_constants_s)
        taus = self.time_constants_s + self.latent_time_constants_s
        if learn_time_constants and not taus:
            raise ValueError("learn_time_constants needs time_constants_s or latent_time_constants_s")
        self.log_time_constants = jnp.log(jnp.asarray(taus, dtype)) if learn_time_constants else None
        self.fit_parameters = tuple((k, float(v)) for k, v in (fit_parameters or {}).items())
        self.log_multipliers = jnp.zeros(len(self.fit_parameters), dtype) if self.fit_parameters else None
        self.heat_times_current = bool(heat_times_current)
        self.voltage_heat = bool(voltage_heat)
        self.redistribution_scale_1_s = None if redistribution_scale_1_s is None else float(redistribution_scale_1_s)
        self.redistribution = None if redistribution_scale_1_s is None else Correction(  # its own key: the others' stay
            2, width, depth, jax.random.fold_in(key, 3), dtype, n_in)

    @property
    def backbone(self) -> SPMe | DFN:
        """The physics model the corrections sit in."""
        return self.spme

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

    @property
    def n_history(self) -> int:
        return len(self.time_constants_s) + len(self.latent_time_constants_s)

    def physics(self, params: ParameterSet) -> ParameterSet:
        """``params`` with the fitted parameters applied: ``θ_j m_j exp(λ_j)`` (``params`` itself when none)."""
        if not self.fit_parameters:
            return params
        factors = jnp.exp(self.log_multipliers.astype(params.dtype))
        return params.with_values({name: params.scalars[name] * m * factors[j]
                                   for j, (name, m) in enumerate(self.fit_parameters)})

    def learned(self, params: ParameterSet) -> dict:
        """The trained physics for reports: fitted parameter values and their multipliers ``m_j exp(λ_j)`` of
        ``params``, and the time constants (s) where they are trained."""
        fitted, out = self.physics(params), {}
        if self.fit_parameters:
            out["fitted_parameters"] = {name: float(fitted.scalars[name]) for name, _ in self.fit_parameters}
            out["multipliers"] = {name: float(fitted.scalars[name] / params.scalars[name]) for name, _ in self.fit_parameters}
        if self.log_time_constants is not None:
            taus = [float(t) for t in self._time_constants(params.dtype)]
            out["time_constants_s"] = taus[: len(self.time_constants_s)]
            out["latent_time_constants_s"] = taus[len(self.time_constants_s):]
        return out

    def _time_constants(self, dtype):
        if self.log_time_constants is None:
            return jnp.asarray(self.time_constants_s + self.latent_time_constants_s, dtype)
        return jnp.exp(self.log_time_constants.astype(dtype))

    def _split(self, state):
        """``(SPMe state, history states)``; no history states: the state is the SPMe's."""
        return (state.spme, state.history) if self.n_history else (state, None)

    def _join(self, spme_state: SPMeState, history):
        return HybridState(spme_state, history) if self.n_history else spme_state

    def _z(self, params, state, current_a):
        spme_state, history = self._split(state)
        z = features(self.spme, params, spme_state, current_a)
        return z if history is None else jnp.concatenate([z, history.astype(z.dtype)])

    def initial_state(self, params: ParameterSet, soc, temp_k):
        """The SPMe's equilibrium state (history and latent states at zero)."""
        spme_state = self.spme.initial_state(self.physics(params), soc, temp_k)
        return self._join(spme_state, jnp.zeros(self.n_history, params.dtype))

    def _rates(self, params, state, current_a, z, rates: SPMeState):
        """The heat closure added to the SPMe's rates, and the history and latent states' rates (``z``: the
        corrections' inputs at ``state`` and ``current_a``)."""
        c_rate = current_a / params.scalars["nominal_capacity_ah"]
        extra = self.heat_scale_k_s * self.heat(z, params.dtype)[0] * (c_rate if self.heat_times_current else 1.0)
        if self.voltage_heat:  # the corrected overpotential dissipates: heat I (U - V) changes by -I dV
            dv = self.voltage_scale_v * self.output(z, params.dtype)[0]
            extra = extra - current_a * dv / params.cell_heat_capacity(self._split(state)[0].core_temp_k)
        rates = eqx.tree_at(lambda r: r.core_temp_k, rates, rates.core_temp_k + extra)
        if self.redistribution is not None:
            q = self.redistribution_scale_1_s * self.redistribution(z, params.dtype)
            w = surface_transfer(self.spme.particle, params.dtype)
            w = w.reshape(w.shape + (1,) * (rates.c_neg.ndim - 1))  # the same transfer in each of a DFN's particles
            s = params.scalars
            rates = eqx.tree_at(lambda r: (r.c_neg, r.c_pos), rates,
                                (rates.c_neg + s["neg_max_conc_mol_m3"] * q[0] * w,
                                 rates.c_pos + s["pos_max_conc_mol_m3"] * q[1] * w))
        _, history = self._split(state)
        if history is None:
            return rates
        target = jnp.full(len(self.time_constants_s), c_rate, params.dtype)
        if self.latent is not None:
            target = jnp.concatenate([target, jnp.tanh(self.latent(z, params.dtype))])
        return HybridState(rates, (target - history) / self._time_constants(params.dtype))

    def _corrected(self, params, z, outputs: dict) -> dict:
        dv, du = self.voltage_scale_v * self.output(z, params.dtype)
        return {**outputs, "voltage_v": outputs["voltage_v"] + dv, "anode_potential_v": outputs["anode_potential_v"] + du}

    def vector_field(self, params: ParameterSet, state, current_a, ambient_temp_k):
        """The SPMe's vector field plus the heat closure on the core temperature (and the history states' rates)."""
        params = self.physics(params)
        rates = self.spme.vector_field(params, self._split(state)[0], current_a, ambient_temp_k)
        return self._rates(params, state, current_a, self._z(params, state, current_a), rates)

    def outputs(self, params: ParameterSet, state, current_a, ambient_temp_k) -> dict[str, Array]:
        """The SPMe's signals with voltage and anode potential corrected."""
        params = self.physics(params)
        return self._corrected(params, self._z(params, state, current_a),
                               self.spme.outputs(params, self._split(state)[0], current_a, ambient_temp_k))

    def rest_outputs(self, params: ParameterSet, state, ambient_temp_k) -> dict[str, Array]:
        """The SPMe's equilibrium signals at zero current, corrected as :meth:`outputs` corrects them."""
        params, zero = self.physics(params), jnp.zeros((), params.dtype)
        return self._corrected(params, self._z(params, state, zero),
                               self.spme.rest_outputs(params, self._split(state)[0], ambient_temp_k))

    def rates_and_outputs(self, params: ParameterSet, state, current_a, ambient_temp_k):
        """``(vector_field, outputs)`` from one evaluation of the SPMe's fields."""
        params = self.physics(params)
        rates, outputs = self.spme.rates_and_outputs(params, self._split(state)[0], current_a, ambient_temp_k)
        z = self._z(params, state, current_a)
        return self._rates(params, state, current_a, z, rates), self._corrected(params, z, outputs)

    def stiff_operators(self, params: ParameterSet):
        """The SPMe's spectral diffusion operators (uniform-coefficient: the fitted rate scales enter the solve)."""
        return self.spme.stiff_operators(self.physics(params))

    def stiff_modes(self, params: ParameterSet, operators, state) -> StiffModes:
        """The SPMe's stiff blocks (the closures are non-stiff) and the history states' linear decay
        ``J = -1/τ``, exactly (already modal)."""
        params = self.physics(params)
        spme_state, history = self._split(state)
        modes = self.spme.stiff_modes(params, operators, spme_state)
        if history is None:
            return modes
        decay = jnp.broadcast_to(-1.0 / self._time_constants(params.dtype), history.shape)
        return StiffModes(HybridState(modes.eigenvalues, decay),
                          lambda x: HybridState(modes.to_modes(x.spme), x.history),
                          lambda m: HybridState(modes.from_modes(m.spme), m.history))

    def solve_stiff(self, params: ParameterSet, operators, state, scale_s, rhs):
        """The backbone's own solve on the physics part (a ``DFN(implicit_reaction=True)``'s reaction coupling
        included; the closures stay explicit), and :meth:`stiff_modes`' exact decay on the history states."""
        physics_state, history = self._split(state)
        physics_rhs, history_rhs = self._split(rhs)
        solved = self.spme.solve_stiff(self.physics(params), operators, physics_state, scale_s, physics_rhs)
        if history is None:
            return solved
        decay = -1.0 / self._time_constants(params.dtype)
        return HybridState(solved, 1.0 / (1.0 - scale_s * decay) * history_rhs)

    def electrolyte_depleted(self, state) -> Array:
        """The SPMe's check."""
        return self.spme.electrolyte_depleted(self._split(state)[0])
