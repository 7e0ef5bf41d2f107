"""The hybrid on the coarse DFN backbone: it starts as the DFN, keeps the cell-model contract (advance, vmap,
statuses, gradients through the solver), trains and evaluates beside the plain SPMe and DFN."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from cellax.hybrid import HybridSPMe
from cellax.hybrid.train import KELVIN, corrections
from cellax.physics.dfn import DFN
from cellax.physics.simulate import advance, check_state, simulate, status_code
from tests.hybrid.test_model import _trained_like, directional_derivatives, profile_loss, random_direction

BACKBONE = DFN(8, (4, 2, 4))


def test_untrained_hybrid_is_the_dfn(setup):
    profiles, params = setup
    model = HybridSPMe(BACKBONE, width=8, depth=1, key=jax.random.PRNGKey(0))
    args = (params, jnp.asarray(profiles.current_a[0, :200]), 1.0, profiles.initial_soc[0],
            profiles.ambient_temp_degc[0] + KELVIN)
    hybrid, dfn = simulate(model, *args), simulate(BACKBONE, *args)
    for name in ("voltage_v", "anode_potential_v", "core_temp_degc"):
        np.testing.assert_array_equal(np.asarray(hybrid.signals[name]), np.asarray(dfn.signals[name]))


def test_with_an_implicit_reaction_backbone_the_hybrid_solves_as_that_dfn(setup):
    """The W-matrix solve of a hybrid (with history states) on ``DFN(implicit_reaction=True)`` is that DFN's on the
    physics part, which is not the block solve alone."""
    _, params = setup
    implicit = DFN(8, (4, 2, 4), implicit_reaction=True)
    model = HybridSPMe(implicit, width=8, depth=1, key=jax.random.PRNGKey(0), time_constants_s=(60.0,))
    ops = model.stiff_operators(params)
    state = model.initial_state(params, 0.1, 298.15)
    rhs = model.vector_field(params, state, jnp.asarray(-5.0), 298.15)
    solved = model.solve_stiff(params, ops, state, 30.0, rhs)
    expected = implicit.solve_stiff(params, ops, state.spme, 30.0, rhs.spme)
    block = BACKBONE.solve_stiff(params, ops, state.spme, 30.0, rhs.spme)
    for name in ("c_neg", "c_pos", "c_e"):
        np.testing.assert_allclose(getattr(solved.spme, name), getattr(expected, name), rtol=1e-12)
    assert np.max(np.abs(np.asarray(expected.c_neg - block.c_neg))) > 1e-3 * np.max(np.abs(np.asarray(block.c_neg)))
    np.testing.assert_array_equal(solved.history, HybridSPMe(BACKBONE, width=8, depth=1, key=jax.random.PRNGKey(0),
                                                             time_constants_s=(60.0,)).solve_stiff(
        params, ops, state, 30.0, rhs).history)


def test_every_correction_runs_on_the_dfn_under_advance_and_vmap(setup):
    _, params = setup
    model = _trained_like(HybridSPMe(BACKBONE, width=8, depth=1, key=jax.random.PRNGKey(0), time_constants_s=(60.0,),
                                     latent_time_constants_s=(30.0,), redistribution_scale_1_s=1e-3))
    ops = model.stiff_operators(params)
    states = jax.vmap(lambda s: model.initial_state(params, s, 298.15))(jnp.asarray([0.3, 0.6, 0.9]))
    step = jax.jit(jax.vmap(lambda st, i: advance(model, params, ops, st, i, 10.0, 298.15, substeps=2)))
    new, signals = step(states, jnp.asarray([5.0, -3.0, 10.0]))
    assert new.spme.c_neg.shape == (3, 8, 4)
    assert np.all(np.diff(np.asarray(signals["voltage_v"])) != 0)
    codes = jax.vmap(lambda st, sig: status_code(check_state(model, params, st, sig)))(new, signals)
    assert np.all(np.asarray(codes) == 0)
    plain = jax.vmap(lambda st, i: advance(BACKBONE, params, ops, st.spme, i, 10.0, 298.15, substeps=2))(
        states, jnp.asarray([5.0, -3.0, 10.0]))[1]
    assert np.all(np.abs(np.asarray(signals["voltage_v"] - plain["voltage_v"])) > 1e-6), "the corrections act"


def test_gradient_through_the_dfn_matches_finite_differences(setup):
    profiles, params = setup
    model = _trained_like(HybridSPMe(BACKBONE, width=8, depth=1, key=jax.random.PRNGKey(0), dtype=jnp.float64),
                          scale=0.1)
    loss = profile_loss(model, profiles, params)
    weights, static = eqx.partition(corrections(model), eqx.is_inexact_array)
    value = jax.jit(lambda w: loss(eqx.combine(w, static)))
    grads = jax.jit(jax.grad(lambda w: loss(eqx.combine(w, static))))(weights)
    analytic, numeric = directional_derivatives(value, grads, weights, random_direction(weights))
    assert abs(analytic) > 1e-3
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4)


def test_a_dfn_backbone_run_trains_and_is_evaluated_beside_the_spme_and_the_dfn(hybrid_config, tmp_path):
    from cellax.hybrid.evaluate import evaluate_run
    from cellax.hybrid.train import load_run, train

    config = hybrid_config.model_copy(update={
        "model": hybrid_config.model.model_copy(update={"backbone": "DFN", "n_shells": 8, "x_counts": (4, 2, 4)}),
        "train": hybrid_config.train.model_copy(update={"steps": 20, "checkpoint_every": 10, "refresh_every": 10}),
    })
    summary = train(config, tmp_path / "run", progress=False, log=lambda *a: None)
    losses = [row["loss"] for row in summary["history"]]
    assert losses[-1] < losses[0]
    _, hybrid, _, _ = load_run(tmp_path / "run")
    assert isinstance(hybrid.backbone, DFN) and hybrid.backbone.x_counts == (4, 2, 4)
    report = evaluate_run(tmp_path / "run", pictures=False)
    assert set(report["test"]) == {"spme", "dfn", "hybrid"}
    rows = [report[split][name]["all"] for split in ("test", "holdout") for name in ("spme", "dfn", "hybrid")]
    assert all(row["profiles"] > 0 and np.isfinite(row["rmse_voltage_mv"]) for row in rows)
    assert report["test"]["dfn"]["all"]["rmse_voltage_mv"] != report["test"]["spme"]["all"]["rmse_voltage_mv"]

    from cellax.hybrid.charging import fast_charge_env

    env, baselines, params = fast_charge_env(tmp_path / "run", "latest", with_baselines=True, dtype=jnp.float32)
    assert env.model == hybrid and baselines["dfn"].model == hybrid.backbone
    assert type(baselines["spme"].model).__name__ == "SPMe"
    start = params.replace(initial_soc_min=0.3, initial_soc_max=0.3)
    obs, state = env.reset(jax.random.key(0), start)
    obs, state, _, terminated, truncated, info = env.step(jax.random.key(1), state, jnp.asarray([1.0]), start)
    assert np.isfinite(np.asarray(obs)).all() and float(info["soc"]) > 0.3 and not (terminated or truncated)
    env, baselines, _ = fast_charge_env(tmp_path / "run", "latest", with_baselines=True, solver="ros2",
                                        implicit_reaction=True)
    assert env.model.backbone.implicit_reaction and baselines["dfn"].model.implicit_reaction
    assert env.model.backbone.x_counts == (4, 2, 4) and env.model.output == hybrid.output
