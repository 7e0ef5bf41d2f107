"""The JSON manifest beside an exported step: what goes in and out (names, units, shapes),
the state arrays, the normalisation folded into the graph, the run it came from, and hashes.

Readable with ``json`` alone; :func:`read_manifest` checks the files' SHA-256 against it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cellax.signals import SIGNALS
from cellax.deploy.step import DeployedStep

FORMAT = "cellax.deploy"
VERSION = 1


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_manifest(step: DeployedStep, fmt: str, files: dict[str, dict], out: Path, run: dict) -> dict:
    """The manifest of the files just written under ``out`` (their hashes included)."""
    task = step.task

    def signals(names, mean, std):
        return [{"name": n, "units": SIGNALS.get(n, ("", ""))[0], "mean": float(m), "std": float(s)}
                for n, m, s in zip(names, mean, std)]

    for entry in files.values():
        entry["sha256"] = sha256(out / entry["file"])
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "export_format": fmt,
        "inputs": signals(task.inputs, step.inputs.mean, step.inputs.std),
        "outputs": signals(task.outputs, step.outputs.mean, step.outputs.std),
        "state": [{"name": n, "shape": list(shape), "dtype": dtype} for n, shape, dtype in step.state_spec()],
        "task": {"kind": "simulate" if task.known_initial else "estimate", "chunk_len": task.chunk_len,
                 "stft_window": task.stft_window, "charge_channels": task.charge_channels, "residual": task.residual},
        "initial_outputs": "physical values of the outputs at the first sample (simulate); ignored by estimators",
        "files": files,
        "run": run,
    }
    manifest["sha256"] = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    return manifest


def read_manifest(folder: Path) -> dict:
    """The manifest of an export folder, after checking every file's hash; ``ValueError`` names the file."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{folder / 'manifest.json'} is not a cellax export manifest")
    for entry in manifest["files"].values():
        if sha256(folder / entry["file"]) != entry["sha256"]:
            raise ValueError(f"{folder / entry['file']} does not match the hash in its manifest")
    return manifest
