"""``cellax rl train`` configs: the environment, PPO, the gradient-optimised protocol and the evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, StrictBool, StrictInt, model_validator

from cellax.config import Seed, Strict, UserError
from cellax.physics.config import ParameterSetName


class RLError(RuntimeError, UserError):
    """An rl run that cannot start; the message says why."""


Temperature = Annotated[float, Field(ge=-40.0, le=80.0)]
Weight = Annotated[float, Field(ge=0.0, le=1e6)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class EnvParamsChanges(Strict):
    """FastCharge ``EnvParams`` fields to change (``None``: keep the default), each typed and bounded."""

    ambient_temp_degc: Temperature | None = None
    initial_soc_min: Fraction | None = None
    initial_soc_max: Fraction | None = None
    initial_temp_min_degc: Temperature | None = None
    initial_temp_max_degc: Temperature | None = None
    target_soc: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    max_c_rate: Annotated[float, Field(gt=0.0, le=20.0)] | None = None
    voltage_max_v: Annotated[float, Field(gt=0.0, le=10.0)] | None = None
    surface_temp_max_degc: Annotated[float, Field(ge=-40.0, le=150.0)] | None = None
    anode_potential_min_v: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None
    control_interval_s: Annotated[float, Field(gt=0.0, le=3600.0)] | None = None
    soc_reward: Weight | None = None
    time_penalty: Weight | None = None
    voltage_penalty: Weight | None = None
    temperature_penalty: Weight | None = None
    plating_penalty: Weight | None = None
    invalid_penalty: Weight | None = None
    max_steps_in_episode: Annotated[StrictInt, Field(ge=1, le=100_000)] | None = None

    def changes(self) -> dict:
        return self.model_dump(exclude_none=True)


class EnvConfig(Strict):
    parameter_set: ParameterSetName = "Chen2020"
    n_shells: StrictInt = Field(10, ge=3, le=200)
    x_counts: tuple[Annotated[StrictInt, Field(ge=1, le=200)], Annotated[StrictInt, Field(ge=1, le=200)],
                    Annotated[StrictInt, Field(ge=1, le=200)]] = (6, 4, 6)
    solver: Literal["etd2", "ros2"] = "etd2"
    substeps: StrictInt = Field(1, ge=1, le=100)
    dtype: Literal["float32", "float64"] = "float64"
    params: EnvParamsChanges = Field(default_factory=EnvParamsChanges, description="FastCharge EnvParams fields to change")


    @model_validator(mode="after")
    def _consistent(self) -> "EnvConfig":
        from cellax.rl.fast_charge import EnvParams, check_params

        check_params(EnvParams().replace(**self.params.changes()))
        return self


class PPOConfig(Strict):
    """PPO settings (see :mod:`cellax.rl.ppo`)."""

    num_envs: StrictInt = Field(64, ge=1, le=65_536)
    num_steps: StrictInt = Field(32, ge=1, le=100_000)
    total_updates: StrictInt = Field(200, ge=1, le=10_000_000)
    updates_per_segment: StrictInt = Field(10, ge=1, le=10_000_000)
    update_epochs: StrictInt = Field(4, ge=1, le=1000)
    num_minibatches: StrictInt = Field(8, ge=1, le=65_536)
    learning_rate: float = Field(3e-4, gt=0.0, le=10.0)
    anneal_lr: StrictBool = True
    gamma: float = Field(0.99, gt=0.0, le=1.0)
    gae_lambda: float = Field(0.95, ge=0.0, le=1.0)
    clip_eps: float = Field(0.2, gt=0.0, le=10.0)
    ent_coef: float = Field(0.0, ge=0.0, le=1e3)
    vf_coef: float = Field(0.5, ge=0.0, le=1e3)
    max_grad_norm: float = Field(0.5, gt=0.0, le=1e6)
    hidden: StrictInt = Field(64, ge=1, le=16_384)
    init_log_std: float = Field(-0.5, ge=-20.0, le=5.0)
    num_seeds: StrictInt = Field(1, ge=1, le=1024)
    seed: Seed = 0
    env_block: StrictInt = Field(0, ge=0, le=65_536, description="collect rollouts in blocks of this many "
                                 "environments, each scanning all its steps in turn (cache-sized, pays on a CPU; "
                                 "0 or >= num_envs: one vmap)")

    @model_validator(mode="after")
    def _divisible(self) -> "PPOConfig":
        if 0 < self.env_block < self.num_envs and self.num_envs % self.env_block:
            raise ValueError(f"env_block ({self.env_block}) must divide num_envs ({self.num_envs})")
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise ValueError(f"num_minibatches ({self.num_minibatches}) must divide num_envs x num_steps "
                             f"({self.num_envs * self.num_steps})")
        if self.total_updates % self.updates_per_segment:
            raise ValueError(f"updates_per_segment ({self.updates_per_segment}) must divide total_updates "
                             f"({self.total_updates})")
        return self


class ProtocolConfig(Strict):
    """Gradient-optimised protocol; it trains against limits tightened by the margins, with the penalty
    weights scaled by ``penalty_scale`` (the hinge penalties alone trade a little violation for speed)."""

    iterations: StrictInt = Field(300, ge=1, le=1_000_000)
    learning_rate: float = Field(0.1, gt=0)
    gamma: float = Field(0.98, gt=0, le=1)
    anode_margin_v: float = Field(0.003, ge=0, le=1)
    temperature_margin_k: float = Field(1.0, ge=0, le=50)
    voltage_margin_v: float = Field(0.005, ge=0, le=1)
    penalty_scale: float = Field(1.0, gt=0, le=1e6)


class EvaluationConfig(Strict):
    initial_soc: float = Field(0.1, ge=0, le=1)
    initial_temp_degc: float = Field(25.0, ge=-40.0, le=80.0)
    cccv_c_rates: list[Annotated[float, Field(gt=0.0, le=20.0)]] = Field(
        default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0], min_length=1, max_length=100)


class RLConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128)
    env: EnvConfig = EnvConfig()
    ppo: PPOConfig = PPOConfig()
    protocol: ProtocolConfig = ProtocolConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    out: Path | None = None

    @model_validator(mode="after")
    def _reachable(self) -> "RLConfig":
        from cellax.rl.fast_charge import EnvParams

        target = EnvParams().replace(**self.env.params.changes()).target_soc
        if self.evaluation.initial_soc >= target:
            raise ValueError(f"evaluation.initial_soc {self.evaluation.initial_soc} is not below "
                             f"env.params.target_soc {target}")
        return self

    @property
    def run_dir(self) -> Path:
        return self.out or Path("runs") / self.name
