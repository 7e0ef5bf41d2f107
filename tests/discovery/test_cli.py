"""``cellax discover``: bad configs are one line and exit 2; nothing is written."""

from cellax.cli import main


def test_bad_configs_exit_2_naming_the_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: {case: thermal}\nnoise: 2.0\n")
    assert main(["discover", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "noise" in capsys.readouterr().err
    bad.write_text("source: {kind: dataset, case: thermal}\n")
    assert main(["discover", str(bad)]) == 2
    assert "a dataset source needs path" in capsys.readouterr().err
    bad.write_text("source: {case: circuit}\nsignals: [T]\n")
    assert main(["discover", str(bad)]) == 2
    assert "signals ['T'] are not signals of the circuit case" in capsys.readouterr().err
    assert main(["discover", str(tmp_path / "missing.yaml")]) == 2
    assert not (tmp_path / "out").exists()


def test_a_dataset_with_nan_is_refused(tmp_path, capsys):
    from tests.conftest import synthetic_records
    from cellax.data.store import write_dataset

    records = synthetic_records(2)
    records[0].signals["core_temp_degc"][5] = float("nan")
    path = tmp_path / "data.h5"
    write_dataset(path, records, {"config": "{}"})
    config = tmp_path / "c.yaml"
    config.write_text(f"source: {{kind: dataset, case: thermal, path: {path}, profile: 0}}\nout: {tmp_path / 'out'}\n")
    assert main(["discover", str(config)]) == 2
    err = capsys.readouterr().err
    assert "signal 'T' has 1 NaN/inf samples (first at index 5)" in err, err
    assert not (tmp_path / "out").exists()
