"""Export: ONNX (ONNX Runtime) and StableHLO (jax.export) files equal the in-process free-running
rollout at every step of a held-out profile, with and without cellax importable."""

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from cellax.cli import main
from cellax.data.loader import iterate_profiles, split_profiles
from cellax.deploy.export import export_run, load_step
from cellax.deploy.manifest import read_manifest
from cellax.deploy.step import rollout_stream
from cellax.workflows.evaluate import load_run
from cellax.train.metrics import predict, stack_profiles

ROOT = Path(__file__).resolve().parents[2]
REALTIME = (ROOT / "docs/realtime.md").read_text()


def documented_loop(heading: str) -> str:
    """The first Python block of the docs/realtime.md section under ``heading``."""
    section = REALTIME.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


LOOPS = {"onnx": documented_loop("Streaming a CSV with ONNX Runtime"),
         "stablehlo": documented_loop("Streaming a CSV with only jax")}
RTOL = 1e-5


def held_out(run):
    """``(inputs, initial outputs, chunked-rollout predictions, output scale)`` of the first test profile."""
    config, task, stats, model, _ = load_run(run)
    rows = split_profiles(config.data, config.split_fractions, config.split_seed)["test"]
    profile = next(iter(iterate_profiles(config.data, rows[:1], [*task.inputs, *task.outputs])))
    x, y, _, lengths = stack_profiles(task, stats, [profile])
    std = np.array([stats.std[n] for n in task.outputs])
    mean = np.array([stats.mean[n] for n in task.outputs])
    reference = np.asarray(predict(model, task, x, y))[0, : lengths[0]] * std + mean
    inputs = np.stack([profile[n] for n in task.inputs], -1)
    first = np.array([profile[n][0] for n in task.outputs])
    return inputs, first, reference, std


def assert_close(actual, reference, scale):
    """``|a - b| <= 1e-5 max(|b|, σ)`` at every step and output (σ: the output's train std)."""
    error = np.abs(actual - reference) / np.maximum(np.abs(reference), scale)
    assert error.max() <= RTOL, f"largest relative error {error.max():.2e} at step {np.argmax(error.max(1))}"


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    folders = {}
    for kind, run in runs.items():
        for fmt in ("onnx", "stablehlo"):
            export_run(run, fmt, root / f"{kind}.{fmt}")
            folders[kind, fmt] = root / f"{kind}.{fmt}"
    return folders


def run_onnx(folder, inputs, first):
    import onnxruntime as ort

    manifest = read_manifest(folder)
    names = [s["name"] for s in manifest["state"]]
    init = ort.InferenceSession(str(folder / "init.onnx"), providers=["CPUExecutionProvider"])
    step = ort.InferenceSession(str(folder / "step.onnx"), providers=["CPUExecutionProvider"])
    state = init.run(names, {"initial_outputs": first.astype(np.float32)})
    out = []
    for u in inputs.astype(np.float32):
        y, *state = step.run(None, {"inputs": u, **dict(zip(names, state))})
        out.append(y)
    return np.array(out)


def run_stablehlo(folder, inputs, first):
    read_manifest(folder)
    init = jax.export.deserialize((folder / "init.stablehlo").read_bytes())
    step = jax.jit(jax.export.deserialize((folder / "step.stablehlo").read_bytes()).call)
    state = init.call(first.astype(np.float32))
    out = []
    for u in inputs.astype(np.float32):
        y, *state = step(u, *state)
        out.append(np.asarray(y))
    return np.array(out)


@pytest.mark.parametrize("kind", ["gru", "transformer", "mamba"])
def test_exported_files_match_the_in_process_rollout_at_every_step(runs, exports, kind):
    inputs, first, reference, scale = held_out(runs[kind])
    deployed, _ = load_step(runs[kind])
    in_process = np.asarray(jax.jit(rollout_stream)(deployed, inputs, first))
    assert_close(in_process, reference, scale)
    assert_close(run_onnx(exports[kind, "onnx"], inputs, first), reference, scale)
    assert_close(run_stablehlo(exports[kind, "stablehlo"], inputs, first), reference, scale)


def test_the_documented_loops_stream_a_csv_where_cellax_cannot_be_imported(runs, exports, tmp_path):
    fake = tmp_path / "fake" / "cellax"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('cellax is not installed on this device')\n")
    inputs, first, reference, scale = held_out(runs["transformer"])
    manifest = read_manifest(exports["transformer", "onnx"])
    names = [s["name"] for s in manifest["inputs"]] + [s["name"] for s in manifest["outputs"]]
    with open(tmp_path / "cell.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for i, u in enumerate(inputs):
            writer.writerow([repr(float(v)) for v in u] + ([repr(float(v)) for v in first] if i == 0 else [""] * len(first)))
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "fake")}
    for fmt, code in LOOPS.items():
        script = tmp_path / f"stream_{fmt}.py"
        script.write_text("import importlib\ntry:\n    importlib.import_module('cellax')\nexcept ImportError:\n    pass\n"
                          "else:\n    raise SystemExit('cellax importable')\n" + code)
        out = tmp_path / f"{fmt}.csv"
        subprocess.run([sys.executable, str(script), str(exports["transformer", fmt]), str(tmp_path / "cell.csv"),
                        str(out)], check=True, env=env, cwd=tmp_path)
        rows = list(csv.reader(open(out)))
        assert rows[0] == [s["name"] for s in manifest["outputs"]]
        assert_close(np.array(rows[1:], float), reference, scale)


def test_the_manifest_names_units_state_origin_and_hashes(runs, exports):
    manifest = read_manifest(exports["gru", "onnx"])
    assert [s["name"] for s in manifest["inputs"]][:2] == ["current_a", "voltage_v"]
    assert manifest["inputs"][0]["units"] == "A" and manifest["outputs"][0]["name"] == "soc"
    assert {"state.initial", "state.index", "state.stft"} <= {s["name"] for s in manifest["state"]}
    assert manifest["run"]["checkpoint_step"] == 6 and manifest["run"]["config"]["model"]["kind"] == "gru"
    step = exports["gru", "onnx"] / "step.onnx"
    step.write_bytes(step.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="step.onnx does not match the hash"):
        read_manifest(exports["gru", "onnx"])


def test_export_refuses_a_bad_format_or_an_existing_folder_with_one_line(runs, tmp_path, capsys):
    assert main(["export", str(runs["gru"]), "--format", "tflite", "--out", str(tmp_path / "x")]) == 2
    assert "--format must be one of onnx, stablehlo" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert main(["export", str(runs["gru"]), "--format", "onnx", "--out", str(tmp_path / "taken")]) == 2
    assert "exists" in capsys.readouterr().err and not list((tmp_path / "taken").iterdir())
    assert not (tmp_path / "x").exists()
    assert main(["export", str(tmp_path), "--format", "onnx", "--out", str(tmp_path / "y")]) == 2
    assert "not a cellax training run" in capsys.readouterr().err and not (tmp_path / "y").exists()
