"""Damaged and foreign files: checksums catch flipped bytes; every data command names the file and dataset
in one line, exits 2 and creates nothing."""

import h5py
import numpy as np
import pytest

from cellax.cli import main
from cellax.data.store import StoreError, merge_datasets, open_dataset, write_dataset
from tests.conftest import synthetic_records


def flip(path, offset: int, count: int = 8) -> None:
    """Invert ``count`` bytes of ``path`` at ``offset``, as bit rot would."""
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(count)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


def write(path, n=5):
    return write_dataset(path, synthetic_records(n), {"config": {"name": "s", "n_profiles": n}})


def rot_signal(path):
    with h5py.File(path, "r") as f:
        info = f["signals/voltage_v"].id.get_chunk_info(0)
    flip(path, info.byte_offset + info.size // 2)


def rot_index(path):
    with h5py.File(path, "r") as f:
        offset = f["profiles/profile_id"].id.get_offset()
    flip(path, offset, 4)


def foreign(change):
    def apply(path):
        with h5py.File(path, "r+") as f:
            del f["profiles"].attrs["index_sha256"]  # written by another tool: no checksum
            change(f)
    return apply


def _with(path, change):
    with h5py.File(path, "r+") as f:
        change(f)


def _replace(f, name, values):
    del f[name]
    f[name] = values


CASES = {
    "flipped signal bytes": (rot_signal, "/signals/voltage_v"),
    "flipped index bytes": (rot_index, "/profiles"),
    "malformed JSON attribute": (lambda p: _with(p, lambda f: f.attrs.__setitem__("config", "{not json")), "'config'"),
    "schema_version as a string": (lambda p: _with(p, lambda f: f.attrs.__setitem__("schema_version", "1")),
                                   "schema_version"),
    "a group where a signal belongs": (foreign(lambda f: (f.__delitem__("signals/soc"), f.create_group("signals/soc"))),
                                       "/signals/soc"),
    "a string-typed signal": (foreign(lambda f: _replace(f, "signals/soc", np.array(["x"] * f["signals/soc"].shape[0],
                                                                                   dtype=h5py.string_dtype()))),
                              "/signals/soc"),
    "negative profile_id": (foreign(lambda f: _replace(f, "profiles/profile_id", -np.arange(5) - 1)), "profile_id"),
    "float profile_id": (foreign(lambda f: _replace(f, "profiles/profile_id", np.arange(5) + 0.5)), "profile_id"),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", ["info", "plot", "merge"])
def test_a_damaged_or_foreign_file_is_named_in_one_line_and_nothing_is_created(tmp_path, capsys, case, command):
    damage, named = CASES[case]
    path = write(tmp_path / "d.h5")
    damage(path)
    before = sorted(tmp_path.rglob("*"))
    argv = {"info": ["data", "info", path], "plot": ["data", "plot", path, "--out", tmp_path / "png"],
            "merge": ["data", "merge", tmp_path / "m.h5", path]}[command]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and named in err, err
    assert sorted(tmp_path.rglob("*")) == before


def test_an_empty_attribute_is_text_not_json(tmp_path):
    path = write(tmp_path / "d.h5")
    _with(path, lambda f: f.attrs.__setitem__("note", ""))
    with open_dataset(path) as ds:
        assert ds.attrs["note"] == ""


def test_signal_chunks_and_the_index_carry_checksums(tmp_path):
    path = write(tmp_path / "d.h5")
    with h5py.File(path) as f:
        assert all(f["signals"][name].fletcher32 for name in f["signals"])
        assert len(f["profiles"].attrs["index_sha256"]) == 64
    rot_signal(path)
    with open_dataset(path) as ds, pytest.raises(StoreError, match="voltage_v.*damaged"):
        ds.profile(0)


def test_merge_refuses_datasets_of_different_backend_versions(tmp_path):
    records = synthetic_records(4)
    config = {"name": "s", "n_profiles": 4}
    old = write_dataset(tmp_path / "old.h5", records[:2], {"config": config})
    new = write_dataset(tmp_path / "new.h5", records[2:], {"config": config, "backend_version": 2})
    with pytest.raises(StoreError, match="new.h5: backend_version 2 differs from 1 of .*old.h5; regenerate"):
        merge_datasets([old, new], tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()


def test_merge_records_the_missing_ids_and_info_shows_them(tmp_path, capsys):
    records = synthetic_records(4)
    config = {"name": "s", "n_profiles": 6}
    a = write_dataset(tmp_path / "a.h5", records[:2], {"config": config})
    b = write_dataset(tmp_path / "b.h5", records[2:], {"config": config})
    merged = merge_datasets([a, b], tmp_path / "m.h5")
    with open_dataset(merged) as ds:
        assert ds.missing_profile_ids == [4, 5]
    assert main(["data", "info", str(merged)]) == 0
    assert "missing from the job" in capsys.readouterr().out
    with open_dataset(merge_datasets([a], tmp_path / "w.h5")) as ds:
        assert ds.missing_profile_ids == [2, 3, 4, 5]


def test_resume_names_a_damaged_part_file_before_simulating(tmp_path, capsys):
    import json

    import yaml

    from cellax.config import validate_config
    from cellax.data.config import DataConfig
    from cellax.data.generate import Shard, _job_manifest, parts_dir

    job = {"name": "p", "seed": 1, "n_profiles": 8, "profiles": {"duration_s": 600}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    out = tmp_path / "d.h5"
    parts = parts_dir(out)
    parts.mkdir()
    (parts / "job.json").write_text(json.dumps(_job_manifest(validate_config(DataConfig, job), Shard())))
    part = write(parts / "part-00000.h5", 3)
    rot_signal(part)
    assert main(["generate", str(tmp_path / "job.yaml"), "--out", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(part) in err and "/signals/voltage_v" in err
    assert sorted(parts.iterdir()) == [parts / "job.json", part] and not out.exists()
