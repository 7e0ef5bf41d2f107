"""The command line: lists its commands, and bad input exits non-zero with one clear message."""

import subprocess
import sys

import yaml

from cellax.cli import build_parser, main
from cellax.data.store import write_dataset
from tests.conftest import synthetic_records


def test_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "cellax.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("quickstart", "generate", "data"):
        assert command in result.stdout
    help_text = build_parser()._subparsers._group_actions[0].choices["data"].format_help()
    for sub in ("info", "plot", "merge"):
        assert sub in help_text


def test_invalid_config_exits_2_naming_the_field(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "seed": 1, "n_profiles": 2, "conditions": {"initial_soc": [0.9, 0.2]}}))
    assert main(["generate", str(path), "--out", str(tmp_path / "d.h5")]) == 2
    err = capsys.readouterr().err
    assert "conditions.initial_soc: range reversed" in err and "Traceback" not in err


def test_unwritable_output_exits_2(tmp_path, capsys):
    config = tmp_path / "ok.yaml"
    config.write_text(yaml.safe_dump({"name": "x", "seed": 1, "n_profiles": 2}))
    assert main(["generate", str(config), "--out", "/sys/d.h5"]) == 2  # not writable, even for root
    assert "not writable" in capsys.readouterr().err


def test_info_refuses_a_foreign_file_and_summarises_a_dataset(tmp_path, capsys):
    foreign = tmp_path / "x.h5"
    foreign.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    assert main(["data", "info", str(foreign)]) == 2
    assert "truncated or foreign" in capsys.readouterr().err
    path = write_dataset(tmp_path / "d.h5", synthetic_records(5), {"config": {"name": "s", "n_profiles": 5}})
    assert main(["data", "info", str(path)]) == 0
    assert "5" in capsys.readouterr().out


def test_merge_reports_profiles_missing_from_the_job(tmp_path, capsys):
    records = synthetic_records(4)
    config = {"name": "s", "n_profiles": 6}
    a = write_dataset(tmp_path / "a.h5", records[:2], {"config": config})
    b = write_dataset(tmp_path / "b.h5", records[2:], {"config": config})
    assert main(["data", "merge", str(tmp_path / "m.h5"), str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "4 profiles from 2 file(s)" in out and "2 profile(s) of the job are not in the inputs" in out
    assert main(["data", "merge", str(tmp_path / "m.h5"), str(a)]) == 2
    assert "exists" in capsys.readouterr().err
