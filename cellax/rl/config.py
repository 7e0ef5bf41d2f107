"""``cellax rl train`` configs: the environment, PPO, the gradient-optimised protocol and the evaluation."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from cellax.config import Strict


def _known_fields(dataclass, values: dict, what: str) -> dict:
    known = {f.name for f in dataclasses.fields(dataclass)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; known: {sorted(known)}")
    return values


class RLError(RuntimeError):
    """An rl run that cannot start; the message says why."""


class EnvConfig(Strict):
    parameter_set: str = "Chen2020"
    n_shells: int = Field(10, ge=3)
    x_counts: tuple[int, int, int] = (6, 4, 6)
    substeps: int = Field(3, ge=1)
    dtype: Literal["float32", "float64"] = "float64"
    params: dict[str, Any] = Field(default_factory=dict, description="FastCharge EnvParams fields to change")

    @field_validator("params")
    @classmethod
    def _known(cls, params):
        from cellax.rl.fast_charge import EnvParams

        return _known_fields(EnvParams, params, "EnvParams field")


class ProtocolConfig(Strict):
    """Gradient-optimised protocol; it trains against limits tightened by the margins, with the penalty
    weights scaled by ``penalty_scale`` (the hinge penalties alone trade a little violation for speed)."""

    iterations: int = Field(300, ge=1)
    learning_rate: float = Field(0.1, gt=0)
    gamma: float = Field(0.98, gt=0, le=1)
    anode_margin_v: float = Field(0.003, ge=0)
    temperature_margin_k: float = Field(1.0, ge=0)
    voltage_margin_v: float = Field(0.005, ge=0)
    penalty_scale: float = Field(1.0, gt=0)


class EvaluationConfig(Strict):
    initial_soc: float = Field(0.1, ge=0, le=1)
    initial_temp_degc: float = 25.0
    cccv_c_rates: list[float] = Field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0])


class RLConfig(Strict):
    name: str
    env: EnvConfig = EnvConfig()
    ppo: dict[str, Any] = Field(default_factory=dict, description="PPOConfig fields")
    protocol: ProtocolConfig = ProtocolConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    out: Path | None = None

    @field_validator("ppo")
    @classmethod
    def _valid_ppo(cls, ppo):
        from cellax.rl.ppo import PPOConfig

        PPOConfig(**_known_fields(PPOConfig, ppo, "PPO setting"))  # its own checks name the field
        return ppo

    @property
    def run_dir(self) -> Path:
        return self.out or Path("runs") / self.name
