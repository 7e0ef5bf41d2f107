"""Small real DFN data (PyBaMM runs: configs/data/dfn_small.yaml) and a short training run on it."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def dfn_small(tmp_path_factory) -> Path:
    """Six ten-minute DFN profiles (a few seconds of PyBaMM)."""
    from cellax.config import load_config
    from cellax.data.config import DataConfig
    from cellax.data.generate import generate

    out = tmp_path_factory.mktemp("dfn") / "dfn_small.h5"
    generate(load_config(ROOT / "configs/data/dfn_small.yaml", DataConfig), out, progress=False, log=lambda *a: None)
    return out


@pytest.fixture(scope="session")
def setup(dfn_small):
    """``(profiles, params)`` of the small DFN set."""
    from cellax.data.cell import dataset_parameters
    from cellax.hybrid.data import load_profiles

    profiles, data_config = load_profiles(dfn_small)
    return profiles, dataset_parameters(data_config)


@pytest.fixture(scope="session")
def hybrid_config(dfn_small):
    from cellax.hybrid.config import HybridConfig

    return HybridConfig.model_validate({
        "name": "test",
        "data": str(dfn_small),
        "split": {"test_fraction": 0.34, "holdout_ambient_degc": [0, 10]},
        "model": {"width": 16, "depth": 1, "dtype": "float64"},
        "train": {"steps": 40, "batch": 8, "chunk_s": 100, "refresh_every": 10, "checkpoint_every": 20,
                  "learning_rate": 0.003},
    })


@pytest.fixture(scope="session")
def trained_run(hybrid_config, tmp_path_factory):
    """``(run_dir, report)`` of a 40-step run and its evaluation."""
    from cellax.hybrid.evaluate import evaluate_run
    from cellax.hybrid.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "test"
    train(hybrid_config, run_dir, progress=False)
    return run_dir, evaluate_run(run_dir, pictures=True)
