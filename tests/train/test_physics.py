"""Physics-informed loss terms: zero on the cell's own trajectories, large on wrong ones, refused when unservable."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pydantic import ValidationError

from cellax.config import validate_config
from cellax.data.config import DataConfig
from cellax.data.generate import generate
from cellax.data.loader import iterate_profiles
from cellax.train.config import TrainConfig
from cellax.train.loop import TrainError, prepare, train
from cellax.train.physics import TERMS, physics_loss
from cellax.train.task import Task

ALL_TERMS = dict.fromkeys(TERMS, 1.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """12 profiles of 20 minutes from the jax backend, with a fixed heat transfer coefficient."""
    config = validate_config(DataConfig, {
        "name": "physics", "seed": 7, "n_profiles": 12, "backend": "jax",
        "profiles": {"duration_s": 1200, "kinds": {"cc_rest": 1, "drive": 1, "dynamic": 1}},
        "conditions": {"heat_transfer_coeff": [12, 12]},
    })
    path = tmp_path_factory.mktemp("physics") / "data.h5"
    generate(config, path, progress=False, log=lambda *_: None)
    return path


def config_for(data, out=None, **changes) -> TrainConfig:
    base = dict(name="p", data=data, model={"kind": "gru", "width": 16}, chunk_len=64, chunks_per_window=2,
                batch_size=4, steps=6, eval_every=3, checkpoint_every=3, eval_profiles=2, out=out,
                physics=ALL_TERMS)
    return TrainConfig(**{**base, **changes})


def measured_windows(config: TrainConfig, length: int = 600):
    """``(loss, targets, batch)``: the terms' loss and the first training profiles as a normalised batch."""
    splits, stats, dt_s = prepare(config)
    loss = physics_loss(config, splits, stats, dt_s)
    task = Task.from_config(config)
    names = [*task.inputs, *task.outputs]
    profiles = [p for p in iterate_profiles(config.data, splits["train"], names) if len(p["soc"]) >= length][:3]
    batch = {k: jnp.asarray(np.stack([stats.normalise({k: p[k]})[k][:length] for p in profiles]), jnp.float32)
             for k in names}
    targets = jnp.stack([batch[k] for k in task.outputs], axis=-1)
    return loss, targets, batch


def vanishing_terms(data: Path, source: str) -> None:
    """The spec of test 1, run in a fresh process (see :func:`in_fresh_process`)."""
    terms = ALL_TERMS if source == "jax" else {"charge": 1.0, "ocv": 1.0, "thermal": 1.0}
    conditions = [] if source == "jax" else ["heat_transfer_coeff"]  # the PyBaMM fixture varies it
    loss, targets, batch = measured_windows(config_for(data, physics=terms, conditions=conditions), length=500)
    terms_of = jax.jit(lambda y, b: loss(y, b))  # one program, as inside the training step
    measured = terms_of(targets, batch)
    perturbed = terms_of(targets + 0.01 * jax.random.normal(jax.random.key(0), targets.shape), batch)
    for term in terms:
        assert float(measured[term]) < 0.05 * float(perturbed[term]), (term, measured, perturbed)
    assert float(measured["charge"]) < 1e-3 and float(measured["ocv"]) < 1e-3


def in_fresh_process(function: str, *args) -> None:
    """Run ``function(*args)`` of this module in a new interpreter. The full suite compiles thousands of
    XLA programs in one process; after them, compiling the SPMe inside these terms crashed XLA's CPU
    compiler twice (abort, segfault) while the same test passes alone, so these tests get a clean one."""
    root = Path(__file__).resolve().parents[2]
    code = f"import sys; from tests.train.test_physics import {function}; {function}(*sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.parametrize("source", ["jax", "pybamm"])
def test_every_term_vanishes_on_the_cells_own_trajectories_and_not_on_perturbed_ones(source, dataset,
                                                                                      generated_dataset):
    in_fresh_process("vanishing_terms", dataset if source == "jax" else generated_dataset, source)


def test_a_term_without_its_signals_or_with_a_bad_weight_is_refused_naming_it(dataset):
    with pytest.raises(ValidationError, match=r"physics.charge needs signal\(s\) \['soc'\]"):
        config_for(dataset, outputs=["voltage_v"], physics={"charge": 1.0})
    with pytest.raises(ValidationError, match=r"physics.thermal needs signal\(s\) \['ocv_v'\]"):
        config_for(dataset, task="estimate", outputs=["soc", "core_temp_degc"], physics={"thermal": 1.0})
    with pytest.raises(ValidationError, match=r"physics.charge\n.*greater than or equal to 0"):
        config_for(dataset, physics={"charge": -1.0})


def test_a_varying_heat_transfer_coefficient_must_come_as_a_condition_channel(generated_dataset, tmp_path):
    config = config_for(generated_dataset, out=tmp_path / "run", physics={"thermal": 1.0})
    with pytest.raises(TrainError, match="physics.thermal: .* varies the heat transfer coefficient"):
        train(config, progress=False, log=lambda *_: None)
    assert not (tmp_path / "run").exists()


def weighted_training(data: Path, out: Path, collocation: str = "") -> None:
    """The spec of the training test, run in a fresh process."""
    weights = {"charge": 0.01, "thermal": 0.02, "ocv": 0.5, "cell_model": 0.1}
    physics = dict(weights, cell_model_ambient_degc=[0.0, 45.0]) if collocation else weights
    run = train(config_for(data, out=Path(out), physics=physics), progress=False, log=lambda *_: None)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r and "physics" in r]
    assert len(steps) == 6
    for r in steps:
        data_loss = np.mean(list(r["per_output"].values()))
        assert set(r["physics"]) == set(weights)
        assert r["loss"] == pytest.approx(data_loss + sum(weights[k] * v for k, v in r["physics"].items()), rel=1e-4)


@pytest.mark.parametrize("collocation", ["", "collocation"])
def test_training_adds_the_weighted_terms_to_the_loss_and_logs_each(collocation, dataset, tmp_path):
    in_fresh_process("weighted_training", dataset, tmp_path / "run", collocation)


def test_collocation_windows_carry_the_training_currents_at_ambients_spread_over_the_range(dataset):
    config = config_for(dataset, physics={"cell_model": 1.0, "cell_model_ambient_degc": [0.0, 45.0]})
    loss, targets, batch = measured_windows(config, length=300)
    windows, reference = loss.collocation(batch)
    physical = lambda name, b: np.asarray(loss._measured(b, name))  # noqa: E731
    spread = np.array([7.5, 22.5, 37.5])  # a = 0 + 45 (b + 1/2) / 3 for the 3 windows, held over each window
    np.testing.assert_allclose(physical("ambient_temp_degc", windows), np.broadcast_to(spread[:, None], (3, 300)),
                               atol=1e-3)
    np.testing.assert_array_equal(windows["current_a"], batch["current_a"])
    rise = physical("core_temp_degc", batch)[:, 0] - physical("ambient_temp_degc", batch)[:, 0]
    np.testing.assert_allclose(np.asarray(reference["core_temp_degc"])[:, 0], spread + rise, atol=1e-3)
    np.testing.assert_allclose(physical("voltage_v", windows), np.asarray(reference["voltage_v"]), atol=1e-4)
    # the SPMe data's own windows at their own ambient give ~0; moved to 0-45 degC the data no longer fit them
    at_own = loss._cell_model(None, targets, batch)
    moved = loss.reference_error(targets, reference)
    assert float(at_own) < 1e-3 < float(moved), (at_own, moved)


def test_collocation_is_refused_without_its_term_or_outside_the_simulate_task(dataset):
    with pytest.raises(ValidationError, match="give physics.cell_model a weight > 0"):
        config_for(dataset, physics={"charge": 1.0, "cell_model_ambient_degc": [0.0, 45.0]})
    with pytest.raises(ValidationError, match=r"physics.cell_model_ambient_degc\n.*low < high"):
        config_for(dataset, physics={"cell_model": 1.0, "cell_model_ambient_degc": [45.0, 0.0]})
    with pytest.raises(ValidationError, match="cell_model_ambient_degc needs the simulate task"):
        config_for(dataset, task="estimate", outputs=["soc", "core_temp_degc"],
                   physics={"cell_model": 1.0, "cell_model_ambient_degc": [0.0, 45.0]})


def test_loading_the_cell_from_pybamm_leaves_the_process_float_width_as_it_was(dataset):
    was = jax.config.jax_enable_x64
    try:
        jax.config.update("jax_enable_x64", False)
        config = config_for(dataset, physics={"charge": 1.0})
        assert physics_loss(config, *prepare(config)).params.dtype == jnp.float32
        assert jax.config.jax_enable_x64 is False
    finally:
        jax.config.update("jax_enable_x64", was)
