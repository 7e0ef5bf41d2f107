"""The README is true: its test command is what CI runs, and its Python example runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    assert commands[0].endswith("cellax quickstart")
    pytest = re.search(r"\.venv/bin/python -m pytest .*$", commands[1]).group(0)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert pytest in ci and '.venv/bin/pip install --quiet -e ".[test]"' in ci


def test_the_python_example_runs_on_a_generated_dataset(generated_dataset):
    block = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    block = block.replace('"runs/quickstart/data.h5"', repr(str(generated_dataset)))
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["batch"]["current_a"].shape == (32, 512)


def test_the_batched_simulation_example_runs():
    block = re.findall(r"```python\n(.*?)```", README, re.S)[1]
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    voltage = namespace["signals"]["voltage_v"]
    assert voltage.shape == (8, 600)
    assert bool((voltage > 2.5).all() & (voltage < 4.2).all())
