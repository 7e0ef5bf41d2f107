"""The jax backend writes the PyBaMM backend's dataset, with the same numbers within the model tolerances."""

import numpy as np
import pytest

from cellax.config import validate_config
from cellax.data.config import DataConfig
from cellax.data.datasheet import LG_M50
from cellax.data.generate import generate
from cellax.data.jax_backend import JaxBackend
from cellax.data.store import open_dataset
from tests.data.test_generate import SMALL

JOB = {**SMALL, "name": "backends", "seed": 5, "n_profiles": 4, "profiles": {**SMALL["profiles"], "duration_s": 1200}}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backends")
    paths = {}
    for name, backend, simulation in (("pybamm", "pybamm", {}), ("jax", "jax", {}),
                                      ("jax_steps", "jax", {"max_samples_per_step": 8})):
        config = validate_config(DataConfig, {**JOB, "backend": backend, "simulation": simulation})
        paths[name] = folder / f"{name}.h5"
        generate(config, paths[name], progress=False, log=lambda *_: None)
    return paths


@pytest.mark.parametrize("ours_name", ["jax", "jax_steps"])
def test_both_backends_write_the_same_profiles_and_agree_within_tolerance(datasets, ours_name):
    """Also with steps chosen from the current (up to 8 samples long) instead of a step per sample."""
    with open_dataset(datasets["pybamm"]) as reference, open_dataset(datasets[ours_name]) as ours:
        assert ours.attrs["backend"] == "jax" and reference.attrs["backend"] == "pybamm"
        assert sorted(ours.signal_names) == sorted(reference.signal_names)
        assert len(ours) == len(reference) == JOB["n_profiles"]
        for row in range(len(ours)):
            a, b = reference.record(row), ours.record(row)
            assert a.meta["profile_id"] == b.meta["profile_id"] and a.meta["status"] == b.meta["status"] == "ok"
            assert a.length == b.length
            np.testing.assert_array_equal(a.signals["current_a"], b.signals["current_a"])
            assert np.sqrt(np.mean((a.signals["voltage_v"] - b.signals["voltage_v"]) ** 2)) <= 2e-3
            for name in ("core_temp_degc", "surface_temp_degc"):
                np.testing.assert_allclose(b.signals[name], a.signals[name], atol=0.1)
            np.testing.assert_allclose(b.signals["soc"], a.signals["soc"], atol=1e-4)


def test_a_voltage_cut_off_ends_the_profile_with_the_pybamm_backends_wording():
    backend = JaxBackend(validate_config(DataConfig, JOB).simulation, LG_M50)
    ended, full = backend.simulate_batch([np.full(3600, 10.0), np.full(600, 1.0)], 1.0, [25.0, 25.0], [10.0, 10.0], [0.3, 0.5])
    assert ended.status.startswith("voltage_limit: voltage_min at t=")
    assert 0 < len(ended.signals["voltage_v"]) < 3600
    assert ended.signals["voltage_v"][-1] >= LG_M50.voltage_min_v
    assert full.status == "ok" and len(full.signals["time_s"]) == 600


def test_input_chosen_steps_are_a_jax_backend_setting():
    with pytest.raises(ValueError, match="simulation.max_samples_per_step applies to the jax backend only"):
        DataConfig.model_validate({**JOB, "backend": "pybamm", "simulation": {"max_samples_per_step": 8}})
    with pytest.raises(ValueError, match="max_samples_per_step"):
        DataConfig.model_validate({**JOB, "backend": "jax", "simulation": {"max_samples_per_step": 0}})


def test_the_dfn_runs_on_its_coarse_mesh_within_two_millivolts_of_pybamms(tmp_path):
    """PyBaMM's DFN on its default 20-cell mesh against cellax's on 6/3/6 cells, the same profiles."""
    paths = {}
    for backend in ("pybamm", "jax"):
        config = validate_config(DataConfig, {**JOB, "n_profiles": 1, "backend": backend, "simulation": {"model": "DFN"}})
        paths[backend] = tmp_path / f"{backend}.h5"
        generate(config, paths[backend], progress=False, log=lambda *_: None)
    with open_dataset(paths["pybamm"]) as reference, open_dataset(paths["jax"]) as ours:
        for row in range(len(ours)):
            a, b = reference.record(row), ours.record(row)
            assert a.meta["status"] == b.meta["status"] == "ok" and a.length == b.length
            for name in ("voltage_v", "anode_potential_v"):
                assert np.sqrt(np.mean((a.signals[name] - b.signals[name]) ** 2)) <= 2e-3, name
            for name in ("core_temp_degc", "surface_temp_degc"):
                np.testing.assert_allclose(b.signals[name], a.signals[name], atol=0.1)


def test_batches_in_flight_on_threads_write_the_profiles_of_one_at_a_time(datasets, tmp_path, monkeypatch):
    """``--workers 2`` with the jax backend: two batches simulate at once on two threads (one profile per batch
    here, so four batches); the dataset holds the same profiles, in profile order."""
    monkeypatch.setattr("cellax.data.generate.JAX_BATCH", 1)
    config = validate_config(DataConfig, {**JOB, "backend": "jax"})
    report = generate(config, tmp_path / "threads.h5", workers=2, progress=False, log=lambda *_: None)
    assert report.n_ok == JOB["n_profiles"]
    with open_dataset(datasets["jax"]) as one_call, open_dataset(tmp_path / "threads.h5") as threaded:
        assert [threaded.record(r).meta["profile_id"] for r in range(len(threaded))] == list(range(JOB["n_profiles"]))
        for row in range(len(one_call)):
            a, b = one_call.record(row), threaded.record(row)
            assert a.meta == b.meta
            for name in a.signals:
                np.testing.assert_allclose(b.signals[name], a.signals[name], rtol=1e-10, atol=1e-12)
