"""Default configs shipped inside the package, so ``cellax quickstart`` runs from any folder after ``pip install``.

The files here are links to the repository's ``configs/`` (one copy in the source tree); a wheel
carries their contents as package data, read with :mod:`importlib.resources`.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

QUICKSTART_DATA = "quickstart_data.yaml"
QUICKSTART_TRAIN = "quickstart_train.yaml"


def default_config(name: str) -> Path:
    """Path of the shipped config ``name`` (a plain file of an installed or source package)."""
    with as_file(files(__package__) / name) as path:
        return Path(path)
