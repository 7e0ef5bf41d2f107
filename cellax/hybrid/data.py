"""DFN profiles as padded arrays for the hybrid: currents, conditions, targets and validity masks.

Every profile with at least two samples is used, also those the DFN ended at a voltage limit (their
samples up to the cut are valid). Profiles are padded to the longest by holding the last current;
``mask`` marks the samples that carry DFN data. The split is a hash of ``(seed, profile_id)``;
profiles whose ambient lies in ``holdout_ambient_degc`` are kept out of training entirely
(extrapolation set). :func:`write_split` writes the three sets as cellax datasets, so that models trained
and evaluated by the tools that read whole files (``cellax train``, ``cellax fit``) see the same profiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellax.data.store import open_dataset, subset_dataset

TARGETS = ("voltage_v", "anode_potential_v", "core_temp_degc", "surface_temp_degc")


@dataclass(frozen=True)
class Profiles:
    """A batch of padded profiles (numpy, float64), ``n`` rows by ``t`` samples."""

    profile_id: np.ndarray
    current_a: np.ndarray
    targets: dict[str, np.ndarray]
    mask: np.ndarray
    ambient_temp_degc: np.ndarray
    heat_transfer_coeff: np.ndarray
    initial_soc: np.ndarray
    kind: np.ndarray
    dt_s: float

    def __len__(self) -> int:
        return len(self.profile_id)

    def take(self, rows) -> "Profiles":
        rows = np.asarray(rows, dtype=np.int64)
        return Profiles(
            self.profile_id[rows], self.current_a[rows], {k: v[rows] for k, v in self.targets.items()},
            self.mask[rows], self.ambient_temp_degc[rows], self.heat_transfer_coeff[rows], self.initial_soc[rows],
            self.kind[rows], self.dt_s,
        )

    @property
    def rms_current_a(self) -> np.ndarray:
        """RMS current (A) of each profile over its valid samples."""
        return np.sqrt((self.current_a**2 * self.mask).sum(1) / self.mask.sum(1))


def load_profiles(path: str | Path) -> tuple[Profiles, dict]:
    """All usable profiles of the dataset at ``path`` and its config."""
    with open_dataset(path) as ds:
        meta, config = ds.profiles, ds.config
        rows = np.flatnonzero(meta["length"] >= 2)
        if not rows.size:
            raise ValueError(f"{path}: no profile with at least two samples")
        missing = [name for name in TARGETS if name not in ds.signal_names]
        if missing:
            raise ValueError(f"{path}: the dataset lacks signal(s) {missing}")
        signals = [ds.profile(int(r), ("current_a",) + TARGETS) for r in rows]
    n = max(len(s["current_a"]) for s in signals)
    current = np.stack([np.pad(s["current_a"], (0, n - len(s["current_a"])), mode="edge") for s in signals])
    mask = np.stack([np.arange(n) < len(s["current_a"]) for s in signals])
    targets = {k: np.stack([np.pad(s[k], (0, n - len(s[k])), mode="edge") for s in signals]) for k in TARGETS}
    profiles = Profiles(
        meta["profile_id"][rows], current, targets, mask, meta["ambient_temp_degc"][rows],
        meta["heat_transfer_coeff"][rows], meta["initial_soc"][rows], meta["profile_kind"][rows],
        float(config["profiles"]["dt_s"]),
    )
    return profiles, config


def split(profiles: Profiles, test_fraction: float, seed: int, holdout_ambient_degc=None) -> dict[str, np.ndarray]:
    """Rows of ``"train"``, ``"test"`` (other seeds, same bands) and ``"holdout"`` (the ambient band kept out)."""
    draws = np.array([np.random.default_rng((int(seed), int(p))).random() for p in profiles.profile_id])
    band = np.zeros(len(profiles), dtype=bool)
    if holdout_ambient_degc is not None:
        low, high = holdout_ambient_degc
        band = (profiles.ambient_temp_degc >= low) & (profiles.ambient_temp_degc <= high)
    test = ~band & (draws < test_fraction)
    return {"train": np.flatnonzero(~band & ~test), "test": np.flatnonzero(test), "holdout": np.flatnonzero(band)}


def config_split(config, profiles: Profiles) -> dict[str, np.ndarray]:
    """:func:`split` with the settings of a :class:`~cellax.hybrid.config.HybridConfig`."""
    band = config.split.holdout_ambient_degc
    seed = config.seed if config.split.seed is None else config.split.seed
    return split(profiles, config.split.test_fraction, seed, None if band is None else (band.low, band.high))


def write_split(config, out_dir: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """The profiles of each set of ``config``'s split (``train``, ``test``, ``holdout``) as datasets
    ``out_dir/<set>.h5``, in the order of :func:`split`'s rows, with the source's signals and config."""
    profiles, _ = load_profiles(config.data)
    rows = config_split(config, profiles)
    with open_dataset(config.data) as ds:
        row_of = {int(p): r for r, p in enumerate(ds.profiles["profile_id"])}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {name: subset_dataset(config.data, [row_of[int(p)] for p in profiles.profile_id[r]], out_dir / f"{name}.h5",
                                 overwrite)
            for name, r in rows.items()}
