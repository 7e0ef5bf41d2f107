"""Shared config machinery: the strict pydantic base, YAML loading and error messages that name the field.

Each config lives beside the package it configures (``cellax.data.config``,
``cellax.physics.config``, ``cellax.train.config``, ``cellax.rl.config``); every one
is a frozen :class:`Strict` model with ``extra="forbid"``: a misspelt key is an
error, not a silently ignored setting. :func:`load_config` turns validation
failures into a :class:`ConfigError` whose message names each bad field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator


class UserError(Exception):
    """A problem the user can fix (bad input, an existing output): the CLI prints its one line and exits 2."""


class ConfigError(ValueError, UserError):
    """A config file that cannot be used; the message names the field."""


class Strict(BaseModel):
    """The base of every cellax config: frozen, unknown fields refused, NaN and infinities refused, and
    ``true``/``false`` refused where a number belongs (pydantic would read them as 1 and 0)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, data):
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                if isinstance(value, bool) and field is not None and _numeric_not_bool(field.annotation):
                    raise ValueError(f"{name}: a number is needed, got {str(value).lower()}")
        return data


def _numeric_not_bool(annotation) -> bool:
    """Whether a field of this type takes a number but not a boolean."""
    types, stack = set(), [annotation]
    while stack:
        item = stack.pop()
        args = get_args(item)
        stack.extend(args) if args else types.add(item)
    return bool(types & {int, float}) and bool not in types


Seed = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
"""A random seed: what every RNG (numpy, JAX, Optuna) takes on every platform."""

MAX_CONFIG_VALUES = 100_000
"""A config with more values than this (after expanding YAML aliases) is refused: an alias bomb, not a config."""


def _too_many_values(data, limit: int = MAX_CONFIG_VALUES) -> bool:
    """Whether ``data`` holds more than ``limit`` values, counting shared (aliased) parts at every use."""
    stack, count = [data], 0
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


Config = TypeVar("Config", bound=BaseModel)


def _describe(err: ValidationError, source: str) -> str:
    """One line: ``invalid config SOURCE: field.path: message; other.field: message``."""
    problems = []
    for item in err.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = " ".join(item["msg"].removeprefix("Value error, ").split())
        problems.append(f"{where}: {message}")
    return f"invalid config {source}: " + "; ".join(problems)


def validate_config(cls: type[Config], data: dict, source: str = "") -> Config:
    """``cls.model_validate(data)`` with a :class:`ConfigError` naming each bad field."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


def load_config(path: str | Path, cls: type[Config]) -> Config:
    """Read YAML at ``path`` into ``cls``; :class:`ConfigError` on any problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not a text file (not UTF-8)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of fields, got {type(data).__name__}")
    if _too_many_values(data):
        raise ConfigError(f"config {path} expands to more than {MAX_CONFIG_VALUES} values (YAML aliases?); refused")
    return validate_config(cls, data, str(path))
