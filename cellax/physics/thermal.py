"""Two-node lumped thermal model: core (volume-averaged cell) and surface (casing) temperatures.

.. math::

    C_\\text{cell}(T) \\dot T = Q - h A_\\text{cool} (T - T_s), \\qquad
    C_\\text{case} \\dot T_s = h A_\\text{cool} (T - T_s) - (T_s - T_\\text{amb}) / R_\\text{env},

PyBaMM's ``{"thermal": "lumped", "surface temperature": "lumped"}``.
"""

from __future__ import annotations

import jax.numpy as jnp

from cellax.physics.parameters import ParameterSet
from cellax.physics.stepping import StiffModes


def two_node_rates(params: ParameterSet, heat_w, core_temp_k, surface_temp_k, ambient_temp_k):
    """``(dT/dt, dT_s/dt)`` in K/s for heat ``heat_w`` (W) generated in the core."""
    s = params.scalars
    to_surface_w = s["heat_transfer_coeff_w_m2k"] * s["cell_cooling_area_m2"] * (core_temp_k - surface_temp_k)
    to_ambient_w = (surface_temp_k - ambient_temp_k) / s["environment_thermal_resistance_k_w"]
    return (
        (heat_w - to_surface_w) / params.cell_heat_capacity(core_temp_k),
        (to_surface_w - to_ambient_w) / s["casing_heat_capacity_j_k"],
    )


def collector_heat_w(params: ParameterSet, current_density):
    """Joule heat of both current collectors (W) at current density ``current_density`` (A/m²)."""
    s = params.scalars
    per_area = s["neg_cc_thickness_m"] / s["neg_cc_conductivity_s_m"] + s["pos_cc_thickness_m"] / s["pos_cc_conductivity_s_m"]
    return s["n_electrodes_parallel"] * s["electrode_area_m2"] * current_density**2 * per_area


def two_node_modes(params: ParameterSet, core_temp_k) -> StiffModes:
    """The Jacobian of :func:`two_node_rates` in the temperatures (heat held fixed, heat capacity at
    ``core_temp_k``) in modal form, on ``(core, surface)`` pairs.

    ``J = C^{-1} K`` with ``C = diag(C_cell, C_case)`` and ``K = [[-hA, hA], [hA, -hA - 1/R_env]]`` symmetric, so
    ``S = C^{-1/2} K C^{-1/2}`` is symmetric, ``S = Q diag(λ) Q^T`` with ``Q`` a rotation by
    ``θ = atan2(2 S_12, S_11 - S_22) / 2``, and ``V = C^{-1/2} Q``."""
    s = params.scalars
    coupling = s["heat_transfer_coeff_w_m2k"] * s["cell_cooling_area_m2"]
    root_core = jnp.sqrt(params.cell_heat_capacity(core_temp_k))
    root_case = jnp.sqrt(jnp.asarray(s["casing_heat_capacity_j_k"], root_core.dtype))
    a = -coupling / root_core**2
    b = coupling / (root_core * root_case)
    c = -(coupling + 1 / s["environment_thermal_resistance_k_w"]) / root_case**2
    angle = 0.5 * jnp.arctan2(2 * b, a - c)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    eigenvalues = (a * cos**2 + 2 * b * sin * cos + c * sin**2, a * sin**2 - 2 * b * sin * cos + c * cos**2)

    def to_modes(x):
        core, surface = root_core * x[0], root_case * x[1]
        return cos * core + sin * surface, cos * surface - sin * core

    def from_modes(m):
        return (cos * m[0] - sin * m[1]) / root_core, (sin * m[0] + cos * m[1]) / root_case

    return StiffModes(eigenvalues, to_modes, from_modes)
