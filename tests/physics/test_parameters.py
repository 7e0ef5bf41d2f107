"""PyBaMM parameter sets as JAX PyTrees: exact agreement with PyBaMM, transformations, validation."""

import re
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cellax.physics.config import ThermalConfig
from cellax.physics import parameters as P

pybamm = pytest.importorskip("pybamm")

FIVE = P.VALIDATED_PARAMETER_SETS


@pytest.fixture(scope="module")
def loaded():
    return {name: P.load_parameter_set(name) for name in FIVE}


@pytest.fixture(scope="module")
def lithium_ion_parameters():
    return pybamm.LithiumIonParameters(pybamm.BatteryModelOptions(P.PYBAMM_MODEL_OPTIONS))


def reference_expressions(param):
    """field -> PyBaMM's model-level expression of its arguments (the specification of each function)."""
    n, p = param.n, param.p
    return {
        "neg_ocp": lambda sto, T: n.prim.U(sto, T),
        "pos_ocp": lambda sto, T: p.prim.U(sto, T),
        "neg_entropic_change": lambda sto: n.prim.dUdT(sto),
        "pos_entropic_change": lambda sto: p.prim.dUdT(sto),
        "neg_diffusivity": lambda sto, T: n.prim.D(sto * n.prim.c_max, T),
        "pos_diffusivity": lambda sto, T: p.prim.D(sto * p.prim.c_max, T),
        "neg_exchange_current": lambda c_e, c_s, T: n.prim.j0(c_e, c_s, T),
        "pos_exchange_current": lambda c_e, c_s, T: p.prim.j0(c_e, c_s, T),
        "electrolyte_diffusivity": param.D_e,
        "electrolyte_conductivity": param.kappa_e,
        "transference_number": param.t_plus,
        "thermodynamic_factor": param.thermodynamic_factor,
        "neg_conductivity": n.sigma,
        "pos_conductivity": p.sigma,
        "volumetric_heat_capacity": param.therm.rho_c_p_eff,
    }


def evaluate_with_pybamm(values, build, columns):
    """PyBaMM's own numpy evaluation of ``build(*state_vectors)`` at each row of ``columns``."""
    slots = [pybamm.StateVector(slice(i, i + 1)) for i in range(len(columns))]
    expression = values.process_symbol(build(*slots))
    return np.array([np.asarray(expression.evaluate(y=np.array(row, dtype=float))).item() for row in zip(*columns)])


def grid(params, n=40, seed=0):
    rng = np.random.default_rng(seed)
    c_e0 = float(params.scalars["electrolyte_init_conc_mol_m3"])
    sto = np.concatenate([[0.0, 1e-4, 0.999, 1.0], rng.uniform(0, 1, n - 4)])
    return sto, rng.uniform(263.15, 333.15, n), c_e0 * rng.uniform(0.05, 2.5, n)


def test_module_import_does_not_import_pybamm():
    code = "import sys, cellax.physics, cellax.physics.parameters; assert 'pybamm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", FIVE)
def test_functions_agree_with_pybamm(name, loaded, lithium_ion_parameters):
    params = loaded[name]
    values = P.pybamm_parameter_values(name)
    sto, T, c_e = grid(params)
    for field, build in reference_expressions(lithium_ion_parameters).items():
        fn = getattr(params.functions, field)
        if fn.arg_names == ("c_e", "c_s_surf", "c_s_max", "T"):
            c_max = float(params.scalars[f"{field[:3]}_max_conc_mol_m3"])
            columns, ours = (c_e, sto * c_max, T), fn(c_e, sto * c_max, c_max, T)
        else:
            columns = {"sto": sto, "T": T, "c_e": c_e}
            columns = tuple(columns[a] for a in fn.arg_names)
            ours = fn(*columns)
        expected = evaluate_with_pybamm(values, build, columns)
        assert ours.dtype == jnp.float64 and ours.shape == expected.shape
        tol = 1e-10 * np.abs(expected) + 1e-12 * np.max(np.abs(expected))
        assert np.all(np.abs(np.asarray(ours) - expected) <= tol), f"{name}.{field}"


@pytest.mark.parametrize("name", FIVE)
def test_set_functions_seen_bare(name, loaded):
    """Away from PyBaMM's clipping and OCP barriers the functions are the set's own; j0 is regularised."""
    params, values = loaded[name], P.pybamm_parameter_values(name)
    s = {k: float(v) for k, v in params.scalars.items()}

    def bare(pname, **inputs):
        return values.evaluate(pybamm.FunctionParameter(pname, {k: pybamm.Scalar(v) for k, v in inputs.items()}))

    T_ref = s["reference_temp_k"]
    for sto in (0.05, 0.3, 0.6, 0.95):
        for e, Domain in (("neg", "Negative"), ("pos", "Positive")):
            ocp = bare(f"{Domain} electrode OCP [V]", **{f"{Domain} particle stoichiometry": sto})
            assert abs(float(getattr(params, f"{e}_ocp")(sto, T_ref)) - ocp) < 1e-9
            for T in (273.15, 318.15):
                d = bare(
                    f"{Domain} particle diffusivity [m2.s-1]",
                    **{f"{Domain} particle stoichiometry": sto, "Temperature [K]": T},
                )
                assert float(getattr(params, f"{e}_diffusivity")(sto, T)) == pytest.approx(d, rel=1e-12)
                if not 0.25 < sto < 0.75:  # regularised powers: ~(1e-3 / sto)^2 / 4 relative off the bare j0
                    continue
                c_max, c_e = s[f"{e}_max_conc_mol_m3"], s["electrolyte_init_conc_mol_m3"]
                j0 = bare(
                    f"{Domain} electrode exchange-current density [A.m-2]",
                    **{
                        "Electrolyte concentration [mol.m-3]": c_e,
                        f"{Domain} particle surface concentration [mol.m-3]": sto * c_max,
                        f"Maximum {Domain.lower()} particle surface concentration [mol.m-3]": c_max,
                        "Temperature [K]": T,
                    },
                )
                ours = float(getattr(params, f"{e}_exchange_current")(c_e, sto * c_max, c_max, T))
                assert ours == pytest.approx(j0, rel=1e-5)
    c_e = s["electrolyte_init_conc_mol_m3"]
    inputs = {"Electrolyte concentration [mol.m-3]": c_e, "Temperature [K]": 308.15}
    assert float(params.electrolyte_diffusivity(c_e, 308.15)) == pytest.approx(
        bare("Electrolyte diffusivity [m2.s-1]", **inputs), rel=1e-12
    )
    assert float(params.electrolyte_conductivity(c_e, 308.15)) == pytest.approx(
        bare("Electrolyte conductivity [S.m-1]", **inputs), rel=1e-12
    )


@pytest.mark.parametrize("name", ["Chen2020", "OKane2022", "Prada2013"])
def test_jit_vmap_grad(name, loaded):
    params = loaded[name]
    T = 300.0
    dU = jax.jit(jax.vmap(jax.grad(params.neg_ocp), in_axes=(0, None)))
    sto = jnp.linspace(0.05, 0.95, 19)
    slope = dU(sto, T)
    assert slope.dtype == jnp.float64 and bool(jnp.all(jnp.isfinite(slope)))
    h = 1e-6
    fd = (params.neg_ocp(sto + h, T) - params.neg_ocp(sto - h, T)) / (2 * h)
    np.testing.assert_allclose(slope, fd, rtol=1e-4, atol=1e-6)
    c_max = params.scalars["neg_max_conc_mol_m3"]
    dj0 = jax.grad(params.neg_exchange_current, argnums=(0, 1, 2, 3))(1000.0, 0.5 * c_max, c_max, 300.0)
    assert all(bool(jnp.isfinite(g)) for g in dj0) and float(dj0[0]) > 0

    def diffusivity_at(scale):
        p = eqx.tree_at(lambda p: p.scalars["neg_diffusivity_scale"], params, scale)
        return p.neg_diffusivity(0.5, 300.0)

    assert float(jax.grad(diffusivity_at)(1.0)) == pytest.approx(float(params.functions.neg_diffusivity(0.5, 300.0)))


def test_parameter_set_is_a_float64_pytree(loaded):
    params = loaded["Chen2020"]
    leaves = jax.tree_util.tree_leaves(params)
    assert len(leaves) == len(params.scalars)
    assert all(isinstance(x, jax.Array) and x.dtype == jnp.float64 and x.shape == () for x in leaves)
    assert all(np.isfinite(float(x)) for x in leaves)
    again = P.load_parameter_set("Chen2020")
    assert jax.tree_util.tree_structure(again) == jax.tree_util.tree_structure(params)


def test_filter_jit_does_not_recompile_when_values_change(loaded):
    params = loaded["Chen2020"]
    traces = []

    @eqx.filter_jit
    def voltage_like(p, sto):
        traces.append(1)
        x, y = P.initial_stoichiometries(p, sto)
        c_max = p.scalars["neg_max_conc_mol_m3"]
        return p.pos_ocp(y, 300.0) - p.neg_ocp(x, 300.0) + p.neg_exchange_current(1000.0, x * c_max, c_max, 300.0)

    f64 = lambda v: jnp.asarray(v, dtype=jnp.float64)  # not Python floats (static), nor weak-typed arrays
    half = f64(0.5)
    first = voltage_like(params, half)
    new_values = (f64(0.03), f64(2.0))
    changed = eqx.tree_at(lambda p: (p.scalars["x_0"], p.scalars["neg_exchange_current_scale"]), params, new_values)
    second = voltage_like(changed, half)
    voltage_like(P.load_parameter_set("Chen2020"), f64(0.7))  # a fresh load: the same static structure
    assert len(traces) == 1 and float(first) != float(second)


def test_vmap_over_scalars(loaded):
    params = loaded["Marquis2019"]
    scales = jnp.array([0.5, 1.0, 2.0])
    batch = eqx.tree_at(lambda p: p.scalars["pos_diffusivity_scale"], params, scales)
    axes = jax.tree_util.tree_map(lambda _: None, params)
    axes = eqx.tree_at(lambda p: p.scalars["pos_diffusivity_scale"], axes, 0, is_leaf=lambda x: x is None)
    out = jax.vmap(lambda p: p.pos_diffusivity(0.6, 298.15), in_axes=(axes,))(batch)
    np.testing.assert_allclose(out, scales * params.functions.pos_diffusivity(0.6, 298.15), rtol=1e-15)


@pytest.mark.parametrize("name", FIVE)
def test_initial_stoichiometries_match_pybamm(name, loaded):
    params, values = loaded[name], P.pybamm_parameter_values(name)
    x_0, x_100, y_100, y_0 = pybamm.lithium_ion.get_min_max_stoichiometries(values)
    s = params.scalars
    np.testing.assert_allclose(
        [s["x_0"], s["x_100"], s["y_100"], s["y_0"]], [x_0, x_100, y_100, y_0], rtol=0, atol=1e-12
    )
    for soc in (0.0, 0.25, 0.5, 0.9, 1.0):
        x, y = P.initial_stoichiometries(params, soc)
        ref_x, ref_y = pybamm.lithium_ion.get_initial_stoichiometries(soc, values)
        assert abs(float(x) - ref_x) < 1e-6 and abs(float(y) - ref_y) < 1e-6
    traced = jax.jit(P.initial_stoichiometries)(params, jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(traced[0], [x_0, x_100], atol=1e-12)
    with pytest.raises(ValueError, match="soc"):
        P.initial_stoichiometries(params, 1.2)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("MSMR_Example", "MSMR"),
        ("Chen2020_composite", "composite"),
        ("Xu2019", "half-cell"),
        ("ECM_Example", "chemistry"),
        ("Sulzer2019", "lead_acid"),
        ("NoSuchSet", "unknown parameter set"),
    ],
)
def test_unsupported_set_raises_clearly(name, reason):
    with pytest.raises(ValueError, match=reason):
        P.load_parameter_set(name)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"Negative particle diffusivity [m2.s-1]": -1e-14}, "Negative particle diffusivity"),
        ({"Positive particle radius [m]": -5e-6}, "Positive particle radius"),
        ({"Separator porosity": 1.5}, "Separator porosity"),
        ({"Electrolyte conductivity [S.m-1]": 0.0}, "Electrolyte conductivity"),
        ({"Negative particle radius [m]": float("nan")}, "Negative particle radius"),
        ({"Negative particle radius": 5e-6}, re.escape("did you mean 'Negative particle radius [m]'")),
    ],
)
def test_bad_override_names_the_parameter(overrides, named):
    with pytest.raises(ValueError, match=named):
        P.load_parameter_set("Chen2020", overrides=overrides)


def test_overrides_and_thermal_apply():
    params = P.load_parameter_set(
        "Chen2020",
        overrides={"Negative particle radius [m]": 6e-6, "Total heat transfer coefficient [W.m-2.K-1]": 25},
        thermal={"casing_heat_capacity_j_k": 7.5},
    )
    s = params.scalars
    assert float(s["neg_particle_radius_m"]) == 6e-6 and float(s["heat_transfer_coeff_w_m2k"]) == 25.0
    assert float(s["casing_heat_capacity_j_k"]) == 7.5
    assert float(s["environment_thermal_resistance_k_w"]) == ThermalConfig().environment_thermal_resistance_k_w
    with pytest.raises(ValueError, match="casing_heat_capacity_j_k"):
        P.load_parameter_set("Chen2020", thermal={"casing_heat_capacity_j_k": -1.0})


def test_prada2013_gets_documented_thermal_defaults(loaded):
    params = loaded["Prada2013"]
    assert {"Cell volume [m3]", "Cell cooling surface area [m2]", "Separator density [kg.m-3]"} <= set(params.defaulted)
    chen = P.pybamm_parameter_values("Chen2020")
    prada = P.pybamm_parameter_values("Prada2013")
    assert prada["Negative current collector density [kg.m-3]"] == chen["Negative current collector density [kg.m-3]"]
    assert set(P._model_parameters()) <= set(prada.keys())  # PyBaMM can run the same set
    heat_capacity = float(params.cell_heat_capacity(298.15))
    assert 20 < heat_capacity < 200  # a 2.3 Ah 26650 cell weighs ~70 g: tens of J/K
    assert not loaded["Chen2020"].defaulted


def test_every_model_parameter_is_covered():
    """Each parameter of PyBaMM's SPMe + lumped thermal model reaches a scalar or a function."""
    covered = {pname for pname, _ in P._SCALARS.values()}
    specs = P._function_specs(pybamm, pybamm.LithiumIonParameters(pybamm.BatteryModelOptions(P.PYBAMM_MODEL_OPTIONS)))
    covered |= {pname for pname, _, _ in specs.values()}
    covered |= {n for n in P._COPIED_DEFAULTS if "density" in n or "specific heat" in n}  # in rho_c_p_eff
    assert set(P._model_parameters()) <= covered


def test_docstring_table_lists_every_scalar(loaded):
    documented = set(re.findall(r"^([a-z][a-z0-9_]*(?:, [a-z][a-z0-9_]*)?)\s{2,}", P.__doc__, re.MULTILINE))
    documented = {key for entry in documented for key in entry.split(", ")}
    assert set(loaded["Chen2020"].scalars) <= documented


@pytest.mark.parametrize("name", P.bundled_parameter_sets())
def test_every_bundled_set_loads_or_raises_value_error(name):
    try:
        params = P.load_parameter_set(name)
    except ValueError:
        assert name not in P.supported_parameter_sets()
        return
    assert name in P.supported_parameter_sets()
    assert all(np.isfinite(float(v)) for v in params.scalars.values())
