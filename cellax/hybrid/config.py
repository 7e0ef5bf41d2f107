"""``cellax hybrid train`` configs (``configs/hybrid/*.yaml``), validated like the others."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from cellax.config import Seed, Strict
from cellax.data.config import Range
from cellax.hybrid.model import FITTABLE, HEAT_SCALE_K_S, VOLTAGE_SCALE_V


class HybridSplitConfig(Strict):
    """Held-out profiles: a hashed fraction of the other seeds, and an ambient band kept out of training."""

    test_fraction: float = Field(0.25, gt=0, lt=1)
    holdout_ambient_degc: Range | None = Range(low=0.0, high=10.0)
    seed: Seed | None = Field(None, description="seed of the hashed test draw; None: the run's seed (a seed study "
                                                "sets it to keep one held-out set across training seeds)")


BACKBONE_MESH = {"SPMe": (20, 20, 20), "DFN": (6, 3, 6)}
"""Cells per region (negative, separator, positive) of each physics backbone when ``x_counts`` is not set."""


class HybridModelConfig(Strict):
    """The physics backbone (``SPMe``, or the coarse ``DFN``: docs/hybrid.md) and its mesh, and the correction
    networks (output scales ``s_v`` in V, ``s_q`` in K/s; history and latent states' time constants ``τ`` in s,
    trainable with ``learn_time_constants``; ``fit_parameters``: physics parameters fitted jointly, name -> initial
    multiplier: docs/hybrid.md)."""

    backbone: Literal["SPMe", "DFN"] = "SPMe"
    n_shells: int = Field(20, ge=3)
    x_counts: tuple[int, int, int] | None = Field(None, description="cells per region; None: the backbone's "
                                                  "default (BACKBONE_MESH)")
    width: int = Field(32, ge=1)
    depth: int = Field(2, ge=1)
    voltage_scale_v: float = Field(VOLTAGE_SCALE_V, gt=0)
    heat_scale_k_s: float = Field(HEAT_SCALE_K_S, gt=0)
    time_constants_s: tuple[float, ...] = ()
    latent_time_constants_s: tuple[float, ...] = ()
    learn_time_constants: bool = False
    fit_parameters: dict[str, float] = Field(default_factory=dict)
    heat_times_current: bool = False
    voltage_heat: bool = False
    redistribution_scale_1_s: float | None = Field(None, gt=0, description="particle closure's scale s_c (1/s); "
                                                   "None: off (docs/hybrid.md)")
    dtype: Literal["float32", "float64"] = "float32"

    @field_validator("time_constants_s", "latent_time_constants_s")
    @classmethod
    def _slow(cls, taus):
        if any(not tau >= 1.0 for tau in taus):
            raise ValueError(f"history time constants must be at least 1 s, got {list(taus)}")
        return taus

    @field_validator("fit_parameters")
    @classmethod
    def _fittable(cls, values):
        unknown = sorted(set(values) - set(FITTABLE))
        if unknown:
            raise ValueError(f"cannot fit {unknown}; fittable: {', '.join(FITTABLE)}")
        if any(not m > 0 for m in values.values()):
            raise ValueError(f"initial multipliers must be positive, got {values}")
        return values

    @model_validator(mode="after")
    def _learnable(self) -> "HybridModelConfig":
        if self.learn_time_constants and not (self.time_constants_s or self.latent_time_constants_s):
            raise ValueError("learn_time_constants needs time_constants_s or latent_time_constants_s")
        return self

    @property
    def mesh(self) -> tuple[int, int, int]:
        """``x_counts``, or the backbone's default mesh."""
        return tuple(self.x_counts) if self.x_counts is not None else BACKBONE_MESH[self.backbone]

    @field_validator("x_counts")
    @classmethod
    def _positive(cls, counts):
        if counts is not None and min(counts) < 2:
            raise ValueError(f"every region needs at least 2 cells, got {list(counts)}")
        return counts


class HybridTrainConfig(Strict):
    """Truncated backpropagation through the ROS2 solver on chunks of the model's own trajectories (``physics_learning_rate``:
    Adam's rate for the physics log-multipliers and log time constants; default ``learning_rate``)."""

    steps: int = Field(300, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    physics_learning_rate: float | None = Field(None, gt=0)
    batch: int = Field(16, ge=1)
    chunk_s: float = Field(300.0, gt=0)
    refresh_every: int = Field(50, ge=1)
    checkpoint_every: int = Field(50, ge=1)

    @model_validator(mode="after")
    def _aligned(self) -> "HybridTrainConfig":
        if self.checkpoint_every % self.refresh_every:
            raise ValueError(
                f"checkpoint_every ({self.checkpoint_every}) must be a multiple of refresh_every "
                f"({self.refresh_every}) so that a resumed run continues exactly"
            )
        return self


class HybridConfig(Strict):
    """A hybrid training run on a DFN dataset."""

    name: str
    data: Path
    seed: Seed = 0
    split: HybridSplitConfig = HybridSplitConfig()
    model: HybridModelConfig = HybridModelConfig()
    train: HybridTrainConfig = HybridTrainConfig()

    @field_validator("data")
    @classmethod
    def _exists(cls, path: Path) -> Path:
        if not Path(path).is_file():
            raise ValueError(f"dataset {path} not found")
        return path
