"""The JAX DFN is PyBaMM's DFN on the same coarse mesh: same algebra at a state, same trajectories; it conserves
charge and lithium, runs in float32, under vmap and grad."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cellax.data.datasheet import LG_M50
from cellax.data.profiles import ProfileConfig, make_profile, profile_rng
from cellax.physics import load_parameter_set
from cellax.physics.dfn import DFN, DFNState, tridiagonal_solve
from cellax.physics.electrolyte import porosity_and_tortuosity
from cellax.physics.particle import volume_average
from cellax.physics.simulate import simulate
from cellax.status import STATUS
from tests.physics.discharge import DISCHARGE_SAMPLES, simulate_like_pybamm
from tests.physics.pybamm_reference import pybamm_run

MODEL = DFN(10, (5, 3, 5))
CONVERGED = DFN(10, (5, 3, 5), newton_iterations=8)
ALGEBRA = {  # cellax field -> PyBaMM variable
    ("neg", "j"): "Negative electrode interfacial current density [A.m-2]",
    ("pos", "j"): "Positive electrode interfacial current density [A.m-2]",
    ("i_e",): "Electrolyte current density [A.m-2]",
    ("phi_e",): "Electrolyte potential [V]",
    ("phi_s_n",): "Negative electrode potential [V]",
    ("phi_s_p",): "Positive electrode potential [V]",
    ("voltage",): "Voltage [V]",
    ("anode_potential",): "Negative electrode surface potential difference at separator interface [V]",
}


@pytest.fixture(scope="module")
def params():
    return load_parameter_set("Chen2020")


@pytest.fixture(scope="module")
def dynamic_run():
    """PyBaMM's DFN on the model's mesh over the generator's 1 h dynamic LG M50 profile, from 50 % SOC."""
    config = ProfileConfig(kinds={"dynamic": 1.0}, duration_s=3600.0)
    current_a = make_profile("dynamic", profile_rng(7, 0), LG_M50, config, 0.5)
    return current_a, pybamm_run("DFN", "Chen2020", current_a, 1.0, 0.5, var_pts=MODEL.pybamm_var_pts, keep_solution=True)


def _state_at(solution, k: int) -> DFNState:
    value = lambda name: jnp.asarray(solution[name].entries[..., k])
    return DFNState(value("Negative particle concentration [mol.m-3]"), value("Positive particle concentration [mol.m-3]"),
                    value("Electrolyte concentration [mol.m-3]"), value("Volume-averaged cell temperature [K]"),
                    value("Surface temperature [K]"))


@pytest.mark.parametrize("k", [40, 900, 2500])
def test_reaction_distribution_and_potentials_equal_pybamm_at_its_states(params, dynamic_run, k):
    current_a, reference = dynamic_run
    solution = reference["solution"]
    fields = CONVERGED._fields(params, _state_at(solution, k), current_a[k])
    for path, name in ALGEBRA.items():
        ours = fields
        for key in path:
            ours = ours[key]
        expected = solution[name].entries[..., k]
        np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max() + 1e-9, err_msg=name)


def test_one_hour_dynamic_profile_matches_pybamm(params, dynamic_run):
    current_a, reference = dynamic_run
    ours = simulate_like_pybamm(MODEL, params, current_a, 0.5, reference["ambient_temp_k"])
    assert int(ours.status) == 0 and reference["termination"] == "final time"
    for name, tolerance in (("voltage_v", 1e-3), ("anode_potential_v", 1e-3)):
        error = np.asarray(ours.signals[name]) - reference[name]
        assert np.sqrt(np.mean(error**2)) <= tolerance, name
    for ours_name, ref_name in (("core_temp_degc", "core_temp_k"), ("surface_temp_degc", "surface_temp_k")):
        np.testing.assert_allclose(np.asarray(ours.signals[ours_name]) + 273.15, reference[ref_name], atol=0.1)


def test_two_c_discharge_matches_pybamm_to_the_cut_off(params):
    current_a = np.full(DISCHARGE_SAMPLES, 2 * 5.0)
    reference = pybamm_run("DFN", "Chen2020", current_a, 1.0, 0.98, var_pts=MODEL.pybamm_var_pts)
    ours = simulate_like_pybamm(MODEL, params, current_a, 0.98, reference["ambient_temp_k"])
    # the lower cut-off ends PyBaMM's run, the positive particle by the separator filling (surface stoichiometry
    # 0.9994 at PyBaMM's end) may end ours a few seconds earlier
    assert STATUS[int(ours.status)] in ("voltage_min", "stoichiometry_out_of_range")
    both = min(int(ours.stop_index) + 1, len(reference["voltage_v"]))
    assert np.sqrt(np.mean((np.asarray(ours.signals["voltage_v"][:both]) - reference["voltage_v"][:both]) ** 2)) <= 1e-3
    assert abs(float(ours.event_time_s) - reference["end_time_s"]) <= 0.005 * reference["end_time_s"]
    np.testing.assert_allclose(np.asarray(ours.signals["core_temp_degc"][:both]) + 273.15,
                               reference["core_temp_k"][:both], atol=0.05)


def test_the_reaction_carries_the_whole_current_and_lithium_is_conserved(params):
    model = DFN(8, (4, 2, 3))
    current_a = np.repeat(np.array([15.0, -10.0, 0.0, 12.0]), 60)
    state = model.initial_state(params, 0.6, 298.15)
    s = params.scalars
    i = 15.0 / (s["n_electrodes_parallel"] * s["electrode_area_m2"])
    fields = model._fields(params, state, 15.0)
    mesh = fields["mesh"]
    rn, _, rp = mesh.regions
    np.testing.assert_allclose(jnp.sum(fields["neg"]["a_j"] * mesh.widths[rn]), i, rtol=1e-12)
    np.testing.assert_allclose(jnp.sum(fields["pos"]["a_j"] * mesh.widths[rp]), -i, rtol=1e-12)

    def lithium(y: DFNState):
        """Moles per electrode area: particles (solid fraction × node width × mean concentration) and electrolyte."""
        particles = sum(s[f"{k}_active_frac"] * jnp.sum(mesh.widths[r] * volume_average(model.particle, c))
                        for k, c, r in (("neg", y.c_neg, rn), ("pos", y.c_pos, rp)))
        porosity, _ = porosity_and_tortuosity(s, mesh)
        return particles + jnp.sum(porosity * mesh.widths * y.c_e)

    solution = simulate(model, params, jnp.asarray(current_a), 1.0, 0.6, 298.15, limits=False)
    assert int(solution.status) == 0
    end = solution.final_state
    np.testing.assert_allclose(lithium(end), lithium(state), rtol=1e-10)
    assert float(jnp.ptp(end.c_e)) > 1.0, "the electrolyte polarised: the check is not trivial"


def test_at_rest_from_equilibrium_there_is_no_reaction_and_the_voltage_is_the_ocv(params):
    state = MODEL.initial_state(params, 0.4, 290.0)
    fields = MODEL._fields(params, state, 0.0)
    for k in ("neg", "pos"):
        np.testing.assert_allclose(fields[k]["j"], 0.0, atol=1e-12)
    out = MODEL.outputs(params, state, 0.0, 290.0)
    np.testing.assert_allclose(out["voltage_v"], out["ocv_v"], atol=1e-9)


@pytest.mark.parametrize("current_a, temp_k", [(10.0, 298.15), (-10.0, 283.15)])
def test_the_default_newton_steps_are_within_a_microvolt_of_the_converged_potentials(params, current_a, temp_k):
    state = simulate(MODEL, params, jnp.full(61, current_a), 1.0, 0.6, temp_k, limits=False).final_state
    default, converged = MODEL._fields(params, state, current_a), CONVERGED._fields(params, state, current_a)
    for name in ("voltage", "anode_potential"):
        assert abs(float(default[name] - converged[name])) <= 1e-6, name
    one = DFN(10, (5, 3, 5), newton_iterations=1)._fields(params, state, current_a)
    assert abs(float(one["voltage"] - converged["voltage"])) > 1e-4, "one step is not enough: the check is not trivial"


def test_near_electrolyte_depletion_more_newton_steps_converge(params):
    """After a minute at 3.8C and 0 degC (run through its limits) the electrolyte by the positive collector is nearly
    gone: the default three steps from the uniform reaction are millivolts off there, eight converge."""
    many = DFN(10, (5, 3, 5), newton_iterations=20)
    state = simulate(many, params, jnp.full(61, 19.0), 1.0, 0.6, 273.15, limits=False).final_state
    assert float(jnp.min(state.c_e)) < 10.0
    converged = many._fields(params, state, 19.0)["voltage"]
    np.testing.assert_allclose(CONVERGED._fields(params, state, 19.0)["voltage"], converged, atol=1e-9)
    assert abs(float(MODEL._fields(params, state, 19.0)["voltage"] - converged)) > 1e-3


@pytest.mark.parametrize("n", [1, 2, 6, 9])
def test_tridiagonal_solve_equals_a_dense_solve(n):
    rng = np.random.default_rng(n)
    lower, upper = rng.uniform(-1, 0, n), rng.uniform(-1, 0, n)
    diag = 3 + rng.uniform(size=n)
    rhs = rng.normal(size=n)
    dense = np.diag(diag) + np.diag(lower[1:], -1) + np.diag(upper[:-1], 1)
    np.testing.assert_allclose(tridiagonal_solve(*map(jnp.asarray, (lower, diag, upper, rhs))), np.linalg.solve(dense, rhs),
                               rtol=1e-12)


def test_float32_vmap_and_gradient(params):
    current = jnp.asarray(np.repeat([10.0, -5.0, 0.0], 20))
    model = DFN(8, (4, 2, 4))

    def voltage_end(p, scale):
        q = p.with_values({"neg_exchange_current_scale": scale})
        return simulate(model, q, current, 1.0, 0.5, 298.15).signals["voltage_v"][40]

    gradient = jax.grad(voltage_end, argnums=1)(params, 1.0)
    step = 1e-4
    difference = (voltage_end(params, 1.0 + step) - voltage_end(params, 1.0 - step)) / (2 * step)
    np.testing.assert_allclose(gradient, difference, rtol=1e-4)

    socs = jnp.asarray([0.3, 0.5, 0.7])
    batched = jax.vmap(lambda s: simulate(model, params, current, 1.0, s, 298.15).signals["voltage_v"])(socs)
    single = simulate(model, params, current, 1.0, 0.5, 298.15).signals["voltage_v"]
    np.testing.assert_allclose(batched[1], single, rtol=1e-12)

    p32 = params.astype(jnp.float32)
    out32 = simulate(model, p32, current.astype(jnp.float32), 1.0, 0.5, 298.15)
    assert out32.signals["voltage_v"].dtype == jnp.float32 and int(out32.status) == 0
    np.testing.assert_allclose(out32.signals["voltage_v"], single, atol=2e-3)


def test_the_reaction_coupling_is_the_jacobian_of_the_reaction_distribution_at_rest(params):
    model = DFN(8, (4, 2, 4), implicit_reaction=True)
    state = model.initial_state(params, 0.1, 298.15)
    state = DFNState(state.c_neg * jnp.linspace(1.0, 1.02, 4), state.c_pos, state.c_e, state.core_temp_k,
                     state.surface_temp_k)
    coupling = model.reaction_coupling(params, state)
    for k, rtol in (("neg", 1e-2), ("pos", 1e-9)):  # the negative's conductivity depends on its surface, ignored
        def reaction(surface_shift):
            shifted = getattr(state, f"c_{k}").at[-1].add(surface_shift / 1.5)  # c_surf = 1.5 c[-1] - 0.5 c[-2]
            return model._fields(params, eqx.tree_at(lambda s: getattr(s, f"c_{k}"), state, shifted), jnp.zeros(()))[k]["j"]

        jacobian = jax.jacfwd(reaction)(jnp.zeros(4))
        np.testing.assert_allclose(coupling[k], jacobian, rtol=0, atol=rtol * float(jnp.max(jnp.abs(jacobian))))


def test_with_the_reaction_in_its_w_matrix_ros2_takes_30_s_steps_where_the_explicit_coupling_fails(params):
    """1C charge from 10 % SOC for 40 min (the OCP is steep there): the minimum anode potential and the final
    voltage of 30 s steps against 1 s steps."""
    def charge(model, dt_s):
        n = 2400 // dt_s
        signals = simulate(model, params, jnp.full(n, -5.0), float(dt_s), 0.1, 298.15, limits=False).signals
        return 1e3 * float(jnp.min(signals["anode_potential_v"])), float(signals["voltage_v"][-1])

    reference_ua, reference_v = charge(MODEL, 1)
    explicit_ua, explicit_v = charge(MODEL, 30)
    implicit_ua, implicit_v = charge(DFN(10, (5, 3, 5), implicit_reaction=True), 30)
    assert abs(explicit_ua - reference_ua) > 10 and abs(explicit_v - reference_v) > 0.05
    assert abs(implicit_ua - reference_ua) < 2 and abs(implicit_v - reference_v) < 5e-3


def test_the_coupled_solve_keeps_float32(params):
    import warnings

    model = DFN(8, (4, 2, 4), implicit_reaction=True)
    p32 = params.astype(jnp.float32)
    state = model.initial_state(p32, 0.1, 298.15)
    rhs = model.vector_field(p32, state, jnp.asarray(-5.0, jnp.float32), jnp.asarray(298.15, jnp.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. JAX's FutureWarning on a float64 value scattered into float32
        solved = model.solve_stiff(p32, model.stiff_operators(p32), state, 30.0, rhs)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(solved))
