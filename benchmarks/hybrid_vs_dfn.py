"""Hybrid SPMe vs plain SPMe vs PyBaMM's DFN on held-out DFN profiles -> benchmarks/results/hybrid_vs_dfn.json.

    python benchmarks/hybrid_vs_dfn.py [--data data/dfn.h5] [--steps 120]

Generates the DFN dataset of ``configs/data/dfn.yaml`` at ``--data`` when it is missing (PyBaMM,
one worker), trains the hybrid of ``configs/hybrid/dfn.yaml`` on it for ``--steps`` steps, and runs in
the same process: the plain cellax SPMe and the hybrid (ROS2, vmapped) on the held-out profiles
(other seeds, and the ambient band 0-10 degC kept out of training), accuracy per C-rate and ambient
band; throughput of SPMe, hybrid and the DFN (IDAKLU, through the data backend) in simulated
cell-seconds per wall second on the same cores. Records the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from cellax.config import load_config, validate_config  # noqa: E402
from cellax.data.config import DataConfig  # noqa: E402
from cellax.hybrid.config import HybridConfig  # noqa: E402
from cellax.hybrid.data import load_profiles, split  # noqa: E402
from cellax.hybrid.evaluate import evaluate_run, run_model  # noqa: E402


def ensure_data(path: Path, data_config: Path) -> None:
    """Generate the DFN dataset of ``data_config`` at ``path`` (PyBaMM, one worker) unless it exists."""
    if not path.exists():
        from cellax.data.generate import generate

        path.parent.mkdir(parents=True, exist_ok=True)
        generate(load_config(data_config, DataConfig), path, workers=1)


def train_hybrid(config_path: Path, data: Path, steps: int, run_dir: Path, progress: bool = True):
    """``(config, training summary)``: the hybrid of ``config_path`` on ``data`` for ``steps`` steps, in a fresh
    ``run_dir``."""
    from cellax.hybrid.train import train

    raw = yaml.safe_load(config_path.read_text())
    raw["data"] = str(data)
    raw.setdefault("train", {})["steps"] = steps
    config = validate_config(HybridConfig, raw, str(config_path))
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return config, train(config, run_dir, progress=progress)


def throughput(model, params, profiles, repeats: int = 3) -> float:
    """Simulated cell-seconds per wall second of the vmapped ROS2 run (compiled once beforehand)."""
    run_model(model, params, profiles)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_model(model, params, profiles)
        times.append(time.perf_counter() - t0)
    return float(profiles.current_a.size * profiles.dt_s / np.median(times))


def dfn_throughput(data_config: dict, profiles, n: int = 2) -> float:
    """Cell-seconds per wall second of PyBaMM's DFN (IDAKLU) on ``n`` of the held-out profiles."""
    from cellax.data.pybamm_backend import PybammBackend

    config = DataConfig.model_validate(data_config)
    backend = PybammBackend(config.simulation, config.cell)
    simulated, wall = 0.0, 0.0
    for row in range(min(n, len(profiles))):
        length = int(profiles.mask[row].sum())
        t0 = time.perf_counter()
        result = backend.simulate(profiles.current_a[row, :length], profiles.dt_s, float(profiles.ambient_temp_degc[row]),
                                  float(profiles.heat_transfer_coeff[row]), float(profiles.initial_soc[row]))
        wall += time.perf_counter() - t0
        simulated += len(result.signals.get("time_s", [])) * profiles.dt_s
    return simulated / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "dfn.h5")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "hybrid" / "dfn.yaml")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "bench_hybrid_vs_dfn")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hybrid_vs_dfn.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    ensure_data(args.data, ROOT / "configs" / "data" / "dfn.yaml")
    config, summary = train_hybrid(args.config, args.data, args.steps, args.run_dir)

    from cellax.hybrid.train import load_run

    report = evaluate_run(args.run_dir)
    _, hybrid, params, data_config = load_run(args.run_dir)
    profiles, _ = load_profiles(args.data)
    band = config.split.holdout_ambient_degc
    rows = split(profiles, config.split.test_fraction, config.seed, (band.low, band.high))
    held = profiles.take(np.concatenate([rows["test"], rows["holdout"]]))
    speed = {"spme": throughput(hybrid.spme, params, held), "hybrid": throughput(hybrid, params, held),
             "dfn_pybamm_idaklu": dfn_throughput(data_config, held)}
    test, holdout = report["test"], report["holdout"]

    def ratio(table, key):
        return table["spme"]["all"][key] / max(table["hybrid"]["all"][key], 1e-12)

    targets = {}
    for name, table in (("test", test), ("holdout_0_10_degC", holdout)):
        h = table["hybrid"]["all"]
        if not h.get("profiles"):
            continue
        targets[name] = {
            "voltage_rmse_le_2mv": h["rmse_voltage_mv"] <= 2.0,
            "voltage_rmse_5x_below_spme": ratio(table, "rmse_voltage_mv") >= 5.0,
            "voltage_rmse_ratio_spme_over_hybrid": ratio(table, "rmse_voltage_mv"),
            "anode_potential_rmse_le_3mv": h["rmse_anode_potential_mv"] <= 3.0,
            "temperatures_within_0p3k": max(h["max_core_temp_k"], h["max_surface_temp_k"]) <= 0.3,
        }
    targets["throughput_ge_0p5x_spme"] = speed["hybrid"] / speed["spme"] >= 0.5
    targets["throughput_ge_50x_dfn"] = speed["hybrid"] / speed["dfn_pybamm_idaklu"] >= 50
    result = {
        "benchmark": "hybrid_vs_dfn",
        "data": {"path": str(args.data), "profiles": int(len(profiles)), "train": int(rows["train"].size),
                 "test": int(rows["test"].size), "holdout_0_10_degC": int(rows["holdout"].size),
                 "duration_s": float(profiles.mask.sum(1).max() * profiles.dt_s)},
        "training": {"steps": summary["steps"], "wall_s": summary["train_wall_s"],
                     "final_loss": summary["history"][-1]["loss"] if summary["history"] else None,
                     "config": json.loads(config.model_dump_json())},
        "accuracy": {"test": test, "holdout_0_10_degC": holdout},
        "throughput_cell_s_per_s": speed,
        "throughput_ratios": {"hybrid_over_spme": speed["hybrid"] / speed["spme"],
                              "hybrid_over_dfn": speed["hybrid"] / speed["dfn_pybamm_idaklu"],
                              "spme_over_dfn": speed["spme"] / speed["dfn_pybamm_idaklu"]},
        "targets": targets,
        "not_run": ["SPMe refitted by cellax fit", "GRU trained on the same DFN data"],
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for picture in ("overlay.png", "error_vs_band.png"):
        shutil.copy(args.run_dir / picture, args.out.parent / f"hybrid_vs_dfn_{picture}")
    print(json.dumps({k: result[k] for k in ("data", "throughput_ratios", "targets")}, indent=1))


if __name__ == "__main__":
    main()
