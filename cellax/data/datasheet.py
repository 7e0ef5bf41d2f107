"""Cell datasheet limits: the envelope every generated current profile must respect.

Sign convention (PyBaMM's): positive current discharges the cell. Charge limits
are therefore negative numbers, discharge limits positive ones.

A current sample ``I`` at state of charge ``soc`` is allowed when

* ``soc`` lies inside the critical SOC band ``[critical_soc_low, critical_soc_high]``
  and ``charge_continuous_a <= I <= discharge_continuous_a``, or it exceeds the
  continuous limit for at most ``pulse_duration_s`` consecutive seconds while staying
  within ``charge_pulse_a <= I <= discharge_pulse_a``;
* ``soc`` lies outside that band and ``critical_charge_a <= I <= critical_discharge_a``
  (no pulses there).

The state of charge itself must stay inside ``[soc_min, soc_max]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from pydantic import Field, model_validator

from cellax.config import Strict


class Datasheet(Strict):
    """Limits of one cell type, in SI units and degrees Celsius."""


    name: str
    capacity_ah: float = Field(gt=0, description="nominal capacity")
    voltage_min_v: float = Field(gt=0)
    voltage_max_v: float = Field(gt=0)
    charge_continuous_a: float = Field(lt=0, description="most negative continuous current")
    discharge_continuous_a: float = Field(gt=0)
    charge_pulse_a: float = Field(lt=0, description="most negative current for a pulse")
    discharge_pulse_a: float = Field(gt=0)
    pulse_duration_s: float = Field(gt=0, description="longest run above the continuous limit")
    critical_soc_low: float = Field(ge=0, le=1)
    critical_soc_high: float = Field(ge=0, le=1)
    critical_charge_a: float = Field(lt=0, description="charge limit outside the critical SOC band")
    critical_discharge_a: float = Field(gt=0)
    temp_min_degc: float
    temp_max_degc: float
    soc_min: float = Field(ge=0, le=1)
    soc_max: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _check_ordering(self) -> "Datasheet":
        pairs = [
            ("voltage_min_v", "voltage_max_v"),
            ("temp_min_degc", "temp_max_degc"),
            ("soc_min", "soc_max"),
            ("critical_soc_low", "critical_soc_high"),
        ]
        for low, high in pairs:
            if getattr(self, low) >= getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) must be below {high} ({getattr(self, high)})")
        if self.charge_pulse_a > self.charge_continuous_a:
            raise ValueError("charge_pulse_a must be at least as negative as charge_continuous_a")
        if self.discharge_pulse_a < self.discharge_continuous_a:
            raise ValueError("discharge_pulse_a must be at least discharge_continuous_a")
        if self.critical_charge_a < self.charge_continuous_a:
            raise ValueError("critical_charge_a must not exceed the continuous charge limit in magnitude")
        if self.critical_discharge_a > self.discharge_continuous_a:
            raise ValueError("critical_discharge_a must not exceed the continuous discharge limit")
        return self

    def in_critical_band(self, soc: np.ndarray) -> np.ndarray:
        """True where ``soc`` lies outside ``[critical_soc_low, critical_soc_high]``."""
        soc = np.asarray(soc)
        return (soc < self.critical_soc_low) | (soc > self.critical_soc_high)

    def _limits_a(self, soc: np.ndarray, charge_a: float, discharge_a: float) -> tuple[np.ndarray, np.ndarray]:
        critical = self.in_critical_band(soc)
        return (
            np.where(critical, self.critical_charge_a, charge_a),
            np.where(critical, self.critical_discharge_a, discharge_a),
        )

    def continuous_limits_a(self, soc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(charge, discharge) current bounds for sustained operation at ``soc``."""
        return self._limits_a(soc, self.charge_continuous_a, self.discharge_continuous_a)

    def pulse_limits_a(self, soc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(charge, discharge) current bounds for a pulse of at most ``pulse_duration_s``."""
        return self._limits_a(soc, self.charge_pulse_a, self.discharge_pulse_a)


LG_M50 = Datasheet(
    name="LG M50 21700 (PyBaMM Chen2020)",
    capacity_ah=5.0,
    voltage_min_v=2.5,
    voltage_max_v=4.2,
    charge_continuous_a=-3.395,
    discharge_continuous_a=7.275,
    charge_pulse_a=-3.395,
    discharge_pulse_a=19.04,
    pulse_duration_s=10.0,
    critical_soc_low=0.2,
    critical_soc_high=0.8,
    critical_charge_a=-1.455,
    critical_discharge_a=0.970,
    temp_min_degc=-25.0,
    temp_max_degc=60.0,
    soc_min=0.01,
    soc_max=0.98,
)
"""The LG M50 21700 cell described by PyBaMM's ``Chen2020`` (and ``OKane2022``) set."""

DATASHEET_DIR = Path(__file__).resolve().parent / "datasheets"
_BUILTIN = {"Chen2020": LG_M50, "OKane2022": LG_M50}


def load_datasheet(path: str | Path) -> Datasheet:
    """Read a datasheet from a YAML file (keys as the fields of :class:`Datasheet`)."""
    with open(path) as stream:
        return Datasheet.model_validate(yaml.safe_load(stream))


def datasheet_for(parameter_set: str) -> Datasheet:
    """The default datasheet of a PyBaMM parameter set.

    Built in for ``Chen2020``/``OKane2022``; other sets read
    ``cellax/data/datasheets/<parameter_set>.yaml``.
    """
    if parameter_set in _BUILTIN:
        return _BUILTIN[parameter_set]
    path = DATASHEET_DIR / f"{parameter_set}.yaml"
    if not path.exists():
        known = sorted(set(_BUILTIN) | {p.stem for p in DATASHEET_DIR.glob("*.yaml")})
        raise ValueError(
            f"no datasheet for parameter set {parameter_set!r}; known: {', '.join(known)}. "
            "Give one inline under 'datasheet:' in the config."
        )
    return load_datasheet(path)
