"""Canonical signals: names, units, descriptions, the units errors are reported in, and ``KELVIN``.

The one owner of these names: the HDF5 format (:mod:`cellax.data.store`), both
simulation backends, the physics models' ``outputs``, training configs and the
metrics all read them from here. Temperatures are stored in °C and computed in K:
``T[K] = T[°C] + KELVIN``.
"""

from __future__ import annotations

from typing import Literal

KELVIN = 273.15
"""0 °C in kelvin."""

SIGNALS: dict[str, tuple[str, str]] = {
    "time_s": ("s", "time since profile start"),
    "current_a": ("A", "cell current, positive = discharge"),
    "voltage_v": ("V", "terminal voltage"),
    "ocv_v": ("V", "open-circuit voltage at the bulk particle stoichiometries"),
    "soc": ("1", "state of charge 0..1 from the negative-electrode stoichiometry window"),
    "surface_temp_degc": ("degC", "cell surface (casing) temperature"),
    "core_temp_degc": ("degC", "cell core (volume-averaged) temperature"),
    "ambient_temp_degc": ("degC", "ambient temperature"),
    "anode_potential_v": ("V", "negative-electrode surface potential vs Li/Li+ at the separator"),
}
"""Canonical signals in their stored order: name -> (units, description)."""

MODEL_SIGNALS = frozenset(SIGNALS) - {"time_s"}
"""Signals a sequence model may take or predict."""

ERROR_UNITS: dict[str, tuple[float, str]] = {
    "voltage_v": (1e3, "mV"),
    "ocv_v": (1e3, "mV"),
    "anode_potential_v": (1e3, "mV"),
    "surface_temp_degc": (1.0, "K"),
    "core_temp_degc": (1.0, "K"),
    "soc": (100.0, "% SOC"),
    "current_a": (1.0, "A"),
    "ambient_temp_degc": (1.0, "K"),
}
"""Signal -> (scale from stored units, unit of an error): errors read in mV, K and % SOC."""

FIT_SIGNALS = Literal["voltage_v", "surface_temp_degc", "core_temp_degc"]
"""Measured signals a parameter fit can match."""


def error_units(name: str) -> tuple[float, str]:
    """``(scale, unit)`` an error of ``name`` is reported in (``(1, "")`` for a signal without one)."""
    return ERROR_UNITS.get(name, (1.0, ""))
