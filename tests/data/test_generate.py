"""Generation with real PyBaMM: determinism, shards and merge, refusal to clobber, kill -9 and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import yaml

from cellax.config import validate_config
from cellax.data.config import DataConfig
from cellax.data.generate import GenerateError, Shard, generate, parts_dir, plan_profile
from cellax.data.profiles import validate_profile
from cellax.data.pybamm_backend import PybammBackend
from cellax.data.store import merge_datasets, open_dataset

SMALL = {
    "name": "test",
    "seed": 11,
    "n_profiles": 6,
    "profiles": {"duration_s": 600, "kinds": {"cc_rest": 1, "drive": 1, "dynamic": 1}},
    "conditions": {"ambient_temp_degc": [15, 30], "heat_transfer_coeff": [5, 30], "initial_soc": [0.3, 0.8]},
}


@pytest.fixture
def config() -> DataConfig:
    return validate_config(DataConfig, SMALL)


def quiet(*_):
    pass


def test_a_profile_is_a_function_of_config_and_id_only(config):
    meta_a, current_a = plan_profile(config, 3)
    meta_b, current_b = plan_profile(config, 3)
    assert meta_a == meta_b
    np.testing.assert_array_equal(current_a, current_b)
    assert not np.array_equal(current_a, plan_profile(config, 4)[1])
    for pid in range(config.n_profiles):
        meta, current = plan_profile(config, pid)
        assert validate_profile(current, config.profiles.dt_s, config.cell, meta["initial_soc"]) == []


def test_generate_writes_a_valid_dataset_and_refuses_to_clobber_it(tmp_path, config):
    out = tmp_path / "d.h5"
    report = generate(config, out, progress=False, log=quiet)
    assert report.n_profiles == 6 and report.cell_hours > 0
    assert not parts_dir(out).exists()
    with open_dataset(out) as ds:
        assert ds.profiles["profile_id"].tolist() == list(range(6))
        assert ds.config == config.model_dump(mode="json")
        assert ds.attrs["pybamm_version"] and ds.attrs["backend_version"] == PybammBackend.version == 2
        table = ds.profiles
        ok = table["status"] == "ok"
        assert ok.sum() >= 4, table["status"]
        for row in np.flatnonzero(ok):
            assert table["length"][row] == 600
            soc = ds.profile(row, ["soc"])["soc"]
            assert soc[0] == pytest.approx(table["initial_soc"][row], abs=1e-3)
    before = out.read_bytes()
    with pytest.raises(GenerateError, match="exists; pass --resume"):
        generate(config, out, progress=False, log=quiet)
    assert out.read_bytes() == before
    again = generate(config, out, resume=True, progress=False, log=quiet)
    assert again.n_simulated == 0 and out.read_bytes() == before
    other = config.model_copy(update={"seed": 12})
    with pytest.raises(GenerateError, match="different job"):
        generate(other, out, resume=True, progress=False, log=quiet)
    old = tmp_path / "old.h5"  # written before the solver's step was capped: no backend_version
    old.write_bytes(before)
    with h5py.File(old, "r+") as f:
        del f.attrs["backend_version"]
    with pytest.raises(GenerateError, match="backend_version 1 of the pybamm backend, this is 2; --overwrite"):
        generate(config, old, resume=True, progress=False, log=quiet)


def test_parts_of_an_older_backend_version_are_not_resumed(tmp_path, config):
    out = tmp_path / "d.h5"
    parts_dir(out).mkdir()
    (parts_dir(out) / "job.json").write_text(json.dumps({"config": config.model_dump(mode="json"), "shard": "0/1"}))
    with pytest.raises(GenerateError, match="backend version changed"):
        generate(config, out, resume=True, progress=False, log=quiet)
    assert not out.exists()


def test_shards_merge_into_the_same_dataset_as_one_run(tmp_path, config):
    whole = tmp_path / "whole.h5"
    generate(config, whole, workers=2, progress=False, log=quiet)
    shards = [tmp_path / f"s{i}.h5" for i in range(2)]
    for i, path in enumerate(shards):
        generate(config, path, shard=Shard(i, 2), progress=False, log=quiet)
        with open_dataset(path) as ds:
            assert ds.attrs["shard"] == f"{i}/2"
            assert ds.profiles["profile_id"].tolist() == list(range(i, 6, 2))
    merged = merge_datasets(shards, tmp_path / "merged.h5")
    with open_dataset(whole) as a, open_dataset(merged) as b:
        assert a.profiles["status"].tolist() == b.profiles["status"].tolist()
        for row in range(len(a)):
            for name in ("voltage_v", "core_temp_degc", "soc"):
                np.testing.assert_allclose(a.profile(row)[name], b.profile(row)[name], rtol=0, atol=1e-9)


def test_bad_flags_are_refused_before_any_work(tmp_path, config):
    with pytest.raises(GenerateError, match="does not exist"):
        generate(config, tmp_path / "no" / "d.h5", progress=False, log=quiet)
    with pytest.raises(GenerateError, match="contradict"):
        generate(config, tmp_path / "d.h5", resume=True, overwrite=True, progress=False, log=quiet)
    with pytest.raises(GenerateError, match="I/N"):
        Shard.parse("3")
    with pytest.raises(GenerateError, match="0 <= I < N"):
        Shard.parse("2/2")


def _cli(*args, **kwargs):
    kwargs.setdefault("env", {**os.environ, "PYBAMM_DISABLE_TELEMETRY": "true"})
    return subprocess.Popen(
        [sys.executable, "-m", "cellax.cli", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs,
    )


def test_kill_9_then_resume_keeps_finished_profiles_and_duplicates_nothing(tmp_path):
    config_path = tmp_path / "job.yaml"
    config_path.write_text(yaml.safe_dump({**SMALL, "n_profiles": 8}))
    out = tmp_path / "d.h5"
    proc = _cli("generate", config_path, "--out", out, "--flush-every", 1, "--no-progress", start_new_session=True)
    parts = parts_dir(out)
    while len(list(parts.glob("part-*.h5"))) < 2:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    assert not out.exists(), "a killed run must not leave a file under the final name"
    kept = {}
    for part in sorted(parts.glob("part-*.h5")):
        with open_dataset(part) as ds:
            for row, pid in enumerate(ds.profiles["profile_id"].tolist()):
                kept[pid] = (part.stat().st_mtime_ns, ds.profile(row)["voltage_v"])
    assert 2 <= len(kept) < 8

    refused = _cli("generate", config_path, "--out", out)
    assert refused.wait() == 2 and "interrupted run" in refused.stdout.read()

    resumed = _cli("generate", config_path, "--out", out, "--resume", "--no-progress")
    output = resumed.communicate()[0]
    assert resumed.returncode == 0, output
    assert f"resuming: {len(kept)} profile(s) already done, {8 - len(kept)} to go" in output
    assert not parts.exists()
    with open_dataset(out) as ds:
        ids = ds.profiles["profile_id"].tolist()
        assert ids == list(range(8))
        for pid, (_, voltage) in kept.items():
            np.testing.assert_array_equal(ds.profile(ids.index(pid))["voltage_v"], voltage)


def test_ctrl_c_with_workers_stops_promptly_and_keeps_finished_profiles(tmp_path):
    n_profiles = 12
    config_path = tmp_path / "job.yaml"
    config_path.write_text(yaml.safe_dump({**SMALL, "n_profiles": n_profiles, "profiles": {"duration_s": 1800}}))
    out = tmp_path / "d.h5"
    proc = _cli("generate", config_path, "--out", out, "--workers", 2, "--flush-every", 1, "--no-progress",
                env={**os.environ, "PYBAMM_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"})
    seen = []
    for line in proc.stdout:  # the job is sized inside main(), whose KeyboardInterrupt handler is then active
        seen.append(line)
        if line.startswith("job: "):
            break
    parts = parts_dir(out)
    while not list(parts.glob("part-*.h5")):  # states, not seconds: pytest's timeout catches a hang
        assert proc.poll() is None, "".join(seen) + proc.stdout.read()
        time.sleep(0.05)
    assert len(list(parts.glob("part-*.h5"))) < n_profiles and not out.exists()  # still running
    proc.send_signal(signal.SIGINT)
    output = "".join(seen) + proc.communicate()[0]
    assert proc.returncode == 130, output
    assert "run again with --resume" in output
    assert not out.exists()
    kept = 0
    for part in parts.glob("part-*.h5"):
        with open_dataset(part) as ds:
            kept += len(ds)
    assert 1 <= kept < n_profiles, "Ctrl-C waited for the queued profiles"
    resumed = _cli("generate", config_path, "--out", out, "--resume", "--workers", 2, "--no-progress")
    assert resumed.wait() == 0, resumed.stdout.read()
    with open_dataset(out) as ds:
        assert ds.profiles["profile_id"].tolist() == list(range(n_profiles))


def test_a_pybamm_worker_keeps_jax_on_the_cpu_whatever_platform_its_parent_was_given(tmp_path):
    """On a GPU machine the parent holds the device; a worker that initialised it too (``import pybamm`` does)
    would take another context and most of the memory. Here the platform asked for is one this machine lacks, so a
    worker that followed its parent's setting could not simulate at all."""
    config_json = validate_config(DataConfig, {**SMALL, "backend": "pybamm",
                                               "profiles": {"duration_s": 120}}).model_dump_json()
    script = ("import sys, jax; from cellax.data.generate import _init_worker, _worker_simulate; "
              "_init_worker(sys.argv[1]); print(_worker_simulate(sys.argv[1], 0).meta['status'], "
              "jax.default_backend())")
    env = {**os.environ, "JAX_PLATFORMS": "cuda", "PYBAMM_DISABLE_TELEMETRY": "true"}
    done = subprocess.run([sys.executable, "-c", script, config_json], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["ok", "cpu"]
