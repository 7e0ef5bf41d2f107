"""Doyle–Fuller–Newman model (DFN) on a coarse mesh, two-node lumped thermal: PyBaMM's DFN, reduced.

Where the :mod:`~cellax.physics.spme` keeps one particle per electrode and a uniform reaction, the DFN
holds a particle at every electrode node ``k`` of the finite-volume mesh (shells ``c_{s,k}``) and lets the
reaction distribute itself through the thickness. With ``a = 3 \\varepsilon_s / R`` and the interfacial
current density ``j(x)``, PyBaMM's DFN is

.. math::

    \\varepsilon \\partial_t c_e &= -\\partial_x\\!\\left(-\\tau D_e \\partial_x c_e + t_+ i_e / F\\right) + a j / F,\\\\
    \\partial_x i_e = a j, \\qquad i_e &= \\kappa_\\text{eff}\\left(\\chi \\tfrac{RT}{F c_e} \\partial_x c_e - \\partial_x \\phi_e\\right),
    \\qquad i_s = i - i_e = -\\sigma_\\text{eff} \\partial_x \\phi_s,\\\\
    \\phi_s - \\phi_e &= U(c_s^\\text{surf}) + \\eta, \\qquad
    \\eta = \\tfrac{2RT}{F} \\operatorname{arcsinh} \\tfrac{j}{2 j_0(c_e, c_s^\\text{surf}, T)},

with particle diffusion (:mod:`~cellax.physics.particle`) driven by each node's ``j``. The potentials are
algebraic. On the mesh they reduce, per electrode, to the electrolyte currents ``q_e`` on the electrode's
interior edges (``i_e`` is ``0`` at a current collector and ``i`` at the separator; ``a j`` is the
divergence of ``q``, so charge is conserved exactly at every iterate): across edge ``e`` between nodes
``k-1`` and ``k``, with gap ``g``,

.. math::

    F_e(q) = -\\frac{(i - q_e)\\, g}{\\sigma_\\text{eff}} + \\frac{q_e\\, g}{\\kappa_e}
        - \\chi \\tfrac{RT}{F c_e}\\Big|_e (c_{e,k} - c_{e,k-1})
        - \\left[U + \\eta\\right]_{k-1}^{k} = 0,

a tridiagonal system whose Jacobian is an M-matrix (every ``\\partial\\eta/\\partial j > 0``), solved by a fixed
number of Newton steps from the uniform reaction (the SPMe's), each a tridiagonal solve; differentiable
as unrolled arithmetic. Three steps (the default) reach the potentials to 1e-6 V at ±2C; two were 1e-4 V off
and failed (non-finite) at the end of a 2C discharge, where the reaction crowds to the separator; close to
electrolyte depletion more are needed (``newton_iterations``). The potentials follow by summation along the edges (``\\phi_s = 0`` at ``x = 0`` through
PyBaMM's ghost node), the voltage is ``\\phi_s`` extrapolated to ``x = L``, the anode potential ``\\phi_s - \\phi_e``
extrapolated to the separator. Heat is PyBaMM's: ``a j \\eta``, ``a j T \\partial_T U``, and the Joule terms
``-\\langle i, \\partial_x \\phi\\rangle`` with edge values averaged onto the nodes before the product. The
finite-volume conventions are PyBaMM's (a node coefficient of a gradient goes to the edges by the
harmonic mean, ``\\kappa_\\text{eff}``, which multiplies a difference of gradients, by the arithmetic one; the
ghost node at ``x = 0``), so the same mesh gives the same equations (``tests/physics/test_dfn.py``).

The state keeps the model contract (:mod:`~cellax.physics.model`): ``c_neg`` and ``c_pos`` are shell-major,
``(n_shells, n_nodes)``, so the particle operators of :mod:`~cellax.physics.stepping` act on all of an
electrode's particles in one matrix product. The default mesh is deliberately coarse (6, 3, 6 cells): against
PyBaMM's DFN on its default 20-cell mesh it is within ~0.9 mV on high-rate profiles at 0.4x the SPMe's throughput
(``docs/physics.md``, ``benchmarks/results/dfn_vs_pybamm.json``).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from cellax.physics.electrolyte import (
    diffusive_flux,
    divergence,
    harmonic_to_edges,
    interpolate_to_edges,
    porosity_and_tortuosity,
    right_boundary_value,
)
from cellax.physics.parameters import ParameterSet, initial_stoichiometries
from cellax.physics.particle import (
    FARADAY,
    SphericalMesh,
    surface_value,
)
from cellax.physics.spm import GAS_CONSTANT, particle_rates, particle_stiffness
from cellax.physics.spme import AbstractElectrolyteModel
from cellax.physics.thermal import collector_heat_w, two_node_rates


class DFNState(eqx.Module):
    """Shells of every electrode node's particle (mol/m³, shell-major), electrolyte nodes (mol/m³), core and
    surface temperatures (K)."""

    c_neg: Float[Array, "nr n_neg"]
    c_pos: Float[Array, "nr n_pos"]
    c_e: Float[Array, " nx"]
    core_temp_k: Float[Array, ""]
    surface_temp_k: Float[Array, ""]


def tridiagonal_solve(lower, diag, upper, rhs):
    """``x`` with ``T x = rhs`` for a diagonally dominant tridiagonal ``T`` (``lower[0]`` and ``upper[-1]`` unused): the
    Thomas algorithm, unrolled (the systems here have a handful of rows; measured faster under XLA:CPU than parallel
    cyclic reduction), so it vectorises under ``vmap``."""
    n = diag.shape[0]
    inverse = 1 / diag[0]
    c, d = [upper[0] * inverse], [rhs[0] * inverse]
    for k in range(1, n):
        inverse = 1 / (diag[k] - lower[k] * c[-1])
        c.append(upper[k] * inverse)
        d.append((rhs[k] - lower[k] * d[-1]) * inverse)
    x = [d[-1]]
    for k in range(n - 2, -1, -1):
        x.append(d[k] - c[k] * x[-1])
    return jnp.stack(x[::-1])


def overpotential(j, j0, rt_f):
    """Symmetric Butler–Volmer ``η = (2RT/F) arcsinh(j / 2j_0)``."""
    return 2 * rt_f * jnp.arcsinh(j / (2 * j0))


def reaction_distribution(q_ends, area_dx, conductance_edges, offsets, j0, rt_f, iterations: int):
    """Electrolyte currents ``q`` on an electrode's edges (both ends included) solving ``F(q) = 0`` (module
    docstring) by ``iterations`` Newton steps from the uniform reaction.

    ``q_ends``: ``q`` at the electrode's two ends; ``area_dx``: ``a Δx`` per node; ``conductance_edges``:
    ``g/σ + g/κ`` per interior edge; ``offsets``: the ``q``-independent part of ``F`` per interior edge; ``j0``:
    exchange-current density per node. In ``x = j / 2j_0 = Δq / (2 j_0 a Δx)``: ``η = (2RT/F) arcsinh x`` and
    ``∂η/∂q = (2RT/F) / (2 j_0 a Δx) / sqrt(1 + x²)``, so the loop multiplies by precomputed reciprocals."""
    q_left, q_right = q_ends
    fraction = jnp.cumsum(area_dx)[:-1] / jnp.sum(area_dx)
    q = q_left + (q_right - q_left) * fraction
    to_ratio = 1 / (2 * j0 * area_dx)

    def full(q_inner):
        return jnp.concatenate([jnp.reshape(q_left, (1,)), q_inner, jnp.reshape(q_right, (1,))])

    for _ in range(iterations):
        ratio = jnp.diff(full(q)) * to_ratio
        residual = conductance_edges * q + offsets - 2 * rt_f * jnp.diff(jnp.arcsinh(ratio))
        weight = 2 * rt_f * to_ratio * jax.lax.rsqrt(1 + ratio**2)
        q = q - tridiagonal_solve(-weight[:-1], conductance_edges + weight[1:] + weight[:-1], -weight[1:], residual)
    return full(q)


def thermal_voltage(temp_k):
    """``RT/F`` (V) at ``temp_k``."""
    return GAS_CONSTANT * temp_k / FARADAY


def _edge_to_node(edge_values):
    return 0.5 * (edge_values[1:] + edge_values[:-1])


class DFN(AbstractElectrolyteModel):
    """The DFN on ``n_shells`` particle shells and ``x_counts`` cells per region (a particle per electrode cell)."""

    particle: SphericalMesh
    x_counts: tuple[int, int, int] = eqx.field(static=True)
    newton_iterations: int = eqx.field(static=True)
    implicit_reaction: bool = eqx.field(static=True)

    def __init__(self, n_shells: int = 20, x_counts: tuple[int, int, int] = (6, 3, 6), newton_iterations: int = 3,
                 implicit_reaction: bool = False):
        """``implicit_reaction``: ROS2 takes the particles' coupling through the reaction distribution into its
        W-matrix (:meth:`solve_stiff`): 30 s steps track 1 s steps where the explicit coupling fails, at 1.4x the
        cost of a step; off by default, as the 1 s data grid does not need it (docs/physics.md, "Step size")."""
        if newton_iterations < 1:
            raise ValueError(f"newton_iterations must be at least 1, got {newton_iterations}")
        self.particle = SphericalMesh(n_shells)
        self.x_counts = tuple(int(c) for c in x_counts)
        self.newton_iterations = int(newton_iterations)
        self.implicit_reaction = bool(implicit_reaction)

    def initial_state(self, params: ParameterSet, soc, temp_k) -> DFNState:
        """Uniform particles at ``soc``, electrolyte at its initial concentration, both nodes at ``temp_k``."""
        s = params.scalars
        x, y = initial_stoichiometries(params, soc)
        n, _, p = self.x_counts
        nr = self.particle.n
        temp_k = jnp.asarray(temp_k, dtype=params.dtype)
        c_e = jnp.full(sum(self.x_counts), s["electrolyte_init_conc_mol_m3"], dtype=params.dtype)
        return DFNState(
            x * s["neg_max_conc_mol_m3"] * jnp.ones((nr, n), params.dtype),
            y * s["pos_max_conc_mol_m3"] * jnp.ones((nr, p), params.dtype),
            c_e, temp_k, temp_k,
        )

    def _electrodes(self, params: ParameterSet, state: DFNState) -> dict:
        """What the reaction distribution's residual takes from the state, per electrode (``neg``, ``pos``: surface
        concentration, OCP, exchange-current density ``j_0``, conductivities, ``a Δx`` per node, ``g/σ + g/κ`` per
        interior edge), and the electrolyte's edge values; no current enters."""
        s = params.scalars
        temp = state.core_temp_k
        mesh = self.cell_mesh(params)
        regions = dict(zip(("neg", "sep", "pos"), mesh.regions))
        widths, gaps = mesh.widths, mesh.node_gaps
        c_e = state.c_e
        _, tortuosity = porosity_and_tortuosity(s, mesh)
        kappa = interpolate_to_edges(mesh, params.electrolyte_conductivity(c_e, temp) * tortuosity)[1:-1]
        chi_rt_f_c = 2 * (1 - params.transference_number(c_e, temp)) * params.thermodynamic_factor(c_e, temp) * thermal_voltage(temp) / c_e
        terms = {"mesh": mesh, "temp": temp, "rt_f": thermal_voltage(temp), "kappa": kappa,
                 "diffusion_potential": harmonic_to_edges(mesh, chi_rt_f_c) * jnp.diff(c_e)}  # interior edges
        for k, c, first_edge in (("neg", state.c_neg, 0), ("pos", state.c_pos, sum(mesh.counts[:2]))):
            region = regions[k]
            c_max = s[f"{k}_max_conc_mol_m3"]
            c_surf = surface_value(c)
            sto = c_surf / c_max
            solid_fraction = 1 - s[f"{k}_porosity"]
            sigma = getattr(params, f"{k}_conductivity")(sto, temp) * solid_fraction ** s[f"{k}_bruggeman_electrode"]
            sigma_edges = 2 / (1 / sigma[:-1] + 1 / sigma[1:])
            inner = slice(first_edge, first_edge + c.shape[1] - 1)
            g = gaps[inner]
            terms[k] = {
                "c_surf": c_surf, "sto": sto, "ocp": getattr(params, f"{k}_ocp")(sto, temp),
                "j0": getattr(params, f"{k}_exchange_current")(c_e[region], c_surf, c_max, temp),
                "sigma": sigma, "sigma_edges": sigma_edges, "inner": inner,
                "area_dx": 3 * s[f"{k}_active_frac"] / s[f"{k}_particle_radius_m"] * widths[region],
                "conductance": g / sigma_edges + g / kappa[inner],
            }
        return terms

    def reaction_coupling(self, params: ParameterSet, state: DFNState) -> dict:
        """Per electrode, ``G = ∂j/∂c_surf`` (n × n): how each node's reaction answers a change of every particle's
        surface concentration, linearised at ``state`` at rest.

        The residual ``F(q) = 0`` of the currents ``q`` (module docstring) holds ``-D(U + η)`` with ``D`` the
        difference across each interior edge; at fixed ``q``, ``∂F/∂c_surf = -D diag(U')``, so ``∂q/∂c_surf =
        T^{-1} D diag(U')`` with ``T = ∂F/∂q`` the Newton step's tridiagonal matrix, and ``j = Δq / (a Δx)``. At rest
        ``∂η/∂Δq = (RT/F) / (j_0 a Δx)``, the largest it gets (under current it falls as ``1/sqrt(1 + x²)``), so the
        coupling is if anything underestimated; the W-method stays second order whatever ``G`` is."""
        terms = self._electrodes(params, state)
        s, rt_f = params.scalars, terms["rt_f"]
        solve = jax.vmap(tridiagonal_solve, in_axes=(None, None, None, 1), out_axes=1)  # one column per node
        coupling = {}
        for k in ("neg", "pos"):
            e = terms[k]
            ocp = lambda sto: getattr(params, f"{k}_ocp")(sto, terms["temp"])  # noqa: E731
            slope = jax.jvp(ocp, (e["sto"],), (jnp.ones_like(e["sto"]),))[1] / s[f"{k}_max_conc_mol_m3"]
            weight = rt_f / (e["j0"] * e["area_dx"])
            n = slope.shape[0]
            difference = jnp.eye(n - 1, n, 1, slope.dtype) - jnp.eye(n - 1, n, 0, slope.dtype)
            dq = solve(-weight[:-1], e["conductance"] + weight[1:] + weight[:-1], -weight[1:], difference * slope)
            full = jnp.pad(dq, ((1, 1), (0, 0)))
            coupling[k] = jnp.diff(full, axis=0) / e["area_dx"][:, None]
        return coupling

    def solve_stiff(self, params: ParameterSet, operators, state, scale_s, rhs):
        """``x`` with ``(I - scale_s J) x = rhs`` where ``J`` adds to the block-diagonal stiff Jacobian the particles'
        coupling through the reaction distribution, ``b G sᵀ`` per electrode (``b``: the surface shell's response to
        ``j``; ``s``: the surface extrapolation; ``G``: :meth:`reaction_coupling`). With ``M`` the block solve, it is
        ``x = M r + σ (M b) (G y)`` where ``(I - σ β G) y = sᵀ M r`` and ``β = sᵀ M b`` (one ``n × n`` solve per
        electrode; every particle of an electrode shares ``M``). Without it, the explicit coupling limits steps to
        ~10 s where the OCP is steep (docs/physics.md). Only with ``implicit_reaction``; ETD2 keeps the block-diagonal
        ``J``, whose functions are elementwise in its modes."""
        x = super().solve_stiff(params, operators, state, scale_s, rhs)
        if not self.implicit_reaction:
            return x
        coupling = self.reaction_coupling(params, state)
        particle = operators["particle"]
        mesh, s = self.particle, params.scalars
        stiffness = dict(zip(("neg", "pos"), particle_stiffness(params, state.c_neg, state.c_pos, state.core_temp_k)))
        solved = {}
        for k, x_k in (("neg", x.c_neg), ("pos", x.c_pos)):
            surface_shell = -mesh.edges[-1] ** 2 / (mesh.shell_volumes[-1] * s[f"{k}_particle_radius_m"] * FARADAY)
            b = jnp.zeros(mesh.n, x_k.dtype).at[-1].set(surface_shell.astype(x_k.dtype))
            m_b = particle.from_modes(particle.to_modes(b) / (1 - scale_s * stiffness[k] * particle.eigenvalues))
            g = coupling[k].astype(x_k.dtype)
            y = jnp.linalg.solve(jnp.eye(g.shape[0], dtype=g.dtype) - scale_s * surface_value(m_b) * g, surface_value(x_k))
            solved[k] = x_k + scale_s * m_b[:, None] * (g @ y)[None, :]
        return DFNState(solved["neg"], solved["pos"], x.c_e, x.core_temp_k, x.surface_temp_k)

    def _fields(self, params: ParameterSet, state: DFNState, current_a) -> dict:
        """Every intermediate quantity of the model at ``state`` (shared by the vector field and the outputs)."""
        s = params.scalars
        terms = self._electrodes(params, state)
        mesh, temp, rt_f, kappa = terms["mesh"], terms["temp"], terms["rt_f"], terms["kappa"]
        diffusion_potential = terms["diffusion_potential"]
        regions = dict(zip(("neg", "sep", "pos"), mesh.regions))
        widths, gaps = mesh.widths, mesh.node_gaps
        i = current_a / (s["n_electrodes_parallel"] * s["electrode_area_m2"])
        c_e = state.c_e
        f = {"mesh": mesh, "i": i, "temp": temp}
        zero = jnp.zeros_like(i)
        for k, q_ends in (("neg", (zero, i)), ("pos", (i, zero))):
            e = terms[k]
            inner = e["inner"]
            offsets = -i * gaps[inner] / e["sigma_edges"] - diffusion_potential[inner] - jnp.diff(e["ocp"])
            q = reaction_distribution(q_ends, e["area_dx"], e["conductance"], offsets, e["j0"], rt_f,
                                      self.newton_iterations)
            dq = jnp.diff(q)
            j = dq / e["area_dx"]
            f[k] = {"sto": e["sto"], "ocp": e["ocp"], "sigma": e["sigma"], "sigma_edges": e["sigma_edges"], "q": q,
                    "a_j": dq / widths[regions[k]], "j": j, "eta": overpotential(j, e["j0"], rt_f)}

        n, m, _ = mesh.counts
        i_e = jnp.concatenate([f["neg"]["q"], jnp.broadcast_to(i, (m - 1,)), f["pos"]["q"]])  # all edges
        grad_phi_e = diffusion_potential / gaps - i_e[1:-1] / kappa
        phi_s_n = self._solid_potential(f["neg"], -i * widths[0] / (2 * f["neg"]["sigma"][0]), gaps[: n - 1])
        phi_e0 = phi_s_n[0] - f["neg"]["ocp"][0] - f["neg"]["eta"][0]
        phi_e = phi_e0 + jnp.concatenate([jnp.zeros(1, c_e.dtype), jnp.cumsum(grad_phi_e * gaps)])
        phi_s_p = phi_e[regions["pos"]] + f["pos"]["ocp"] + f["pos"]["eta"]
        f.update(
            i_e=i_e,
            grad_phi_e=grad_phi_e,
            phi_e=phi_e,
            phi_s_n=phi_s_n,
            phi_s_p=phi_s_p,
            voltage=right_boundary_value(phi_s_p),
            anode_potential=right_boundary_value(phi_s_n - phi_e[regions["neg"]]),
        )
        return f

    @staticmethod
    def _solid_potential(electrode: dict, first_node_v, gaps):
        """``φ_s`` on an electrode's nodes from its first node's value and ``i_s = i - q`` on the interior edges."""
        q = electrode["q"]
        i_s = q[-1] + q[0] - q[1:-1]  # i - q, with i the end of q that is not zero
        steps = -i_s * gaps / electrode["sigma_edges"]
        return first_node_v + jnp.concatenate([jnp.zeros(1, q.dtype), jnp.cumsum(steps)])

    def _rates(self, params: ParameterSet, state: DFNState, f: dict, ambient_temp_k) -> DFNState:
        s = params.scalars
        mesh, i, temp = f["mesh"], f["i"], f["temp"]
        widths = mesh.widths
        rate_neg, rate_pos = particle_rates(self.particle, params, state.c_neg, state.c_pos, f["neg"]["j"], f["pos"]["j"], temp)
        c_e = state.c_e
        porosity, tortuosity = porosity_and_tortuosity(s, mesh)
        coefficient = tortuosity * params.electrolyte_diffusivity(c_e, temp)
        migration = interpolate_to_edges(mesh, params.transference_number(c_e, temp)) * f["i_e"] / FARADAY
        flux = diffusive_flux(mesh, coefficient, c_e) + migration
        a_j = jnp.concatenate([f["neg"]["a_j"], jnp.zeros(mesh.counts[1], c_e.dtype), f["pos"]["a_j"]])
        c_e_rate = (-divergence(mesh, flux) + a_j / FARADAY) / porosity

        regions = dict(zip(("neg", "sep", "pos"), mesh.regions))
        heat_per_area = 0.0
        for k in ("neg", "pos"):
            e = f[k]
            entropic = getattr(params, f"{k}_entropic_change")(e["sto"])
            heat_per_area += jnp.sum(widths[regions[k]] * e["a_j"] * (e["eta"] + temp * entropic))
            q = e["q"]
            i_s = q[-1] + q[0] - q  # i - q on all of the electrode's edges
            heat_per_area += jnp.sum(widths[regions[k]] * _edge_to_node(i_s) ** 2 / e["sigma"])
        grad_phi_e = jnp.concatenate([jnp.zeros(1, c_e.dtype), f["grad_phi_e"], jnp.zeros(1, c_e.dtype)])
        heat_per_area -= jnp.sum(widths * _edge_to_node(f["i_e"]) * _edge_to_node(grad_phi_e))
        area_total = s["n_electrodes_parallel"] * s["electrode_area_m2"]
        heat_w = area_total * heat_per_area + collector_heat_w(params, i)
        core_rate, surface_rate = two_node_rates(params, heat_w, temp, state.surface_temp_k, ambient_temp_k)
        return DFNState(rate_neg, rate_pos, c_e_rate, core_rate, surface_rate)
