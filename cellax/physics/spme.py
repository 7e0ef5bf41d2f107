"""Single-particle model with electrolyte (SPMe), two-node lumped thermal: PyBaMM's composite SPMe.

Adds to the :mod:`cellax.physics.spm` state the electrolyte concentration ``c_e(x)``
on a finite-volume mesh across negative electrode, separator and positive
electrode (:mod:`cellax.physics.electrolyte`). With ``i`` the current density,
porosity ``\\varepsilon``, transport efficiency ``\\tau = \\varepsilon^{b}`` and the
leading-order electrolyte current ``i_e(x)`` (``i x / L_n``, ``i``, ``i (L - x) / L_p``):

.. math::

    \\varepsilon \\partial_t c_e = -\\partial_x\\!\\left(-\\tau D_e(c_e, T) \\partial_x c_e
        + t_+(c_e, T)\\, i_e / F\\right) + a j / F, \\qquad \\partial_x c_e = 0 \\text{ at } x = 0, L.

Kinetics are evaluated node by node with the local ``c_e`` (Butler–Volmer,
uniform interfacial current ``j``); the voltage is the composite expansion

.. math::

    V = \\overline{U_p + \\eta_p} - \\overline{U_n + \\eta_n}
        + \\chi \\tfrac{RT}{F}\\left(\\overline{\\ln \\tfrac{c_e}{\\bar c_e}}^{\\,p}
        - \\overline{\\ln \\tfrac{c_e}{\\bar c_e}}^{\\,n}\\right)
        - i\\left(\\tfrac{L_n}{3\\kappa_n} + \\tfrac{L_s}{\\kappa_s} + \\tfrac{L_p}{3\\kappa_p}\\right)
        - \\tfrac{i}{3}\\left(\\tfrac{L_n}{\\sigma_n} + \\tfrac{L_p}{\\sigma_p}\\right),

evaluated, like PyBaMM, from the potential profiles on the mesh (``\\kappa_k = \\tau_k
\\kappa_e(\\bar c_e, T)``, ``\\chi = 2 (1 - t_+) (1 + d\\ln f/d\\ln c)``). The mean
``\\bar c_e`` is PyBaMM 26's: ``mean(\\varepsilon c_e) \\cdot mean(1/\\varepsilon)`` (its
x-average of ``\\varepsilon c_e / \\varepsilon``), not the width-weighted mean of ``c_e``; the
two differ by a few per cent once the electrolyte polarises (0.5 mV and 0.13 K over a 2C
Chen2020 discharge), and we follow PyBaMM so that the reference comparison is exact. Heat adds the
electrolyte and solid Joule terms (``-i \\cdot \\nabla\\phi`` on the mesh, as PyBaMM) to the SPM's reaction, reversible and
current-collector heat. Float64.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from cellax.physics.electrolyte import (
    CellMesh,
    diffusion_stiffness,
    diffusive_flux,
    divergence,
    interpolate_to_edges,
    porosity_and_tortuosity,
    region_average,
    region_values,
    right_boundary_value,
)
from cellax.physics.model import AbstractCellModel
from cellax.physics.parameters import ParameterSet, initial_stoichiometries
from cellax.physics.particle import FARADAY, SphericalMesh, shell_stiffness, surface_value, volume_average
from cellax.physics.spm import GAS_CONSTANT, particle_and_thermal_modes, particle_rates
from cellax.physics.stepping import SpectralOperator, StiffModes
from cellax.physics.thermal import collector_heat_w, two_node_rates
from cellax.signals import KELVIN

MACINNES_FLOOR = 1e-6  # PyBaMM's tolerance "macinnes__c_e": c_e / mean(c_e) is floored here inside the log


class SPMeState(eqx.Module):
    """Particle shells (mol/m³), electrolyte nodes (mol/m³), core and surface temperatures (K)."""

    c_neg: Float[Array, " nr"]
    c_pos: Float[Array, " nr"]
    c_e: Float[Array, " nx"]
    core_temp_k: Float[Array, ""]
    surface_temp_k: Float[Array, ""]


class AbstractElectrolyteModel(AbstractCellModel):
    """What the models with an electrolyte across the cell share (the SPMe, the DFN): a particle mesh, a cell mesh of
    ``x_counts`` cells per region, and the stiff blocks (particles, electrolyte, thermal). The state's particle fields
    may hold one particle (``(n_shells,)``) or one per electrode cell (shell-major ``(n_shells, n_cells)``)."""

    particle: eqx.AbstractVar[SphericalMesh]
    x_counts: eqx.AbstractVar[tuple[int, int, int]]

    @abc.abstractmethod
    def _fields(self, params: ParameterSet, state, current_a) -> dict:
        """Every intermediate quantity of the model at ``state`` (shared by the vector field and the outputs)."""

    @abc.abstractmethod
    def _rates(self, params: ParameterSet, state, fields: dict, ambient_temp_k):
        """The vector field from :meth:`_fields`."""

    def _outputs(self, params: ParameterSet, state, f: dict, current_a, ambient_temp_k) -> dict[str, Array]:
        """The canonical signals from :meth:`_fields` (``temp``, ``voltage``, ``anode_potential``); the state of
        charge and the OCV from the mean stoichiometry of all of an electrode's particles."""
        s = params.scalars
        temp = f["temp"]
        x = jnp.mean(volume_average(self.particle, state.c_neg)) / s["neg_max_conc_mol_m3"]
        y = jnp.mean(volume_average(self.particle, state.c_pos)) / s["pos_max_conc_mol_m3"]
        return {
            "current_a": jnp.asarray(current_a, dtype=params.dtype),
            "voltage_v": f["voltage"],
            "ocv_v": params.pos_ocp(y, temp) - params.neg_ocp(x, temp),
            "soc": (x - s["x_0"]) / (s["x_100"] - s["x_0"]),
            "core_temp_degc": temp - KELVIN,
            "surface_temp_degc": state.surface_temp_k - KELVIN,
            "ambient_temp_degc": jnp.asarray(ambient_temp_k, dtype=params.dtype) - KELVIN,
            "anode_potential_v": f["anode_potential"],
            "min_electrolyte_conc_mol_m3": jnp.min(state.c_e),
        }

    def vector_field(self, params: ParameterSet, state, current_a, ambient_temp_k):
        """Time derivative of ``state`` at current ``current_a`` (A, + discharge) and ambient (K)."""
        return self._rates(params, state, self._fields(params, state, current_a), ambient_temp_k)

    def outputs(self, params: ParameterSet, state, current_a, ambient_temp_k) -> dict[str, Array]:
        """Canonical signals (DESIGN.md names) of ``state``; temperatures in °C."""
        return self._outputs(params, state, self._fields(params, state, current_a), current_a, ambient_temp_k)

    def rates_and_outputs(self, params: ParameterSet, state, current_a, ambient_temp_k):
        """``(vector_field, outputs)`` from one evaluation of the model's fields."""
        f = self._fields(params, state, current_a)
        return self._rates(params, state, f, ambient_temp_k), self._outputs(params, state, f, current_a, ambient_temp_k)

    @property
    def pybamm_var_pts(self) -> dict[str, int]:
        """PyBaMM's ``var_pts`` for the same mesh (to run the reference like for like)."""
        n, s, p = self.x_counts
        return {"r_n": self.particle.n, "r_p": self.particle.n, "x_n": n, "x_s": s, "x_p": p}

    def cell_mesh(self, params: ParameterSet) -> CellMesh:
        s = params.scalars
        return CellMesh((s["neg_thickness_m"], s["sep_thickness_m"], s["pos_thickness_m"]), self.x_counts)

    def stiff_operators(self, params: ParameterSet) -> dict[str, SpectralOperator]:
        """Uniform-coefficient diffusion operators of particles and electrolyte (see :mod:`cellax.physics.stepping`)."""
        mesh = self.cell_mesh(params)
        porosity, tortuosity = porosity_and_tortuosity(params.scalars, mesh)
        return {
            "particle": SpectralOperator(*shell_stiffness(self.particle), dtype=params.dtype),
            "electrolyte": SpectralOperator(diffusion_stiffness(mesh, tortuosity), porosity * mesh.widths, dtype=params.dtype),
        }

    def stiff_modes(self, params: ParameterSet, operators, state) -> StiffModes:
        """The SPM's blocks (every particle's ``(max D/R^2) L``: one matrix product per electrode) and the
        electrolyte's ``(max D_e) L_e``."""
        modes = particle_and_thermal_modes(params, operators["particle"], state)
        electrolyte = operators["electrolyte"]
        scale_e = jnp.max(params.electrolyte_diffusivity(state.c_e, state.core_temp_k))
        make = type(state)

        def to_modes(x):
            neg, pos, core, surface = modes.to_modes((x.c_neg, x.c_pos, x.core_temp_k, x.surface_temp_k))
            return make(neg, pos, electrolyte.to_modes(x.c_e), core, surface)

        def from_modes(m):
            neg, pos, core, surface = modes.from_modes((m.c_neg, m.c_pos, m.core_temp_k, m.surface_temp_k))
            return make(neg, pos, electrolyte.from_modes(m.c_e), core, surface)

        neg, pos, core, surface = modes.eigenvalues
        column = (-1,) + (1,) * (state.c_neg.ndim - 1)  # the same modes in each of an electrode's particles
        return StiffModes(make(neg.reshape(column), pos.reshape(column), scale_e * electrolyte.eigenvalues, core, surface),
                          to_modes, from_modes)

    def electrolyte_depleted(self, state) -> Array:
        """Whether any electrolyte node reached zero concentration."""
        return jnp.min(state.c_e) <= 0


class SPMe(AbstractElectrolyteModel):
    """The SPMe on ``n_shells`` particle shells and ``x_counts`` cells per region."""

    particle: SphericalMesh
    x_counts: tuple[int, int, int] = eqx.field(static=True)

    def __init__(self, n_shells: int = 20, x_counts: tuple[int, int, int] = (20, 20, 20)):
        self.particle = SphericalMesh(n_shells)
        self.x_counts = tuple(int(c) for c in x_counts)

    def initial_state(self, params: ParameterSet, soc, temp_k) -> SPMeState:
        """Uniform particles at ``soc``, electrolyte at its initial concentration, both nodes at ``temp_k``."""
        s = params.scalars
        x, y = initial_stoichiometries(params, soc)
        ones = jnp.ones(self.particle.n, dtype=params.dtype)
        temp_k = jnp.asarray(temp_k, dtype=params.dtype)
        c_e = jnp.full(sum(self.x_counts), s["electrolyte_init_conc_mol_m3"], dtype=params.dtype)
        return SPMeState(x * s["neg_max_conc_mol_m3"] * ones, y * s["pos_max_conc_mol_m3"] * ones, c_e, temp_k, temp_k)

    def _fields(self, params: ParameterSet, state: SPMeState, current_a) -> dict:
        """Every intermediate quantity of the model at ``state`` (shared by the vector field and the outputs)."""
        s = params.scalars
        temp = state.core_temp_k
        mesh = self.cell_mesh(params)
        rn, rs, rp = mesh.regions
        widths, x = mesh.widths, mesh.nodes
        L_n, L_s, L_p = s["neg_thickness_m"], s["sep_thickness_m"], s["pos_thickness_m"]
        L_x = L_n + L_s + L_p
        i = current_a / (s["n_electrodes_parallel"] * s["electrode_area_m2"])
        c_e = state.c_e
        rt_f = GAS_CONSTANT * temp / FARADAY
        porosity, tortuosity_nodes = porosity_and_tortuosity(s, mesh)
        f = {"mesh": mesh, "i": i, "temp": temp}

        for k, sign, c, region in (("neg", 1.0, state.c_neg, rn), ("pos", -1.0, state.c_pos, rp)):
            c_max = s[f"{k}_max_conc_mol_m3"]
            area = 3 * s[f"{k}_active_frac"] / s[f"{k}_particle_radius_m"]
            j = sign * i / (area * s[f"{k}_thickness_m"])
            c_surf = surface_value(c)
            j0 = getattr(params, f"{k}_exchange_current")(c_e[region], c_surf, c_max, temp)
            eta = 2 * rt_f * jnp.arcsinh(j / (2 * j0))
            sto = c_surf / c_max
            ocp = getattr(params, f"{k}_ocp")(sto, temp)
            solid_fraction = 1 - s[f"{k}_porosity"]
            sigma = getattr(params, f"{k}_conductivity")(sto, temp) * solid_fraction ** s[f"{k}_bruggeman_electrode"]
            f[k] = dict(j=j, sto=sto, eta=eta, ocp=ocp, sigma=sigma, delta_phi=ocp + region_average(widths[region], eta))

        tortuosity = {
            k: s[f"{k}_porosity"] ** s[f"{k}_bruggeman_electrolyte"] for k in ("neg", "sep", "pos")
        }
        c_e_av = region_average(widths, porosity * c_e) * region_average(widths, 1 / porosity)
        kappa = params.electrolyte_conductivity(c_e_av, temp)
        kn, ks, kp = (kappa * tortuosity[k] for k in ("neg", "sep", "pos"))
        chi = 2 * (1 - params.transference_number(c_e_av, temp)) * params.thermodynamic_factor(c_e_av, temp)
        macinnes = jnp.log(jnp.maximum(c_e / c_e_av, MACINNES_FLOOR))
        x_n, x_s, x_p = x[rn], x[rs], x[rp]
        sigma_n, sigma_p = f["neg"]["sigma"], f["pos"]["sigma"]

        phi_s_n = (i / sigma_n) * x_n * (x_n - 2 * L_n) / (2 * L_n)
        phi_e_const = (
            -f["neg"]["delta_phi"]
            + region_average(widths[rn], phi_s_n)
            - chi * rt_f * region_average(widths[rn], macinnes[rn])
            - i * L_n * (1 / (3 * kn) - 1 / ks)
        )
        phi_e = jnp.concatenate(
            [
                phi_e_const + chi * rt_f * macinnes[rn] - (i / kn) * (x_n**2 - L_n**2) / (2 * L_n) - i * L_n / ks,
                phi_e_const + chi * rt_f * macinnes[rs] - (i / ks) * x_s,
                phi_e_const
                + chi * rt_f * macinnes[rp]
                - (i / kp) * (x_p * (2 * L_x - x_p) + L_p**2 - L_x**2) / (2 * L_p)
                - i * (L_x - L_p) / ks,
            ]
        )
        phi_s_p = (
            f["pos"]["delta_phi"]
            + region_average(widths[rp], phi_e[rp])
            + (i / sigma_p) * (L_x - L_p / 3)
            - (i / sigma_p) * (x_p + (x_p - L_x) ** 2 / (2 * L_p))
        )
        i_e = jnp.concatenate([i * x_n / L_n, jnp.full(x_s.shape, i), i * (L_x - x_p) / L_p])
        f.update(
            porosity=porosity,
            tortuosity=tortuosity_nodes,
            phi_e=phi_e,
            phi_s_n=phi_s_n,
            phi_s_p=phi_s_p,
            i_e=i_e,
            voltage=right_boundary_value(phi_s_p),
            anode_potential=right_boundary_value(phi_s_n - phi_e[rn]),
        )
        return f

    def rest_outputs(self, params: ParameterSet, state: SPMeState, ambient_temp_k) -> dict[str, Array]:
        """:meth:`outputs` at zero current of a cell in equilibrium (uniform particles and electrolyte, as
        :meth:`initial_state` makes it), without the kinetics and transport: there the overpotentials vanish
        and the electrolyte terms cancel, so ``V = U_p(y_s) - U_n(x_s)`` and the anode potential is ``U_n(x_s)``."""
        s = params.scalars
        temp = state.core_temp_k
        neg_ocp = params.neg_ocp(surface_value(state.c_neg) / s["neg_max_conc_mol_m3"], temp)
        pos_ocp = params.pos_ocp(surface_value(state.c_pos) / s["pos_max_conc_mol_m3"], temp)
        f = {"temp": temp, "voltage": pos_ocp - neg_ocp, "anode_potential": neg_ocp}
        return self._outputs(params, state, f, jnp.zeros((), params.dtype), ambient_temp_k)

    def _rates(self, params: ParameterSet, state: SPMeState, f: dict, ambient_temp_k) -> SPMeState:
        s = params.scalars
        mesh, i, temp = f["mesh"], f["i"], f["temp"]
        rn, _, rp = mesh.regions

        rate_neg, rate_pos = particle_rates(self.particle, params, state.c_neg, state.c_pos, f["neg"]["j"], f["pos"]["j"], temp)

        c_e = state.c_e
        coefficient = f["tortuosity"] * params.electrolyte_diffusivity(c_e, temp)
        migration = params.transference_number(c_e, temp) * f["i_e"] / FARADAY
        flux = diffusive_flux(mesh, coefficient, c_e) + interpolate_to_edges(mesh, migration)
        reaction = region_values(mesh, i / s["neg_thickness_m"], 0.0, -i / s["pos_thickness_m"]) / FARADAY
        c_e_rate = (-divergence(mesh, flux) + reaction) / f["porosity"]

        area_total = s["n_electrodes_parallel"] * s["electrode_area_m2"]
        widths = mesh.widths
        reaction_heat = i * (jnp.sum(widths[rn] * f["neg"]["eta"]) / s["neg_thickness_m"]
                             - jnp.sum(widths[rp] * f["pos"]["eta"]) / s["pos_thickness_m"])
        reversible_heat = i * temp * (
            params.neg_entropic_change(f["neg"]["sto"]) - params.pos_entropic_change(f["pos"]["sto"])
        )
        x_n, x_p = mesh.nodes[rn], mesh.nodes[rp]
        h_n, h_p = widths[rn][0], widths[rp][0]
        phi_s_n, phi_s_p = f["phi_s_n"], f["phi_s_p"]
        solid_heat = h_n * jnp.sum(
            _joule(i * (1 - x_n / s["neg_thickness_m"]), phi_s_n, h_n, 2 * phi_s_n[0] / h_n, 0.0)
        ) + h_p * jnp.sum(
            _joule(i * (1 - (x_p[-1] + h_p / 2 - x_p) / s["pos_thickness_m"]), phi_s_p, h_p, 0.0, -i / f["pos"]["sigma"])
        )
        weighted_current = widths * f["i_e"]  # -i_e dphi_e/dx on the nodes, summed: no flux through either end
        electrolyte_heat = -0.5 * jnp.sum(
            jnp.diff(f["phi_e"]) / mesh.node_gaps * (weighted_current[:-1] + weighted_current[1:])
        )
        heat_w = area_total * (reaction_heat + reversible_heat + solid_heat + electrolyte_heat) + collector_heat_w(params, i)
        core_rate, surface_rate = two_node_rates(params, heat_w, temp, state.surface_temp_k, ambient_temp_k)
        return SPMeState(rate_neg, rate_pos, c_e_rate, core_rate, surface_rate)

def _joule(current_density, potential, node_gaps, left_gradient, right_gradient):
    """``-i dphi/dx`` at the nodes, as PyBaMM's inner product: edge gradients (boundary ones
    from the boundary conditions) averaged onto the nodes."""
    inner = jnp.diff(potential) / node_gaps
    gradient = jnp.concatenate([jnp.reshape(left_gradient, (1,)), inner, jnp.reshape(right_gradient, (1,))])
    return -current_density * 0.5 * (gradient[1:] + gradient[:-1])
