"""PyBaMM parameter sets as JAX PyTrees, functions included.

:func:`load_parameter_set` turns one of PyBaMM's bundled parameter sets into a
:class:`ParameterSet`: an Equinox module whose only leaves are float64 scalars
(``params.scalars``) and whose parameter functions are static, pure JAX
callables. ``jit``, ``vmap`` and ``grad`` take it as it is; changing values
(``eqx.tree_at``, a vmapped batch of ``scalars``) never recompiles.

How the functions are converted (route (a), PyBaMM's own expression trees).
Each function is the exact expression PyBaMM's SPMe puts in its equations:
``pybamm.LithiumIonParameters`` called with symbolic arguments, processed by
``pybamm.ParameterValues`` and compiled node by node to ``jax.numpy`` by
:mod:`cellax.physics.functions`. That is the set's own function *plus* what the
model wraps around it, which a table or a retyped formula would miss:

- ``U(sto, T) = U_ref(clip(sto)) + (T - T_ref) dU/dT(clip(sto)) + asymptotes(sto)``,
  with ``clip`` to ``[1e-10, 1 - 1e-10]`` and PyBaMM's OCP barrier terms (about
  1 mV at sto = 0.001 and 0.999, 0 V in between);
- ``D(sto, T)`` with sto clipped the same way; ``D_e``, ``kappa_e`` with
  ``c_e >= 10 mol/m3``;
- ``j0`` with every square root and power of ``c_e``, ``c_s`` and ``c_max - c_s``
  replaced by PyBaMM's regularised power ``x (x^2 + 1e-6)^((a-1)/2)`` of
  ``x = c_e / c_e_init``, ``c_s / c_max``, ``1 - c_s / c_max``: a relative
  ``(1 - a) / 2 * 1e-6 / x^2`` off the bare formula (1e-4 at x = 0.05), and
  finite derivatives as x -> 0.

Tabulating on grids (route (b)) would lose this exactness for nothing; data
tables inside a set (OKane2022's graphite OCP, Ai2020's OCPs) are converted to
the same piecewise polynomials scipy/CasADi evaluate. Agreement with PyBaMM's
own numpy evaluation of the same expressions: within 1e-13 of each function's
scale for the five validated sets (tests assert 1e-10 relative).

Float64. :func:`load_parameter_set` imports PyBaMM (which switches on
``jax_enable_x64``) and calls ``jax.config.update("jax_enable_x64", True)``
itself: cell physics needs float64. Importing this module imports neither.

Scalars (``params.scalars``; SI units in the name). Values of functions of
position or time in PyBaMM (radius, porosity, initial concentration, ambient
temperature) must be constant; a set where they vary is refused.

==================================== ===============================================================
key                                  PyBaMM parameter
==================================== ===============================================================
neg_thickness_m                      Negative electrode thickness [m]
sep_thickness_m                      Separator thickness [m]
pos_thickness_m                      Positive electrode thickness [m]
neg_cc_thickness_m                   Negative current collector thickness [m]
pos_cc_thickness_m                   Positive current collector thickness [m]
electrode_height_m                   Electrode height [m]
electrode_width_m                    Electrode width [m]
electrode_area_m2                    height x width (PyBaMM's ``A_cc``; one electrode pair)
n_electrodes_parallel                Number of electrodes connected in parallel to make a cell
n_cells_series                       Number of cells connected in series to make a battery
cell_volume_m3                       Cell volume [m3]
cell_cooling_area_m2                 Cell cooling surface area [m2]
neg_particle_radius_m                Negative particle radius [m]
pos_particle_radius_m                Positive particle radius [m]
neg_max_conc_mol_m3                  Maximum concentration in negative electrode [mol.m-3]
pos_max_conc_mol_m3                  Maximum concentration in positive electrode [mol.m-3]
neg_init_conc_mol_m3                 Initial concentration in negative electrode [mol.m-3]
pos_init_conc_mol_m3                 Initial concentration in positive electrode [mol.m-3]
neg_active_frac                      Negative electrode active material volume fraction
pos_active_frac                      Positive electrode active material volume fraction
neg_porosity                         Negative electrode porosity
sep_porosity                         Separator porosity
pos_porosity                         Positive electrode porosity
neg_bruggeman_electrolyte            Negative electrode Bruggeman coefficient (electrolyte)
sep_bruggeman_electrolyte            Separator Bruggeman coefficient (electrolyte)
pos_bruggeman_electrolyte            Positive electrode Bruggeman coefficient (electrolyte)
neg_bruggeman_electrode              Negative electrode Bruggeman coefficient (electrode)
pos_bruggeman_electrode              Positive electrode Bruggeman coefficient (electrode)
electrolyte_init_conc_mol_m3         Initial concentration in electrolyte [mol.m-3]
neg_cc_conductivity_s_m              Negative current collector conductivity [S.m-1]
pos_cc_conductivity_s_m              Positive current collector conductivity [S.m-1]
contact_resistance_ohm               Contact resistance [Ohm] (0 where the set has none)
nominal_capacity_ah                  Nominal cell capacity [A.h]
voltage_min_v                        Lower voltage cut-off [V]
voltage_max_v                        Upper voltage cut-off [V]
ocv_soc0_v                           Open-circuit voltage at 0% SOC [V] (defines x_0, y_0)
ocv_soc100_v                         Open-circuit voltage at 100% SOC [V] (defines x_100, y_100)
reference_temp_k                     Reference temperature [K]
initial_temp_k                       Initial temperature [K]
ambient_temp_k                       Ambient temperature [K]
heat_transfer_coeff_w_m2k            Total heat transfer coefficient [W.m-2.K-1] (core to surface)
environment_thermal_resistance_k_w   Environment thermal resistance [K.W-1] (``thermal``)
casing_heat_capacity_j_k             Casing heat capacity [J.K-1] (``thermal``)
x_0, x_100                           negative stoichiometry at 0 % / 100 % SOC (PyBaMM electrode SOH)
y_100, y_0                           positive stoichiometry at 100 % / 0 % SOC
neg_diffusivity_scale                1.0; multiplies ``neg_diffusivity`` (identification handle)
pos_diffusivity_scale                1.0; multiplies ``pos_diffusivity``
neg_exchange_current_scale           1.0; multiplies ``neg_exchange_current``
pos_exchange_current_scale           1.0; multiplies ``pos_exchange_current``
electrolyte_diffusivity_scale        1.0; multiplies ``electrolyte_diffusivity``
electrolyte_conductivity_scale       1.0; multiplies ``electrolyte_conductivity``
cell_heat_capacity_scale             1.0; multiplies ``cell_heat_capacity``
==================================== ===============================================================

Functions (methods of :class:`ParameterSet`; the unscaled PyBaMM expressions are
``params.functions.<name>``). ``sto`` is a stoichiometry, ``T`` in K,
concentrations in mol/m3:

======================================== ===========================================================
method                                   PyBaMM expression (``param = LithiumIonParameters``)
======================================== ===========================================================
neg_ocp(sto, T), pos_ocp                 ``param.n.prim.U(sto, T)`` [V]
neg_entropic_change(sto), pos_...        ``param.n.prim.dUdT(sto)`` [V/K] (PyBaMM 26: of sto only)
neg_diffusivity(sto, T), pos_...         ``param.n.prim.D(sto * c_max, T)`` [m2/s] x scale
neg_exchange_current(c_e, c_s, c_max, T) ``param.n.prim.j0(c_e, c_s, T)`` [A/m2] x scale, c_max live
electrolyte_diffusivity(c_e, T)          ``param.D_e(c_e, T)`` [m2/s] x scale
electrolyte_conductivity(c_e, T)         ``param.kappa_e(c_e, T)`` [S/m] x scale
transference_number(c_e, T)              ``param.t_plus(c_e, T)``
thermodynamic_factor(c_e, T)             ``param.thermodynamic_factor(c_e, T)``
neg_conductivity(sto, T), pos_...        ``param.n.sigma(sto, T)`` [S/m] (electrode, electronic)
volumetric_heat_capacity(T)              ``param.therm.rho_c_p_eff(T)`` [J/K/m3], layer- and
                                         collector-thickness-weighted density x specific heat
cell_heat_capacity(T)                    scale x cell_volume_m3 x volumetric_heat_capacity(T) [J/K]
======================================== ===========================================================

Constants inside the functions (T_ref, activation energies, ``c_e_init`` as the
j0 regularisation scale) are baked in at load time: changing
``scalars["reference_temp_k"]`` afterwards does not move the OCP's entropic
term; reload with ``overrides`` for that. Only ``c_max`` is a live argument
of ``j0``, as in PyBaMM's signature.

Missing thermal parameters. No bundled set defines the two parameters of the
surface node; they come from ``thermal`` (a :class:`cellax.physics.config.ThermalConfig`
or a dict of its fields, its defaults otherwise). Sets without a thermal
parametrisation (Prada2013, Ramadass2004) get documented defaults, listed in
``params.defaulted``:

======================================================= =============================================
parameter                                               default
======================================================= =============================================
current-collector thickness, conductivity, density,     PyBaMM's Chen2020 (LG M50: Cu / Al foils,
specific heat; electrode and separator density and      graphite, NMC811, ceramic-coated separator)
specific heat; Total heat transfer coefficient
Cell volume [m3]                                        the electrode stack: (L_cc,n + L_n + L_s + L_p
                                                        + L_cc,p) x A_cc x n_parallel
Cell cooling surface area [m2]                          a cylinder of that volume with height
                                                        = 5 radii (the 26650 can: r 13 mm, h 65 mm)
======================================================= =============================================

Refused sets (``ValueError`` saying why): other chemistries (ECM, lead-acid,
sodium-ion), MSMR open-circuit potentials, composite (two-phase) electrodes,
half-cells with a lithium-metal counter electrode, and sets missing other
parameters the model needs.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from cellax.physics.config import ThermalConfig, bundled_parameter_sets
from cellax.physics.functions import ParameterFunction, compile_expression
from cellax.physics.particle import FARADAY
from cellax.pybamm_import import import_pybamm

PYBAMM_MODEL_OPTIONS = {"thermal": "lumped", "surface temperature": "lumped"}
VALIDATED_PARAMETER_SETS = ("Chen2020", "Marquis2019", "Prada2013", "Ecker2015", "OKane2022")
THERMAL_DEFAULTS_FROM = "Chen2020"

POSITIVE, FRACTION, AT_LEAST_ONE, NON_NEGATIVE = "positive", "a fraction in (0, 1]", ">= 1", "non-negative"

# key -> (PyBaMM name, physical range)
_SCALARS: dict[str, tuple[str, str]] = {
    "neg_thickness_m": ("Negative electrode thickness [m]", POSITIVE),
    "sep_thickness_m": ("Separator thickness [m]", POSITIVE),
    "pos_thickness_m": ("Positive electrode thickness [m]", POSITIVE),
    "neg_cc_thickness_m": ("Negative current collector thickness [m]", POSITIVE),
    "pos_cc_thickness_m": ("Positive current collector thickness [m]", POSITIVE),
    "electrode_height_m": ("Electrode height [m]", POSITIVE),
    "electrode_width_m": ("Electrode width [m]", POSITIVE),
    "n_electrodes_parallel": ("Number of electrodes connected in parallel to make a cell", AT_LEAST_ONE),
    "n_cells_series": ("Number of cells connected in series to make a battery", AT_LEAST_ONE),
    "cell_volume_m3": ("Cell volume [m3]", POSITIVE),
    "cell_cooling_area_m2": ("Cell cooling surface area [m2]", POSITIVE),
    "neg_particle_radius_m": ("Negative particle radius [m]", POSITIVE),
    "pos_particle_radius_m": ("Positive particle radius [m]", POSITIVE),
    "neg_max_conc_mol_m3": ("Maximum concentration in negative electrode [mol.m-3]", POSITIVE),
    "pos_max_conc_mol_m3": ("Maximum concentration in positive electrode [mol.m-3]", POSITIVE),
    "neg_init_conc_mol_m3": ("Initial concentration in negative electrode [mol.m-3]", POSITIVE),
    "pos_init_conc_mol_m3": ("Initial concentration in positive electrode [mol.m-3]", POSITIVE),
    "neg_active_frac": ("Negative electrode active material volume fraction", FRACTION),
    "pos_active_frac": ("Positive electrode active material volume fraction", FRACTION),
    "neg_porosity": ("Negative electrode porosity", FRACTION),
    "sep_porosity": ("Separator porosity", FRACTION),
    "pos_porosity": ("Positive electrode porosity", FRACTION),
    "neg_bruggeman_electrolyte": ("Negative electrode Bruggeman coefficient (electrolyte)", POSITIVE),
    "sep_bruggeman_electrolyte": ("Separator Bruggeman coefficient (electrolyte)", POSITIVE),
    "pos_bruggeman_electrolyte": ("Positive electrode Bruggeman coefficient (electrolyte)", POSITIVE),
    "neg_bruggeman_electrode": ("Negative electrode Bruggeman coefficient (electrode)", NON_NEGATIVE),
    "pos_bruggeman_electrode": ("Positive electrode Bruggeman coefficient (electrode)", NON_NEGATIVE),
    "electrolyte_init_conc_mol_m3": ("Initial concentration in electrolyte [mol.m-3]", POSITIVE),
    "neg_cc_conductivity_s_m": ("Negative current collector conductivity [S.m-1]", POSITIVE),
    "pos_cc_conductivity_s_m": ("Positive current collector conductivity [S.m-1]", POSITIVE),
    "contact_resistance_ohm": ("Contact resistance [Ohm]", NON_NEGATIVE),
    "nominal_capacity_ah": ("Nominal cell capacity [A.h]", POSITIVE),
    "voltage_min_v": ("Lower voltage cut-off [V]", POSITIVE),
    "voltage_max_v": ("Upper voltage cut-off [V]", POSITIVE),
    "ocv_soc0_v": ("Open-circuit voltage at 0% SOC [V]", POSITIVE),
    "ocv_soc100_v": ("Open-circuit voltage at 100% SOC [V]", POSITIVE),
    "reference_temp_k": ("Reference temperature [K]", POSITIVE),
    "initial_temp_k": ("Initial temperature [K]", POSITIVE),
    "ambient_temp_k": ("Ambient temperature [K]", POSITIVE),
    "heat_transfer_coeff_w_m2k": ("Total heat transfer coefficient [W.m-2.K-1]", POSITIVE),
    "environment_thermal_resistance_k_w": ("Environment thermal resistance [K.W-1]", POSITIVE),
    "casing_heat_capacity_j_k": ("Casing heat capacity [J.K-1]", POSITIVE),
}
SCALE_KEYS = (
    "neg_diffusivity_scale",
    "pos_diffusivity_scale",
    "neg_exchange_current_scale",
    "pos_exchange_current_scale",
    "electrolyte_diffusivity_scale",
    "electrolyte_conductivity_scale",
    "cell_heat_capacity_scale",
)
_OPTIONAL = {"Contact resistance [Ohm]": 0.0}  # not a model parameter with the generator's options
_THERMAL_CONFIG_NAMES = {
    "environment_thermal_resistance_k_w": "Environment thermal resistance [K.W-1]",
    "casing_heat_capacity_j_k": "Casing heat capacity [J.K-1]",
}
_COPIED_DEFAULTS = (  # filled from THERMAL_DEFAULTS_FROM where a set lacks them
    "Negative current collector thickness [m]",
    "Positive current collector thickness [m]",
    "Negative current collector conductivity [S.m-1]",
    "Positive current collector conductivity [S.m-1]",
    "Negative current collector density [kg.m-3]",
    "Positive current collector density [kg.m-3]",
    "Negative current collector specific heat capacity [J.kg-1.K-1]",
    "Positive current collector specific heat capacity [J.kg-1.K-1]",
    "Negative electrode density [kg.m-3]",
    "Positive electrode density [kg.m-3]",
    "Separator density [kg.m-3]",
    "Negative electrode specific heat capacity [J.kg-1.K-1]",
    "Positive electrode specific heat capacity [J.kg-1.K-1]",
    "Separator specific heat capacity [J.kg-1.K-1]",
    "Total heat transfer coefficient [W.m-2.K-1]",
)
_DERIVED_DEFAULTS = ("Cell volume [m3]", "Cell cooling surface area [m2]")


@dataclass(frozen=True)
class ParameterFunctions:
    """The static, unscaled PyBaMM functions of a :class:`ParameterSet` (see the module table)."""

    neg_ocp: ParameterFunction
    pos_ocp: ParameterFunction
    neg_entropic_change: ParameterFunction
    pos_entropic_change: ParameterFunction
    neg_diffusivity: ParameterFunction
    pos_diffusivity: ParameterFunction
    neg_exchange_current: ParameterFunction
    pos_exchange_current: ParameterFunction
    electrolyte_diffusivity: ParameterFunction
    electrolyte_conductivity: ParameterFunction
    transference_number: ParameterFunction
    thermodynamic_factor: ParameterFunction
    neg_conductivity: ParameterFunction
    pos_conductivity: ParameterFunction
    volumetric_heat_capacity: ParameterFunction


class ParameterSet(eqx.Module):
    """One cell's parameters: float64 ``scalars`` (the only leaves) and static PyBaMM functions.

    ``defaulted`` names the PyBaMM parameters the set lacked and that were filled
    with the documented defaults of the module docstring. To vary a value without
    recompiling, replace it with a float64 array (``eqx.tree_at(lambda p:
    p.scalars[key], params, jnp.asarray(v, dtype=jnp.float64))``): a Python float
    is static under ``eqx.filter_jit`` and a weakly typed array is another type.
    """

    name: str = eqx.field(static=True)
    scalars: dict[str, jax.Array]
    functions: ParameterFunctions = eqx.field(static=True)
    defaulted: tuple[str, ...] = eqx.field(static=True, default=())

    @property
    def dtype(self):
        """The floating dtype of the scalars (float64 as loaded): models and solvers compute in it."""
        return self.scalars["neg_max_conc_mol_m3"].dtype

    def astype(self, dtype) -> ParameterSet:
        """The same set with every scalar cast to ``dtype`` (e.g. ``jnp.float32`` for a speed/accuracy study)."""
        return eqx.tree_at(lambda p: p.scalars, self, {k: v.astype(dtype) for k, v in self.scalars.items()})

    def with_values(self, values: Mapping[str, jax.Array]) -> ParameterSet:
        """The same set with some scalars replaced (traced values welcome: fitting, sensitivities).

        Raises ``ValueError`` naming any key that is not a scalar of the set.
        """
        unknown = sorted(set(values) - set(self.scalars))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; known: {sorted(self.scalars)}")
        cast = {k: jnp.asarray(v, dtype=self.dtype) for k, v in values.items()}
        return eqx.tree_at(lambda p: p.scalars, self, {**self.scalars, **cast})

    def neg_ocp(self, sto, T):
        """Negative-electrode open-circuit potential U_n(sto, T) [V]."""
        return self.functions.neg_ocp(sto, T)

    def pos_ocp(self, sto, T):
        """Positive-electrode open-circuit potential U_p(sto, T) [V]."""
        return self.functions.pos_ocp(sto, T)

    def neg_entropic_change(self, sto):
        """dU_n/dT(sto) [V/K]; 0 where the set has none."""
        return self.functions.neg_entropic_change(sto)

    def pos_entropic_change(self, sto):
        """dU_p/dT(sto) [V/K]; 0 where the set has none."""
        return self.functions.pos_entropic_change(sto)

    def neg_diffusivity(self, sto, T):
        """Negative particle diffusivity [m2/s], times ``neg_diffusivity_scale``."""
        return self.scalars["neg_diffusivity_scale"] * self.functions.neg_diffusivity(sto, T)

    def pos_diffusivity(self, sto, T):
        """Positive particle diffusivity [m2/s], times ``pos_diffusivity_scale``."""
        return self.scalars["pos_diffusivity_scale"] * self.functions.pos_diffusivity(sto, T)

    def neg_exchange_current(self, c_e, c_s_surf, c_s_max, T):
        """Negative exchange-current density j0_n [A/m2], times ``neg_exchange_current_scale``."""
        return self.scalars["neg_exchange_current_scale"] * self.functions.neg_exchange_current(
            c_e, c_s_surf, c_s_max, T
        )

    def pos_exchange_current(self, c_e, c_s_surf, c_s_max, T):
        """Positive exchange-current density j0_p [A/m2], times ``pos_exchange_current_scale``."""
        return self.scalars["pos_exchange_current_scale"] * self.functions.pos_exchange_current(
            c_e, c_s_surf, c_s_max, T
        )

    def electrolyte_diffusivity(self, c_e, T):
        """Electrolyte diffusivity D_e [m2/s], times ``electrolyte_diffusivity_scale``."""
        return self.scalars["electrolyte_diffusivity_scale"] * self.functions.electrolyte_diffusivity(c_e, T)

    def electrolyte_conductivity(self, c_e, T):
        """Electrolyte conductivity kappa_e [S/m], times ``electrolyte_conductivity_scale``."""
        return self.scalars["electrolyte_conductivity_scale"] * self.functions.electrolyte_conductivity(c_e, T)

    def transference_number(self, c_e, T):
        """Cation transference number t+ (dimensionless)."""
        return self.functions.transference_number(c_e, T)

    def thermodynamic_factor(self, c_e, T):
        """Thermodynamic factor 1 + dln f/dln c (dimensionless)."""
        return self.functions.thermodynamic_factor(c_e, T)

    def neg_conductivity(self, sto, T):
        """Negative-electrode electronic conductivity [S/m]."""
        return self.functions.neg_conductivity(sto, T)

    def pos_conductivity(self, sto, T):
        """Positive-electrode electronic conductivity [S/m]."""
        return self.functions.pos_conductivity(sto, T)

    def volumetric_heat_capacity(self, T):
        """PyBaMM's effective rho c_p of the cell stack [J/K/m3]."""
        return self.functions.volumetric_heat_capacity(T)

    def cell_heat_capacity(self, T):
        """Heat capacity of the core node [J/K]: scale x cell volume x rho c_p(T), as PyBaMM's lumped model."""
        s = self.scalars
        return s["cell_heat_capacity_scale"] * s["cell_volume_m3"] * self.functions.volumetric_heat_capacity(T)


def initial_stoichiometries(params: ParameterSet, soc) -> tuple[jax.Array, jax.Array]:
    """Particle stoichiometries ``(x, y)`` at state of charge ``soc`` (pure JAX).

    Linear between the electrode-SOH points, as PyBaMM's ``initial_soc``:
    ``x = x_0 + soc (x_100 - x_0)``, ``y = y_0 - soc (y_0 - y_100)``. A concrete
    ``soc`` outside [0, 1] raises ``ValueError``; traced values are not checked.
    """
    soc = jnp.asarray(soc, dtype=params.dtype)
    if not isinstance(soc, jax.core.Tracer):
        values = np.asarray(soc)
        if not np.all((values >= 0) & (values <= 1)):
            raise ValueError(f"soc must lie in [0, 1], got {values}")
    s = params.scalars
    return s["x_0"] + soc * (s["x_100"] - s["x_0"]), s["y_0"] - soc * (s["y_0"] - s["y_100"])


def soc_capacity_ah(params: ParameterSet):
    """Charge between 0 and 100 % SOC (Ah) as the ``soc`` signal counts it (the negative electrode's
    stoichiometry window): ``F c_max ε_s L A n (x_100 - x_0) / 3600``, so ``d soc/dt = -I / 3600 Q``."""
    s = params.scalars
    lithium_mol = (s["neg_max_conc_mol_m3"] * s["neg_active_frac"] * s["neg_thickness_m"] * s["electrode_area_m2"]
                   * s["n_electrodes_parallel"])
    return FARADAY * lithium_mol * (s["x_100"] - s["x_0"]) / 3600.0


def supported_parameter_sets() -> list[str]:
    """The bundled sets :func:`load_parameter_set` accepts (a quick structural check, no conversion)."""
    return list(_supported())


@lru_cache(maxsize=1)
def _supported() -> tuple[str, ...]:
    return tuple(name for name in bundled_parameter_sets() if _unsupported_reason(name) is None)


def load_parameter_set(
    name: str,
    overrides: Mapping[str, float] | None = None,
    thermal: ThermalConfig | Mapping[str, float] | None = None,
) -> ParameterSet:
    """Load PyBaMM's parameter set ``name`` as a validated float64 :class:`ParameterSet`.

    ``overrides`` maps PyBaMM parameter names to numbers (as
    ``SimulationConfig.parameter_overrides``); they are applied after ``thermal``
    and before missing defaults are filled. Raises ``ValueError`` for an unknown
    or unsupported set, an unknown override name, or a value outside its
    physical range (the message names the parameter).
    """
    pybamm = import_pybamm()
    jax.config.update("jax_enable_x64", True)
    values, defaulted = _parameter_values(pybamm, name, overrides, thermal)
    inputs = _model_parameters()
    scalars = {key: _constant(pybamm, values, pname, inputs.get(pname, ())) for key, (pname, _) in _SCALARS.items()}
    _check_scalars(name, scalars)
    try:
        x_0, x_100, y_100, y_0 = pybamm.lithium_ion.get_min_max_stoichiometries(values)
    except (ValueError, RuntimeError, pybamm.SolverError) as err:
        raise ValueError(f"{name}: PyBaMM's electrode-SOH calculation failed: {err}") from err
    scalars.update(x_0=x_0, x_100=x_100, y_100=y_100, y_0=y_0)
    scalars["electrode_area_m2"] = scalars["electrode_height_m"] * scalars["electrode_width_m"]
    scalars.update(dict.fromkeys(SCALE_KEYS, 1.0))
    scalars = {k: jnp.asarray(float(v), dtype=jnp.float64) for k, v in scalars.items()}
    functions = _compile_functions(pybamm, name, values)
    params = ParameterSet(name=name, scalars=scalars, functions=functions, defaulted=defaulted)
    _check_functions(params)
    return params


def pybamm_parameter_values(
    name: str,
    overrides: Mapping[str, float] | None = None,
    thermal: ThermalConfig | Mapping[str, float] | None = None,
):
    """The ``pybamm.ParameterValues`` a :class:`ParameterSet` is built from (thermal, overrides, defaults applied).

    Run PyBaMM with these to compare like with like.
    """
    return _parameter_values(import_pybamm(), name, overrides, thermal)[0]


# --- building ---------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _model_parameters() -> dict[str, tuple[str, ...]]:
    """Every parameter of PyBaMM's SPMe with the generator's thermal options -> its input names."""
    pybamm = import_pybamm()
    model = pybamm.lithium_ion.SPMe(PYBAMM_MODEL_OPTIONS)
    return {p.name: tuple(getattr(p, "input_names", ())) for p in model.parameters if p.name != "Current function [A]"}


def _unsupported_reason(name: str, supplied: frozenset[str] = frozenset()) -> str | None:
    """Why cellax.physics cannot use a bundled set (``supplied``: parameters the caller overrides), else None."""
    pybamm = import_pybamm()
    raw = pybamm.parameter_sets[name]
    chemistry = raw.get("chemistry", "lithium_ion")
    if chemistry != "lithium_ion":
        return f"its chemistry is {chemistry!r}; cellax.physics models lithium-ion cells (PyBaMM's SPM/SPMe)"
    if any("host site" in key for key in raw):
        return "it uses MSMR open-circuit potentials, which cellax.physics does not implement"
    if any(key.startswith(("Primary: ", "Secondary: ")) for key in raw):
        return "it describes composite electrodes (two particle phases), which cellax.physics does not implement"
    if "Exchange-current density for lithium metal electrode [A.m-2]" in raw:
        return "it is a half-cell with a lithium-metal counter electrode, which cellax.physics does not implement"
    fillable = set(_COPIED_DEFAULTS) | set(_DERIVED_DEFAULTS) | set(_THERMAL_CONFIG_NAMES.values())
    missing = sorted(set(_model_parameters()) - set(raw) - fillable - supplied)
    if missing:
        return f"it lacks parameter(s) the SPMe + lumped thermal model needs: {', '.join(missing)}"
    return None


def _parameter_values(pybamm, name, overrides, thermal):
    if name not in bundled_parameter_sets():
        raise ValueError(f"unknown parameter set {name!r}; supported: {', '.join(supported_parameter_sets())}")
    reason = _unsupported_reason(name, frozenset(overrides or ()))
    if reason is not None:
        raise ValueError(
            f"parameter set {name!r} is not supported: {reason}; supported: {', '.join(supported_parameter_sets())}"
        )
    values = pybamm.ParameterValues(name)
    values.update({pname: getattr(_thermal_config(thermal), key) for key, pname in _THERMAL_CONFIG_NAMES.items()})
    values.update(_checked_overrides(name, values, overrides or {}))
    defaulted = []
    reference = None
    for pname in _COPIED_DEFAULTS:
        if pname not in values:
            if reference is None:
                reference = pybamm.ParameterValues(THERMAL_DEFAULTS_FROM)
            values.update({pname: reference[pname]})
            defaulted.append(pname)
    if "Cell volume [m3]" not in values:
        layers = (
            "Negative current collector",
            "Negative electrode",
            "Separator",
            "Positive electrode",
            "Positive current collector",
        )
        thickness = sum(values[f"{layer} thickness [m]"] for layer in layers)
        area = values["Electrode height [m]"] * values["Electrode width [m]"]
        values.update(
            {"Cell volume [m3]": thickness * area * values["Number of electrodes connected in parallel to make a cell"]}
        )
        defaulted.append("Cell volume [m3]")
    if "Cell cooling surface area [m2]" not in values:
        radius = (values["Cell volume [m3]"] / (5 * math.pi)) ** (1 / 3)  # V = pi r^2 h with h = 5 r
        values.update({"Cell cooling surface area [m2]": 2 * math.pi * radius * (5 * radius + radius)})
        defaulted.append("Cell cooling surface area [m2]")
    return values, tuple(defaulted)


def _thermal_config(thermal) -> ThermalConfig:
    if thermal is None or isinstance(thermal, ThermalConfig):
        return thermal or ThermalConfig()
    try:
        return ThermalConfig(**dict(thermal))
    except (TypeError, ValueError) as err:  # pydantic's ValidationError is a ValueError naming the field
        raise ValueError(f"thermal: {err}") from err


def _checked_overrides(name, values, overrides: Mapping[str, float]) -> dict[str, float]:
    known = set(values.keys()) | set(_model_parameters()) | set(_OPTIONAL)
    unknown = [key for key in overrides if key not in known]
    if unknown:
        hints = {key: difflib.get_close_matches(key, sorted(known), n=1) for key in unknown}
        listed = "; ".join(
            f"{key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "") for key, hint in hints.items()
        )
        raise ValueError(f"overrides: {listed} not parameter(s) of {name}")
    for key, value in overrides.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"overrides: {key!r} must be a finite number, got {value!r}")
    return {key: float(value) for key, value in overrides.items()}


def _constant(pybamm, values, pname: str, input_names: tuple[str, ...]) -> float:
    """A parameter's value; a function of position/time must be constant (probed at several points)."""
    if pname not in values:
        return _OPTIONAL[pname]
    value = values[pname]
    if isinstance(value, numbers.Number):
        return float(value)
    results = set()
    for probe in (0.0, 1e-6, 1e-3, 1.0, 3600.0):
        symbol = pybamm.FunctionParameter(pname, {n: pybamm.Scalar(probe) for n in input_names})
        results.add(float(np.asarray(values.evaluate(symbol)).reshape(-1)[0]))
    if max(results) - min(results) > 1e-12 * max(abs(r) for r in results):
        raise ValueError(f"{pname} varies with {', '.join(input_names)}; cellax.physics needs it constant")
    return results.pop()


def _function_specs(pybamm, param) -> dict[str, tuple[str, tuple[str, ...], object]]:
    """field -> (PyBaMM name, argument names, model-level PyBaMM expression)."""
    sto, T, c_e, c_s = (pybamm.Variable(v) for v in ("sto", "T", "c_e", "c_s_surf"))
    specs = {}
    for short, domain in (("neg", param.n), ("pos", param.p)):
        Domain = "Negative" if short == "neg" else "Positive"
        phase = domain.prim
        specs |= {
            f"{short}_ocp": (f"{Domain} electrode OCP [V]", ("sto", "T"), phase.U(sto, T)),
            f"{short}_entropic_change": (f"{Domain} electrode OCP entropic change [V.K-1]", ("sto",), phase.dUdT(sto)),
            f"{short}_diffusivity": (
                f"{Domain} particle diffusivity [m2.s-1]",
                ("sto", "T"),
                phase.D(sto * phase.c_max, T),
            ),
            f"{short}_exchange_current": (
                f"{Domain} electrode exchange-current density [A.m-2]",
                ("c_e", "c_s_surf", "c_s_max", "T"),
                phase.j0(c_e, c_s, T),
            ),
            f"{short}_conductivity": (f"{Domain} electrode conductivity [S.m-1]", ("sto", "T"), domain.sigma(sto, T)),
        }
    return specs | {
        "electrolyte_diffusivity": ("Electrolyte diffusivity [m2.s-1]", ("c_e", "T"), param.D_e(c_e, T)),
        "electrolyte_conductivity": ("Electrolyte conductivity [S.m-1]", ("c_e", "T"), param.kappa_e(c_e, T)),
        "transference_number": ("Cation transference number", ("c_e", "T"), param.t_plus(c_e, T)),
        "thermodynamic_factor": ("Thermodynamic factor", ("c_e", "T"), param.thermodynamic_factor(c_e, T)),
        "volumetric_heat_capacity": ("densities x specific heat capacities", ("T",), param.therm.rho_c_p_eff(T)),
    }


def _compile_functions(pybamm, name, values) -> ParameterFunctions:
    param = pybamm.LithiumIonParameters(pybamm.BatteryModelOptions(PYBAMM_MODEL_OPTIONS))
    live_c_max = values.copy()  # j0 takes c_max as an argument: keep it a symbol
    live_c_max.update(
        {
            f"Maximum concentration in {d} electrode [mol.m-3]": pybamm.InputParameter("c_s_max")
            for d in ("negative", "positive")
        }
    )
    compiled = {}
    for field, (pname, args, expression) in _function_specs(pybamm, param).items():
        processor = live_c_max if "c_s_max" in args else values
        try:
            compiled[field] = compile_expression(processor.process_symbol(expression), args, name=pname)
        except (KeyError, TypeError, NotImplementedError, ValueError) as err:
            raise ValueError(f"{name}: cannot convert {pname!r} to JAX: {err}") from err
    return ParameterFunctions(**compiled)


# --- validation -------------------------------------------------------------------------------------------------


def _check_scalars(name: str, scalars: dict[str, float]) -> None:
    for key, (pname, rule) in _SCALARS.items():
        v = scalars[key]
        ok = (
            math.isfinite(v)
            and {
                POSITIVE: v > 0,
                FRACTION: 0 < v <= 1,
                AT_LEAST_ONE: v >= 1,
                NON_NEGATIVE: v >= 0,
            }[rule]
        )
        if not ok:
            raise ValueError(f"{name}: {pname!r} (scalars[{key!r}]) must be {rule}, got {v!r}")
    for electrode in ("neg", "pos"):
        if not scalars[f"{electrode}_init_conc_mol_m3"] < scalars[f"{electrode}_max_conc_mol_m3"]:
            pname = _SCALARS[f"{electrode}_init_conc_mol_m3"][0]
            raise ValueError(f"{name}: {pname!r} must be below the maximum concentration")
    for low, high in (("voltage_min_v", "voltage_max_v"), ("ocv_soc0_v", "ocv_soc100_v")):
        if not scalars[low] < scalars[high]:
            raise ValueError(f"{name}: {_SCALARS[low][0]!r} must be below {_SCALARS[high][0]!r}")


def _check_functions(params: ParameterSet) -> None:
    """Every function finite (and positive where physical) over the operating window."""
    s = {k: float(v) for k, v in params.scalars.items()}
    T = np.linspace(263.15, 333.15, 5)[:, None]
    c_e = s["electrolyte_init_conc_mol_m3"] * np.linspace(0.2, 2.0, 7)
    windows = {"neg": np.linspace(s["x_0"], s["x_100"], 9), "pos": np.linspace(s["y_100"], s["y_0"], 9)}
    f = params.functions
    checks: list[tuple[ParameterFunction, tuple, bool]] = [
        (f.electrolyte_diffusivity, (c_e, T), True),
        (f.electrolyte_conductivity, (c_e, T), True),
        (f.transference_number, (c_e, T), False),
        (f.thermodynamic_factor, (c_e, T), True),
        (f.volumetric_heat_capacity, (T,), True),
    ]
    for e, sto in windows.items():
        c_max = s[f"{e}_max_conc_mol_m3"]
        checks += [
            (getattr(f, f"{e}_ocp"), (sto, T), False),
            (getattr(f, f"{e}_entropic_change"), (sto,), False),
            (getattr(f, f"{e}_diffusivity"), (sto, T), True),
            (getattr(f, f"{e}_conductivity"), (sto, T), True),
            (getattr(f, f"{e}_exchange_current"), (c_e[:, None], sto * c_max, c_max, T[:, :, None]), True),
        ]
    for fn, args, positive in checks:
        out = np.asarray(fn(*args))
        bad = ~np.isfinite(out) | ((out <= 0) if positive else False)
        if bad.any():
            at = np.argwhere(bad)[0]
            where = ", ".join(
                f"{arg}={np.broadcast_to(a, out.shape)[tuple(at)]:.6g}" for arg, a in zip(fn.arg_names, args)
            )
            rule = "finite and positive" if positive else "finite"
            raise ValueError(f"{params.name}: {fn.name!r} must be {rule}, got {out[tuple(at)]!r} at {where}")
