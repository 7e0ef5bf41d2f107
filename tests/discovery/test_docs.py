"""docs/discovery.md's worked example runs and prints what the page says."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "discovery.md"


def test_worked_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/discovery.md has no python example"
    exec(compile(blocks[0], str(DOC), "exec"), {})
