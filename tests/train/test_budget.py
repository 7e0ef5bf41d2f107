"""A wall-time budget becomes a schedule length: the measured step time of the config, and the steps that fill it."""

import math

import pytest

from cellax.config import validate_config
from cellax.data.store import SIGNALS, write_dataset
from cellax.train.budget import measure_step_s, steps_for_seconds
from cellax.train.config import TrainConfig
from tests.conftest import synthetic_records


def test_the_measured_step_time_is_that_of_the_compiled_step(tmp_path):
    data = tmp_path / "data.h5"
    write_dataset(data, synthetic_records(8, seed=1), {"config": {"name": "budget", "seed": 1}}, tuple(SIGNALS))
    config = validate_config(TrainConfig, {
        "name": "tiny", "data": str(data), "model": {"kind": "gru", "width": 8}, "chunk_len": 32,
        "chunks_per_window": 2, "batch_size": 4, "steps": 8, "eval_every": 4, "split_fractions": [0.6, 0.2, 0.2],
        "out": str(tmp_path / "run")})
    step_s = measure_step_s(config, n_batches=3)
    assert math.isfinite(step_s) and step_s > 0
    once_s = measure_step_s(config, n_batches=3, budget_s=1e-9)  # too slow for that budget: one step is timed
    assert math.isfinite(once_s) and once_s > 0
    assert not (tmp_path / "run").exists()  # measuring writes no run folder


def test_the_schedule_fills_the_budget_at_the_measured_speed():
    assert steps_for_seconds(0.5, 300) == 510  # 0.85 of 300 s at 0.5 s per step
    assert steps_for_seconds(0.5, 300, fill=1.0) == 600
    assert steps_for_seconds(1000.0, 1.0) == 1  # at least one step
    for bad in ((0.0, 300), (0.5, 0.0), (0.5, 300, 0.0), (0.5, 300, 1.5), (-1.0, 300)):
        with pytest.raises(ValueError):
            steps_for_seconds(*bad)
