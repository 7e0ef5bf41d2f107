"""``cellax discover`` configs: where the data come from, which signals are noisy, library, solver."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from cellax.config import Seed, Strict

CASE_SIGNALS = {"thermal": ["I", "V", "U", "T", "Ts", "Ta"], "particle": ["c"], "circuit": ["I", "V"]}


class SourceConfig(Strict):
    """A cellax simulation of a case study, or a profile of a cellax dataset (thermal case only)."""

    kind: Literal["simulation", "dataset"] = "simulation"
    case: Literal["thermal", "particle", "circuit"] = "thermal"
    n_samples: int = Field(2400, ge=100)
    seed: Seed = 0
    held_out_seed: Seed = 1
    path: Path | None = None
    profile: int = Field(0, ge=0)
    held_out_profile: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _dataset(self) -> "SourceConfig":
        if self.kind == "dataset" and (self.path is None or self.case != "thermal"):
            raise ValueError("a dataset source needs path and case: thermal")
        return self


class SolverConfig(Strict):
    method: Literal["stlsq", "sr3"] = "stlsq"
    criterion: Literal["aicc", "bic"] = "bic"
    form: Literal["weak", "savgol"] = "weak"
    n_test: int = Field(150, ge=4)
    half_width: int = Field(60, ge=2)
    min_z: float = Field(3.0, ge=0)
    n_members: int = Field(200, ge=2)
    max_terms: int | None = Field(None, ge=1)


class DiscoverConfig(Strict):
    """``cellax discover CONFIG``; ``signals`` get Gaussian noise of ``noise`` × their standard deviation."""

    source: SourceConfig = SourceConfig()
    signals: list[str] | None = None
    library: list[Literal["sinh", "arcsinh", "arrhenius", "inverse_T"]] = Field(default_factory=list)
    noise: float = Field(0.01, ge=0, le=0.5)
    noise_seed: Seed = 0
    solver: SolverConfig = SolverConfig()
    out: Path = Path("runs/discovery")

    @model_validator(mode="after")
    def _signals(self) -> "DiscoverConfig":
        known = CASE_SIGNALS[self.source.case]
        unknown = sorted(set(self.signals or []) - set(known))
        if unknown:
            raise ValueError(f"signals {unknown} are not signals of the {self.source.case} case {known}")
        if self.library and self.source.case != "thermal":
            raise ValueError("extra library terms apply to the thermal case only")
        return self
