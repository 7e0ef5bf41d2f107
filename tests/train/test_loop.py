"""Training: exact resume, data parallel = one device, NaN stops cleanly, bad configs name the field."""

import os
import subprocess
import sys

import equinox as eqx
import jax
import numpy as np
import pytest
from pydantic import ValidationError

from cellax.config import validate_config
from cellax.data.config import DataConfig
from cellax.data.generate import generate
from cellax.data.store import write_dataset
from cellax.train.checkpoint import Checkpoints
from cellax.train.config import TrainConfig
from cellax.workflows.evaluate import evaluate, load_run
from cellax.train.loop import TrainError, make_step, optimizer, train
from cellax.train.task import Task
from tests.conftest import synthetic_records


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """16 profiles of 20 minutes from the jax backend (seconds to make)."""
    config = validate_config(DataConfig, {
        "name": "train", "seed": 4, "n_profiles": 16, "backend": "jax",
        "profiles": {"duration_s": 1200, "kinds": {"cc_rest": 1, "drive": 1, "dynamic": 1}},
    })
    path = tmp_path_factory.mktemp("train") / "data.h5"
    generate(config, path, progress=False, log=lambda *_: None)
    return path


def small(dataset, out, **changes) -> TrainConfig:
    base = dict(name="t", data=dataset, model={"kind": "gru", "width": 16}, chunk_len=64, chunks_per_window=2,
                batch_size=4, steps=12, eval_every=4, checkpoint_every=4, eval_profiles=2, out=out)
    return TrainConfig(**{**base, **changes})


def arrays(model):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))]


def test_a_killed_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(dataset, tmp_path):
    train(small(dataset, tmp_path / "whole"), progress=False)
    train(small(dataset, tmp_path / "split"), progress=False, stop_after=6)  # dies after step 6 (checkpoint at 6)
    train(small(dataset, tmp_path / "split"), resume=True, progress=False, log=lambda *_: None)
    whole = Checkpoints(tmp_path / "whole" / "checkpoints")
    split = Checkpoints(tmp_path / "split" / "checkpoints")
    template = load_run(tmp_path / "whole")[3]
    opt = optimizer(small(dataset, tmp_path)).init(eqx.filter(template, eqx.is_array))
    a, _, step_a, _ = whole.restore_latest(template, opt)
    b, _, step_b, _ = split.restore_latest(template, opt)
    assert step_a == step_b == 12
    for x, y in zip(arrays(a), arrays(b)):
        np.testing.assert_array_equal(x, y)


def test_resuming_with_a_changed_config_is_refused_naming_what_changed(dataset, tmp_path):
    train(small(dataset, tmp_path / "run"), progress=False, stop_after=4)
    with pytest.raises(TrainError, match="differs in batch_size, charge_throughput"):
        train(small(dataset, tmp_path / "run", batch_size=8, charge_throughput=True), resume=True, progress=False)
    train(small(dataset, tmp_path / "run", steps=16), resume=True, progress=False, log=lambda *_: None)


def test_evaluation_reports_physical_errors_and_draws_pictures(dataset, tmp_path):
    run = train(small(dataset, tmp_path / "run"), progress=False)
    report = evaluate(run, max_profiles=2, plots=1)
    assert report["outputs"]["voltage_v"]["unit"] == "mV" and report["outputs"]["soc"]["unit"] == "% SOC"
    for metrics in report["outputs"].values():
        assert np.isfinite(metrics["rmse"]) and metrics["max"] >= metrics["rmse"] >= 0
    assert len(report["error_growth"]["voltage_v"]) == 12
    assert all(os.path.getsize(p) > 5000 for p in report["plots"])


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(dataset, tmp_path):
    config = small(dataset, tmp_path / "nan", steps=40, checkpoint_every=1, eval_every=40,
                   optimizer={"learning_rate": 1e38, "warmup_steps": 0, "clip_norm": 1e38})
    with pytest.raises(TrainError, match="loss became nan|loss became inf"):
        train(config, progress=False)
    assert Checkpoints(tmp_path / "nan" / "checkpoints").latest_step() is not None


def test_data_parallel_over_two_devices_gives_the_single_device_loss(dataset, tmp_path):
    script = f"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + sys.argv[1]
import jax, json, equinox as eqx, numpy as np
from cellax.train.config import TrainConfig
from cellax.train.loop import train
config = TrainConfig(name="p", data={str(dataset)!r}, model={{"kind": "gru", "width": 16}}, chunk_len=64,
                     batch_size=4, steps=3, eval_every=3, checkpoint_every=3, eval_profiles=2, out=sys.argv[2])
train(config, progress=False)
print(json.dumps([json.loads(l)["loss"] for l in open(sys.argv[2] + "/metrics.jsonl")]))
"""
    losses = []
    for devices in (1, 2):
        result = subprocess.run([sys.executable, "-c", script, str(devices), str(tmp_path / f"d{devices}")],
                                capture_output=True, text=True, cwd=os.getcwd())
        assert result.returncode == 0, result.stderr[-2000:]
        losses.append(np.array(eval_json(result.stdout)))
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


def eval_json(text):
    import json

    return json.loads(text.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"model": {"kind": "transformer", "width": 30, "n_heads": 4}}, "n_heads"),
        ({"model": {"kind": "lstm9"}}, "model"),
        ({"outputs": ["voltage_v", "temperature"]}, "outputs"),
        ({"task": "estimate", "outputs": ["voltage_v"]}, "inputs of the 'estimate' task"),
        ({"conditions": ["initial_soc"]}, "unknown condition 'initial_soc'"),
        ({"conditions": ["parameter_set"]}, "parameter_set=<parameter set name>"),
    ],
)
def test_bad_configs_are_refused_naming_the_field(dataset, tmp_path, changes, field):
    with pytest.raises(ValidationError, match=field):
        small(dataset, tmp_path, **changes)


def test_a_window_longer_than_the_profiles_is_refused_before_training(dataset, tmp_path):
    with pytest.raises(TrainError, match="chunk_len x chunks_per_window = 2560"):
        train(small(dataset, tmp_path / "long", chunk_len=1280), progress=False)


def test_a_dataset_without_the_needed_signals_is_refused_with_what_is_missing(tmp_path):
    records = synthetic_records(8)
    for r in records:
        r.signals.pop("core_temp_degc", None)
    names = [n for n in records[0].signals if n != "core_temp_degc"]
    write_dataset(tmp_path / "partial.h5", records, {"config": {}}, signal_names=names)
    with pytest.raises(TrainError, match=r"lacks signal\(s\) \['core_temp_degc'\]"):
        train(small(tmp_path / "partial.h5", tmp_path / "x"), progress=False)


def test_profile_conditions_are_inputs_that_training_and_evaluation_read_from_the_index(dataset, tmp_path):
    config = small(dataset, tmp_path / "cond", conditions=["heat_transfer_coeff", "parameter_set=Chen2020"], steps=4)
    assert config.input_signals[-2:] == ["heat_transfer_coeff", "parameter_set=Chen2020"]
    run = train(config, progress=False)
    stats = load_run(run)[2]
    assert "heat_transfer_coeff" in stats.mean and "parameter_set=Chen2020" not in stats.mean  # one-hot: raw 0/1
    assert np.isfinite(evaluate(run, max_profiles=1, plots=0)["loss"])
    with pytest.raises(TrainError, match="no profile of .* has parameter_set=OKane2022"):
        train(small(dataset, tmp_path / "other", conditions=["parameter_set=OKane2022"]), progress=False)


def test_cellax_evaluate_reports_a_run(dataset, tmp_path, capsys):
    from cellax.cli import main

    run = train(small(dataset, tmp_path / "cli"), progress=False)
    assert main(["evaluate", str(run), "--max-profiles", "1"]) == 0
    assert "RMSE" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2


def tensorboard_tags(folder) -> set[str]:
    """Scalar tags in the TensorBoard event files of ``folder`` (TFRecord framing, Event protos)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    tags = set()
    for path in folder.glob("events.out.tfevents.*"):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = Event.FromString(data[at + 12 : at + 12 + length])
            tags |= {value.tag for value in event.summary.value}
            at += 12 + length + 4
    return tags


def test_a_run_keeps_events_and_refuses_fewer_steps_a_swapped_dataset_and_flipped_checkpoint_bytes(dataset, tmp_path,
                                                                                                  capsys):
    import shutil

    from cellax.cli import main
    from cellax.data.store import open_dataset

    data = tmp_path / "data.h5"
    shutil.copy(dataset, data)
    run = train(small(data, tmp_path / "run", steps=4), progress=False)
    assert {"loss", "grad_norm", "per_output/voltage_v", "val/loss"} <= tensorboard_tags(run / "events")

    with pytest.raises(TrainError, match="already at step 4, past steps 2"):
        train(small(data, run, steps=2), resume=True, progress=False)

    with open_dataset(dataset) as ds:  # the same file name, two profiles fewer
        write_dataset(data, [ds.record(row) for row in range(len(ds) - 2)], {"config": ds.config})
    with pytest.raises(TrainError, match="is not the dataset"):
        train(small(data, run, steps=8), resume=True, progress=False)

    step_dir = run / "checkpoints" / "best" / "4"
    assert (step_dir / "sha256.json").exists()
    biggest = max((p for p in step_dir.rglob("*") if p.is_file() and p.name != "sha256.json"),
                  key=lambda p: p.stat().st_size)
    raw = bytearray(biggest.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    biggest.write_bytes(bytes(raw))
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and biggest.name in err and "damaged" in err
    assert not (run / "eval").exists()


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing_behind(dataset, tmp_path):
    out = tmp_path / "early"
    config = small(dataset, out, steps=40, checkpoint_every=40, eval_every=40,
                   optimizer={"learning_rate": 1e38, "warmup_steps": 0, "clip_norm": 1e38})
    with pytest.raises(TrainError, match="loss became"):
        train(config, progress=False)
    assert not out.exists()
    (out / "checkpoints" / "latest").mkdir(parents=True)  # as a kill -9 during the first save leaves it
    (out / "config.json").write_text(config.model_dump_json())
    assert train(small(dataset, out, steps=2), progress=False, log=lambda *_: None) == out
    assert Checkpoints(out / "checkpoints").latest_step() == 2


@pytest.mark.parametrize("library_fusions", ["0", "1"])
def test_on_cpu_the_step_compiles_without_ynnpack_fusions_unless_asked_for(dataset, tmp_path, monkeypatch,
                                                                             library_fusions):
    """YNNPACK's matmuls made XLA transpose an activation for every weight gradient; the step leaves them out
    (docs/performance.md), and ``CELLAX_XLA_LIBRARY_FUSIONS=1`` restores XLA's default."""
    import jax.numpy as jnp

    from cellax.models import make_model

    monkeypatch.setenv("CELLAX_XLA_LIBRARY_FUSIONS", library_fusions)
    config = small(dataset, tmp_path, model={"kind": "transformer", "width": 32, "n_layers": 1, "n_heads": 2},
                   batch_size=8, chunk_len=128)
    task = Task.from_config(config)
    model = make_model(config.model, task.n_features, task.n_outputs, jax.random.key(0))
    tx = optimizer(config)
    batch = {name: jax.ShapeDtypeStruct((config.batch_size, config.window_len), jnp.float32)
             for name in [*task.inputs, *task.outputs]}
    compiled = make_step(task, config, tx).lower(model, tx.init(eqx.filter(model, eqx.is_array)), batch).compile()
    assert ("__ynn_fusion" in compiled.as_text()) == (library_fusions == "1")
