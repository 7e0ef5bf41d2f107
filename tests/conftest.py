"""Shared fixtures: small real HDF5 datasets written with cellax's own store."""

import gc

import jax
import numpy as np
import pytest

from cellax.data.store import SIGNALS, ProfileRecord, write_dataset


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Drop JAX's compiled executables after each test module. Each one keeps memory mappings of its machine
    code; a whole-suite process that kept them all crashed in XLA's compiler two thirds of the way through
    (most likely at the kernel's limit of mappings per process, ``vm.max_map_count``, 65530 by default)."""
    yield
    jax.clear_caches()
    gc.collect()


def synthetic_records(n_profiles: int = 12, seed: int = 0) -> list[ProfileRecord]:
    """Profiles of varied length with smooth, plausible signals (no simulator needed)."""
    rng = np.random.default_rng(seed)
    records = []
    for pid in range(n_profiles):
        length = int(rng.integers(300, 900))
        time_s = np.arange(length, dtype=float)
        current_a = np.repeat(rng.uniform(-3, 5, size=length // 60 + 1), 60)[:length]
        soc = 0.6 - np.cumsum(current_a) / (3600 * 5.0)
        ambient = float(rng.uniform(10, 35))
        status = "ok" if pid % 5 != 4 else "solver_failed: planted"
        signals = {
            "time_s": time_s,
            "current_a": current_a,
            "voltage_v": 3.4 + 0.8 * soc - 0.02 * current_a,
            "ocv_v": 3.4 + 0.8 * soc,
            "soc": soc,
            "surface_temp_degc": ambient + 0.1 * np.cumsum(current_a**2) / length,
            "core_temp_degc": ambient + 0.2 * np.cumsum(current_a**2) / length,
            "ambient_temp_degc": np.full(length, ambient),
            "anode_potential_v": 0.1 + 0.2 * (1 - soc) - 0.01 * current_a,
        }
        if status != "ok":
            signals = {}
        meta = dict(
            profile_id=pid, seed=seed, parameter_set="Chen2020", model="SPMe",
            profile_kind=["cc_rest", "drive", "dynamic"][pid % 3], ambient_temp_degc=ambient,
            heat_transfer_coeff=float(rng.uniform(5, 50)), initial_soc=0.6, status=status,
        )
        records.append(ProfileRecord(meta, signals))
    return records


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    """Path of a 12-profile dataset (every fifth profile failed, with no samples)."""
    path = tmp_path_factory.mktemp("data") / "synthetic.h5"
    write_dataset(path, synthetic_records(), {"config": {"name": "synthetic", "seed": 0}}, tuple(SIGNALS))
    return path


@pytest.fixture(scope="session")
def generated_dataset(tmp_path_factory):
    """Path of a small dataset simulated with real PyBaMM (4 profiles of 10 minutes)."""
    from cellax.config import validate_config
    from cellax.data.config import DataConfig
    from cellax.data.generate import generate

    config = validate_config(
        DataConfig, {"name": "tiny", "seed": 5, "n_profiles": 4, "profiles": {"duration_s": 600}}
    )
    path = tmp_path_factory.mktemp("generated") / "tiny.h5"
    generate(config, path, progress=False, log=lambda *_: None)
    return path
