"""Finite-volume Fickian diffusion in a spherical particle, discretised as PyBaMM does.

On the dimensionless radius :math:`\\rho = r / R \\in [0, 1]`,

.. math::

    \\frac{\\partial c}{\\partial t} = -\\frac{1}{R^2}\\frac{1}{\\rho^2}
        \\frac{\\partial}{\\partial \\rho}\\left(\\rho^2 N\\right), \\qquad
    N = -D(c, T)\\,\\frac{\\partial c}{\\partial \\rho}, \\qquad
    N(0) = 0, \\qquad N(1) = \\frac{j R}{F},

with :math:`j` the interfacial current density (A/m², positive when lithium leaves
the particle). ``n`` equal shells; node values are shell averages. The flux between
shells uses the harmonic mean of the node diffusivities, the surface value the
linear extrapolation :math:`c_s = \\tfrac32 c_n - \\tfrac12 c_{n-1}`, and the mean
concentration weighs shells by volume — PyBaMM's ``FiniteVolume`` defaults, so the
same mesh gives the same equations.

The operator is tridiagonal, and linear in ``c`` when ``D`` is uniform:
:func:`shell_stiffness` gives it as :math:`W^{-1} A` with the shell volumes ``W`` and a
symmetric ``A``, which :mod:`cellax.physics.stepping` diagonalises once.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

FARADAY = 96485.33212


class SphericalMesh(eqx.Module):
    """``n`` uniform shells on the dimensionless radius [0, 1]."""

    n: int = eqx.field(static=True)
    nodes: Float[Array, " n"]
    edges: Float[Array, " n+1"]
    shell_volumes: Float[Array, " n"]

    def __init__(self, n: int = 20):
        if n < 3:
            raise ValueError(f"a particle mesh needs at least 3 shells, got {n}")
        self.n = n
        edges = np.linspace(0.0, 1.0, n + 1)
        self.edges = jnp.asarray(edges)
        self.nodes = jnp.asarray(0.5 * (edges[1:] + edges[:-1]))
        self.shell_volumes = jnp.asarray((edges[1:] ** 3 - edges[:-1] ** 3) / 3)


def surface_value(c: Float[Array, "n ..."]) -> Float[Array, " ..."]:
    """Value at :math:`\\rho = 1` by linear extrapolation from the last two nodes."""
    return 1.5 * c[-1] - 0.5 * c[-2]


def volume_average(mesh: SphericalMesh, c: Float[Array, "n ..."]) -> Float[Array, " ..."]:
    """Volume-weighted mean concentration of the particle (of each particle, for shell-major ``(n, k)``)."""
    volumes = mesh.shell_volumes.astype(c.dtype)
    return jnp.tensordot(volumes, c, axes=(0, 0)) / jnp.sum(volumes)


def diffusion_rhs(
    mesh: SphericalMesh,
    c: Float[Array, "n ..."],
    diffusivity: Float[Array, "n ..."],
    surface_flux: Float[Array, " ..."],
    radius_m: Float[Array, ""],
) -> Float[Array, "n ..."]:
    """:math:`\\partial c / \\partial t` (mol/m³/s) for node diffusivities (m²/s) and surface flux ``j R / F``
    (of one particle, or of ``k`` particles side by side for shell-major ``(n, k)`` arrays)."""
    column = (-1,) + (1,) * (c.ndim - 1)
    edges, volumes = mesh.edges.astype(c.dtype).reshape(column), mesh.shell_volumes.astype(c.dtype).reshape(column)
    h = (mesh.edges[1] - mesh.edges[0]).astype(c.dtype)
    d_left, d_right = diffusivity[:-1], diffusivity[1:]
    d_edge = 2.0 * d_left * d_right / (d_left + d_right)
    interior = -d_edge * (c[1:] - c[:-1]) / h
    zero = jnp.zeros((1,) + c.shape[1:], c.dtype)
    flux = jnp.concatenate([zero, interior, jnp.reshape(surface_flux, zero.shape)])
    weighted = edges**2 * flux
    return -(weighted[1:] - weighted[:-1]) / volumes / radius_m**2


def shell_stiffness(mesh: SphericalMesh) -> tuple[Float[Array, "n n"], Float[Array, " n"]]:
    """``(A, W)`` with ``W^{-1} A c`` the diffusion term of a particle of unit radius and uniform unit
    diffusivity (no-flux surface): ``A`` symmetric tridiagonal, ``W`` the shell volumes."""
    h = mesh.edges[1] - mesh.edges[0]
    coupling = mesh.edges[1:-1] ** 2 / h
    off = jnp.diag(coupling, 1) + jnp.diag(coupling, -1)
    return off - jnp.diag(jnp.sum(off, axis=1)), mesh.shell_volumes
