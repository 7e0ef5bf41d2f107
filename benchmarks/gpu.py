"""The accelerator figures in one run: cell model, environment, sequence-model training and PPO.

Each measurement is written to ``--out`` as soon as it is taken (an interrupted run
keeps what it measured), and a failing part is recorded with its error and the run
goes on. Parts (``--only`` picks some):

* ``cell``: cell-hours/s of 1 h dynamic SPMe + two-node thermal at 1 s (Chen2020,
  PyBaMM's mesh) for each ``--cell-batches`` size in float64 and float32, with a step per
  sample and with steps chosen from the input (``max_samples_per_step=16``), against
  PyBaMM on all of the machine's CPU cores (``--pybamm-profiles`` profiles);
* ``env``: FastCharge steps/s (PyBaMM mesh, float64 and float32) at each
  ``--env-sizes``, against PyBaMM's gymnasium env on one core;
* ``train``: training sample-steps/s of the reference Transformer
  (``models.SPEED_MODELS``), a ~26 M-parameter Transformer in bfloat16 (width 512,
  8 layers, 8 heads) beside the same PyTorch model on the same device, and the
  reference Mamba (cellax only);
* ``ppo``: PPO wall time of ``configs/rl/fast_charge.yaml`` (``--ppo-updates`` to shorten).

``--budget-s`` shares a time budget among the parts (``SHARES``; time a part leaves
unused passes to the next): a part starts no new measurement past its share's end and
records the ones it skipped, so a run cut to fit a lease still reaches every part.

Goals on an H100/H200-class GPU: ≥ 10⁵ cell-hours/s; ≥ 10⁷ environment steps/s; the
26 M Transformer ≥ 320 k time-steps/s and ≥ 1× PyTorch; PPO fast charging ≤ 20 s.
The defaults are sized for such a GPU (a few minutes); ``--smoke`` runs every part
end to end with tiny sizes on any machine (its figures mean nothing).

Run: ``python benchmarks/gpu.py`` (writes ``benchmarks/results/gpu.json`` naming the device).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from devices import use_host_cores  # noqa: E402

CORES = use_host_cores()
os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("cell", "env", "train", "ppo")
SHARES = {"cell": 0.35, "env": 0.25, "train": 0.25, "ppo": 0.15}
# issue 13's goals on an H100/H200-class GPU; PPO's is a ceiling, the others floors
GOALS = {"cell_hours_per_s": 1e5, "env_steps_per_s": 1e7, "transformer_26m_time_steps_per_s": 3.2e5,
         "transformer_26m_vs_torch": 1.0, "ppo_seconds": 20.0}
BIG_TRANSFORMER = {"width": 512, "n_layers": 8, "n_heads": 8, "compute_dtype": "bfloat16"}
SMOKE = {"cell_batches": [2, 4], "pybamm_profiles": 2, "cell_duration_s": 120.0, "env_sizes": [8, 16], "env_steps": 5,
         "pybamm_steps": 5, "train_batch": 2, "train_window": 64, "train_batches": 2, "profiles": 4,
         "big_transformer": {"width": 32, "n_layers": 1, "n_heads": 2, "compute_dtype": "bfloat16"},
         "ppo_updates": 2, "ppo_envs": 8, "repeats": 1}


class Results:
    """The JSON document, rewritten whole (to a temporary file, then renamed) after every measurement."""

    def __init__(self, path: Path, header: dict):
        self.path, self.doc = path, {**header, "parts": {}}
        self.save()

    def add(self, part: str, key: str, value) -> None:
        self.doc["parts"].setdefault(part, {})[key] = value
        self.doc["loadavg_last"] = os.getloadavg()
        self.doc["against_goals"] = against_goals(self.doc["parts"])
        self.save()
        print(part, key, json.dumps(value)[:300], flush=True)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.doc, indent=2) + "\n")
        tmp.replace(self.path)


def against_goals(parts: dict) -> dict:
    """For each of ``GOALS``: the best figure measured so far, the row it comes from, and whether it meets the goal."""
    def best(part: str, field: str, anchor: str):
        rows = {key: row[field] for key, row in parts.get(part, {}).items()
                if key != anchor and isinstance(row, dict) and field in row}
        key = max(rows, key=rows.get, default=None)
        return (rows[key], f"{part}.{key}") if key else (None, None)

    big = parts.get("train", {}).get("transformer_26m_bf16", {})
    ppo = parts.get("ppo", {}).get("fast_charge", {})
    figures = {
        "cell_hours_per_s": best("cell", "cell_hours_per_s", "pybamm_all_cores"),
        "env_steps_per_s": best("env", "steps_per_s", "pybamm_one_core"),
        "transformer_26m_time_steps_per_s": (big.get("cellax_sample_steps_per_s"), "train.transformer_26m_bf16"),
        "transformer_26m_vs_torch": (big.get("ratio_cellax_over_torch"), "train.transformer_26m_bf16"),
        "ppo_seconds": (ppo.get("ppo_seconds"), "ppo.fast_charge"),
    }
    out = {}
    for name, (value, source) in figures.items():
        met = None if value is None else (value <= GOALS[name] if name == "ppo_seconds" else value >= GOALS[name])
        out[name] = {"value": value, "goal": GOALS[name], "met": met, "from": source if value is not None else None}
    return out


class Budget:
    """Deadlines for the parts: each may measure until its cumulative share of ``seconds`` has passed."""

    def __init__(self, seconds: float | None, parts: list[str]):
        self.start, self.deadlines, elapsed = time.perf_counter(), {}, 0.0
        total = sum(SHARES[p] for p in parts)
        for part in parts:
            elapsed += SHARES[part] / total
            self.deadlines[part] = float("inf") if seconds is None else self.start + elapsed * seconds

    def allows(self, results: Results, part: str, key: str) -> bool:
        """Whether ``part`` may start measuring ``key`` now; records the skip when not."""
        if time.perf_counter() < self.deadlines[part]:
            return True
        results.add(part, key, {"skipped": f"time budget (its part's share ended at "
                                           f"{self.deadlines[part] - self.start:.0f} s of the run)"})
        return False


def cell(results: Results, budget: Budget, batches: list[int], pybamm_profiles: int, duration_s: float, repeats: int) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import rom_vs_pybamm as rom

    params = rom.load_parameter_set("Chen2020")
    ambient = float(params.scalars["ambient_temp_k"])
    model = rom.SPMe()
    config = rom.ProfileConfig(kinds={"dynamic": 1.0}, duration_s=duration_s)
    distinct = min(max(batches), 256)  # profiles are tiled up to the batch: generating 64 k takes minutes
    profiles = np.stack([rom.make_profile("dynamic", rom.profile_rng(11, k), rom.LG_M50, config, 0.5)
                         for k in range(distinct)])
    hours = duration_s / 3600

    with rom.pybamm_pool(CORES) as pool:
        wall = rom.pybamm_parallel(rom._pybamm_dynamic, list(profiles[:pybamm_profiles]), pool)
    results.add("cell", "pybamm_all_cores", {"cores": CORES, "profiles": pybamm_profiles, "wall_s": wall,
                                             "cell_hours_per_s": pybamm_profiles * hours / wall})

    def run(p, current, soc, max_samples_per_step=None):
        sol = rom.simulate(model, p, current, 1.0, soc, ambient, max_samples_per_step=max_samples_per_step)
        return sol.signals["voltage_v"][-1], sol.stop_index  # the last sample: nothing big goes back to the host

    # a step per sample, and steps chosen from the input (one batch-native loop over the whole batch)
    variants = {"": jax.jit(jax.vmap(run, in_axes=(None, 0, 0))),
                "_steps_from_input_16": jax.jit(jax.vmap(lambda p, c, s: run(p, c, s, 16), in_axes=(None, 0, 0)))}
    for n in batches:  # every variant at a size before the next size: a cut run keeps comparable rows
        for dtype in ("float64", "float32"):
            p = params.astype(getattr(jnp, dtype))
            current = jnp.asarray(np.resize(profiles, (n, profiles.shape[1])), dtype=dtype)
            soc = jnp.full(n, 0.5, dtype=dtype)
            for tag, batch in variants.items():
                if not budget.allows(results, "cell", f"{dtype}_batch_{n}{tag}"):
                    continue
                started = time.perf_counter()
                jax.block_until_ready(batch(p, current, soc))
                first = time.perf_counter() - started
                seconds, _ = rom.timed(lambda: batch(p, current, soc), repeats)
                results.add("cell", f"{dtype}_batch_{n}{tag}", {"compile_and_first_s": first, "run_s": seconds,
                                                                "cell_hours_per_s": n * hours / seconds})


def env(results: Results, budget: Budget, sizes: list[int], steps: int, pybamm_steps: int, repeats: int) -> None:
    import jax.numpy as jnp
    import rl_env

    parameter_set = rl_env.load_parameter_set("Chen2020")
    var_pts = rl_env.SPMe(*rl_env.MESHES["pybamm"]).pybamm_var_pts
    results.add("env", "pybamm_one_core", rl_env.pybamm_rate(pybamm_steps, var_pts, 2.0, repeats))
    envs = {dtype: rl_env.FastCharge(parameter_set, mesh=rl_env.MESHES["pybamm"], dtype=getattr(jnp, dtype))
            for dtype in ("float64", "float32")}
    for n in sizes:
        for dtype, fast_charge in envs.items():
            if not budget.allows(results, "env", f"{dtype}_{n}_envs"):
                continue
            method = {"solver": fast_charge.solver, "substeps": fast_charge.substeps}  # the env's default stepping
            results.add("env", f"{dtype}_{n}_envs", {**method, **rl_env.cellax_rate(fast_charge, n, steps, repeats, 2.0)})


def train(results: Results, budget: Budget, work: Path, profiles: int, batch: int | None, window: int | None, num_batches: int,
          big: dict, repeats: int) -> None:
    import models

    data = work / "bench_dynamic.h5"
    models.make_dataset(data, profiles)
    common = dict(batch_size=batch, window=window, num_batches=num_batches, repeats=repeats, rounds=1)
    runs = {"transformer_reference": dict(attention=("auto", "flash")),
            "transformer_26m_bf16": dict(model=big, attention=("auto", "flash")),
            "mamba_reference": dict(config_name="simulate_mamba")}
    for key, options in runs.items():
        if budget.allows(results, "train", key):
            results.add("train", key, models.throughput(data, **options, **common))


def ppo(results: Results, work: Path, updates: int | None, envs: int | None) -> None:
    import jax

    from cellax.config import load_config
    from cellax.rl.config import RLConfig
    from cellax.workflows.rl import train_run

    config = load_config(ROOT / "configs" / "rl" / "fast_charge.yaml", RLConfig)
    overrides = {"total_updates": updates, "num_envs": envs}
    ppo_config = {**config.ppo.model_dump(), **{k: v for k, v in overrides.items() if v}}
    if updates:
        ppo_config["updates_per_segment"] = min(ppo_config["updates_per_segment"], updates)
    if jax.default_backend() != "cpu":
        ppo_config["env_block"] = 0  # cache-sized blocks pay on a CPU; an accelerator wants the whole batch at once
    ppo_config = type(config.ppo).model_validate(ppo_config)
    run_dir = work / f"ppo_{time.strftime('%Y%m%dT%H%M%S')}"
    config = config.model_copy(update={"ppo": ppo_config, "out": run_dir,
                                       "protocol": config.protocol.model_copy(update={"iterations": 1})})
    started = time.perf_counter()
    train_run(config, progress=False, log=lambda *_: None)
    timing = json.loads((run_dir / "timing.json").read_text())
    results.add("ppo", "fast_charge", {"ppo": ppo_config.model_dump(), "ppo_seconds": timing["ppo_seconds"],
                                      "ppo_env_steps": timing["ppo_env_steps"],
                                      "wall_with_one_protocol_iteration_s": time.perf_counter() - started})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=PARTS, action="append")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for every part (an end-to-end check)")
    parser.add_argument("--cell-batches", type=int, nargs="+", default=[1024, 8192, 65536])
    parser.add_argument("--cell-duration-s", type=float, default=3600.0)
    parser.add_argument("--pybamm-profiles", type=int, default=None, help="default: two per CPU core")
    parser.add_argument("--env-sizes", type=int, nargs="+", default=[1024, 16384, 131072])
    parser.add_argument("--env-steps", type=int, default=50)
    parser.add_argument("--pybamm-steps", type=int, default=100)
    parser.add_argument("--train-batch", type=int, help="default: the reference config's")
    parser.add_argument("--train-window", type=int, help="default: the reference config's")
    parser.add_argument("--train-batches", type=int, default=10)
    parser.add_argument("--profiles", type=int, default=16, help="1 h profiles in the training dataset")
    parser.add_argument("--ppo-updates", type=int, help="default: the config's")
    parser.add_argument("--ppo-envs", type=int, help="default: the config's")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-s", type=float, help="seconds to share among the parts (default: no limit)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_gpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    args = parser.parse_args()
    big = BIG_TRANSFORMER
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
        big = SMOKE["big_transformer"]
        args.work = args.work.with_name(args.work.name + "_smoke")

    import jax

    device = jax.devices()[0]
    results = Results(args.out, {
        "benchmark": "gpu", "device": str(device), "device_kind": device.device_kind, "backend": jax.default_backend(),
        "device_count": jax.device_count(), "cpus": CORES, "platform": platform.platform(), "smoke": args.smoke,
        "budget_s": args.budget_s,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg_start": os.getloadavg(),
        "goals": GOALS,
    })
    args.work.mkdir(parents=True, exist_ok=True)
    chosen = args.only or list(PARTS)
    budget = Budget(args.budget_s, chosen)
    parts = {
        "cell": lambda: cell(results, budget, args.cell_batches, args.pybamm_profiles or 2 * CORES, args.cell_duration_s,
                             args.repeats),
        "env": lambda: env(results, budget, args.env_sizes, args.env_steps, args.pybamm_steps, args.repeats),
        "train": lambda: train(results, budget, args.work, args.profiles, args.train_batch, args.train_window,
                               args.train_batches, big, args.repeats),
        "ppo": lambda: ppo(results, args.work, args.ppo_updates, args.ppo_envs),
    }
    for name in chosen:
        if not budget.allows(results, name, "start"):
            continue
        try:
            parts[name]()
        except Exception as error:  # noqa: BLE001 - one failing part must not lose the others
            results.add(name, "error", "".join(traceback.format_exception_only(error)).strip())
            traceback.print_exc()
    results.doc["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results.save()
    for name, row in results.doc.get("against_goals", {}).items():
        verdict = {True: "met", False: "NOT met", None: "not measured"}[row["met"]]
        value = "-" if row["value"] is None else f"{row['value']:.4g}"
        print(f"{name:34s} {value:>12}  goal {row['goal']:.4g}: {verdict} ({row['from']})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
