"""Plain SPMe, refitted SPMe, the hybrid (and, with a DFN backbone, the plain coarse cellax DFN) and a GRU against
PyBaMM's DFN on the same held-out DFN profiles -> benchmarks/results/hybrid_vs_dfn.json.

    python benchmarks/hybrid_vs_dfn.py [--data data/dfn.h5] [--steps 400] [--run-dir runs/bench_hybrid_vs_dfn]
                                       [--overwrite | --trained] [--fit-profiles 4] [--fit-steps 20] [--gru-seconds 300]
                                       [--config configs/hybrid/dfn.yaml] [--data-config configs/data/dfn.yaml]
                                       [--out benchmarks/results/hybrid_vs_dfn.json]

The pictures go next to ``--out`` as ``<its stem>_overlay.png`` and ``<its stem>_error_vs_band.png``
(the harder set: ``--data data/dfn_hard.h5 --data-config configs/data/dfn_hard.yaml --config
configs/hybrid/dfn_hard.yaml --out benchmarks/results/hybrid_vs_dfn_hard.json``).

Generates the DFN dataset of ``--data-config`` at ``--data`` when it is missing (PyBaMM, one worker)
and splits it as the hybrid of ``--config`` does (:func:`cellax.hybrid.data.split`: the
ambient band 0-10 degC kept out of training, a hashed quarter of the rest held out as "test"). On the
training profiles of that split it trains, in the same process:

- the hybrid (``cellax hybrid train``, ``--steps`` steps);
- the SPMe with five rate parameters refitted by ``cellax fit``'s library (:func:`cellax.workflows.fit.run_fit`:
  Levenberg-Marquardt through the solver) on ``--fit-profiles`` training profiles, ``--fit-steps`` steps;
- a GRU with ``cellax train``'s loop (``configs/train/simulate_gru.yaml``, plus anode potential as an output),
  its schedule sized to ``--gru-seconds`` of wall time (:mod:`cellax.train.budget`).

The split's sets are written as datasets into ``RUN/split`` (:func:`cellax.hybrid.data.write_split`), which
``cellax fit`` and ``cellax train`` read like any other. All four models then run free over the same held-out
profiles (test, and the 0-10 degC holdout) from the DFN's initial state and are scored with the same metrics
(:mod:`cellax.hybrid.evaluate`): RMSE and max of voltage and anode potential (mV), core and surface temperature (K),
per C-rate and ambient band. Throughput of SPMe, hybrid (and the cellax DFN) and PyBaMM's DFN (IDAKLU, through the
data backend) in simulated cell-seconds per wall second on the same cores. Records the machine's load average.
A hybrid with ``model.backbone: DFN`` (``configs/hybrid/dfn_hard192_dfn.yaml``) adds its plain backbone as the row
``dfn``; the SPMe rows are then the SPMe on its default mesh.
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
from cellax.hybrid.data import TARGETS, Profiles  # noqa: E402
from cellax.hybrid.evaluate import errors, held_out, physics_baselines, plot_report, run_model, tables  # noqa: E402

FIT_PARAMETERS = ("neg_diffusivity_scale", "pos_diffusivity_scale", "neg_exchange_current_scale",
                  "electrolyte_conductivity_scale", "electrolyte_diffusivity_scale")
"""The SPMe's rate scales refitted to the DFN (each in [0.2, 5], log transform, from 1)."""
GRU_OUTPUTS = ["voltage_v", "anode_potential_v", "surface_temp_degc", "core_temp_degc", "soc", "ocv_v"]
GRU_SPLIT = (0.9, 0.1, 0.0)
"""The GRU's own split of the hybrid's training profiles: 90 % for its gradient steps, 10 % to choose its
checkpoint (``cellax train`` needs a validation split); none of the held-out profiles."""


def refuse_existing(parser: argparse.ArgumentParser, run_dir: Path, overwrite: bool) -> None:
    """One line and exit 2 when ``run_dir`` exists and ``--overwrite`` was not given (nothing is deleted)."""
    if run_dir.exists() and not overwrite:
        parser.exit(2, f"error: --run-dir {run_dir} exists; pass --overwrite to replace it (nothing was deleted)\n")


def ensure_data(path: Path, data_config: Path) -> None:
    """Generate the DFN dataset of ``data_config`` at ``path`` (PyBaMM, one worker) unless it exists."""
    if not path.exists():
        from cellax.data.generate import generate

        path.parent.mkdir(parents=True, exist_ok=True)
        generate(load_config(data_config, DataConfig), path, workers=1)


def hybrid_config(config_path: Path, data: Path, steps: int | None = None) -> HybridConfig:
    """The hybrid config at ``config_path`` on ``data`` (and ``steps`` training steps, when given), validated."""
    raw = yaml.safe_load(config_path.read_text())
    raw["data"] = str(data)
    if steps is not None:
        raw.setdefault("train", {})["steps"] = steps
    return validate_config(HybridConfig, raw, str(config_path))


def train_hybrid(config_path: Path, data: Path, steps: int, run_dir: Path, progress: bool = True,
                 overwrite: bool = False):
    """``(config, training summary)``: the hybrid of ``config_path`` on ``data`` for ``steps`` steps in ``run_dir``;
    an existing ``run_dir`` is refused unless ``overwrite`` (then it is removed first, and said so)."""
    from cellax.hybrid.train import train

    config = hybrid_config(config_path, data, steps)
    if run_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{run_dir} exists; pass overwrite (--overwrite) to replace it")
        print(f"--overwrite: removing {run_dir}", flush=True)
        shutil.rmtree(run_dir)
    return config, train(config, run_dir, progress=progress)


def trained_hybrid(config_path: Path, data: Path, run_dir: Path):
    """``(config, training summary)`` of the finished hybrid of ``config_path`` already in ``run_dir`` (e.g. one
    whose benchmark stopped after training); refused when the run is another config's or unfinished."""
    config = hybrid_config(config_path, data)
    path = run_dir / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"--trained: {run_dir} is not a hybrid run folder (no config.json)")
    run_config = HybridConfig.model_validate_json(path.read_text())
    if run_config.model_dump(exclude={"train"}) != config.model_dump(exclude={"train"}):
        raise ValueError(f"--trained: {run_dir} holds another hybrid than {config_path} (its config.json differs)")
    history = [json.loads(line) for line in (run_dir / "train_history.jsonl").read_text().splitlines()]
    if not history or history[-1]["step"] != run_config.train.steps:
        raise ValueError(f"--trained: {run_dir} stopped at step {history[-1]['step'] if history else 0} "
                         f"of {run_config.train.steps}; finish it with `cellax hybrid train --resume`")
    return run_config, {"steps": history[-1]["step"], "train_wall_s": history[-1].get("elapsed_s"),
                        "history": history}


def refit_spme(train_file: Path, n_profiles: int, max_steps: int, out_dir: Path) -> dict:
    """``cellax fit`` of :data:`FIT_PARAMETERS` to ``n_profiles`` finished training profiles (spread evenly over
    their RMS current), voltage and both temperatures weighted as in the hybrid's loss (1 mV, 0.1 K)."""
    from cellax.data.store import open_dataset
    from cellax.physics.config import FitConfig
    from cellax.workflows.fit import run_fit

    with open_dataset(train_file) as ds:
        ok = np.flatnonzero(ds.profiles["status"] == "ok")
        rms = np.array([np.sqrt(np.mean(ds.profile(int(r), ["current_a"])["current_a"] ** 2)) for r in ok])
        rows = ok[np.argsort(rms)][np.unique(np.linspace(0, len(ok) - 1, min(n_profiles, len(ok))).round().astype(int))]
        ids = ds.profiles["profile_id"][rows]
    config = FitConfig.model_validate({
        "data": str(train_file), "profiles": rows.tolist(), "model": "SPMe",
        "signals": ["voltage_v", "surface_temp_degc", "core_temp_degc"], "sigma_v": 1e-3, "sigma_temp_k": 0.1,
        "max_steps": max_steps, "out": str(out_dir),
        "parameters": {name: {"lower": 0.2, "upper": 5.0, "initial": 1.0, "transform": "log"} for name in FIT_PARAMETERS},
    })
    result, _, _ = run_fit(config, out_dir, source="hybrid_vs_dfn refit")
    print(result.summary(), flush=True)
    return {"profile_ids": ids.tolist(), "max_steps": max_steps, "values": result.values, "std": result.std,
            "steps": result.steps, "converged": result.converged, "wall_s": result.seconds,
            "compile_s": result.compile_seconds, "train_rmse": result.rmse,
            "config": json.loads(config.model_dump_json())}


def train_gru(config_path: Path, train_file: Path, out_dir: Path, seconds: float, progress: bool = True) -> dict:
    """``cellax train`` of the GRU of ``config_path`` on ``train_file`` (:data:`GRU_SPLIT`, :data:`GRU_OUTPUTS`),
    its schedule sized to ``seconds`` (:func:`~cellax.train.budget.steps_for_seconds`) and stopped there.
    float32 as ``cellax train`` runs it (PyBaMM's import switched x64 on for this process)."""
    import jax

    from cellax.train.budget import measure_step_s, steps_for_seconds
    from cellax.train.config import TrainConfig
    from cellax.train.loop import train

    raw = yaml.safe_load(config_path.read_text())
    raw.update(data=str(train_file), out=str(out_dir), outputs=GRU_OUTPUTS, split_fractions=list(GRU_SPLIT))
    config = validate_config(TrainConfig, raw, str(config_path))
    with jax.enable_x64(False):
        step_s = measure_step_s(config, budget_s=seconds)
        steps = steps_for_seconds(step_s, seconds)
        every = max(steps // 4, 1)
        config = config.model_copy(update={"steps": steps, "eval_every": every, "checkpoint_every": every})
        started = time.perf_counter()
        train(config, progress=progress, time_budget_s=seconds)
        wall = time.perf_counter() - started
    lines = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return {"config": config.model_dump(mode="json"), "step_s": step_s, "planned_steps": steps, "budget_s": seconds,
            "steps_done": max((r["step"] for r in lines if "loss" in r), default=0), "train_wall_s": wall}


def gru_split_ids(train_file: Path, seed: int) -> dict[str, list[int]]:
    """Profile ids of the GRU's own ``train`` and ``val`` splits of the hybrid's training profiles."""
    from cellax.data.loader import split_profiles
    from cellax.data.store import open_dataset

    with open_dataset(train_file) as ds:
        ids = ds.profiles["profile_id"]
        return {name: ids[rows].tolist() for name, rows in split_profiles(ds, GRU_SPLIT, seed).items() if len(rows)}


def gru_signals(run_dir: Path, files: list[Path], profiles: Profiles) -> tuple[dict, np.ndarray, int]:
    """``(signals, stop, checkpoint step)`` of a ``cellax train`` run free-running over every profile of ``files``
    (which hold ``profiles``, in order), padded like ``profiles``; only the outputs among the DFN targets."""
    import jax

    from cellax.data.loader import iterate_profiles
    from cellax.data.store import open_dataset
    from cellax.train.losses import loss_weights
    from cellax.train.metrics import evaluate_profiles
    from cellax.workflows.evaluate import load_run

    with jax.enable_x64(False):
        config, task, stats, model, step = load_run(run_dir)
        items = []
        for path in files:
            with open_dataset(path) as ds:
                items += list(iterate_profiles(ds, range(len(ds)), [*task.inputs, *task.outputs]))
        if [p["profile_id"] for p in items] != profiles.profile_id.tolist():
            raise ValueError(f"{files} do not hold the held-out profiles {profiles.profile_id.tolist()} in order")
        _, predictions = evaluate_profiles(model, task, stats, items, config.loss.kind,
                                           loss_weights(task.outputs, config.loss.weights), config.loss.smooth_l1_beta)
    n = profiles.mask.shape[1]
    signals = {name: np.stack([np.pad(pred[:, j], (0, n - len(pred)), mode="edge") for pred in predictions])
               for j, name in enumerate(task.outputs) if name in TARGETS}
    return signals, np.array([len(pred) - 1 for pred in predictions]), step


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


MODELS = {"spme": "plain cellax SPMe", "spme_refit": "SPMe refitted by cellax fit (training profiles)",
          "dfn": "plain cellax DFN on a coarse mesh (the hybrid's backbone, when model.backbone is DFN)",
          "hybrid": "hybrid (learned corrections in the SPMe, or in the coarse DFN)",
          "gru": "GRU (cellax train, simulate task), free-running"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "dfn.h5")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "hybrid" / "dfn.yaml")
    parser.add_argument("--data-config", type=Path, default=ROOT / "configs" / "data" / "dfn.yaml",
                        help="data config that generates --data when it is missing")
    parser.add_argument("--steps", type=int, default=400, help="hybrid training steps")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "bench_hybrid_vs_dfn")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --run-dir")
    parser.add_argument("--trained", action="store_true",
                        help="--run-dir already holds the finished hybrid of --config: use it instead of training "
                             "(its split/ datasets are written anew)")
    parser.add_argument("--fit-profiles", type=int, default=4, help="training profiles the SPMe is refitted on")
    parser.add_argument("--fit-steps", type=int, default=20, help="Levenberg-Marquardt steps of the refit")
    parser.add_argument("--gru-config", type=Path, default=ROOT / "configs" / "train" / "simulate_gru.yaml")
    parser.add_argument("--gru-seconds", type=float, default=300.0, help="the GRU's training budget (wall s)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hybrid_vs_dfn.json")
    args = parser.parse_args()
    if not args.trained:
        refuse_existing(parser, args.run_dir, args.overwrite)
    elif not (args.run_dir / "config.json").exists():
        parser.exit(2, f"error: --trained: {args.run_dir} is not a hybrid run folder (no config.json)\n")
    load_before = os.getloadavg()
    ensure_data(args.data, args.data_config)
    started = time.perf_counter()
    if args.trained:
        try:
            config, summary = trained_hybrid(args.config, args.data, args.run_dir)
        except (OSError, ValueError) as err:
            parser.exit(2, f"error: {err}\n")
    else:
        config, summary = train_hybrid(args.config, args.data, args.steps, args.run_dir, overwrite=args.overwrite)

    from cellax.hybrid.data import write_split
    from cellax.hybrid.train import load_run

    files = write_split(config, args.run_dir / "split", overwrite=args.trained)  # derived from the data: rewritten
    refit = refit_spme(files["train"], args.fit_profiles, args.fit_steps, args.run_dir / "fit")
    gru = train_gru(args.gru_config, files["train"], args.run_dir / "gru", args.gru_seconds)
    _, hybrid, params, data_config = load_run(args.run_dir)
    held, rows, n_train = held_out(config)
    refit_params = params.with_values(refit["values"])
    results, signals = {}, {}
    baselines = physics_baselines(config, hybrid)
    spme = baselines["spme"]
    for name, model, p in (("spme", spme, params), ("spme_refit", spme, refit_params),
                           *((name, model, params) for name, model in baselines.items() if name != "spme"),
                           ("hybrid", hybrid, params)):
        sig, stop = run_model(model, p, held)
        signals[name], results[name] = sig, errors(sig, stop, held)
    sig, stop, gru["checkpoint_step"] = gru_signals(args.run_dir / "gru", [files["test"], files["holdout"]], held)
    signals["gru"], results["gru"] = sig, errors(sig, stop, held)
    capacity = float(params.scalars["nominal_capacity_ah"])
    accuracy = tables(results, held, capacity, rows)
    plot_report(args.run_dir, held, results, signals, np.arange(len(held)), capacity)
    gru["profile_ids"] = gru_split_ids(files["train"], gru["config"]["split_seed"])
    speed = {name: throughput(model, params, held) for name, model in baselines.items()}
    speed.update(hybrid=throughput(hybrid, params, held), dfn_pybamm_idaklu=dfn_throughput(data_config, held))
    test, holdout = accuracy["test"], accuracy["holdout"]

    def ratio(table, model, key):
        return table[model]["all"][key] / max(table["hybrid"]["all"][key], 1e-12)

    targets = {}
    for name, table in (("test", test), ("holdout_0_10_degC", holdout)):
        h = table["hybrid"]["all"]
        if not h.get("profiles"):
            continue
        targets[name] = {
            "voltage_rmse_le_2mv": h["rmse_voltage_mv"] <= 2.0,
            "voltage_rmse_5x_below_spme": ratio(table, "spme", "rmse_voltage_mv") >= 5.0,
            "voltage_rmse_ratio_spme_over_hybrid": ratio(table, "spme", "rmse_voltage_mv"),
            "voltage_rmse_ratio_spme_refit_over_hybrid": ratio(table, "spme_refit", "rmse_voltage_mv"),
            "voltage_rmse_ratio_gru_over_hybrid": ratio(table, "gru", "rmse_voltage_mv"),
            **({"voltage_rmse_ratio_backbone_over_hybrid": ratio(table, "dfn", "rmse_voltage_mv")} if "dfn" in table else {}),
            "anode_potential_rmse_le_3mv": h["rmse_anode_potential_mv"] <= 3.0,
            "temperatures_within_0p3k": max(h["max_core_temp_k"], h["max_surface_temp_k"]) <= 0.3,
        }
    c_rate = held.rms_current_a / capacity
    per_profile = [
        {"profile_id": int(held.profile_id[i]), "set": "test" if i < rows["test"].size else "holdout",
         "kind": str(held.kind[i]), "rms_c_rate": float(c_rate[i]), "ambient_degc": float(held.ambient_temp_degc[i]),
         "rmse_voltage_mv": {name: float(np.sqrt(err["sse_voltage_v"][i] / max(err["n"][i], 1)))
                             for name, err in results.items()}}
        for i in range(len(held))
    ]
    targets["throughput_ge_0p5x_spme"] = speed["hybrid"] / speed["spme"] >= 0.5
    targets["throughput_ge_50x_dfn"] = speed["hybrid"] / speed["dfn_pybamm_idaklu"] >= 50
    result = {
        "benchmark": "hybrid_vs_dfn",
        "models": MODELS,
        "data": {"path": str(args.data), "profiles": int(len(held) + n_train), "train": n_train,
                 "test": int(rows["test"].size), "holdout_0_10_degC": int(rows["holdout"].size),
                 "held_out_profile_ids": {k: held.profile_id[v].tolist() for k, v in rows.items()},
                 "duration_s": float(held.mask.sum(1).max() * held.dt_s)},
        "training": {"steps": summary["steps"], "wall_s": summary["train_wall_s"], "trained_before": args.trained,
                     "final_loss": summary["history"][-1]["loss"] if summary["history"] else None,
                     "config": json.loads(config.model_dump_json()), "learned": hybrid.learned(params)},
        "refit": refit,
        "gru": gru,
        "accuracy": {"test": test, "holdout_0_10_degC": holdout},
        "per_profile": per_profile,
        "throughput_cell_s_per_s": speed,
        "throughput_ratios": {"hybrid_over_spme": speed["hybrid"] / speed["spme"],
                              "hybrid_over_dfn": speed["hybrid"] / speed["dfn_pybamm_idaklu"],
                              "spme_over_dfn": speed["spme"] / speed["dfn_pybamm_idaklu"],
                              **({"cellax_dfn_over_spme": speed["dfn"] / speed["spme"],
                                  "cellax_dfn_over_dfn": speed["dfn"] / speed["dfn_pybamm_idaklu"]} if "dfn" in speed else {})},
        "targets": targets,
        "wall_s": time.perf_counter() - started,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for picture in ("overlay.png", "error_vs_band.png"):
        shutil.copy(args.run_dir / picture, args.out.parent / f"{args.out.stem}_{picture}")
    for set_name, table in (("test", test), ("holdout", holdout)):
        for name, bands in table.items():
            row = bands["all"]
            if row.get("profiles"):
                print(f"{set_name:8} {name:10} V {row['rmse_voltage_mv']:.2f} mV (max {row['max_voltage_mv']:.1f}), "
                      f"Ua {row.get('rmse_anode_potential_mv', float('nan')):.2f} mV, "
                      f"Tcore {row['rmse_core_temp_k']:.3f} K, Tsurf {row['rmse_surface_temp_k']:.3f} K")
    print(json.dumps({k: result[k] for k in ("data", "throughput_ratios", "targets")}, indent=1))


if __name__ == "__main__":
    main()
