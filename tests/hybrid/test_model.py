"""The hybrid is a state-space cell model: simulate, advance, vmap, grad, float32; it starts as the SPMe."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from cellax.hybrid import HybridSPMe
from cellax.hybrid.train import KELVIN, corrections, masked_loss, rollout, with_corrections
from cellax.physics.simulate import advance, check_state, simulate, status_code


def _trained_like(model, scale=0.3, seed=1):
    """The model with random (nonzero) correction weights, so every correction acts."""
    leaves, tree = jax.tree_util.tree_flatten(corrections(model))
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    noisy = [leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype) if eqx.is_inexact_array(leaf) else leaf
             for leaf, k in zip(leaves, keys)]
    return with_corrections(model, jax.tree_util.tree_unflatten(tree, noisy))


def test_untrained_hybrid_is_the_spme(setup):
    profiles, params = setup
    model = HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0))
    args = (params, jnp.asarray(profiles.current_a[0, :200]), 1.0, profiles.initial_soc[0],
            profiles.ambient_temp_degc[0] + KELVIN)
    hybrid, spme = simulate(model, *args), simulate(model.spme, *args)
    for name in ("voltage_v", "anode_potential_v", "core_temp_degc"):
        np.testing.assert_array_equal(np.asarray(hybrid.signals[name]), np.asarray(spme.signals[name]))


def test_advance_vmap_and_float32(setup):
    profiles, params = setup
    model = _trained_like(HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0)))
    ops = model.stiff_operators(params)
    socs = jnp.asarray([0.3, 0.6, 0.9])
    states = jax.vmap(lambda s: model.initial_state(params, s, 298.15))(socs)
    step = jax.jit(jax.vmap(lambda st, i: advance(model, params, ops, st, i, 10.0, 298.15)))
    new, signals = step(states, jnp.asarray([5.0, -3.0, 10.0]))
    assert signals["voltage_v"].shape == (3,)
    assert np.all(np.diff(np.asarray(signals["voltage_v"])) != 0)
    codes = jax.vmap(lambda st, sig: status_code(check_state(model, params, st, sig)))(new, signals)
    assert np.all(np.asarray(codes) == 0)
    # float32 parameters: the networks' outputs follow the parameter set's dtype
    p32 = params.astype(jnp.float32)
    solution = eqx.filter_jit(lambda m: simulate(m, p32, jnp.full(300, 5.0, jnp.float32), 1.0, 0.8, 298.15))(model)
    assert solution.signals["voltage_v"].dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(solution.signals["voltage_v"])))
    assert int(solution.status) == 0
    spme = simulate(model, params, jnp.full(300, 5.0), 1.0, 0.8, 298.15)
    np.testing.assert_allclose(np.asarray(solution.signals["voltage_v"]), np.asarray(spme.signals["voltage_v"]), atol=2e-3)


def test_statuses_are_the_spmes(setup):
    _, params = setup
    model = _trained_like(HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0)))
    hybrid = simulate(model, params, jnp.full(2000, 15.0), 1.0, 0.2, 298.15)
    spme = simulate(model.spme, params, jnp.full(2000, 15.0), 1.0, 0.2, 298.15)
    assert int(hybrid.status) == int(spme.status) != 0
    assert int(hybrid.stop_index) < 1999


def profile_loss(model, profiles, params, n: int = 120):
    """The training loss of ``model`` with given trained parts on the first ``n`` s of profile 0 at 3x its current."""
    ops = model.stiff_operators(params)
    y0 = model.initial_state(params, profiles.initial_soc[0], profiles.ambient_temp_degc[0] + KELVIN)
    targets = {k: jnp.asarray(v[0, :n]) for k, v in profiles.targets.items()}
    mask = jnp.asarray(profiles.mask[0, :n])

    def loss(nets):
        out, _, codes = rollout(with_corrections(model, nets), params, ops, y0, jnp.asarray(profiles.current_a[0, :n]) * 3,
                                1.0, profiles.ambient_temp_degc[0] + KELVIN)
        return masked_loss(out, targets, mask, codes)[0]

    return loss


def directional_derivatives(value, grads, weights, direction, eps=1e-5):
    """``(grads · d, central difference of value along d)`` at ``weights``, for a jitted ``value``."""
    analytic = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(direction)))
    shifted = lambda sign: jax.tree_util.tree_map(lambda x, d: x + sign * eps * d, weights, direction)
    return analytic, (float(value(shifted(1.0))) - float(value(shifted(-1.0)))) / (2 * eps)


def random_direction(tree):
    return jax.tree_util.tree_map(lambda x: jax.random.normal(jax.random.PRNGKey(x.size), x.shape, x.dtype), tree)


def test_gradient_matches_finite_differences(setup):
    profiles, params = setup
    model = _trained_like(HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0), dtype=jnp.float64), scale=0.1)
    loss = profile_loss(model, profiles, params)
    weights, static = eqx.partition(corrections(model), eqx.is_inexact_array)
    value = jax.jit(lambda w: loss(eqx.combine(w, static)))
    grads = jax.jit(jax.grad(lambda w: loss(eqx.combine(w, static))))(weights)  # reverse mode, as in training
    analytic, numeric = directional_derivatives(value, grads, weights, random_direction(weights))
    assert abs(analytic) > 1e-3
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4)


def test_invalid_samples_are_masked_not_nan():
    outputs = {k: jnp.asarray([1.0, jnp.nan, 2.0]) for k in ("voltage_v", "anode_potential_v", "core_temp_degc", "surface_temp_degc")}
    targets = {k: jnp.asarray([1.001, 1.0, 2.0]) for k in outputs}
    loss, invalid = masked_loss(outputs, targets, jnp.asarray([True, True, True]), jnp.asarray([0, 0, 5]))
    assert np.isfinite(float(loss)) and int(invalid) == 2
    grad = jax.grad(lambda o: masked_loss(o, targets, jnp.ones(3, bool), jnp.asarray([0, 0, 5]))[0])(outputs)
    for g in jax.tree_util.tree_leaves(grad):
        assert np.all(np.isfinite(np.asarray(g)))
        assert float(g[0]) != 0.0 and float(g[1]) == 0.0 and float(g[2]) == 0.0


def test_chunk_starts_past_an_invalid_state_are_flagged_and_give_a_finite_masked_gradient(setup):
    from cellax.hybrid.train import _chunk_loss, chunk_states

    _, params = setup
    model = _trained_like(HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0)))
    ops = model.stiff_operators(params)
    chunk, ambient_k, h = 40, jnp.asarray([298.15]), jnp.asarray([10.0])
    current = jnp.concatenate([jnp.zeros(80), jnp.full(200, -100.0)])[None]  # 20C charge from 90 %: overfills the anode
    y0 = jax.vmap(lambda soc: model.initial_state(params, soc, 298.15))(jnp.asarray([0.9]))
    starts, valid = chunk_states(model, params, ops, 1.0, chunk, y0, current, ambient_k, h)
    valid = np.asarray(valid[0])
    assert valid[0] and valid[2] and not valid[-1] and np.all(np.diff(valid.astype(int)) <= 0)
    last = len(valid) - 1
    bad_start = jax.tree_util.tree_map(lambda leaf: leaf[:, last], starts)
    targets = {name: jnp.zeros((1, chunk)) for name in ("voltage_v", "anode_potential_v", "core_temp_degc",
                                                        "surface_temp_degc")}
    batch = (bad_start, current[:, last * chunk:(last + 1) * chunk], targets, jnp.ones((1, chunk), bool), ambient_k, h)
    nets = corrections(model)
    swapped = (y0, *batch[1:3], batch[3] & False, *batch[4:])  # what train() feeds for an invalid start
    overrun = (y0, current[:, -chunk:] * 0 - 100.0, targets, jnp.ones((1, chunk), bool), ambient_k, h)
    value_and_grad = eqx.filter_jit(eqx.filter_value_and_grad(_chunk_loss, has_aux=True))
    for case in (swapped, overrun):  # overrun: a valid start whose chunk runs into an invalid state
        (loss, _), grads = value_and_grad(nets, model, params, ops, 1.0, case)
        assert np.isfinite(float(loss))
        leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_array))
        assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)


def test_steps_after_a_chunks_last_dfn_sample_pass_no_gradient(setup):
    """A chunk whose DFN data end early (a profile cut at a voltage limit, its current held): the gradient is that of
    the chunk cut after its last sample, and stays finite when the held current drives the model past validity."""
    from cellax.hybrid.train import _chunk_loss

    profiles, params = setup
    model = _trained_like(HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0), dtype=jnp.float64), scale=0.1)
    ops = model.stiff_operators(params)
    n, kept = 200, 60
    y0 = jax.vmap(lambda soc: model.initial_state(params, soc, 298.15))(jnp.asarray([0.9]))
    current = jnp.concatenate([jnp.asarray(profiles.current_a[0, :kept]), jnp.full(n - kept, -100.0)])[None]
    targets = {k: jnp.asarray(v[:1, :n]) for k, v in profiles.targets.items()}
    mask = (jnp.arange(n) < kept)[None]
    common = (jnp.asarray([298.15]), jnp.asarray([10.0]))
    value_and_grad = eqx.filter_jit(eqx.filter_value_and_grad(_chunk_loss, has_aux=True))
    nets = corrections(model)
    (loss, _), grads = value_and_grad(nets, model, params, ops, 1.0, (y0, current, targets, mask, *common))
    cut = (y0, current[:, :kept + 1], {k: v[:, :kept + 1] for k, v in targets.items()}, mask[:, :kept + 1], *common)
    (loss_cut, _), grads_cut = value_and_grad(nets, model, params, ops, 1.0, cut)
    np.testing.assert_allclose(float(loss), float(loss_cut), rtol=1e-12)
    for g, g_cut in zip(jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_array)),
                        jax.tree_util.tree_leaves(eqx.filter(grads_cut, eqx.is_array))):
        assert np.all(np.isfinite(np.asarray(g)))
        np.testing.assert_allclose(np.asarray(g), np.asarray(g_cut), rtol=1e-9, atol=1e-12)


def test_output_and_heat_scales_multiply_the_corrections(setup):
    _, params = setup
    base = _trained_like(HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0)))
    scaled = _trained_like(HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0), voltage_scale_v=0.03,
                                      heat_scale_k_s=3e-4))
    state = base.initial_state(params, 0.6, 298.15)
    current = jnp.asarray(5.0, params.dtype)
    spme_out = base.spme.outputs(params, state, current, 298.15)
    spme_rate = base.spme.vector_field(params, state, current, 298.15).core_temp_k
    for name in ("voltage_v", "anode_potential_v"):
        dv_base = float(base.outputs(params, state, current, 298.15)[name] - spme_out[name])
        dv_scaled = float(scaled.outputs(params, state, current, 298.15)[name] - spme_out[name])
        assert dv_base != 0.0
        np.testing.assert_allclose(dv_scaled, 3 * dv_base, rtol=1e-5)
    dq_base = float(base.vector_field(params, state, current, 298.15).core_temp_k - spme_rate)
    dq_scaled = float(scaled.vector_field(params, state, current, 298.15).core_temp_k - spme_rate)
    assert dq_base != 0.0
    np.testing.assert_allclose(dq_scaled, 3 * dq_base, rtol=1e-5)


def test_history_states_low_pass_the_c_rate_and_leave_the_untrained_hybrid_the_spme(setup):
    _, params = setup
    model = HybridSPMe(width=8, depth=1, key=jax.random.PRNGKey(0), time_constants_s=(60.0, 600.0))
    current = jnp.full(300, 10.0)
    hybrid, spme = simulate(model, params, current, 1.0, 0.5, 298.15), simulate(model.spme, params, current, 1.0, 0.5, 298.15)
    np.testing.assert_array_equal(np.asarray(hybrid.signals["voltage_v"]), np.asarray(spme.signals["voltage_v"]))
    c_rate = 10.0 / float(params.scalars["nominal_capacity_ah"])
    expected = c_rate * (1 - np.exp(-300.0 / np.array([60.0, 600.0])))
    np.testing.assert_allclose(np.asarray(hybrid.final_state.history), expected, rtol=5e-3)  # 299 or 300 steps
    trained = _trained_like(model)
    assert trained.heat.mlp.layers[0].weight.shape[1] == 13
    assert int(simulate(trained, params, current, 1.0, 0.5, 298.15).status) == 0
