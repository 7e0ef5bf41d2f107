"""Two-node lumped thermal model: core (volume-averaged cell) and surface (casing) temperatures.

.. math::

    C_\\text{cell}(T) \\dot T = Q - h A_\\text{cool} (T - T_s), \\qquad
    C_\\text{case} \\dot T_s = h A_\\text{cool} (T - T_s) - (T_s - T_\\text{amb}) / R_\\text{env},

PyBaMM's ``{"thermal": "lumped", "surface temperature": "lumped"}``.
"""

from __future__ import annotations

from cellax.physics.parameters import ParameterSet


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


def two_node_solve(params: ParameterSet, core_temp_k, scale_s, rhs_core, rhs_surface):
    """Solve ``(I - scale_s J) x = rhs`` with ``J`` the Jacobian of :func:`two_node_rates` in the
    temperatures (heat held fixed, heat capacity at ``core_temp_k``): Cramer's rule on 2×2."""
    s = params.scalars
    coupling = s["heat_transfer_coeff_w_m2k"] * s["cell_cooling_area_m2"]
    core_heat_capacity = params.cell_heat_capacity(core_temp_k)
    a = 1 + scale_s * coupling / core_heat_capacity
    b = -scale_s * coupling / core_heat_capacity
    c = -scale_s * coupling / s["casing_heat_capacity_j_k"]
    d = 1 + scale_s * (coupling + 1 / s["environment_thermal_resistance_k_w"]) / s["casing_heat_capacity_j_k"]
    det = a * d - b * c
    return (d * rhs_core - b * rhs_surface) / det, (a * rhs_surface - c * rhs_core) / det
