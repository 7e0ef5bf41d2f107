"""cellax's coarse-mesh DFN against PyBaMM's DFN (its default mesh) and beside the SPMe, on held-out DFN profiles
-> benchmarks/results/dfn_vs_pybamm.json.

    python benchmarks/dfn_vs_pybamm.py [--data data/dfn_hard192.h5] [--config configs/hybrid/dfn_hard192_dfn.yaml]
                                       [--meshes 4,2,4 5,3,5 6,3,6 7,3,7 10,4,10] [--repeats 3]
                                       [--out benchmarks/results/dfn_vs_pybamm.json]

The profiles are the hybrid's held-out sets of ``--config``'s split (test: other seeds; holdout: the 0-10 degC band),
so the figures sit beside ``hybrid_vs_dfn_hard192_*.json``. Every model runs free from the DFN's initial state
(:func:`cellax.hybrid.evaluate.run_model`, ROS2 on the 1 s grid, vmapped in batches of 16) and is scored as the
hybrid is (RMSE and max of voltage and anode potential in mV, core and surface temperature in K). Throughput in
simulated cell-seconds per wall second, compiled beforehand, medians of ``--repeats`` interleaved rounds, in the same
process as PyBaMM's DFN (IDAKLU through the data backend, on two of the profiles). Records the load average.
Generate the data first: ``cellax generate configs/data/dfn_hard192.yaml --out data/dfn_hard192.h5 --workers 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import yaml  # noqa: E402

from cellax.config import validate_config  # noqa: E402
from cellax.hybrid.config import HybridConfig  # noqa: E402


def mesh(text: str) -> tuple[int, int, int]:
    counts = tuple(int(v) for v in text.split(","))
    if len(counts) != 3 or min(counts) < 2:
        raise argparse.ArgumentTypeError(f"a mesh is three cell counts of at least 2, like 6,3,6; got {text!r}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "dfn_hard192.h5")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "hybrid" / "dfn_hard192_dfn.yaml",
                        help="hybrid config whose split gives the held-out profiles")
    parser.add_argument("--meshes", type=mesh, nargs="+", default=[(4, 2, 4), (5, 3, 5), (6, 3, 6), (7, 3, 7), (10, 4, 10)])
    parser.add_argument("--shells", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hybrid-run", type=Path, default=None,
                        help="a `cellax hybrid train` run folder whose hybrid joins the comparison (row \"hybrid\")")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dfn_vs_pybamm.json")
    args = parser.parse_args()
    if not args.data.exists():
        parser.exit(2, f"error: {args.data} not found; generate it first (see the module docstring)\n")
    load_before = os.getloadavg()

    from hybrid_vs_dfn import dfn_throughput, throughput

    from cellax.data.cell import dataset_parameters
    from cellax.hybrid.data import load_profiles
    from cellax.hybrid.evaluate import errors, held_out, run_model, tables
    from cellax.physics.dfn import DFN
    from cellax.physics.spme import SPMe

    raw = yaml.safe_load(args.config.read_text())
    raw["data"] = str(args.data)
    config = validate_config(HybridConfig, raw, str(args.config))
    _, data_config = load_profiles(config.data)
    params = dataset_parameters(data_config)
    held, rows, _ = held_out(config)
    capacity = float(params.scalars["nominal_capacity_ah"])
    models = {"spme": SPMe(args.shells)}
    models.update({f"dfn_{n}_{s}_{p}": DFN(args.shells, (n, s, p)) for n, s, p in args.meshes})
    hybrid_info = None
    if args.hybrid_run is not None:
        from cellax.hybrid.train import load_run

        hybrid_config, models["hybrid"], _, _ = load_run(args.hybrid_run)
        from cellax.train.checkpoint import Checkpoints

        checkpoints = Checkpoints(args.hybrid_run / "checkpoints")
        hybrid_info = {"run": str(args.hybrid_run), "config": json.loads(hybrid_config.model_dump_json()),
                       "checkpoint_step": checkpoints.latest_step(),
                       "same_split": hybrid_config.split == config.split and hybrid_config.seed == config.seed}
        checkpoints.close()
        if not hybrid_info["same_split"]:
            parser.exit(2, f"error: {args.hybrid_run} was trained on another split than {args.config}'s\n")

    results = {}
    for name, model in models.items():
        signals, stop = run_model(model, params, held)
        results[name] = errors(signals, stop, held)
        print(f"{name}: accuracy done", flush=True)
    accuracy = tables(results, held, capacity, rows)

    rounds = {name: [] for name in models}
    for _ in range(args.repeats):  # interleaved, so that load changes hit every model alike
        for name, model in models.items():
            rounds[name].append(throughput(model, params, held, repeats=1))
    speed = {name: float(np.median(v)) for name, v in rounds.items()}
    speed["dfn_pybamm_idaklu"] = dfn_throughput(data_config, held)

    summary = {}
    for name in models:
        if name == "spme":
            continue
        row = {}
        for set_name in ("test", "holdout"):
            ours, spme = accuracy[set_name][name]["all"], accuracy[set_name]["spme"]["all"]
            row[set_name] = {"rmse_voltage_mv": ours["rmse_voltage_mv"], "max_voltage_mv": ours["max_voltage_mv"],
                             "rmse_anode_potential_mv": ours["rmse_anode_potential_mv"],
                             "max_core_temp_k": ours["max_core_temp_k"], "max_surface_temp_k": ours["max_surface_temp_k"],
                             "voltage_rmse_ratio_spme_over_model": spme["rmse_voltage_mv"] / ours["rmse_voltage_mv"]}
        row["throughput_over_spme"] = speed[name] / speed["spme"]
        row["throughput_over_pybamm_dfn"] = speed[name] / speed["dfn_pybamm_idaklu"]
        summary[name] = row
    result = {
        "benchmark": "dfn_vs_pybamm",
        "reference": "PyBaMM DFN (its default mesh: 20 cells per region, 20 shells), two-node lumped thermal, IDAKLU",
        "data": {"path": str(args.data), "test": int(rows["test"].size), "holdout_0_10_degC": int(rows["holdout"].size),
                 "held_out_profile_ids": {k: held.profile_id[v].tolist() for k, v in rows.items()}},
        "models": {name: {"kind": type(m).__name__, "n_shells": m.particle.n, "x_counts": list(m.x_counts),
                          "newton_iterations": getattr(m, "newton_iterations", None)} for name, m in models.items()},
        "hybrid": hybrid_info,
        "accuracy": accuracy,
        "summary": summary,
        "throughput_cell_s_per_s": speed,
        "throughput_rounds": rounds,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    spme = {s: accuracy[s]["spme"]["all"]["rmse_voltage_mv"] for s in ("test", "holdout")}
    print(f"spme: V {spme['test']:.2f} / {spme['holdout']:.2f} mV, {speed['spme'] / speed['dfn_pybamm_idaklu']:.0f}x PyBaMM's DFN")
    for name, row in summary.items():
        print(f"{name}: V {row['test']['rmse_voltage_mv']:.2f} / {row['holdout']['rmse_voltage_mv']:.2f} mV "
              f"({row['test']['voltage_rmse_ratio_spme_over_model']:.1f}x / {row['holdout']['voltage_rmse_ratio_spme_over_model']:.1f}x "
              f"below the SPMe), {row['throughput_over_spme']:.2f}x the SPMe, {row['throughput_over_pybamm_dfn']:.0f}x PyBaMM's DFN")


if __name__ == "__main__":
    main()
