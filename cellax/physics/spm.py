"""Single-particle model (SPM) with a two-node lumped thermal model: the cell's vector field.

State (a PyTree, :class:`SPMState`): shell concentrations of one representative
particle per electrode, the core (volume-averaged) temperature and the surface
(casing) temperature. With ``i = I / (n_\\parallel A)`` the current density,
``a_k = 3 \\varepsilon_k / R_k`` and ``j_n = i / (a_n L_n)``, ``j_p = -i / (a_p L_p)``:

.. math::

    \\partial_t c_k &= \\text{Fickian diffusion, surface flux } j_k R_k / F
        \\quad (:mod:`cellax.physics.particle`),\\\\
    \\eta_k &= \\frac{2 R T}{F} \\operatorname{arcsinh}\\frac{j_k}{2 j_{0,k}(c_{e,0}, c_k^s, T)},\\\\
    V &= U_p(c_p^s, T) - U_n(c_n^s, T) + \\eta_p - \\eta_n,\\\\
    C_\\text{cell}(T) \\dot T &= I(\\eta_n - \\eta_p) + I T (\\partial_T U_n - \\partial_T U_p)
        + Q_\\text{cc} - h A_\\text{cool} (T - T_s),\\\\
    C_\\text{case} \\dot T_s &= h A_\\text{cool} (T - T_s) - (T_s - T_\\text{amb}) / R_\\text{env},

with ``Q_cc = n_\\parallel A i^2 (L_{cc,n}/\\sigma_{cc,n} + L_{cc,p}/\\sigma_{cc,p})`` the
current-collector Joule heat. These are PyBaMM's SPM equations with options
``{"thermal": "lumped", "surface temperature": "lumped"}``; with the same particle
mesh they are the same discrete equations (tests compare the vector fields).
Float64 throughout.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from cellax.physics.model import AbstractCellModel
from cellax.physics.parameters import ParameterSet, initial_stoichiometries
from cellax.physics.particle import (
    FARADAY,
    SphericalMesh,
    diffusion_rhs,
    shell_stiffness,
    surface_value,
    volume_average,
)
from cellax.physics.stepping import SpectralOperator, StiffModes
from cellax.physics.thermal import collector_heat_w, two_node_modes, two_node_rates
from cellax.signals import KELVIN

GAS_CONSTANT = 8.314462618


class SPMState(eqx.Module):
    """Particle shell concentrations (mol/m³) and core/surface temperatures (K)."""

    c_neg: Float[Array, " n"]
    c_pos: Float[Array, " n"]
    core_temp_k: Float[Array, ""]
    surface_temp_k: Float[Array, ""]


def particle_rates(mesh: SphericalMesh, params: ParameterSet, c_neg, c_pos, j_neg, j_pos, temp_k):
    """Concentration rates of both particles for interfacial current densities ``j`` (A/m²)."""
    s = params.scalars
    rates = []
    for k, c, j in (("neg", c_neg, j_neg), ("pos", c_pos, j_pos)):
        radius = s[f"{k}_particle_radius_m"]
        diffusivity = getattr(params, f"{k}_diffusivity")(c / s[f"{k}_max_conc_mol_m3"], temp_k)
        rates.append(diffusion_rhs(mesh, c, diffusivity, j * radius / FARADAY, radius))
    return tuple(rates)


def particle_stiffness(params: ParameterSet, c_neg, c_pos, temp_k):
    """``max D / R^2`` (1/s) of both particles: the coefficient of their stiff operators."""
    s = params.scalars
    return tuple(
        jnp.max(getattr(params, f"{k}_diffusivity")(c / s[f"{k}_max_conc_mol_m3"], temp_k)) / s[f"{k}_particle_radius_m"] ** 2
        for k, c in (("neg", c_neg), ("pos", c_pos))
    )


def particle_and_thermal_modes(params: ParameterSet, particle: SpectralOperator, state) -> StiffModes:
    """The stiff blocks every model has, on ``(c_neg, c_pos, core_temp_k, surface_temp_k)`` tuples: each
    particle's ``(max D/R^2) L`` (:func:`particle_stiffness`) and the thermal block (:func:`two_node_modes`)."""
    scale_neg, scale_pos = particle_stiffness(params, state.c_neg, state.c_pos, state.core_temp_k)
    thermal = two_node_modes(params, state.core_temp_k)

    def to_modes(x):
        return (particle.to_modes(x[0]), particle.to_modes(x[1]), *thermal.to_modes(x[2:]))

    def from_modes(m):
        return (particle.from_modes(m[0]), particle.from_modes(m[1]), *thermal.from_modes(m[2:]))

    eigenvalues = (scale_neg * particle.eigenvalues, scale_pos * particle.eigenvalues, *thermal.eigenvalues)
    return StiffModes(eigenvalues, to_modes, from_modes)


class SPM(AbstractCellModel):
    """The SPM on a particle mesh of ``n_shells`` shells per electrode."""

    mesh: SphericalMesh

    def __init__(self, n_shells: int = 20):
        self.mesh = SphericalMesh(n_shells)

    def initial_state(self, params: ParameterSet, soc, temp_k) -> SPMState:
        """Uniform particles at state of charge ``soc``, both nodes at ``temp_k``."""
        s = params.scalars
        x, y = initial_stoichiometries(params, soc)
        ones = jnp.ones(self.mesh.n, dtype=params.dtype)
        temp_k = jnp.asarray(temp_k, dtype=params.dtype)
        return SPMState(x * s["neg_max_conc_mol_m3"] * ones, y * s["pos_max_conc_mol_m3"] * ones, temp_k, temp_k)

    def _kinetics(self, params: ParameterSet, state: SPMState, current_a):
        """Interfacial current densities, surface stoichiometries and overpotentials of both electrodes."""
        s = params.scalars
        i = current_a / (s["n_electrodes_parallel"] * s["electrode_area_m2"])
        temp = state.core_temp_k
        c_e = s["electrolyte_init_conc_mol_m3"]
        out = {}
        for k, sign, c in (("neg", 1.0, state.c_neg), ("pos", -1.0, state.c_pos)):
            c_max = s[f"{k}_max_conc_mol_m3"]
            area = 3 * s[f"{k}_active_frac"] / s[f"{k}_particle_radius_m"]
            j = sign * i / (area * s[f"{k}_thickness_m"])
            c_surf = surface_value(c)
            j0 = getattr(params, f"{k}_exchange_current")(c_e, c_surf, c_max, temp)
            eta = 2 * GAS_CONSTANT * temp / FARADAY * jnp.arcsinh(j / (2 * j0))
            out[k] = (j, c_surf / c_max, eta)
        return i, out

    def vector_field(self, params: ParameterSet, state: SPMState, current_a, ambient_temp_k) -> SPMState:
        """Time derivative of ``state`` at current ``current_a`` (A, + discharge) and ambient (K)."""
        return self._rates(params, state, self._kinetics(params, state, current_a), current_a, ambient_temp_k)

    def outputs(self, params: ParameterSet, state: SPMState, current_a, ambient_temp_k) -> dict[str, Array]:
        """Canonical signals (DESIGN.md names) of ``state``; temperatures in °C."""
        return self._outputs(params, state, self._kinetics(params, state, current_a), current_a, ambient_temp_k)

    def rates_and_outputs(self, params: ParameterSet, state: SPMState, current_a, ambient_temp_k):
        """``(vector_field, outputs)`` from one evaluation of the kinetics."""
        kinetics = self._kinetics(params, state, current_a)
        return (
            self._rates(params, state, kinetics, current_a, ambient_temp_k),
            self._outputs(params, state, kinetics, current_a, ambient_temp_k),
        )

    def stiff_operators(self, params: ParameterSet) -> dict[str, SpectralOperator]:
        """The uniform-coefficient particle diffusion operator (see :mod:`cellax.physics.stepping`)."""
        return {"particle": SpectralOperator(*shell_stiffness(self.mesh), dtype=params.dtype)}

    def stiff_modes(self, params: ParameterSet, operators, state: SPMState) -> StiffModes:
        """Particle diffusion ``(max D/R^2) L`` per electrode and the two-node thermal block."""
        modes = particle_and_thermal_modes(params, operators["particle"], state)
        return StiffModes(
            SPMState(*modes.eigenvalues),
            lambda x: SPMState(*modes.to_modes((x.c_neg, x.c_pos, x.core_temp_k, x.surface_temp_k))),
            lambda m: SPMState(*modes.from_modes((m.c_neg, m.c_pos, m.core_temp_k, m.surface_temp_k))),
        )

    def _rates(self, params: ParameterSet, state: SPMState, kinetics, current_a, ambient_temp_k) -> SPMState:
        temp = state.core_temp_k
        i, kin = kinetics
        rate_neg, rate_pos = particle_rates(self.mesh, params, state.c_neg, state.c_pos, kin["neg"][0], kin["pos"][0], temp)
        (_, sto_n, eta_n), (_, sto_p, eta_p) = kin["neg"], kin["pos"]
        entropic = params.neg_entropic_change(sto_n) - params.pos_entropic_change(sto_p)
        heat_w = current_a * (eta_n - eta_p) + current_a * temp * entropic + collector_heat_w(params, i)
        core_rate, surface_rate = two_node_rates(params, heat_w, temp, state.surface_temp_k, ambient_temp_k)
        return SPMState(rate_neg, rate_pos, core_rate, surface_rate)

    def _outputs(self, params: ParameterSet, state: SPMState, kinetics, current_a, ambient_temp_k) -> dict[str, Array]:
        s = params.scalars
        temp = state.core_temp_k
        _, kin = kinetics
        (_, sto_n, eta_n), (_, sto_p, eta_p) = kin["neg"], kin["pos"]
        u_n, u_p = params.neg_ocp(sto_n, temp), params.pos_ocp(sto_p, temp)
        x = volume_average(self.mesh, state.c_neg) / s["neg_max_conc_mol_m3"]
        y = volume_average(self.mesh, state.c_pos) / s["pos_max_conc_mol_m3"]
        return {
            "current_a": jnp.asarray(current_a, dtype=params.dtype),
            "voltage_v": u_p - u_n + eta_p - eta_n,
            "ocv_v": params.pos_ocp(y, temp) - params.neg_ocp(x, temp),
            "soc": (x - s["x_0"]) / (s["x_100"] - s["x_0"]),
            "core_temp_degc": temp - KELVIN,
            "surface_temp_degc": state.surface_temp_k - KELVIN,
            "ambient_temp_degc": jnp.asarray(ambient_temp_k, dtype=params.dtype) - KELVIN,
            "anode_potential_v": u_n + eta_n,
        }
