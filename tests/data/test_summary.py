"""cellax.data.summary on real HDF5 files written by the store."""

import json

import h5py
import numpy as np
import pytest

from cellax.data.store import SIGNALS, open_dataset, write_dataset
from cellax.data.summary import format_summary, iter_ok_blocks, summarize
from cellax.status import status_group


def _reference(path):
    """Counts and signal statistics computed directly with h5py and numpy."""
    with h5py.File(path, "r") as f:
        starts, lengths = f["profiles/start"][:], f["profiles/length"][:]
        status = f["profiles/status"].asstr()[:]
        ok = status == "ok"
        rows = np.concatenate([np.arange(s, s + n) for s, n in zip(starts[ok], lengths[ok])])
        signals = {name: ds[:][rows] for name, ds in f["signals"].items()}
        t = f["signals/time_s"][:]
        seconds = sum(t[s + n - 1] - t[s] for s, n in zip(starts[ok], lengths[ok]) if n)
    return ok, lengths, signals, seconds / 3600.0


def _copy(src, dst, edit=None, signal_names=tuple(SIGNALS)):
    """Copy a dataset profile by profile, letting ``edit(row, record)`` change each record."""
    with open_dataset(src) as ds:
        records = [ds.record(row) for row in range(len(ds))]
    for row, record in enumerate(records):
        if edit is not None:
            edit(row, record)
        record.signals = {k: v for k, v in record.signals.items() if k in signal_names}
    return write_dataset(dst, records, {"config": {"name": "copy"}, "pybamm_version": "25.1.1"}, signal_names)


def test_counts_status_and_kinds(synthetic_dataset):
    s = summarize(synthetic_dataset)
    assert (s["n_profiles"], s["n_ok"], s["n_failed"]) == (12, 10, 2)
    assert s["status_counts"] == {"ok": 10, "solver_failed": 2}
    with open_dataset(synthetic_dataset) as ds:
        table = ds.profiles
    for kind in set(table["profile_kind"]):
        sel = table["profile_kind"] == kind
        assert s["profile_kinds"][kind]["profiles"] == int(sel.sum())
        assert s["profile_kinds"][kind]["ok"] == int((sel & (table["status"] == "ok")).sum())
    assert s["parameter_sets"] == {"Chen2020": {"profiles": 12, "ok": 10, "hours_ok": pytest.approx(s["hours_ok"])}}
    assert s["models"]["SPMe"]["profiles"] == 12
    assert s["n_rows"] == s["n_rows_ok"] == int(table["length"].sum())
    assert s["config_name"] == "synthetic"
    assert s["cellax_version"] and s["created_utc"] and s["schema_version"] == 1
    assert s["pybamm_version"] is None and s["backend_version"] is None
    assert s["file_size_bytes"] == synthetic_dataset.stat().st_size
    assert s["absent_signals"] == []
    json.dumps(s, allow_nan=False)  # plain JSON, no NaN


def test_hours_and_ranges_equal_numpy(synthetic_dataset):
    ok, lengths, signals, hours = _reference(synthetic_dataset)
    for block_rows in (1 << 19, 333):  # one block, then blocks that split profiles
        s = summarize(synthetic_dataset, block_rows=block_rows)
        assert s["hours_ok"] == pytest.approx(hours, rel=1e-12)
        assert sum(v["hours_ok"] for v in s["profile_kinds"].values()) == pytest.approx(hours, rel=1e-12)
        assert list(s["signals"]) == list(SIGNALS)  # canonical order
        for name, values in signals.items():
            stats = s["signals"][name]
            assert stats["units"] == SIGNALS[name][0]
            assert stats["min"] == values.min() and stats["max"] == values.max()
            assert stats["mean"] == pytest.approx(values.mean(), rel=1e-12)
            assert stats["n_nonfinite"] == 0
    assert s["profile_hours"]["max"] == pytest.approx((lengths[ok].max() - 1) / 3600)


def test_failed_samples_nan_and_grouping(synthetic_dataset, tmp_path):
    """Samples kept by a failed profile are skipped; NaNs are counted, not averaged."""
    reasons = {4: "solver_failed: step size", 9: "voltage_limit: 2.5 V", 1: "solver_failed: other"}

    def edit(row, record):
        if row in reasons:
            record.meta["status"] = reasons[row]
            n = 50
            record.signals = {k: np.full(n, 1e6) for k in SIGNALS}
            record.signals["time_s"] = np.arange(n, dtype=float)
        if row == 2:
            record.signals["voltage_v"] = record.signals["voltage_v"].copy()
            record.signals["voltage_v"][[3, 10]] = np.nan

    path = _copy(synthetic_dataset, tmp_path / "edited.h5", edit)
    ok, lengths, signals, hours = _reference(path)
    s = summarize(path, block_rows=64)
    assert s["status_counts"] == {"ok": 9, "solver_failed": 2, "voltage_limit": 1}
    assert s["n_rows"] == int(lengths.sum()) and s["n_rows_ok"] == int(lengths[ok].sum()) < s["n_rows"]
    assert s["hours_ok"] == pytest.approx(hours)
    assert s["pybamm_version"] == "25.1.1"
    for name, values in signals.items():
        finite = values[np.isfinite(values)]
        assert s["signals"][name]["max"] == finite.max() < 1e6
        assert s["signals"][name]["mean"] == pytest.approx(finite.mean(), rel=1e-12)
    assert s["signals"]["voltage_v"]["n_nonfinite"] == 2
    text = format_summary(s)
    assert "voltage_limit" in text and "non-finite" in text


def test_absent_signal_and_no_ok_profiles(synthetic_dataset, tmp_path):
    names = [n for n in SIGNALS if n != "anode_potential_v"]
    s = summarize(_copy(synthetic_dataset, tmp_path / "no_anode.h5", signal_names=names))
    assert s["absent_signals"] == ["anode_potential_v"] and "anode_potential_v" not in s["signals"]
    assert "absent signals: anode_potential_v" in format_summary(s)

    def fail(row, record):
        record.meta["status"] = "solver_failed: everything"
        record.signals = {}

    s = summarize(_copy(synthetic_dataset, tmp_path / "all_failed.h5", fail))
    assert s["n_ok"] == 0 and s["hours_ok"] == 0.0 and s["profile_hours"] is None
    assert all(v["min"] is None and v["mean"] is None for v in s["signals"].values())
    json.dumps(s, allow_nan=False)
    assert "0 ok" in format_summary(s)


def test_iter_ok_blocks_stride(synthetic_dataset):
    with open_dataset(synthetic_dataset) as ds:
        full = np.concatenate([v["soc"] for _, v in iter_ok_blocks(ds, ["soc"], block_rows=1000)])
        rows = np.concatenate([r for r, _ in iter_ok_blocks(ds, ["soc"], block_rows=1000, stride=3)])
        strided = np.concatenate([v["soc"] for _, v in iter_ok_blocks(ds, ["soc"], block_rows=1000, stride=3)])
        assert np.all(rows % 3 == 0)
        np.testing.assert_array_equal(strided, ds.file["signals/soc"][::3])
        np.testing.assert_array_equal(full, ds.file["signals/soc"][:])


def test_status_group():
    assert status_group("ok") == "ok"
    assert status_group("solver_failed: planted: twice") == "solver_failed"
    assert status_group("timeout") == "timeout"


def test_format_summary_has_key_numbers(synthetic_dataset):
    s = summarize(synthetic_dataset)
    text = format_summary(s)
    assert "12  (10 ok, 2 failed)" in text
    assert f"{s['hours_ok']:,.2f} h" in text
    assert "solver_failed" in text and "Chen2020" in text and "cc_rest" in text
    for name in SIGNALS:
        assert name in text
    line = next(l for l in text.splitlines() if l.strip().startswith("current_a"))
    assert line.split()[1] == "A"
    assert f"{s['signals']['current_a']['max']:.5g}" in line
    assert "degC" in text
    # aligned: every row of the signal table has the same width as its header
    block = text.split("signals (ok profiles)\n")[1].split("\n\n")[0].splitlines()
    assert len({len(l) for l in block}) == 1
