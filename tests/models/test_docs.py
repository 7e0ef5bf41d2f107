"""docs/models.md is true: its example runs and names only things the package exports."""

import re
from pathlib import Path

import cellax.models

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"


def test_the_documented_example_runs():
    block = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    namespace = {}
    exec(compile(block, str(DOC), "exec"), namespace)
    assert namespace["y"].shape == (64, 2) and namespace["y0"].shape == (2,)
    assert int(namespace["state"].pos) == 1


def test_the_documented_public_names_exist():
    table = DOC.read_text().split("## Configuration")[0]
    for name in re.findall(r"`([A-Z]\w+|[a-z_]+)`", table):
        if name[0].isupper() or name in ("make_model", "stream", "causal_stft", "stft_step"):
            assert hasattr(cellax.models, name), name
