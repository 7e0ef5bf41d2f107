"""The HDF5 store: round trip, crash safety, refusal of bad files, merging."""

import h5py
import numpy as np
import pytest

from cellax.data.store import SIGNALS, StoreError, merge_datasets, open_dataset, subset_dataset, write_dataset
from tests.conftest import synthetic_records


def test_round_trip_keeps_every_profile_and_signal(tmp_path):
    records = synthetic_records(6)
    path = write_dataset(tmp_path / "a.h5", records, {"config": {"name": "x", "n": 6}})
    with open_dataset(path) as ds:
        assert len(ds) == 6
        assert ds.config == {"name": "x", "n": 6}
        assert ds.attrs["schema_version"] == 1 and ds.attrs["complete"]
        table = ds.profiles
        assert table["status"].tolist() == [r.meta["status"] for r in records]
        for row, record in enumerate(records):
            signals = ds.profile(row)
            assert table["length"][row] == record.length
            for name in SIGNALS:
                np.testing.assert_array_equal(signals[name], record.signals.get(name, np.zeros(0)))
            assert ds.record(row).meta == record.meta


def test_signals_carry_units_and_are_chunked_and_compressed(tmp_path):
    path = write_dataset(tmp_path / "a.h5", synthetic_records(3), {"config": {}})
    with h5py.File(path) as f:
        for name, (units, _) in SIGNALS.items():
            ds = f["signals"][name]
            assert ds.attrs["units"] == units
            assert ds.chunks is not None and ds.compression == "gzip"


def test_truncated_file_is_refused(tmp_path):
    path = write_dataset(tmp_path / "a.h5", synthetic_records(4), {"config": {}})
    data = path.read_bytes()
    bad = tmp_path / "bad.h5"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="truncated or foreign"):
        open_dataset(bad)


def test_foreign_hdf5_and_other_files_are_refused(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(StoreError, match="not a cellax dataset"):
        open_dataset(foreign)
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(StoreError, match="not a readable HDF5"):
        open_dataset(text)
    with pytest.raises(StoreError, match="no such file"):
        open_dataset(tmp_path / "missing.h5")


def test_incomplete_or_inconsistent_files_are_refused(tmp_path):
    path = write_dataset(tmp_path / "a.h5", synthetic_records(4), {"config": {}})
    with h5py.File(path, "r+") as f:
        f.attrs["complete"] = False
    with pytest.raises(StoreError, match="incomplete"):
        open_dataset(path)
    path = write_dataset(tmp_path / "b.h5", synthetic_records(4), {"config": {}})
    with h5py.File(path, "r+") as f:
        f["signals/voltage_v"].resize((5,))
    with pytest.raises(StoreError, match="voltage_v"):
        open_dataset(path)


def test_a_failed_write_leaves_no_file_behind(tmp_path):
    records = synthetic_records(3)
    del records[1].signals["voltage_v"]
    with pytest.raises(StoreError, match="lacks signals"):
        write_dataset(tmp_path / "a.h5", records, {"config": {}})
    assert list(tmp_path.iterdir()) == []


def test_merge_sorts_by_profile_id_and_refuses_duplicates_and_foreign_jobs(tmp_path):
    records = synthetic_records(6)
    a = write_dataset(tmp_path / "a.h5", records[1::2], {"config": {"name": "job", "shard": "1/2"}, "shard": "1/2"})
    b = write_dataset(tmp_path / "b.h5", records[0::2], {"config": {"name": "job", "shard": "0/2"}, "shard": "0/2"})
    merged = merge_datasets([a, b], tmp_path / "m.h5")
    with open_dataset(merged) as ds:
        assert ds.profiles["profile_id"].tolist() == list(range(6))
        assert "shard" not in ds.attrs
        np.testing.assert_array_equal(ds.profile(3)["voltage_v"], records[3].signals["voltage_v"])
    with pytest.raises(StoreError, match="exists"):
        merge_datasets([a, b], merged)
    with pytest.raises(StoreError, match="profile_id 1 is in both"):
        merge_datasets([a, a], tmp_path / "dup.h5")
    other = write_dataset(tmp_path / "o.h5", records[:1], {"config": {"name": "other"}})
    with pytest.raises(StoreError, match="config differs"):
        merge_datasets([a, other], tmp_path / "x.h5")


def test_subset_copies_chosen_rows_in_order_and_never_replaces_its_source(tmp_path):
    records = synthetic_records(5)
    source = write_dataset(tmp_path / "a.h5", records, {"config": {"name": "job"}, "backend_version": 2})
    part = subset_dataset(source, [3, 0], tmp_path / "part.h5")
    with open_dataset(part) as ds, open_dataset(source) as src:
        assert ds.profiles["profile_id"].tolist() == [3, 0]
        assert ds.config == {"name": "job"} and ds.attrs["backend_version"] == 2
        assert ds.attrs["subset_of"] == {"path": str(source), "fingerprint": src.fingerprint}
        np.testing.assert_array_equal(ds.profile(0)["voltage_v"], records[3].signals["voltage_v"])
        assert ds.record(1).meta == records[0].meta
    with pytest.raises(StoreError, match="exists"):
        subset_dataset(source, [1], part)
    with pytest.raises(StoreError, match="own source"):
        subset_dataset(source, [1], source, overwrite=True)
    with pytest.raises(StoreError, match=r"rows \[7\] are outside"):
        subset_dataset(source, [1, 7], tmp_path / "b.h5")
    assert not (tmp_path / "b.h5").exists()
    with open_dataset(source) as ds:
        assert len(ds) == 5
