"""Charging 10 % → 80 % SOC at 25 °C: PPO and the gradient-optimised protocol against the best safe CC-CV.

Runs ``cellax rl train configs/rl/fast_charge.yaml`` (PPO over its seeds, then the
protocol optimised by gradients through episodes, then the evaluation from the same
initial conditions) into ``--work``, and writes ``benchmarks/results/rl_charging.json``
(the config, training wall times, every policy's charge time, peak temperatures,
minimum anode potential and violation counts) and ``rl_charging.png`` (current,
voltage, temperatures, SOC and anode potential of the best safe CC-CV, the best PPO
seed and the protocol). Target: both ≥ 15 % faster than the best CC-CV that keeps
the same limits, with zero plating and temperature violations.

Run: ``python benchmarks/rl_charging.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "configs" / "rl" / "fast_charge.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_rl_charging")
    parser.add_argument("--out", type=Path, default=RESULTS / "rl_charging.json")
    args = parser.parse_args()

    from cellax.config import load_config
    from cellax.rl.config import RLConfig
    from cellax.workflows.rl import evaluate_run, format_report, safe, train_run

    config = load_config(args.config, RLConfig).model_copy(update={"out": args.work})
    if (args.work / "config.json").exists():
        raise SystemExit(f"{args.work} holds a run; remove it or pass another --work")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = os.getloadavg()
    run_dir = train_run(config, progress=False)
    report = evaluate_run(run_dir)
    print(format_report(report))
    plot = args.out.with_suffix(".png")
    shutil.copyfile(report.pop("plot"), plot)
    report.pop("run")
    metrics, best = report["metrics"], report["best_safe_cccv"]
    met = {}
    for name in (report["best_ppo"], "gradient_protocol"):
        faster = report.get(f"{name}_faster_than_best_cccv_pct")
        met[name] = bool(faster is not None and faster >= 15 and safe(metrics[name]))
    result = {
        "benchmark": "rl_charging",
        "command": f"cellax rl train {args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config}",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "created_utc": started,
        "config": json.loads((run_dir / "config.json").read_text()),
        "training": json.loads((run_dir / "timing.json").read_text()),
        "evaluation": report,
        "plot": str(plot.relative_to(ROOT)) if plot.is_relative_to(ROOT) else str(plot),
        "target": "PPO and the gradient-optimised protocol >= 15 % faster than the best CC-CV with zero plating "
                  "and temperature violations",
        "met": met,
        "best_safe_cccv_charge_time_s": metrics[best]["charge_time_s"] if best else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} and {plot}")


if __name__ == "__main__":
    main()
