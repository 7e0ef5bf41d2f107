"""``cellax export RUN --format onnx|stablehlo --out DIR``: a run's deployed step as files for devices.

Loads the run's best checkpoint, folds its normalisation into :class:`~cellax.deploy.step.DeployedStep`,
writes ``init``/``step`` files and ``manifest.json`` into a hidden folder beside ``DIR`` and renames
it when complete, so ``DIR`` is either a whole export or absent.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from cellax.deploy.manifest import build_manifest
from cellax.deploy.step import DeployedStep
from cellax.train.loop import TrainError

FORMATS = ("onnx", "stablehlo")


class DeployError(TrainError):
    """A user error in export or serve (bad run, occupied output, unsupported model)."""


def load_step(run_dir: Path, fused: bool = False) -> tuple[DeployedStep, dict]:
    """The deployed step of a run's best checkpoint and a description of its origin.

    ``fused``: a Mamba run's step as one CPU kernel (:class:`~cellax.deploy.fused_mamba.FusedMambaStep`,
    the same results, for one-core streaming latency); refused for other models and where the
    kernel cannot be built.
    """
    from cellax.workflows.evaluate import load_run

    config, task, stats, model, step = load_run(Path(run_dir))
    if fused:
        from cellax.deploy.fused_mamba import FusedMambaStep, KernelUnavailable
        from cellax.models import Mamba

        if not isinstance(model, Mamba):
            raise DeployError(f"{run_dir}: the fused step is for Mamba runs; this run's model is a {type(model).__name__}")
        try:
            model = FusedMambaStep(model)
        except KernelUnavailable as err:
            raise DeployError(f"{run_dir}: {err}") from None
    try:
        deployed = DeployedStep(model, task, stats)
    except ValueError as err:
        raise DeployError(f"{run_dir}: {err}") from None
    origin = {"run": str(Path(run_dir).absolute()), "checkpoint_step": int(step),
              "config": json.loads(config.model_dump_json()), "limits": input_limits(config.data)}
    return deployed, origin


def input_limits(data: Path) -> dict[str, list[float]]:
    """Accepted input ranges: ``current_a`` within the pulse limits of the dataset's cell (datasheet);
    empty when the dataset or its datasheet cannot be read."""
    import h5py

    from cellax.data.datasheet import datasheet_for

    try:
        with h5py.File(data, "r") as f:
            parameter_set = json.loads(f.attrs["config"])["simulation"]["parameter_set"]
        sheet = datasheet_for(parameter_set)
    except (OSError, KeyError, ValueError):
        return {}
    return {"current_a": [sheet.charge_pulse_a, sheet.discharge_pulse_a]}


def export_run(run_dir: Path, fmt: str, out: Path) -> dict:
    """Export ``run_dir`` as ``fmt`` into the new folder ``out``; returns the manifest."""
    if fmt not in FORMATS:
        raise DeployError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    if out.exists():
        raise DeployError(f"{out} exists; choose a new folder for the export")
    step, origin = load_step(run_dir)
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        if fmt == "onnx":
            from cellax.deploy.onnx import export_onnx

            files = export_onnx(step, partial)
        else:
            from cellax.deploy.stablehlo import export_stablehlo

            files = export_stablehlo(step, partial)
        manifest = build_manifest(step, fmt, files, partial, origin)
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for path in partial.iterdir():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest
