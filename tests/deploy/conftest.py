"""Tiny trained runs of every model kind, on a small dataset from the jax backend (seconds to make)."""

import os

import pytest

from cellax.config import validate_config
from cellax.data.config import DataConfig
from cellax.data.generate import generate
from cellax.train.config import TrainConfig
from cellax.train.loop import train

MODELS = {
    "gru": {"kind": "gru", "width": 16},
    "transformer": {"kind": "transformer", "width": 16, "n_layers": 2, "n_heads": 2, "max_len": 64},
    "mamba": {"kind": "mamba", "width": 16, "n_layers": 2, "state_size": 4},
}
TASKS = {  # one estimator with every input encoding, simulators for the rest
    "gru": dict(task="estimate", charge_throughput=True, residual=True, conditions=["heat_transfer_coeff"],
                stft={"window": 8}),
    "transformer": dict(task="simulate", residual=True),
    "mamba": dict(task="estimate", charge_throughput=True),
}


@pytest.fixture(scope="session", autouse=True)
def kernel_cache(tmp_path_factory):
    """A fresh cache for the fused Mamba kernel: built once per test session, never from a stale library."""
    previous = os.environ.get("CELLAX_KERNEL_DIR")
    os.environ["CELLAX_KERNEL_DIR"] = str(tmp_path_factory.mktemp("kernels"))
    yield
    if previous is None:
        os.environ.pop("CELLAX_KERNEL_DIR")
    else:
        os.environ["CELLAX_KERNEL_DIR"] = previous


@pytest.fixture(scope="session")
def deploy_dataset(tmp_path_factory):
    config = validate_config(DataConfig, {
        "name": "deploy", "seed": 7, "n_profiles": 10, "backend": "jax",
        "profiles": {"duration_s": 600, "kinds": {"drive": 1, "dynamic": 1}},
    })
    path = tmp_path_factory.mktemp("deploy") / "data.h5"
    generate(config, path, progress=False, log=lambda *_: None)
    return path


@pytest.fixture(scope="session")
def runs(deploy_dataset, tmp_path_factory):
    """``{kind: run_dir}``: each trained a few steps (weights away from their initial values)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for kind, model in MODELS.items():
        config = TrainConfig(name=kind, data=deploy_dataset, model=model, chunk_len=32, chunks_per_window=2,
                             batch_size=4, steps=6, eval_every=6, checkpoint_every=6, eval_profiles=1,
                             out=root / kind, **TASKS[kind])
        out[kind] = train(config, progress=False, log=lambda *_: None)
    return out
