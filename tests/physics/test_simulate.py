"""simulate: bad input is refused before any solve; jit, vmap and grad work through it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cellax.physics import load_parameter_set
from cellax.physics.simulate import adaptive_step_count, advance, gradient_where, hermite_fill, simulate
from cellax.physics.spm import SPM
from cellax.physics.spme import SPMe
from cellax.status import STATUS


@pytest.fixture(scope="module")
def params():
    return load_parameter_set("Chen2020")


@pytest.mark.parametrize(
    "current_a, dt_s, message",
    [
        (np.array([1.0, np.nan, 1.0]), 1.0, "NaN or infinite"),
        (np.array([1.0, np.inf, 1.0]), 1.0, "NaN or infinite"),
        (np.ones((3, 2)), 1.0, "1-D"),
        (np.ones(1), 1.0, "at least 2 samples"),
        (np.ones(5), 0.0, "dt_s must be positive"),
        (np.ones(5), -1.0, "dt_s must be positive"),
    ],
)
def test_bad_profiles_are_refused_before_solving(params, current_a, dt_s, message):
    with pytest.raises(ValueError, match=message):
        simulate(SPM(), params, current_a, dt_s, 0.5, 298.15)


def test_soc_outside_0_1_is_refused(params):
    with pytest.raises(ValueError, match="soc must lie in"):
        simulate(SPM(), params, np.ones(5), 1.0, 1.2, 298.15)


def test_invalid_inputs_raise_outside_jit_and_return_a_status_inside(params):
    with pytest.raises(ValueError, match="ambient_temp_k must be finite and > 0 K"):
        simulate(SPM(), params, np.ones(5), 1.0, 0.5, -10.0)
    run = jax.jit(lambda dt_s, ambient_k, soc, current: simulate(SPM(), params, current, dt_s, soc, ambient_k))
    ones = jnp.ones(5)
    assert STATUS[int(run(1.0, 298.15, 0.5, ones).status)] == "completed"
    for args in [(0.0, 298.15, 0.5, ones), (1.0, -10.0, 0.5, ones), (1.0, 298.15, 1.5, ones),
                 (1.0, 298.15, 0.5, ones.at[2].set(jnp.nan))]:
        solution = run(*args)
        assert STATUS[int(solution.status)] == "invalid_input", args
        assert all(bool(jnp.all(jnp.isfinite(v))) for v in solution.signals.values())


def test_kvaerno5_with_a_nan_current_under_jit_says_invalid_input(params):
    with pytest.raises(ValueError, match="NaN or infinite"):
        simulate(SPM(6), params, jnp.ones(5).at[2].set(jnp.nan), 1.0, 0.5, 298.15, solver="kvaerno5")
    run = jax.jit(lambda current: simulate(SPM(6), params, current, 1.0, 0.5, 298.15, solver="kvaerno5"))
    solution = run(jnp.ones(5).at[2].set(jnp.nan))
    assert STATUS[int(solution.status)] == "invalid_input"
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in solution.signals.values())


def test_vmap_over_profiles_and_grad_through_the_solver(params):
    model = SPM(10)
    currents = jnp.stack([jnp.full(30, 5.0), jnp.full(30, 10.0)])
    run = jax.jit(jax.vmap(lambda i: simulate(model, params, i, 1.0, 0.5, 298.15).signals["voltage_v"][-1]))
    v_end = run(currents)
    assert v_end.shape == (2,) and v_end[1] < v_end[0]

    def final_voltage(scale):
        p = jax.tree_util.tree_map(lambda x: x, params)
        p.scalars["neg_diffusivity_scale"] = scale
        return simulate(model, p, jnp.full(30, 5.0), 1.0, 0.5, 298.15).signals["voltage_v"][-1]

    scale = jnp.asarray(1.0, dtype=jnp.float64)
    gradient = jax.jit(jax.grad(final_voltage))(scale)
    voltage, step = jax.jit(final_voltage), 1e-3
    finite_difference = (voltage(scale + step) - voltage(scale - step)) / (2 * step)
    assert np.isfinite(float(gradient)) and float(gradient) > 0  # faster diffusion, less polarisation
    np.testing.assert_allclose(float(gradient), float(finite_difference), rtol=1e-3)


def test_ros2_agrees_with_the_adaptive_reference_solver_and_converges_at_second_order(params):
    """Steps of up to 15 A within one sample: the heat is quadratic in a ramp, trapezoid-like stages err by
    O(dt^3 I'^2) per jump; substeps shrink it as dt^2."""
    model = SPM(10)
    rng = np.random.default_rng(3)
    current = jnp.asarray(np.repeat(rng.uniform(-5.0, 10.0, 12), 25))
    reference = simulate(model, params, current, 1.0, 0.6, 298.15, solver="kvaerno5", rtol=1e-9, atol=1e-9)
    errors = []
    for substeps in (1, 4):
        fast = simulate(model, params, current, 1.0, 0.6, 298.15, substeps=substeps)
        assert int(fast.status) == int(reference.status) == 0
        np.testing.assert_allclose(fast.signals["voltage_v"], reference.signals["voltage_v"], atol=1e-4)  # 0.1 mV
        errors.append(float(jnp.max(jnp.abs(fast.signals["core_temp_degc"] - reference.signals["core_temp_degc"]))))
    assert errors[0] <= 0.03
    assert errors[1] <= errors[0] / 10  # ~16x for second order


def test_a_callable_current_is_sampled_on_the_grid(params):
    model = SPM(10)
    current = lambda t: 5.0 + 2.0 * jnp.sin(t / 20.0)  # noqa: E731
    samples = current(jnp.arange(60.0))
    from_callable = simulate(model, params, current, 1.0, 0.5, 298.15, n_samples=60)
    from_array = simulate(model, params, samples, 1.0, 0.5, 298.15)
    np.testing.assert_allclose(from_callable.signals["voltage_v"], from_array.signals["voltage_v"], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="n_samples"):
        simulate(model, params, current, 1.0, 0.5, 298.15)


def test_advance_is_the_per_step_form_of_simulate(params):
    model = SPMe(6, (4, 3, 4))
    operators = model.stiff_operators(params)
    state = model.initial_state(params, 0.5, 298.15)
    solution = simulate(model, params, jnp.full(31, 5.0), 10.0, 0.5, 298.15)
    step = jax.jit(lambda s: advance(model, params, operators, s, 5.0, 10.0, 298.15))
    for k in range(1, 31):
        state, signals = step(state)
        np.testing.assert_allclose(signals["voltage_v"], solution.signals["voltage_v"][k], rtol=0, atol=1e-12)
    np.testing.assert_allclose(solution.final_state.c_e, state.c_e, rtol=1e-12)


@pytest.mark.parametrize(
    "current_a, initial_soc, expected",
    [
        (5.0, 0.05, "voltage_min"),  # 1C discharge from nearly empty
        (-5.0, 0.85, "voltage_max"),  # 1C charge from nearly full
    ],
)
def test_voltage_limits_stop_the_run_and_say_which(params, current_a, initial_soc, expected):
    solution = simulate(SPM(10), params, jnp.full(900, current_a), 1.0, initial_soc, 298.15)
    assert STATUS[int(solution.status)] == expected
    stop = int(solution.stop_index)
    assert 0 < stop < 899
    assert float(solution.signals["time_s"][stop]) <= float(solution.event_time_s) <= float(solution.signals["time_s"][stop + 1])
    voltage = np.asarray(solution.signals["voltage_v"])
    assert np.all(np.isfinite(voltage)) and np.all(voltage[stop:] == voltage[stop])


def test_soc_limits_are_events_too(params):
    solution = simulate(SPM(10), params, jnp.full(600, -5.0), 1.0, 0.5, 298.15, soc_limits=(0.0, 0.6))
    assert STATUS[int(solution.status)] == "soc_max"
    soc = np.asarray(solution.signals["soc"])
    assert soc[int(solution.stop_index)] <= 0.6 and np.all(np.isfinite(soc))


def test_electrolyte_depletion_is_reported_not_returned_as_numbers(params):
    """Chen2020's SPMe drives c_e below zero within minutes of a 3C charge: the run stops and says so."""
    model = SPMe(10, (6, 4, 6))
    solution = simulate(model, params, jnp.full(900, -15.0), 1.0, 0.1, 298.15, soc_limits=(0.0, 1.0))
    assert STATUS[int(solution.status)] == "electrolyte_depleted"
    assert float(solution.signals["min_electrolyte_conc_mol_m3"][int(solution.stop_index)]) > 0
    for values in solution.signals.values():
        assert np.all(np.isfinite(np.asarray(values)))


def test_float32_tracks_float64(params):
    model = SPM(10)
    current = jnp.asarray(np.repeat(np.random.default_rng(0).uniform(-5.0, 10.0, 20), 30))
    double = simulate(model, params, current, 1.0, 0.5, 298.15)
    single = simulate(model, params.astype(jnp.float32), current, 1.0, 0.5, 298.15)
    assert single.signals["voltage_v"].dtype == jnp.float32
    np.testing.assert_allclose(single.signals["voltage_v"], double.signals["voltage_v"], atol=1e-4)


def test_new_current_values_do_not_recompile(params):
    model = SPM(10)
    run = jax.jit(lambda i: simulate(model, params, i, 1.0, 0.5, 298.15).signals["voltage_v"])
    run(jnp.full(20, 1.0, dtype=jnp.float64))
    before = run._cache_size()
    run(jnp.full(20, 3.0, dtype=jnp.float64))
    run(jnp.linspace(0.0, 5.0, 20))
    assert run._cache_size() == before == 1


def test_unknown_solver_and_bad_substeps_are_refused(params):
    with pytest.raises(ValueError, match="solver must be one of"):
        simulate(SPM(10), params, np.ones(5), 1.0, 0.5, 298.15, solver="euler")
    with pytest.raises(ValueError, match="substeps"):
        simulate(SPM(10), params, np.ones(5), 1.0, 0.5, 298.15, substeps=0)
    model = SPM(10)
    with pytest.raises(ValueError, match="solver must be one of"):
        advance(model, params, model.stiff_operators(params), model.initial_state(params, 0.5, 298.15), 1.0, 1.0,
                298.15, solver="euler")


def test_steps_spanning_several_samples_track_the_sample_grid(params):
    """One ROS2 step per 5 samples of a constant-current discharge, interpolated back to the 1 s grid, follows
    the step-per-sample solution (same grid, same cut-off) to within the coarser step's error."""
    model = SPM(10)
    current = jnp.full(2001, 10.0)
    fine = simulate(model, params, current, 1.0, 0.5, 298.15)
    coarse = jax.jit(lambda i: simulate(model, params, i, 1.0, 0.5, 298.15, samples_per_step=5))(current)
    assert STATUS[int(coarse.status)] == STATUS[int(fine.status)] == "voltage_min"
    assert abs(int(coarse.stop_index) - int(fine.stop_index)) <= 1
    assert abs(float(coarse.event_time_s) - float(fine.event_time_s)) < 1.0
    stop = min(int(coarse.stop_index), int(fine.stop_index))
    for name in ("voltage_v", "soc", "core_temp_degc", "current_a", "time_s"):
        assert coarse.signals[name].shape == fine.signals[name].shape
        assert float(jnp.max(jnp.abs(coarse.signals[name][:stop + 1] - fine.signals[name][:stop + 1]))) < 2e-3, name
    assert bool(jnp.all(coarse.signals["voltage_v"][int(coarse.stop_index):] == coarse.signals["voltage_v"][int(coarse.stop_index)]))
    short = simulate(model, params, jnp.full(23, 1.0), 1.0, 0.5, 298.15, samples_per_step=5)  # 22 not a multiple of 5
    assert STATUS[int(short.status)] == "completed" and int(short.stop_index) == 22 and float(short.event_time_s) == 22.0


def _mixed_profile():
    """A rest, a 2C-ish discharge step, a ramp, a per-second 'drive' stretch, a charge step: kinks of every kind."""
    rng = np.random.default_rng(3)
    return np.concatenate([np.zeros(40), np.full(200, 8.0), np.linspace(8.0, -2.0, 61)[1:], 5 + 3 * rng.standard_normal(60),
                           np.full(240, -4.0)])


def test_input_chosen_steps_track_the_sample_grid(params):
    """Steps that end at every kink of the current and grow up to 4 samples in between follow the step-per-sample
    solution on the same grid within the longer steps' error (second order: 0.4 / 1.6 / 4.4 mV at most with
    steps of up to 2 / 4 / 8 samples through a 1.6C step), in far fewer steps; a per-second stretch keeps a step
    per sample."""
    model = SPMe(10, (5, 4, 5))
    current = jnp.asarray(_mixed_profile())
    fine = simulate(model, params, current, 1.0, 0.6, 298.15)
    run = jax.jit(lambda i: simulate(model, params, i, 1.0, 0.6, 298.15, max_samples_per_step=4))
    coarse = run(current)
    assert STATUS[int(coarse.status)] == STATUS[int(fine.status)] == "completed"
    assert int(coarse.stop_index) == len(current) - 1 and float(coarse.event_time_s) == len(current) - 1.0
    for name, tolerance in (("voltage_v", 2e-3), ("soc", 1e-5), ("core_temp_degc", 0.05), ("anode_potential_v", 2e-3)):
        assert coarse.signals[name].shape == fine.signals[name].shape
        assert float(jnp.max(jnp.abs(coarse.signals[name] - fine.signals[name]))) < tolerance, name
    assert bool(jnp.array_equal(coarse.signals["current_a"], current))
    assert bool(jnp.array_equal(coarse.signals["time_s"], fine.signals["time_s"]))
    steps = int(adaptive_step_count(current, 4))
    assert 60 < steps < 0.5 * len(current)  # the drive stretch alone takes 60
    assert int(adaptive_step_count(jnp.linspace(0.0, 1.0, 101), 8)) == 3 + 12 + 1  # 1+2+4, then 8s, then the last


def test_input_chosen_steps_stop_at_a_voltage_cut_off(params):
    """A 2C discharge to the cut-off: the same event within a sample, the signals within the 4-sample steps' error
    (2.9 mV at the steep end of discharge) up to it, held after it."""
    model = SPMe(10, (5, 4, 5))
    current = jnp.concatenate([jnp.zeros(30), jnp.full(570, 10.0)])
    fine = simulate(model, params, current, 1.0, 0.15, 298.15)
    coarse = simulate(model, params, current, 1.0, 0.15, 298.15, max_samples_per_step=4)
    assert STATUS[int(coarse.status)] == STATUS[int(fine.status)] == "voltage_min"
    assert abs(int(coarse.stop_index) - int(fine.stop_index)) <= 1
    assert abs(float(coarse.event_time_s) - float(fine.event_time_s)) < 1.0
    stop = int(coarse.stop_index)
    assert bool(jnp.all(coarse.signals["voltage_v"][stop:] == coarse.signals["voltage_v"][stop]))
    both = min(stop, int(fine.stop_index)) + 1
    assert float(jnp.max(jnp.abs(coarse.signals["voltage_v"][:both] - fine.signals["voltage_v"][:both]))) < 4e-3


def test_input_chosen_steps_batch_like_single_cells(params):
    """``vmap`` (nested too, over parameter sets too, one per cell or one per outer batch) gives each cell the result
    it gets alone: cells that finish early, or stop at a cut-off, wait for the others without changing."""
    model = SPMe(10, (5, 4, 5))
    profiles = jnp.stack([jnp.asarray(_mixed_profile()[200:500]), jnp.full(300, 3.0),
                          jnp.concatenate([jnp.zeros(20), jnp.full(280, 10.0)]), jnp.linspace(-3.0, 3.0, 300)])
    socs = jnp.asarray([0.6, 0.5, 0.1, 0.5])

    def run(i, soc, radius_m=params.scalars["neg_particle_radius_m"], thickness_m=params.scalars["neg_thickness_m"]):
        p = params.with_values({"neg_particle_radius_m": radius_m, "neg_thickness_m": thickness_m})
        solution = simulate(model, p, i, 1.0, soc, 298.15, max_samples_per_step=4)
        return solution.signals["voltage_v"], solution.status, solution.stop_index

    alone = [jax.jit(run)(profiles[k], socs[k]) for k in range(4)]
    together = jax.jit(jax.vmap(run))(profiles, socs)
    nested = jax.jit(jax.vmap(jax.vmap(run)))(profiles.reshape(2, 2, -1), socs.reshape(2, 2))
    radii_m = jnp.full(4, params.scalars["neg_particle_radius_m"])
    thicknesses_m = jnp.full(4, params.scalars["neg_thickness_m"])  # the mesh, so the stiff operators, per cell
    per_params = jax.jit(jax.vmap(run))(profiles, socs, radii_m, thicknesses_m)
    nested_params = jax.jit(jax.vmap(jax.vmap(run, in_axes=(0, 0, None)), in_axes=(0, 0, 0)))(
        profiles.reshape(2, 2, -1), socs.reshape(2, 2), radii_m[:2])
    flat = lambda tree: jax.tree_util.tree_map(lambda x: x.reshape((4,) + x.shape[2:]), tree)  # noqa: E731
    assert STATUS[int(alone[2][1])] == "voltage_min"
    for got in (together, flat(nested), per_params, flat(nested_params)):
        for k in range(4):
            np.testing.assert_allclose(got[0][k], alone[k][0], rtol=0, atol=1e-12)
            assert int(got[1][k]) == int(alone[k][1]) and int(got[2][k]) == int(alone[k][2])


def test_input_chosen_steps_refuse_derivatives_by_name(params):
    model = SPMe(10, (5, 4, 5))

    def loss(scale):
        p = params.with_values({"neg_diffusivity_scale": scale})
        return jnp.mean(simulate(model, p, jnp.full(40, 5.0), 1.0, 0.5, 298.15, max_samples_per_step=4).signals["voltage_v"])

    for differentiate in (jax.grad, jax.jacfwd):
        with pytest.raises(NotImplementedError, match="max_samples_per_step=...\\) is not differentiable"):
            differentiate(loss)(1.0)


def test_hermite_fill_is_exact_for_cubics_between_kinks():
    """Three-point slopes reproduce a quadratic exactly on uneven knots; a kink (a change of slope) is kept."""
    knots = jnp.asarray([0, 1, 3, 7, 8, 12, 20, 20, 20])
    quadratic = lambda t: 0.5 + 0.1 * t - 0.01 * t**2  # noqa: E731
    filled = hermite_fill(knots, quadratic(knots.astype(float)), 21, n_valid=7)
    np.testing.assert_allclose(filled, quadratic(jnp.arange(21.0)), atol=1e-12)
    kinked = lambda t: jnp.where(t <= 8, t, 8 + 3 * (t - 8))  # noqa: E731
    kinks = knots == 8
    filled = hermite_fill(knots, kinked(knots.astype(float)), 21, kinks=kinks, n_valid=7)
    np.testing.assert_allclose(filled, kinked(jnp.arange(21.0)), atol=1e-12)


def test_bad_samples_per_step_is_refused(params):
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="samples_per_step"):
            simulate(SPM(), params, np.ones(5), 1.0, 0.5, 298.15, samples_per_step=bad)
    with pytest.raises(ValueError, match=r"samples_per_step > 1 needs a fixed-step solver \('ros2', 'etd2'\)"):
        simulate(SPM(), params, np.ones(5), 1.0, 0.5, 298.15, solver="kvaerno5", samples_per_step=2)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="max_samples_per_step must be a positive integer"):
            simulate(SPM(), params, np.ones(5), 1.0, 0.5, 298.15, max_samples_per_step=bad)
    with pytest.raises(ValueError, match=r"max_samples_per_step needs a fixed-step solver .* and samples_per_step=1"):
        simulate(SPM(), params, np.ones(5), 1.0, 0.5, 298.15, samples_per_step=2, max_samples_per_step=4)


def test_gradient_where_stops_the_nan_of_an_untrusted_branch():
    """A zero cotangent times an infinite partial is NaN; behind ``gradient_where(.., False)`` it never forms."""
    def loss(x, trusted):
        return 0.0 * jnp.sqrt(gradient_where(x, trusted)) + 2.0 * x

    assert np.isnan(float(jax.grad(loss)(0.0, True)))
    assert float(jax.grad(loss)(0.0, False)) == 2.0
    assert float(jax.grad(loss)(4.0, True)) == 2.0


def test_substeps_are_one_compiled_step_in_a_scan(params):
    """``advance`` with several substeps equals the same steps taken one by one."""
    model = SPMe(6, (4, 3, 4))
    ops = model.stiff_operators(params)
    state = model.initial_state(params, 0.5, 298.15)
    together, signals = advance(model, params, ops, state, 5.0, 30.0, 298.15, substeps=3)
    one_by_one = state
    for _ in range(3):
        one_by_one, last = advance(model, params, ops, one_by_one, 5.0, 10.0, 298.15)
    for a, b in zip(jax.tree_util.tree_leaves(together), jax.tree_util.tree_leaves(one_by_one)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)
    assert float(signals["voltage_v"]) == pytest.approx(float(last["voltage_v"]), rel=1e-12)
