"""Jointly fitted physics multipliers, learned time constants and latent states keep the hybrid a state-space model."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cellax.hybrid import HybridSPMe
from cellax.hybrid.train import KELVIN, build_optimiser, corrections
from cellax.physics.simulate import advance, check_state, simulate, status_code
from tests.hybrid.test_model import _trained_like, directional_derivatives, profile_loss, random_direction

FIT = {"neg_diffusivity_scale": 0.8, "neg_exchange_current_scale": 1.0, "heat_transfer_coeff_w_m2k": 1.0}


def _joint(dtype=jnp.float32, **kw):
    return HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0), dtype=dtype, time_constants_s=(60.0,),
                      latent_time_constants_s=(30.0, 300.0), learn_time_constants=True, fit_parameters=FIT, **kw)


def test_untrained_joint_hybrid_is_the_spme_with_the_initial_multipliers(setup):
    profiles, params = setup
    model = _joint()
    assert len(corrections(model)) == 5
    args = (jnp.asarray(profiles.current_a[0, :200]) * 2, 1.0, profiles.initial_soc[0], profiles.ambient_temp_degc[0] + KELVIN)
    hybrid = simulate(model, params, *args)
    spme = simulate(model.spme, params.with_values({k: params.scalars[k] * v for k, v in FIT.items()}), *args)
    plain = simulate(model.spme, params, *args)
    for name in ("voltage_v", "anode_potential_v", "core_temp_degc"):
        np.testing.assert_array_equal(np.asarray(hybrid.signals[name]), np.asarray(spme.signals[name]))
    assert not np.array_equal(np.asarray(hybrid.signals["voltage_v"]), np.asarray(plain.signals["voltage_v"]))
    learned = model.learned(params)
    np.testing.assert_allclose(list(learned["fitted_parameters"].values()),
                               [float(params.scalars[k]) * v for k, v in FIT.items()], rtol=1e-6)
    np.testing.assert_allclose(list(learned["multipliers"].values()), list(FIT.values()), rtol=1e-6)
    np.testing.assert_allclose(learned["time_constants_s"] + learned["latent_time_constants_s"], [60, 30, 300], rtol=1e-6)


def test_multipliers_act_as_the_parameters_and_latent_states_stay_bounded(setup):
    _, params = setup
    model = _trained_like(_joint(), scale=0.5)
    factors = np.exp(np.asarray(model.log_multipliers, np.float64))
    scaled = params.with_values({k: params.scalars[k] * v * f for (k, v), f in zip(FIT.items(), factors)})
    state = model.initial_state(params, 0.6, 298.15)
    current = jnp.asarray(8.0, params.dtype)
    np.testing.assert_allclose(float(model.spme.outputs(model.physics(params), state.spme, current, 298.15)["voltage_v"]),
                               float(model.spme.outputs(scaled, state.spme, current, 298.15)["voltage_v"]), rtol=1e-12)
    solution = simulate(model, params, jnp.full(600, 8.0), 1.0, 0.6, 298.15)
    assert int(solution.status) == 0
    latent = np.asarray(solution.final_state.history[1:])
    assert np.all(np.abs(latent) <= 1.0) and np.any(latent != 0.0)


def test_advance_vmap_jit_and_statuses(setup):
    _, params = setup
    model = _trained_like(_joint())
    ops = model.stiff_operators(params)
    states = jax.vmap(lambda s: model.initial_state(params, s, 298.15))(jnp.asarray([0.3, 0.6, 0.9]))
    step = jax.jit(jax.vmap(lambda st, i: advance(model, params, ops, st, i, 10.0, 298.15)))
    new, signals = step(states, jnp.asarray([5.0, -3.0, 10.0]))
    assert new.history.shape == (3, 3)
    codes = jax.vmap(lambda st, sig: status_code(check_state(model, params, st, sig)))(new, signals)
    assert np.all(np.asarray(codes) == 0)
    p32 = params.astype(jnp.float32)
    solution = eqx.filter_jit(lambda m: simulate(m, p32, jnp.full(300, 5.0, jnp.float32), 1.0, 0.8, 298.15))(model)
    assert solution.signals["voltage_v"].dtype == jnp.float32 and int(solution.status) == 0
    assert int(simulate(model, params, jnp.full(2000, 15.0), 1.0, 0.2, 298.15).status) != 0


def test_gradient_of_multipliers_time_constants_and_latent_matches_finite_differences(setup):
    profiles, params = setup
    model = _trained_like(_joint(jnp.float64), scale=0.1)
    loss = profile_loss(model, profiles, params)
    weights, static = eqx.partition(corrections(model), eqx.is_inexact_array)
    value = jax.jit(lambda w: loss(eqx.combine(w, static)))
    grads = jax.jit(jax.grad(lambda w: loss(eqx.combine(w, static))))(weights)  # reverse mode, as in training
    for index in (2, 3, 4):  # latent network, physics log-multipliers, log time constants
        direction = tuple(random_direction(part) if i == index else jax.tree_util.tree_map(jnp.zeros_like, part)
                          for i, part in enumerate(weights))
        analytic, numeric = directional_derivatives(value, grads, weights, direction)
        assert abs(analytic) > 1e-4, index
        np.testing.assert_allclose(analytic, numeric, rtol=1e-4, err_msg=str(index))


def test_defaults_leave_the_hybrid_as_before(setup):
    _, params = setup
    model = HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0), time_constants_s=(60.0,))
    assert model.latent is None and model.log_multipliers is None and model.log_time_constants is None
    assert len(corrections(model)) == 2
    assert model.physics(params) is params
    with pytest.raises(ValueError, match="fit_parameters"):
        HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0), fit_parameters={"neg_ocp": 1.0})


def test_heat_closure_times_current_vanishes_at_rest(setup):
    _, params = setup
    free = _trained_like(HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0)))
    model = eqx.tree_at(lambda m: m.heat, HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0), heat_times_current=True),
                        free.heat)
    state = model.initial_state(params, 0.6, 298.15)
    c_rate = 8.0 / float(params.scalars["nominal_capacity_ah"])

    def extra(m, current):
        current = jnp.asarray(current, params.dtype)
        return float(m.vector_field(params, state, current, 298.15).core_temp_k
                     - m.spme.vector_field(params, state, current, 298.15).core_temp_k)

    assert extra(free, 0.0) != 0.0 and extra(model, 0.0) == 0.0
    np.testing.assert_allclose(extra(model, 8.0), c_rate * extra(free, 8.0), rtol=1e-6)


def test_physics_parts_take_their_own_learning_rate(hybrid_config):
    model = _joint()
    config = hybrid_config.model_copy(update={"train": hybrid_config.train.model_copy(
        update={"learning_rate": 1e-3, "physics_learning_rate": 1e-2})})
    trained = eqx.filter(corrections(model), eqx.is_array)
    optimiser, opt_state = build_optimiser(config, model)
    updates, _ = optimiser.update(jax.tree_util.tree_map(jnp.ones_like, trained), opt_state, trained)
    np.testing.assert_allclose(np.asarray(updates[3]), -1e-2, rtol=1e-3)  # log-multipliers
    np.testing.assert_allclose(np.asarray(updates[4]), -1e-2, rtol=1e-3)  # log time constants
    np.testing.assert_allclose(np.asarray(updates[0].mlp.layers[0].bias), -1e-3, rtol=1e-3)


def test_voltage_heat_is_the_heat_of_the_voltage_correction(setup):
    _, params = setup
    trained = _trained_like(HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0)))
    model = eqx.tree_at(lambda m: (m.heat, m.output), HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0), voltage_heat=True),
                        (trained.heat, trained.output))
    state = model.initial_state(params, 0.6, 298.15)
    current = jnp.asarray(8.0, params.dtype)
    dv = float(model.outputs(params, state, current, 298.15)["voltage_v"] - model.spme.outputs(params, state, current, 298.15)["voltage_v"])
    extra = float(model.vector_field(params, state, current, 298.15).core_temp_k
                  - trained.vector_field(params, state, current, 298.15).core_temp_k)
    assert dv != 0.0
    np.testing.assert_allclose(extra, -8.0 * dv / float(params.cell_heat_capacity(state.core_temp_k)), rtol=1e-5)


def test_particle_redistribution_conserves_lithium_and_moves_the_surface(setup):
    profiles, params = setup
    untrained = HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0), redistribution_scale_1_s=1e-4)
    assert len(corrections(untrained)) == 3
    args = (jnp.asarray(profiles.current_a[0, :200]), 1.0, profiles.initial_soc[0], profiles.ambient_temp_degc[0] + KELVIN)
    np.testing.assert_array_equal(np.asarray(simulate(untrained, params, *args).signals["voltage_v"]),
                                  np.asarray(simulate(untrained.spme, params, *args).signals["voltage_v"]))
    model = _trained_like(untrained)
    state = model.initial_state(params, 0.6, 298.15)
    current = jnp.asarray(8.0, params.dtype)
    extra = jax.tree_util.tree_map(lambda a, b: a - b, model.vector_field(params, state, current, 298.15),
                                   model.spme.vector_field(params, state, current, 298.15))
    volumes = np.asarray(model.particle.shell_volumes)
    for shells in (extra.c_neg, extra.c_pos):
        shells = np.asarray(shells)
        assert abs(shells[-1]) > 1e-3  # mol/m3/s into (or out of) the surface shell
        assert abs(np.sum(volumes * shells)) < 1e-12 * np.sum(volumes * np.abs(shells))  # no lithium made or lost
        np.testing.assert_allclose(shells[:-1], shells[0])  # taken evenly from the whole particle
    np.testing.assert_array_equal(np.asarray(extra.c_e), 0.0)


def test_particle_redistribution_gradient_matches_finite_differences_and_runs_in_advance(setup):
    profiles, params = setup
    model = _trained_like(HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0), dtype=jnp.float64,
                                     time_constants_s=(60.0,), redistribution_scale_1_s=1e-4), scale=0.1)
    loss = profile_loss(model, profiles, params)
    weights, static = eqx.partition(corrections(model), eqx.is_inexact_array)
    value = jax.jit(lambda w: loss(eqx.combine(w, static)))
    grads = jax.jit(jax.grad(lambda w: loss(eqx.combine(w, static))))(weights)
    direction = tuple(random_direction(part) if i == 2 else jax.tree_util.tree_map(jnp.zeros_like, part)
                      for i, part in enumerate(weights))
    analytic, numeric = directional_derivatives(value, grads, weights, direction)
    assert abs(analytic) > 1e-4
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4)
    ops = model.stiff_operators(params)
    states = jax.vmap(lambda s: model.initial_state(params, s, 298.15))(jnp.asarray([0.3, 0.6, 0.9]))
    new, signals = jax.jit(jax.vmap(lambda st, i: advance(model, params, ops, st, i, 10.0, 298.15, solver="etd2")))(
        states, jnp.asarray([5.0, -3.0, 10.0]))
    codes = jax.vmap(lambda st, sig: status_code(check_state(model, params, st, sig)))(new, signals)
    assert np.all(np.asarray(codes) == 0)
