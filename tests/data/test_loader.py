"""cellax.data.loader: splits by profile, train-only stats, window batches, whole profiles."""

import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cellax.data.loader as loader_module
from cellax.data.loader import NormStats, WindowLoader, compute_stats, iterate_profiles, split_profiles
from cellax.data.store import SIGNALS, ProfileRecord, StoreError, open_dataset, write_dataset

try:  # pytest puts tests/ on sys.path (no __init__.py); running from the root also works
    from conftest import synthetic_records
except ImportError:  # pragma: no cover
    from tests.conftest import synthetic_records

NAMES = ["time_s", "current_a", "voltage_v", "ambient_temp_degc"]


def _write(path, records, names=tuple(SIGNALS)):
    return write_dataset(path, records, {"config": {"name": "test"}}, names)


def _all_profiles(path, names):
    with open_dataset(path) as ds:
        return [ds.profile(row, names) for row in range(len(ds))]


def _ids(path, rows):
    with open_dataset(path) as ds:
        return set(ds.profiles["profile_id"][rows].tolist())


def _locate(window, profiles, rows):
    """Rows and offsets whose slice equals ``window`` (a dict of 1-D float32 arrays)."""
    length = len(window["time_s"])
    found = []
    for row in rows:
        p = profiles[row]
        for offset in range(len(p["time_s"]) - length + 1):
            if all(np.array_equal(p[n][offset : offset + length].astype(np.float32), window[n]) for n in window):
                found.append((int(row), offset))
    return found


# --------------------------------------------------------------------------- splits


def test_splits_are_disjoint_cover_every_ok_profile_and_exclude_failed(synthetic_dataset):
    splits = split_profiles(synthetic_dataset, (0.6, 0.2, 0.2), seed=0)
    assert set(splits) == {"train", "val", "test"}
    with open_dataset(synthetic_dataset) as ds:
        status = ds.profiles["status"]
    ok = set(np.flatnonzero(status == "ok").tolist())
    rows = [set(r.tolist()) for r in splits.values()]
    assert sum(len(r) for r in rows) == len(ok)
    assert set().union(*rows) == ok
    assert all(not (a & b) for i, a in enumerate(rows) for b in rows[i + 1 :])
    assert all(r.dtype == np.int64 for r in splits.values())


def test_splits_reproducible_and_independent_of_file_order(synthetic_dataset, tmp_path):
    first = split_profiles(synthetic_dataset, seed=3)
    again = split_profiles(synthetic_dataset, seed=3)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    reversed_path = _write(tmp_path / "reversed.h5", synthetic_records()[::-1])
    flipped = split_profiles(reversed_path, seed=3)
    for name in first:
        assert _ids(synthetic_dataset, first[name]) == _ids(reversed_path, flipped[name])


def test_a_profile_keeps_its_split_when_the_dataset_grows(synthetic_dataset, tmp_path):
    small = _write(tmp_path / "small.h5", synthetic_records()[:7])
    before, after = split_profiles(small, seed=1), split_profiles(synthetic_dataset, seed=1)
    for name in before:
        assert _ids(small, before[name]) <= _ids(synthetic_dataset, after[name])


def test_different_seed_gives_a_different_split(synthetic_dataset):
    a, b = split_profiles(synthetic_dataset, seed=0), split_profiles(synthetic_dataset, seed=1)
    assert any(not np.array_equal(a[k], b[k]) for k in a)


def test_degenerate_fractions_put_everything_in_one_split(synthetic_dataset):
    splits = split_profiles(synthetic_dataset, (0.0, 0.0, 1.0))
    assert len(splits["train"]) == len(splits["val"]) == 0 and len(splits["test"]) == 10


@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.2), (1.1, -0.05, -0.05), (0.5, 0.5), (np.nan, 0.5, 0.5)])
def test_bad_fractions_raise(synthetic_dataset, fractions):
    with pytest.raises(ValueError, match="fractions"):
        split_profiles(synthetic_dataset, fractions)


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("block", [2**20, 97])  # 97: many blocks per profile, merged moments
def test_stats_from_train_rows_equal_numpy_over_the_concatenated_train_profiles(synthetic_dataset, monkeypatch, block):
    monkeypatch.setattr(loader_module, "_STATS_BLOCK", block)
    train = split_profiles(synthetic_dataset, seed=0)["train"]
    stats = compute_stats(synthetic_dataset, train[::-1], NAMES)  # row order is irrelevant
    profiles = _all_profiles(synthetic_dataset, NAMES)
    for name in NAMES:
        values = np.concatenate([profiles[row][name] for row in train])
        assert stats.mean[name] == pytest.approx(values.mean(), rel=1e-12)
        assert stats.std[name] == pytest.approx(values.std(), rel=1e-12)
    assert stats.count == sum(len(profiles[row]["time_s"]) for row in train)
    with open_dataset(synthetic_dataset) as ds:
        ok = np.flatnonzero(ds.profiles["status"] == "ok")
        everything = compute_stats(ds, ok, NAMES)  # an open Dataset works too
    assert everything.mean["voltage_v"] != pytest.approx(stats.mean["voltage_v"], rel=1e-9)


def test_stats_round_trip_json_and_normalise_inverts(synthetic_dataset):
    stats = compute_stats(synthetic_dataset, [0, 1, 2], ["current_a", "voltage_v"])
    text = stats.to_json()
    assert json.loads(text)["mean"]["current_a"] == stats.mean["current_a"]
    assert NormStats.from_json(text) == stats
    x = {"current_a": np.linspace(-3, 5, 7), "voltage_v": np.full(7, 3.7), "time_s": np.arange(7.0)}
    z = stats.normalise(x)
    np.testing.assert_allclose(z["current_a"], (x["current_a"] - stats.mean["current_a"]) / stats.std["current_a"])
    assert z["time_s"] is x["time_s"]  # signals without stats pass through
    back = stats.denormalise(z)
    for name in x:
        np.testing.assert_allclose(back[name], x[name], rtol=1e-12)
    jitted = jax.jit(lambda s, b: s.normalise(b))(stats, {"current_a": jnp.ones(3, jnp.float32)})
    assert jitted["current_a"].dtype == jnp.float32  # also when PyBaMM has switched on x64
    with pytest.raises(ValueError):
        NormStats.from_json(json.dumps({"mean": {}, "std": {}}))


def test_constant_signal_std_is_floored(synthetic_dataset):
    stats = compute_stats(synthetic_dataset, [0], ["ambient_temp_degc"], min_std=1e-6)
    assert stats.std["ambient_temp_degc"] == 1e-6
    z = stats.normalise({"ambient_temp_degc": _all_profiles(synthetic_dataset, ["ambient_temp_degc"])[0]["ambient_temp_degc"]})
    assert np.all(np.isfinite(z["ambient_temp_degc"])) and np.allclose(z["ambient_temp_degc"], 0.0)


def test_stats_errors_name_the_problem(synthetic_dataset):
    with pytest.raises(KeyError, match="no_such_signal"):
        compute_stats(synthetic_dataset, [0], ["no_such_signal"])
    with pytest.raises(ValueError, match="no samples"):
        compute_stats(synthetic_dataset, [4, 9], ["current_a"])  # failed profiles only


# --------------------------------------------------------------------------- windows


def _batches(path, rows, n=3, **kwargs):
    kwargs = {"names": NAMES, "window_len": 128, "batch_size": 16, "seed": 0, **kwargs}
    with WindowLoader(path, rows, **kwargs) as loader:
        return [{k: np.asarray(v) for k, v in next(loader).items()} for _ in range(n)]


def test_window_batches_have_the_right_shape_dtype_and_type(synthetic_dataset):
    train = split_profiles(synthetic_dataset)["train"]
    with WindowLoader(synthetic_dataset, train, NAMES, window_len=100, batch_size=8, seed=0) as loader:
        batch = next(loader)
    assert set(batch) == set(NAMES)
    for value in batch.values():
        assert isinstance(value, jax.Array) and value.shape == (8, 100) and value.dtype == jnp.float32
    with WindowLoader(synthetic_dataset, train, NAMES, 100, 8, 0, dtype=jnp.bfloat16) as loader:
        assert next(loader)["current_a"].dtype == jnp.bfloat16


@pytest.mark.parametrize("cache", [True, False])
def test_every_window_is_a_slice_of_one_profile(synthetic_dataset, cache):
    train = split_profiles(synthetic_dataset)["train"]
    profiles = _all_profiles(synthetic_dataset, NAMES)
    for batch in _batches(synthetic_dataset, train, n=2, cache_in_memory=cache):
        assert np.all(np.diff(batch["time_s"], axis=1) == 1.0)  # never straddles two profiles
        for b in range(16):
            window = {name: batch[name][b] for name in NAMES}
            assert len(_locate(window, profiles, train)) == 1


def test_windows_are_deterministic_per_seed_and_independent_of_caching(synthetic_dataset):
    train = split_profiles(synthetic_dataset)["train"]
    a = _batches(synthetic_dataset, train, cache_in_memory=True)
    b = _batches(synthetic_dataset, train, cache_in_memory=False, prefetch=1)
    c = _batches(synthetic_dataset, train, seed=1)
    for x, y in zip(a, b):
        assert all(np.array_equal(x[k], y[k]) for k in NAMES)
    assert not np.array_equal(a[0]["time_s"], c[0]["time_s"])
    d = _batches(synthetic_dataset, train[::-1])  # the order rows are given in is irrelevant
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(a, d) for k in NAMES)


def test_every_valid_start_is_equally_likely(tmp_path):
    window = 50
    lengths = {0: window - 1, 1: window, 2: window + 2, 3: 0}  # 0, 1, 3 and 0 windows
    records = []
    for pid, length in lengths.items():
        signals = {"time_s": np.arange(length, dtype=float), "current_a": pid * 1000.0 + np.arange(length)}
        meta = dict(
            profile_id=pid, seed=0, parameter_set="Chen2020", model="SPMe", profile_kind="drive",
            ambient_temp_degc=25.0, heat_transfer_coeff=10.0, initial_soc=0.5, status="ok" if length else "failed",
        )
        records.append(ProfileRecord(meta, signals if length else {}))
    path = _write(tmp_path / "lengths.h5", records, ("time_s", "current_a"))
    loader = WindowLoader(path, [0, 1, 2, 3], ["time_s", "current_a"], window, batch_size=500, seed=7, num_batches=8)
    assert loader.num_windows == 4 and loader.skipped_rows.tolist() == [0, 3]
    with loader:
        first = np.concatenate([np.asarray(b["current_a"])[:, 0] for b in loader])
    counts = {int(v): int(n) for v, n in zip(*np.unique(first, return_counts=True))}
    assert set(counts) == {1000, 2000, 2001, 2002}  # (profile, offset) of every valid start
    assert all(abs(n / len(first) - 0.25) < 0.03 for n in counts.values())


def test_normalisation_is_applied(synthetic_dataset):
    train = split_profiles(synthetic_dataset)["train"]
    stats = compute_stats(synthetic_dataset, train, ["current_a", "voltage_v"])
    raw = _batches(synthetic_dataset, train, n=1)[0]
    normed = _batches(synthetic_dataset, train, n=1, stats=stats)[0]
    for name in ["current_a", "voltage_v"]:
        expected = (raw[name].astype(np.float64) - stats.mean[name]) / stats.std[name]
        np.testing.assert_allclose(normed[name], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(normed["time_s"], raw["time_s"])  # no stats: unchanged


def test_finite_loader_stops_after_num_batches(synthetic_dataset):
    with WindowLoader(synthetic_dataset, [0, 1], NAMES, 64, 4, seed=0, num_batches=3) as loader:
        assert len(list(loader)) == 3
        with pytest.raises(StopIteration):
            next(loader)


def test_window_longer_than_every_profile_is_an_error_naming_both(synthetic_dataset):
    longest = max(len(p["time_s"]) for p in _all_profiles(synthetic_dataset, ["time_s"]))
    with pytest.raises(ValueError, match=f"window_len=10000.*longest has {longest}"):
        WindowLoader(synthetic_dataset, range(12), NAMES, window_len=10000, batch_size=4, seed=0)


def test_bad_arguments_raise_promptly_and_name_the_problem(synthetic_dataset):
    with pytest.raises(KeyError, match="no_such_signal"):
        WindowLoader(synthetic_dataset, [0, 1], ["current_a", "no_such_signal"], 64, 4, seed=0)
    with pytest.raises(IndexError, match="99"):
        WindowLoader(synthetic_dataset, [0, 99], NAMES, 64, 4, seed=0)
    with pytest.raises(ValueError, match="duplicates"):
        WindowLoader(synthetic_dataset, [0, 0], NAMES, 64, 4, seed=0)


@pytest.mark.parametrize("cache", [True, False])
def test_an_error_in_the_reader_thread_surfaces_in_the_consumer(synthetic_dataset, tmp_path, cache):
    broken = tmp_path / "broken.h5"
    broken.write_bytes(synthetic_dataset.read_bytes())
    with h5py.File(broken, "r") as f:  # locate the stored (compressed) chunk of one signal
        info = f["signals/current_a"].id.get_chunk_info(0)
    with open(broken, "r+b") as f:
        f.seek(info.byte_offset)
        f.write(b"\xff" * info.size)
    loader = WindowLoader(broken, [0, 1, 2], NAMES, 64, 4, seed=0, cache_in_memory=cache)
    with pytest.raises(StoreError, match="current_a.*damaged"):
        next(loader)
    with pytest.raises(RuntimeError, match="failed earlier"):
        next(loader)
    loader._thread.join(2.0)
    assert not loader._thread.is_alive()


def test_close_stops_the_prefetch_thread_even_when_its_queue_is_full(synthetic_dataset):
    loader = WindowLoader(synthetic_dataset, [0, 1, 2], NAMES, 64, 4, seed=0, prefetch=1)
    next(loader)
    time.sleep(0.2)  # the reader is now blocked on the full queue
    thread = loader._thread
    loader.close()
    loader.close()  # idempotent
    assert loader.closed and not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        next(loader)
    with WindowLoader(synthetic_dataset, [0], NAMES, 64, 4, seed=0) as loader:
        thread = loader._thread
        assert thread.daemon
    assert not thread.is_alive()


def test_a_forgotten_loader_stops_its_thread_when_collected(synthetic_dataset):
    loader = WindowLoader(synthetic_dataset, [0, 1], NAMES, 64, 4, seed=0)
    next(loader)
    thread = loader._thread
    del loader
    gc.collect()
    thread.join(2.0)
    assert not thread.is_alive()


# --------------------------------------------------------------------------- whole profiles


def test_iterate_profiles_yields_exactly_the_requested_rows(synthetic_dataset):
    rows = [3, 0, 4, 3]  # 4 failed: zero length
    profiles = _all_profiles(synthetic_dataset, NAMES)
    with open_dataset(synthetic_dataset) as ds:
        ids = ds.profiles["profile_id"]
        items = list(iterate_profiles(ds, rows, NAMES))
        assert ds.file  # a Dataset passed in stays open
    assert [item["profile_id"] for item in items] == [int(ids[r]) for r in rows]
    for row, item in zip(rows, items):
        assert set(item) == {*NAMES, "profile_id"}
        for name in NAMES:
            assert len(item[name]) == len(profiles[row]["time_s"])
            np.testing.assert_array_equal(item[name], profiles[row][name])
    assert len(items[2]["current_a"]) == 0
    from_path = list(iterate_profiles(synthetic_dataset, [1], ["soc"]))
    assert len(from_path) == 1 and set(from_path[0]) == {"soc", "profile_id"}
    with pytest.raises(KeyError, match="no_such_signal"):
        next(iterate_profiles(synthetic_dataset, [1], ["no_such_signal"]))


def test_an_unclosed_loader_does_not_hang_interpreter_exit(synthetic_dataset):
    script = (
        "import sys\n"
        "from cellax.data.loader import WindowLoader\n"
        f"loader = WindowLoader({str(synthetic_dataset)!r}, [0, 1, 2], ['current_a'], 64, 4, seed=0, prefetch=1)\n"
        "next(loader)\n"
        "print('consumed', flush=True)\n"  # exits with the reader blocked on a full queue
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=root)
    assert done.returncode == 0, done.stderr
    assert "consumed" in done.stdout


# --------------------------------------------------------------------------- profile conditions


@pytest.mark.parametrize("cache", [True, False])
def test_profile_conditions_read_as_signals_constant_over_each_profile(synthetic_dataset, cache):
    train = split_profiles(synthetic_dataset)["train"]
    names = [*NAMES, "heat_transfer_coeff", "parameter_set=Chen2020", "profile_kind=drive"]
    profiles = _all_profiles(synthetic_dataset, NAMES)
    with open_dataset(synthetic_dataset) as ds:
        index = ds.profiles
    batch = _batches(synthetic_dataset, train, n=1, names=names, cache_in_memory=cache)[0]
    for b in range(16):
        [(row, _)] = _locate({name: batch[name][b] for name in NAMES}, profiles, train)
        np.testing.assert_array_equal(batch["heat_transfer_coeff"][b], np.float32(index["heat_transfer_coeff"][row]))
        np.testing.assert_array_equal(batch["parameter_set=Chen2020"][b], 1.0)
        np.testing.assert_array_equal(batch["profile_kind=drive"][b], float(index["profile_kind"][row] == "drive"))
    [item] = iterate_profiles(synthetic_dataset, [train[0]], ["current_a", "heat_transfer_coeff"])
    assert item["heat_transfer_coeff"].shape == item["current_a"].shape
    assert np.all(item["heat_transfer_coeff"] == index["heat_transfer_coeff"][train[0]])


def test_condition_statistics_weight_each_profile_by_its_length(synthetic_dataset):
    train = split_profiles(synthetic_dataset)["train"]
    with open_dataset(synthetic_dataset) as ds:
        values = np.repeat(ds.profiles["heat_transfer_coeff"][train], ds.profiles["length"][train])
    stats = compute_stats(synthetic_dataset, train, ["current_a", "heat_transfer_coeff"])
    assert stats.mean["heat_transfer_coeff"] == pytest.approx(values.mean(), rel=1e-12)
    assert stats.std["heat_transfer_coeff"] == pytest.approx(values.std(), rel=1e-10)


@pytest.mark.parametrize("name", ["status", "parameter_set", "heat_transfer_coeff=5", "nothing=1"])
def test_names_that_are_neither_signals_nor_conditions_are_refused(synthetic_dataset, name):
    with pytest.raises(KeyError, match="profile conditions"):
        compute_stats(synthetic_dataset, [0], [name])
