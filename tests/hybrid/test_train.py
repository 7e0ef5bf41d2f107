"""Training through the solver on real DFN data: held-out error drops, resume, NaN stop, bad input."""

import json
import shutil

import equinox as eqx
import jax
import numpy as np
import optax
import pytest
import yaml

from cellax.cli import main
from cellax.hybrid.train import HybridError, corrections, load_run, train


def test_training_lowers_held_out_error(trained_run):
    run_dir, report = trained_run
    spme, hybrid = report["test"]["spme"]["all"], report["test"]["hybrid"]["all"]
    assert spme["profiles"] >= 1 and report["holdout"]["spme"]["all"]["profiles"] >= 1
    assert hybrid["rmse_voltage_mv"] < 0.7 * spme["rmse_voltage_mv"]
    for picture in ("error_vs_band.png", "overlay.png"):
        assert (run_dir / picture).stat().st_size > 0
    assert json.loads((run_dir / "report.json").read_text())["test"]["hybrid"]["all"] == hybrid
    history = [json.loads(line) for line in (run_dir / "train_history.jsonl").read_text().splitlines()]
    assert [row["step"] for row in history] == list(range(1, len(history) + 1)) and len(history) > 0
    assert any(path.name.startswith("events.out.tfevents") for path in (run_dir / "events").iterdir())


def test_nan_stops_with_last_good_checkpoint(trained_run, hybrid_config, monkeypatch, tmp_path):
    import cellax.hybrid.train as module

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    longer = hybrid_config.model_copy(update={"train": hybrid_config.train.model_copy(update={"steps": 60})})
    real = module._chunk_loss
    monkeypatch.setattr(module, "_chunk_loss", lambda *a: (lambda r: (r[0] * np.nan, r[1]))(real(*a)))
    with pytest.raises(HybridError, match="non-finite loss or gradient at step 40.*step 40 is kept"):
        train(longer, run_dir, resume=True, progress=False)
    _, model, _, _ = load_run(run_dir)
    _, trained, _, _ = load_run(trained_run[0])
    assert np.array_equal(np.asarray(model.output.mlp.layers[-1].weight), np.asarray(trained.output.mlp.layers[-1].weight))


def test_a_killed_and_resumed_run_ends_bit_identical_and_an_existing_run_is_never_mixed(trained_run, hybrid_config,
                                                                                         tmp_path):
    import jax

    run_dir = tmp_path / "run"
    half = hybrid_config.model_copy(update={"train": hybrid_config.train.model_copy(update={"steps": 20})})
    train(half, run_dir, progress=False)
    with pytest.raises(HybridError, match="holds a run; pass --resume"):
        train(hybrid_config, run_dir, progress=False)
    faster = hybrid_config.model_copy(update={"train": hybrid_config.train.model_copy(update={"learning_rate": 0.01})})
    with pytest.raises(HybridError, match="differs in train"):
        train(faster, run_dir, resume=True, progress=False)
    train(hybrid_config, run_dir, resume=True, progress=False)
    _, resumed, _, _ = load_run(run_dir)
    _, whole, _, _ = load_run(trained_run[0])
    leaves = lambda m: jax.tree_util.tree_leaves(m)  # noqa: E731
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(leaves(resumed), leaves(whole)))
    steps = [json.loads(line)["step"] for line in (run_dir / "train_history.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))


class _HybridBefore(eqx.Module):
    spme: object
    heat: object
    output: object


def test_a_checkpoint_saved_as_before_the_optional_parts_still_loads(trained_run, tmp_path):
    """Checkpoints used to hold the model module itself; they restore into the same weights."""
    from cellax.train.checkpoint import Checkpoints

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    _, model, _, _ = load_run(run_dir)
    for which in ("latest", "best"):
        shutil.rmtree(run_dir / "checkpoints" / which)
    old = Checkpoints(run_dir / "checkpoints")
    opt_state = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(1e-3)).init(
        eqx.filter(corrections(model), eqx.is_array))
    before = _HybridBefore(model.spme, model.heat, model.output)  # the module's fields before the optional parts
    for which in ("latest", "best"):
        old.save(which, 40, before, opt_state, 1.0)
    old.close()
    _, loaded, _, _ = load_run(run_dir)
    for a, b in zip(jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array)),
                    jax.tree_util.tree_leaves(eqx.filter(loaded, eqx.is_array))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_checkpoint_of_another_cell_is_refused(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    meta = json.loads((run_dir / "meta.json").read_text())
    meta["x_counts"] = [10, 10, 10]
    (run_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(HybridError, match="different x_counts"):
        load_run(run_dir)


@pytest.mark.parametrize(
    ("change", "field"),
    [({"train": {"steps": 0}}, "train.steps"), ({"data": "missing.h5"}, "data"),
     ({"train": {"refresh_every": 3, "checkpoint_every": 10}}, "train"), ({"modle": {}}, "modle"),
     ({"model": {"fit_parameters": {"neg_ocp": 1.0}}}, "model.fit_parameters"),
     ({"model": {"fit_parameters": {"neg_diffusivity_scale": 0.0}}}, "model.fit_parameters"),
     ({"model": {"latent_time_constants_s": [0.1]}}, "model.latent_time_constants_s"),
     ({"model": {"learn_time_constants": True}}, "model"),
     ({"model": {"redistribution_scale_1_s": 0.0}}, "model.redistribution_scale_1_s"),
     ({"model": {"backbone": "P2D"}}, "model.backbone"),
     ({"split": {"seed": -1}}, "split.seed")],
)
def test_bad_config_exits_2_naming_the_field(dfn_small, tmp_path, capsys, change, field):
    config = {"name": "bad", "data": str(dfn_small), **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["hybrid", "train", str(path), "--out", str(out), "--no-progress"]) == 2
    assert f"{field}:" in capsys.readouterr().err
    assert not out.exists()


def test_shipped_config_is_valid(dfn_small):
    from pathlib import Path

    from cellax.config import validate_config
    from cellax.hybrid.config import HybridConfig

    for name in ("dfn", "dfn_hard", "dfn_hard_history", "dfn_hard_joint", "dfn_hard96_joint", "dfn_hard192_joint", "dfn_hard192_dfn",
                 "dfn_hard192_dfn424"):
        path = Path(__file__).resolve().parents[2] / f"configs/hybrid/{name}.yaml"
        raw = {**yaml.safe_load(path.read_text()), "data": str(dfn_small)}
        config = validate_config(HybridConfig, raw, str(path))
        assert config.split.holdout_ambient_degc.high == 10.0
