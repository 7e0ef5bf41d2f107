"""Simulation backend "pybamm": the reference truth for synthetic data.

PyBaMM's SPMe (SPM or DFN selectable) with the two-node lumped thermal model
``{"thermal": "lumped", "surface temperature": "lumped"}``: the volume-averaged
cell temperature is the core node, the casing the surface node,

.. math::

    C_\\text{cell} \\dot T_\\text{core} = Q_\\text{gen} - h A (T_\\text{core} - T_\\text{surf}), \\qquad
    C_\\text{case} \\dot T_\\text{surf} = h A (T_\\text{core} - T_\\text{surf}) - (T_\\text{surf} - T_\\text{amb}) / R_\\text{env}.

The current is a linear interpolant through the profile samples (1 s apart by
default), solved with IDAKLU, whose step is capped at the sample step ``dt_s``
(option ``dt_max``): every sample interval then holds a solver step, so the
solver sees every kink of the current and cannot step over a pulse, however
long the rest before it. Uncapped, it grew its steps over a rest and skipped a
5 s pulse entirely: datasets without ``backend_version`` 2 (:data:`VERSION`) may
have missed short pulses. The cap costs solver steps: +20-40 % on one-hour drive
and dynamic profiles, up to 4x on cc_rest ones (one step a second instead of long
steps through rests). (Stopping at every kink through ``t_eval`` instead
restarts IDA at each: 4x slower on drive profiles, and the DFN failed its error
test after such a restart.) The true state of charge is read off the average
negative-particle stoichiometry ``x`` as ``soc = (x - x_0) / (x_100 - x_0)``, with
``x_0, x_100`` PyBaMM's electrode-SOH stoichiometries at the datasheet's voltage
limits, so ``soc`` agrees with PyBaMM's ``initial_soc``.

PyBaMM is imported lazily, in the worker that simulates: importing it switches on
``jax_enable_x64`` for the whole process.
"""

from __future__ import annotations

import numpy as np

from cellax.data.backend import SimulationResult, enforce_temperature_limits
from cellax.data.config import SimulationConfig
from cellax.data.datasheet import Datasheet
from cellax.physics.parameters import PYBAMM_MODEL_OPTIONS as MODEL_OPTIONS
from cellax.pybamm_import import import_pybamm
from cellax.signals import KELVIN
from cellax.status import OK, stopped

VERSION = 2
"""Revision of the simulation recipe, stored as the dataset attribute ``backend_version``
(1, or absent: the solver's step was not capped and could step over short pulses)."""

VARIABLES = {  # canonical signal (or helper) -> PyBaMM variable
    "time_s": "Time [s]",
    "current_a": "Current [A]",
    "voltage_v": "Voltage [V]",
    "ocv_v": "Bulk open-circuit voltage [V]",
    "surface_temp_degc": "Surface temperature [K]",
    "core_temp_degc": "Volume-averaged cell temperature [K]",
    "anode_potential_v": "Negative electrode surface potential difference at separator interface [V]",
    "_x_neg": "Average negative particle stoichiometry",
}


class PybammBackend:
    """Simulates current profiles of one cell; build once per worker, call per profile."""

    version = VERSION

    def __init__(self, config: SimulationConfig, datasheet: Datasheet):
        pybamm = import_pybamm()
        self.pybamm = pybamm
        self.config = config
        self.datasheet = datasheet
        params = pybamm.ParameterValues(config.parameter_set)
        params.update(
            {
                "Environment thermal resistance [K.W-1]": config.thermal.environment_thermal_resistance_k_w,
                "Casing heat capacity [J.K-1]": config.thermal.casing_heat_capacity_j_k,
                "Lower voltage cut-off [V]": datasheet.voltage_min_v,
                "Upper voltage cut-off [V]": datasheet.voltage_max_v,
            },
            check_already_exists=False,
        )
        unknown = [k for k in config.parameter_overrides if k not in params.keys()]
        if unknown:
            raise ValueError(f"simulation.parameter_overrides: {unknown} are not parameters of {config.parameter_set}")
        params.update(dict(config.parameter_overrides))
        self.model_class = getattr(pybamm.lithium_ion, config.model)
        self._check_parameters(params)
        self.params = params
        x_0, x_100, _, _ = pybamm.lithium_ion.get_min_max_stoichiometries(params)
        self.x_0, self.x_100 = float(x_0), float(x_100)

    def _check_parameters(self, params) -> None:
        model = self.model_class(MODEL_OPTIONS)
        needed = {p.name for p in model.parameters} - {"Current function [A]"}
        missing = sorted(n for n in needed if n not in params.keys())
        if missing:
            raise ValueError(
                f"parameter set {self.config.parameter_set} lacks {len(missing)} parameter(s) that the "
                f"{self.config.model} + lumped thermal model needs: {', '.join(missing)}; "
                "supply them under simulation.parameter_overrides"
            )

    def simulate(
        self,
        current_a: np.ndarray,
        dt_s: float,
        ambient_temp_degc: float,
        heat_transfer_coeff: float,
        initial_soc: float,
    ) -> SimulationResult:
        """Run one profile; never raises for a failing solve, it reports it in ``status``."""
        pybamm = self.pybamm
        time_s = np.arange(len(current_a)) * dt_s
        params = self.params.copy()
        params.update(
            {
                "Current function [A]": pybamm.Interpolant(time_s, current_a, pybamm.t, interpolator="linear"),
                "Ambient temperature [K]": ambient_temp_degc + KELVIN,
                "Initial temperature [K]": ambient_temp_degc + KELVIN,
                "Total heat transfer coefficient [W.m-2.K-1]": heat_transfer_coeff,
            }
        )
        solver = pybamm.IDAKLUSolver(rtol=self.config.rtol, atol=self.config.atol, options={"dt_max": float(dt_s)})
        try:
            sim = pybamm.Simulation(self.model_class(MODEL_OPTIONS), parameter_values=params, solver=solver)
            solution = sim.solve(t_eval=[0.0, float(time_s[-1])], t_interp=time_s, initial_soc=initial_soc)
            raw = {name: np.asarray(solution[var].entries, dtype=np.float64) for name, var in VARIABLES.items()}
            termination = str(solution.termination)
        except Exception as err:  # noqa: BLE001 - any solver failure becomes a status, never an abort
            reason = " ".join(str(err).split())[:300] or type(err).__name__
            return SimulationResult({}, stopped("solver_failed", reason))
        return self._to_signals(raw, termination, ambient_temp_degc, dt_s)

    def _to_signals(
        self, raw: dict[str, np.ndarray], termination: str, ambient_temp_degc: float, dt_s: float
    ) -> SimulationResult:
        on_grid = np.isclose(raw["time_s"] / dt_s, np.round(raw["time_s"] / dt_s), rtol=0, atol=1e-6)
        raw = {k: v[on_grid] for k, v in raw.items()}  # an event adds its own off-grid time point
        x_neg = raw.pop("_x_neg")
        signals = dict(raw)
        signals["soc"] = (x_neg - self.x_0) / (self.x_100 - self.x_0)
        signals["surface_temp_degc"] = raw["surface_temp_degc"] - KELVIN
        signals["core_temp_degc"] = raw["core_temp_degc"] - KELVIN
        signals["ambient_temp_degc"] = np.full_like(x_neg, ambient_temp_degc)
        status = OK
        if termination.startswith("event"):
            status = stopped("voltage_limit", termination.removeprefix("event:").strip(), signals["time_s"][-1])
        finite = np.all([np.isfinite(v) for v in signals.values()], axis=0)
        if not finite.all():
            bad = int(np.argmin(finite))
            status = stopped("solver_failed", "non-finite output", signals["time_s"][bad])
            signals = {k: v[:bad] for k, v in signals.items()}
        signals, status = enforce_temperature_limits(signals, status, self.datasheet)
        return SimulationResult(signals, status)
