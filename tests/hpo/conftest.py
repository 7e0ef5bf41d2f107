"""A study over a tiny GRU on a small real HDF5 dataset (cellax's own store; no simulator needed)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cellax.data.store import SIGNALS, write_dataset
from tests.conftest import synthetic_records

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def hpo_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("hpo_data") / "data.h5"
    write_dataset(path, synthetic_records(16, seed=3), {"config": {"name": "hpo", "seed": 3}}, tuple(SIGNALS))
    return path


def write_study(folder: Path, dataset: Path, **changes) -> Path:
    """A base train config and a study config over it in ``folder``; ``changes`` update the study's fields."""
    folder.mkdir(parents=True, exist_ok=True)
    base = {"name": "tiny", "data": str(dataset), "model": {"kind": "gru", "width": 8}, "chunk_len": 32,
            "chunks_per_window": 2, "batch_size": 4, "steps": 8, "eval_every": 4, "checkpoint_every": 4,
            "eval_profiles": 2, "split_fractions": [0.6, 0.2, 0.2],
            "optimizer": {"warmup_steps": 0, "clip_norm": 1.0e38}}
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    study = {"name": "tiny", "base": "base.yaml", "trials": 4, "budget": {"steps": 8},
             "objective": {"output": "voltage_v", "metric": "rmse"},
             "sampler": {"kind": "tpe", "seed": 0, "startup_trials": 10},
             "pruner": {"kind": "asha", "min_steps": 4, "reduction_factor": 2}, "heartbeat_s": 1, "grace_s": 3,
             "out": str(folder / "out"),
             "space": {"model.width": {"low": 4, "high": 12, "step": 4},
                       "optimizer.learning_rate": {"choices": [0.003, 1.0e38]}}}
    study.update(changes)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def cellax(*args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYBAMM_DISABLE_TELEMETRY": "true"}
    return subprocess.Popen([sys.executable, "-m", "cellax.cli", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
