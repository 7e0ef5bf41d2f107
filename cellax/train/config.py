"""``cellax train`` configs: data, task, model, optimiser, loss and run settings (validated, naming fields)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from cellax.config import Seed, Strict
from cellax.models.registry import ModelConfig
from cellax.models.rnn import GRUConfig
from cellax.signals import MODEL_SIGNALS
from cellax.train.physics import check_terms

TASK_SIGNALS = {
    # task -> (inputs, outputs): canonical signal names
    "simulate": (["current_a", "ambient_temp_degc"], ["voltage_v", "surface_temp_degc", "core_temp_degc", "soc", "ocv_v"]),
    "estimate": (["current_a", "voltage_v", "surface_temp_degc", "ambient_temp_degc"], ["soc", "core_temp_degc", "ocv_v"]),
}
CONDITION_COLUMNS = {"heat_transfer_coeff": "number", "parameter_set": "text"}
"""Profile conditions a model may be given (see :mod:`cellax.data.loader`): the cooling of the test
and the cell's identity. Not ``initial_soc``, which would hand an estimator its answer."""


MAX_STEPS = 100_000_000


class OptimizerConfig(Strict):
    """AdamW with linear warm-up then cosine decay, global-norm clipping; no decay on vectors (norms, biases)."""

    learning_rate: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(100, ge=0, le=MAX_STEPS)
    final_lr_fraction: float = Field(0.05, ge=0, le=1)
    weight_decay: float = Field(0.01, ge=0)
    clip_norm: float = Field(1.0, gt=0)
    b1: float = Field(0.9, ge=0, lt=1)
    b2: float = Field(0.99, ge=0, lt=1)


class LossConfig(Strict):
    """Per-output loss on normalised signals, weighted; the same definition in training and evaluation."""

    kind: Literal["mse", "smooth_l1", "log_cosh"] = "mse"
    weights: dict[str, Annotated[float, Field(ge=0, le=1e6)]] = Field(default_factory=dict)
    smooth_l1_beta: float = Field(1.0, gt=0)


class PhysicsConfig(Strict):
    """Weights of the physics-informed loss terms (:mod:`cellax.train.physics`); 0 leaves a term out."""

    charge: float = Field(0.0, ge=0, le=1e6, description="charge conservation: SOC rate against current / capacity")
    thermal: float = Field(0.0, ge=0, le=1e6,
                           description="two-node energy balance with the parameter set's thermal values")
    ocv: float = Field(0.0, ge=0, le=1e6, description="ocv_v against the parameter set's OCPs at the predicted SOC")
    cell_model: float = Field(0.0, ge=0, le=1e6, description="consistency with the SPMe run on the same inputs")
    cell_model_ambient_degc: tuple[float, float] | None = Field(
        None, description="evaluate cell_model on collocation windows instead: the training windows' currents at "
                          "ambients spread over this range (degC), where the SPMe's outputs are the only targets")

    @field_validator("cell_model_ambient_degc")
    @classmethod
    def _ordered_range(cls, value):
        if value is not None and not -40.0 <= value[0] < value[1] <= 80.0:
            raise ValueError(f"must be [low, high] with -40 <= low < high <= 80 degC, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _collocation_needs_the_term(self) -> "PhysicsConfig":
        if self.cell_model_ambient_degc is not None and self.cell_model <= 0:
            raise ValueError("cell_model_ambient_degc places the cell_model term; give physics.cell_model a weight > 0")
        return self

    @property
    def weights(self) -> dict[str, float]:
        """The terms switched on, ``{term: weight}``."""
        return {k: v for k, v in self.model_dump(exclude={"cell_model_ambient_degc"}).items() if v > 0}


class StftConfig(Strict):
    """Causal short-time Fourier magnitudes of the current (``window // 2 + 1`` bins) as extra input channels."""

    window: int = Field(16, ge=4, le=4096)


class TrainConfig(Strict):
    """A training run: which data, which task, which model, how long."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128,
                      description="the run's folder name under runs/: letters, digits, '.', '_', '-'")
    data: Path
    task: Literal["simulate", "estimate"] = "simulate"
    outputs: list[str] | None = None
    model: ModelConfig = Field(default_factory=GRUConfig)
    chunk_len: int = Field(256, ge=8, le=1_000_000, description="samples the model runs free before its own outputs become the next chunk's initial conditions")
    chunks_per_window: int = Field(1, ge=1, le=1000, description="multi-step training: chunks chained free-running inside one window")
    batch_size: int = Field(32, ge=1, le=65_536)
    steps: int = Field(1000, ge=1, le=MAX_STEPS)
    eval_every: int = Field(200, ge=1, le=MAX_STEPS)
    eval_profiles: int = Field(4, ge=1, le=100_000, description="validation profiles rolled out at each evaluation")
    checkpoint_every: int = Field(200, ge=1, le=MAX_STEPS)
    optimizer: OptimizerConfig = OptimizerConfig()
    loss: LossConfig = LossConfig()
    physics: PhysicsConfig | None = None
    stft: StftConfig | None = None
    conditions: list[str] = Field(
        default_factory=list,
        description="profile conditions as constant input channels: heat_transfer_coeff, parameter_set=<name>",
    )
    charge_throughput: bool = Field(
        False, description="two input channels with the charge passed since each chunk's start (coulomb counting)"
    )
    residual: bool = Field(
        False, description="predict each chunk's change from its initial conditions (no jumps at chunk starts)"
    )
    split_fractions: tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)],
                           Annotated[float, Field(ge=0, le=1)]] = (0.8, 0.1, 0.1)
    split_seed: Seed = 0
    seed: Seed = 0
    out: Path | None = None

    @field_validator("outputs")
    @classmethod
    def _known_outputs(cls, outputs):
        if outputs is not None:
            unknown = sorted(set(outputs) - MODEL_SIGNALS)
            if unknown:
                raise ValueError(f"unknown signal name(s) {unknown}; known: {sorted(MODEL_SIGNALS)}")
            if not outputs:
                raise ValueError("outputs must name at least one signal")
        return outputs

    @field_validator("conditions")
    @classmethod
    def _known_conditions(cls, conditions):
        for name in conditions:
            column, eq, value = name.partition("=")
            kind = CONDITION_COLUMNS.get(column)
            if kind is None or (kind == "text") != bool(eq and value):
                raise ValueError(
                    f"unknown condition {name!r}; use heat_transfer_coeff or parameter_set=<parameter set name>"
                )
        if len(set(conditions)) != len(conditions):
            raise ValueError(f"conditions {conditions} name one twice")
        return conditions

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        inputs, _ = TASK_SIGNALS[self.task]
        clash = sorted(set(self.output_signals) & set(inputs))
        if clash:
            raise ValueError(f"outputs {clash} are inputs of the {self.task!r} task")
        unknown = sorted(set(self.loss.weights) - set(self.output_signals))
        if unknown:
            raise ValueError(f"loss.weights names {unknown}, which are not outputs {self.output_signals}")
        if self.physics is not None:
            check_terms(self.physics.weights, self.input_signals, self.output_signals)
            if self.physics.cell_model_ambient_degc is not None and self.task != "simulate":
                raise ValueError("physics.cell_model_ambient_degc needs the simulate task: on a collocation window "
                                 "only the current and the ambient are known")
        if abs(sum(self.split_fractions) - 1.0) > 1e-9:
            raise ValueError(f"split_fractions {list(self.split_fractions)} must sum to 1")
        max_len = getattr(self.model, "max_len", None)
        if max_len is not None and self.chunk_len > max_len:
            raise ValueError(f"chunk_len {self.chunk_len} is longer than model.max_len {max_len}")
        return self

    @property
    def input_signals(self) -> list[str]:
        return [*TASK_SIGNALS[self.task][0], *self.conditions]

    @property
    def output_signals(self) -> list[str]:
        return list(self.outputs or TASK_SIGNALS[self.task][1])

    @property
    def window_len(self) -> int:
        return self.chunk_len * self.chunks_per_window

    @property
    def run_dir(self) -> Path:
        return self.out or Path("runs") / self.name
