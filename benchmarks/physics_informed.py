"""Do the physics-informed loss terms help a sequence model? Same budgets, several seeds, with and without.

Two studies (issue 11, item 5), each a GRU (the quickstart's model) trained for the same number of steps
with and without the ``physics:`` terms, over ``--seeds`` seeds:

* **data efficiency**: train on 10 % of the profiles of the 15-35 °C dataset, test on the 80 % held out;
* **extrapolation**: train on the 15-35 °C dataset, test on every profile of a 0-10 °C and a 40-45 °C one.

Data: ``configs/studies/physics_{train,cold,hot}.yaml``. ``--backend pybamm`` simulates them with PyBaMM's
DFN (the reference; 176 half-hour profiles at ``--profiles-scale 4`` took 25 min on 2 loaded cores); ``--backend jax`` with cellax's SPMe (seconds). The
``cell_model`` term (consistency with the SPMe) is left out on SPMe data, where it would be the data's
own generator. Datasets are made once in ``--work`` and reused; runs go there too. Writes
``benchmarks/results/physics_informed_<backend>.json`` with every run's test errors, means and standard
deviations over seeds, and the relative change with the physics terms.

    python benchmarks/physics_informed.py --backend jax --seeds 3 --steps 500 --profiles-scale 4
    python benchmarks/physics_informed.py --backend pybamm --seeds 3 --steps 500 --profiles-scale 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

import yaml  # noqa: E402

from cellax.config import validate_config  # noqa: E402
from cellax.data.config import DataConfig  # noqa: E402
from cellax.train.config import TrainConfig  # noqa: E402

DATASETS = ("train", "cold", "hot")
OUTPUTS = ("voltage_v", "surface_temp_degc", "core_temp_degc", "soc", "ocv_v")


def make_data(work: Path, backend: str, profiles_scale: float) -> dict[str, Path]:
    from cellax.data.generate import generate

    paths = {}
    for name in DATASETS:
        raw = yaml.safe_load((ROOT / "configs" / "studies" / f"physics_{name}.yaml").read_text())
        raw["backend"] = backend
        raw["simulation"]["model"] = "DFN" if backend == "pybamm" else "SPMe"
        raw["n_profiles"] = max(4, int(round(raw["n_profiles"] * profiles_scale)))
        config = validate_config(DataConfig, raw, source=f"physics_{name}.yaml")
        paths[name] = work / f"{backend}_{name}.h5"
        if not paths[name].exists():
            print(f"simulating {paths[name]} ({config.n_profiles} profiles, {backend}) ...", flush=True)
            generate(config, paths[name], workers=2 if backend == "pybamm" else 1, progress=True, log=print)
    return paths


def train_config(name: str, data: Path, out: Path, seed: int, steps: int, split, physics: dict | None) -> TrainConfig:
    return TrainConfig(
        name=name, data=data, out=out, task="simulate", model={"kind": "gru", "width": 64, "n_layers": 2},
        charge_throughput=True, conditions=["heat_transfer_coeff"], residual=True, chunk_len=256,
        chunks_per_window=2, batch_size=32, steps=steps, eval_every=max(steps // 6, 1),
        checkpoint_every=max(steps // 6, 1), eval_profiles=4, optimizer={"learning_rate": 3e-3, "warmup_steps": 50},
        split_fractions=split, seed=seed, physics=physics,
    )


def errors(report: dict) -> dict:
    return {name: report["outputs"][name]["rmse"] for name in OUTPUTS} | {"loss": report["loss"]}


def summarise(runs: list[dict], key: str) -> dict:
    """Mean and std over seeds of each error, per arm, and the relative change with physics."""
    out = {}
    for arm in ("plain", "physics"):
        values = {m: [r[key][m] for r in runs if r["arm"] == arm] for m in (*OUTPUTS, "loss")}
        out[arm] = {m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)} for m, v in values.items()}
    out["change_with_physics_pct"] = {
        m: 100.0 * (out["physics"][m]["mean"] / out["plain"][m]["mean"] - 1.0) for m in (*OUTPUTS, "loss")
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["jax", "pybamm"], default="jax")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--weight", type=float, default=0.01, help="weight of every physics term")
    parser.add_argument("--profiles-scale", type=float, default=1.0, help="multiply the configs' profile counts")
    parser.add_argument("--terms", help="comma-separated physics terms (default: all the backend allows)")
    parser.add_argument("--studies", default="data_efficiency,extrapolation", help="comma-separated studies to run")
    parser.add_argument("--cell-model-ambient", type=lambda v: [float(x) for x in v.split(",")], metavar="LOW,HIGH",
                        help="evaluate cell_model on collocation windows at these ambients (degC; "
                             "physics.cell_model_ambient_degc) instead of the training windows")
    parser.add_argument("--arms", default="plain,physics", help="comma-separated arms to run (a compute-matched "
                        "control: --arms plain with more --steps in another --work)")
    parser.add_argument("--tag", default="", help="suffix of the result file and run folders (for ablations)")
    parser.add_argument("--work", type=Path, default=Path("runs/physics_informed"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    from cellax.workflows.evaluate import evaluate
    from cellax.train.loop import train

    args.work.mkdir(parents=True, exist_ok=True)
    data = make_data(args.work, args.backend, args.profiles_scale)
    terms = ["charge", "thermal", "ocv"] + (["cell_model"] if args.backend == "pybamm" else [])
    terms = args.terms.split(",") if args.terms else terms
    physics = {term: args.weight for term in terms}
    if args.cell_model_ambient:
        physics["cell_model_ambient_degc"] = args.cell_model_ambient
    splits = {"data_efficiency": (0.1, 0.1, 0.8), "extrapolation": (0.8, 0.2, 0.0)}
    studies = {name: splits[name] for name in args.studies.split(",")}
    result = {
        "benchmark": "physics_informed", "backend": args.backend,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_start": os.getloadavg()},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": {"model": "gru 64x2 (quickstart)", "steps": args.steps, "seeds": args.seeds, "physics": physics,
                  "data": {k: str(v) for k, v in data.items()}, "splits": studies},
        "runs": [],
    }
    path = args.out / f"physics_informed_{args.backend}{args.tag}.json"
    for study, split in studies.items():
        for seed in range(args.seeds):
            for arm in args.arms.split(","):
                name = f"{study}_{arm}{args.tag if arm == 'physics' else ''}_s{seed}"
                out = args.work / f"{args.backend}_{name}"
                config = train_config(name, data["train"], out, seed, args.steps, split,
                                      physics if arm == "physics" else None)
                started = time.perf_counter()
                if not (out / "eval").exists():
                    if out.exists():
                        train(config, resume=True, progress=False, log=lambda *_: None)
                    else:
                        train(config, progress=False, log=lambda *_: None)
                run = {"study": study, "arm": arm, "seed": seed, "train_s": time.perf_counter() - started}
                if study == "data_efficiency":
                    run["test"] = errors(evaluate(out, "test", plots=0))
                else:
                    run["cold"] = errors(evaluate(out, data=data["cold"], plots=0))
                    run["hot"] = errors(evaluate(out, data=data["hot"], plots=0))
                result["runs"].append(run)
                print(json.dumps(run), flush=True)
                result["machine"]["load_average_end"] = os.getloadavg()
                path.write_text(json.dumps(result, indent=2) + "\n")
    runs = result["runs"]
    tables = {"data_efficiency_test": ("data_efficiency", "test"), "extrapolation_cold_0_10_degc": ("extrapolation", "cold"),
              "extrapolation_hot_40_45_degc": ("extrapolation", "hot")}
    if set(args.arms.split(",")) == {"plain", "physics"}:
        result["summary"] = {name: summarise([r for r in runs if r["study"] == study], key)
                             for name, (study, key) in tables.items() if study in studies}
    result["target"] = "physics terms give >= 30 % lower error out of distribution"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result.get("summary"), indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
