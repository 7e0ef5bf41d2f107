"""docs/data_format.md is true: its plain-h5py example runs on a real generated file."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "data_format.md"


def test_the_documented_h5py_example_runs(generated_dataset, capsys):
    block = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    exec(compile(block, str(DOC), "exec"), {"PATH": str(generated_dataset)})
    assert re.match(r"profile \d+: 600 samples, \d\.\d{3}\.\.\d\.\d{3} V, config 'tiny'", capsys.readouterr().out)


def test_the_documented_fields_are_the_stored_ones(generated_dataset):
    import h5py

    text = DOC.read_text()
    with h5py.File(generated_dataset) as f:
        for name in list(f["signals"]) + list(f["profiles"]):
            assert f"`{name}`" in text, name
