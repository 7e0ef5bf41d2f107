"""Finite volumes across the cell (x): negative electrode, separator, positive electrode.

Each region has its own number of uniform cells, so the mesh is non-uniform at the
two interfaces. The operators reproduce PyBaMM's ``FiniteVolume`` defaults: node
values are cell averages; a node-valued coefficient multiplying a gradient is
carried to interior edges by the weighted harmonic mean, any other node quantity
by linear interpolation, and to the two exterior edges by linear extrapolation;
boundary values extrapolate linearly from the two nearest nodes.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float


class CellMesh(eqx.Module):
    """``n_neg + n_sep + n_pos`` cells over ``[0, L_n + L_s + L_p]`` (thicknesses in m)."""

    counts: tuple[int, int, int] = eqx.field(static=True)
    nodes: Float[Array, " n"]
    widths: Float[Array, " n"]
    node_gaps: Float[Array, " n-1"]

    def __init__(self, thicknesses_m, counts: tuple[int, int, int] = (20, 20, 20)):
        if min(counts) < 2:
            raise ValueError(f"each region needs at least 2 cells, got {counts}")
        self.counts = tuple(int(c) for c in counts)
        widths = jnp.concatenate([jnp.full(c, t / c) for t, c in zip(thicknesses_m, counts)])
        edges = jnp.concatenate([jnp.zeros(1, widths.dtype), jnp.cumsum(widths)])
        self.widths = widths
        self.nodes = 0.5 * (edges[1:] + edges[:-1])
        self.node_gaps = jnp.diff(self.nodes)

    @property
    def regions(self) -> tuple[slice, slice, slice]:
        n, s, _ = self.counts
        return slice(0, n), slice(n, n + s), slice(n + s, None)


def region_values(mesh: CellMesh, neg, sep, pos) -> Float[Array, " n"]:
    """One value per region, on every node of that region."""
    n, m, p = mesh.counts
    return jnp.concatenate([jnp.broadcast_to(neg, (n,)), jnp.broadcast_to(sep, (m,)), jnp.broadcast_to(pos, (p,))])


def porosity_and_tortuosity(scalars: dict, mesh: CellMesh) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """Node porosity ``ε`` and transport efficiency ``τ = ε^b`` (Bruggeman) of the electrolyte, from a parameter
    set's ``scalars``."""
    regions = ("neg", "sep", "pos")
    return (region_values(mesh, *(scalars[f"{k}_porosity"] for k in regions)),
            region_values(mesh, *(scalars[f"{k}_porosity"] ** scalars[f"{k}_bruggeman_electrolyte"] for k in regions)))


def region_average(widths: Float[Array, " m"], values: Float[Array, " m"]) -> Float[Array, ""]:
    """Width-weighted mean of node values over (part of) the mesh."""
    return jnp.sum(widths * values) / jnp.sum(widths)


def right_boundary_value(values: Float[Array, " m"]) -> Float[Array, ""]:
    """Linear extrapolation to the right edge of a uniform region."""
    return 1.5 * values[-1] - 0.5 * values[-2]


def interpolate_to_edges(mesh: CellMesh, values: Float[Array, " n"]) -> Float[Array, " n+1"]:
    """Node values to all edges: linear inside, linear extrapolation at both ends."""
    w = mesh.widths[:-1] / (mesh.widths[:-1] + mesh.widths[1:])
    inner = (1 - w) * values[:-1] + w * values[1:]
    left_weight = 0.5 * mesh.widths[0] / mesh.node_gaps[0]
    right_weight = 0.5 * mesh.widths[-1] / mesh.node_gaps[-1]
    left = (1 + left_weight) * values[0] - left_weight * values[1]
    right = (1 + right_weight) * values[-1] - right_weight * values[-2]
    return jnp.concatenate([left[None], inner, right[None]])


def harmonic_to_edges(mesh: CellMesh, coefficient: Float[Array, " n"]) -> Float[Array, " n-1"]:
    """A node-valued coefficient of a gradient on the interior edges: the weighted harmonic mean."""
    beta = mesh.widths[:-1] / (mesh.widths[:-1] + mesh.widths[1:])
    return 1.0 / (beta / coefficient[:-1] + (1 - beta) / coefficient[1:])


def diffusive_flux(mesh: CellMesh, coefficient: Float[Array, " n"], values: Float[Array, " n"]) -> Float[Array, " n+1"]:
    """``-k dc/dx`` on all edges with zero flux through both ends; ``k`` by weighted harmonic mean."""
    inner = -harmonic_to_edges(mesh, coefficient) * jnp.diff(values) / mesh.node_gaps
    zero = jnp.zeros(1, values.dtype)
    return jnp.concatenate([zero, inner, zero])


def diffusion_stiffness(mesh: CellMesh, coefficient: Float[Array, " n"]) -> Float[Array, "n n"]:
    """Symmetric tridiagonal ``A`` with ``A c = -w * divergence(diffusive_flux(coefficient, c))``
    (``w`` the cell widths): the diffusion term as a matrix, for a stiff solver."""
    coupling = harmonic_to_edges(mesh, coefficient) / mesh.node_gaps
    off = jnp.diag(coupling, 1) + jnp.diag(coupling, -1)
    return off - jnp.diag(jnp.sum(off, axis=1))


def divergence(mesh: CellMesh, flux: Float[Array, " n+1"]) -> Float[Array, " n"]:
    """``dN/dx`` per cell from edge fluxes."""
    return jnp.diff(flux) / mesh.widths
