"""cellax.data.plots: PNGs from real HDF5 files written by the store."""

import pytest

from cellax.data.plots import choose_examples, plot_coverage, plot_dataset, plot_examples
from cellax.data.store import SIGNALS, open_dataset, write_dataset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_bytes=5000):
    assert path.exists(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > min_bytes, (path, len(data))


def _copy(src, dst, rows=None, signal_names=tuple(SIGNALS), status=None):
    with open_dataset(src) as ds:
        records = [ds.record(row) for row in (range(len(ds)) if rows is None else rows)]
    for record in records:
        record.signals = {k: v for k, v in record.signals.items() if k in signal_names}
        if status is not None:
            record.meta["status"], record.signals = status, {}
    return write_dataset(dst, records, {"config": {"name": "copy"}}, signal_names)


@pytest.fixture(scope="module")
def rendered(synthetic_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("plots") / "nested" / "out"
    return out, plot_dataset(synthetic_dataset, out, n_profiles=4)


def test_plot_dataset_writes_valid_pngs(rendered):
    out, paths = rendered
    assert out.is_dir()
    assert len(paths) == 5 and paths[-1].name == "coverage.png"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)
    for path in paths:
        assert_png(path)


def test_examples_are_ok_profiles_only(synthetic_dataset, rendered):
    _, paths = rendered
    with open_dataset(synthetic_dataset) as ds:
        table = ds.profiles
        failed_ids = {int(i) for i, s in zip(table["profile_id"], table["status"]) if s != "ok"}
        assert failed_ids == {4, 9}
        names = [p.name for p in paths[:-1]]
        assert all(n.startswith("example_") for n in names)
        assert not any(f"_profile{i}_" in n for n in names for i in failed_ids)
        for seed in range(20):
            rows = choose_examples(ds, n_profiles=12, seed=seed)
            assert len(rows) == 10 == len(set(rows))  # every ok profile, never a failed one
            assert all(table["status"][r] == "ok" for r in rows)
            three = choose_examples(ds, n_profiles=3, seed=seed)
            assert len({table["profile_kind"][r] for r in three}) == 3  # spread over kinds
            assert three == choose_examples(ds, n_profiles=3, seed=seed)  # reproducible
        assert choose_examples(ds, 0) == []


def test_number_of_example_files(synthetic_dataset, tmp_path):
    paths = plot_examples(synthetic_dataset, tmp_path, n_profiles=1, seed=3)
    assert len(paths) == 1 and list(tmp_path.glob("example_*.png")) == paths
    for path in paths:
        assert_png(path)


def test_without_anode_potential(synthetic_dataset, tmp_path):
    names = [n for n in SIGNALS if n != "anode_potential_v"]
    path = _copy(synthetic_dataset, tmp_path / "no_anode.h5", rows=range(5), signal_names=names)
    with open_dataset(path) as ds:
        assert "anode_potential_v" not in ds.signal_names
    paths = plot_examples(path, tmp_path / "out", n_profiles=1)
    assert len(paths) == 1
    assert_png(paths[0])


def test_coverage_strided_and_surface_fallback(synthetic_dataset, tmp_path):
    names = [n for n in SIGNALS if n not in ("core_temp_degc", "anode_potential_v")]
    path = _copy(synthetic_dataset, tmp_path / "no_core.h5", signal_names=names)
    png = plot_coverage(path, tmp_path / "cov", max_points=500, block_rows=1000)
    assert png == tmp_path / "cov" / "coverage.png"
    assert_png(png)


def test_no_ok_profiles(synthetic_dataset, tmp_path):
    path = _copy(synthetic_dataset, tmp_path / "failed.h5", rows=range(3), status="solver_failed: all")
    assert plot_examples(path, tmp_path / "out") == []
    assert_png(plot_coverage(path, tmp_path / "out"), min_bytes=1000)
