"""The ``cellax`` command: parses arguments, calls the library, reports.

Errors the user can fix (bad config, existing output, foreign file) print one clear
message to stderr and exit with status 2; nothing else is printed as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

QUICKSTART_DIR = Path("runs/quickstart")


def _cmd_generate(args) -> None:
    from cellax.config import load_config
    from cellax.data.config import DataConfig
    from cellax.data.generate import Shard, generate

    config = load_config(args.config, DataConfig)
    if args.backend and args.backend != config.backend:
        config = config.model_copy(update={"backend": args.backend})
    report = generate(
        config,
        args.out,
        workers=args.workers,
        resume=args.resume,
        overwrite=args.overwrite,
        shard=Shard.parse(args.shard),
        progress=not args.no_progress,
        flush_every=args.flush_every,
    )
    print(
        f"wrote {report.out}: {report.n_profiles} profiles ({report.n_ok} ok), "
        f"simulated {report.n_simulated} now: {report.cell_hours:.2f} cell-hours in {report.wall_s:.1f} s "
        f"({report.cell_hours_per_s:.2f} cell-h/s)"
    )


def _cmd_info(args) -> None:
    from cellax.data.store import open_dataset
    from cellax.data.summary import format_summary, summarize

    with open_dataset(args.file) as ds:
        summary = summarize(ds)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))


def _cmd_plot(args) -> None:
    from cellax.data.plots import plot_dataset

    paths = plot_dataset(args.file, args.out, n_profiles=args.profiles)
    print("\n".join(f"wrote {p}" for p in paths))


def _cmd_merge(args) -> None:
    from cellax.data.store import merge_datasets, open_dataset

    merge_datasets(args.inputs, args.out, overwrite=args.overwrite)
    with open_dataset(args.out) as ds:
        n_profiles, missing = len(ds), ds.missing_profile_ids
    print(f"wrote {args.out}: {n_profiles} profiles from {len(args.inputs)} file(s)")
    if missing:
        print(f"note: {len(missing)} profile(s) of the job are not in the inputs (first: {missing[:5]}); "
              "recorded as missing_profile_ids in the file")


def _cmd_quickstart(args) -> None:
    from cellax.workflows.quickstart import quickstart

    quickstart(args.config, args.train_config, args.out, steps=args.steps, workers=args.workers)


def _cmd_train(args) -> None:
    from cellax.config import load_config
    from cellax.train.config import TrainConfig
    from cellax.train.loop import train

    config = load_config(args.config, TrainConfig)
    if args.out:
        config = config.model_copy(update={"out": args.out})
    run_dir = train(config, resume=args.resume, progress=not args.no_progress, memory_gb=args.memory_gb)
    print(f"run: {run_dir} (metrics.jsonl, checkpoints/); evaluate with: cellax evaluate {run_dir}")


def _cmd_evaluate(args) -> None:
    from cellax.workflows.evaluate import evaluate, format_report, report_dir

    report = evaluate(args.run_dir, split=args.split, max_profiles=args.max_profiles, data=args.data)
    print(format_report(report))
    print(f"report: {report_dir(args.run_dir, args.split, args.data) / 'report.json'}; plots: {', '.join(report['plots'])}")


def _cmd_fit(args) -> None:
    from cellax.config import load_config
    from cellax.physics.config import FitConfig
    from cellax.workflows.fit import run_fit

    result, report, picture = run_fit(load_config(args.config, FitConfig), args.out, source=str(args.config))
    print(result.summary())
    print(f"\nreport: {report}\nplot:   {picture}")


def _cmd_discover(args) -> None:
    from cellax.config import ConfigError, load_config
    from cellax.discovery.checks import DiscoveryError
    from cellax.discovery.config import DiscoverConfig
    from cellax.discovery.workflow import run

    config = load_config(args.config, DiscoverConfig)
    out_dir = args.out or config.out
    try:
        report = run(config, out_dir)
    except (DiscoveryError, ValueError, OSError) as err:
        raise ConfigError(f"{args.config}: {err}") from None
    for eq in report["equations"]:
        print(eq["text"])
    print(f"\nreport: {out_dir}/report.json\nplots:  {out_dir}/pareto.png, {out_dir}/held_out.png")


def _cmd_rl_train(args) -> None:
    from cellax.config import load_config
    from cellax.rl.config import RLConfig
    from cellax.workflows.rl import evaluate_run, format_report, train_run

    config = load_config(args.config, RLConfig)
    if args.out:
        config = config.model_copy(update={"out": args.out})
    run_dir = train_run(config, progress=not args.no_progress)
    print(f"run: {run_dir}; evaluating against CC-CV ...", flush=True)
    report = evaluate_run(run_dir)
    print(format_report(report))
    print(f"report: {run_dir / 'eval' / 'report.json'}; plot: {report.get('plot')}")


def _cmd_rl_evaluate(args) -> None:
    from cellax.workflows.rl import evaluate_run, format_report

    if not (args.run_dir / "config.json").exists():
        from cellax.config import ConfigError

        raise ConfigError(f"{args.run_dir} is not a cellax rl run (no config.json)")
    report = evaluate_run(args.run_dir)
    print(format_report(report))
    print(f"report: {args.run_dir / 'eval' / 'report.json'}; plot: {report.get('plot')}")


def _cmd_export(args) -> None:
    from cellax.deploy.export import export_run

    manifest = export_run(args.run_dir, args.format, args.out)
    files = ", ".join(entry["file"] for entry in manifest["files"].values())
    print(f"exported {args.run_dir} as {args.format} -> {args.out} ({files}, manifest.json)")


def _cmd_serve(args) -> None:
    from cellax.deploy.service import serve

    serve(args.runs, port=args.port, token_file=args.token_file, host=args.host, state_dir=args.state_dir,
          checkpoint_every=args.checkpoint_every, idle_expiry_s=args.idle_expiry_s, max_wait_ms=args.max_wait_ms)
def _cmd_hpo(args) -> None:
    from cellax.hpo import check_storage, load_hpo_config, run_study, write_report

    config, base = load_hpo_config(args.config)
    if args.out:
        config = config.model_copy(update={"out": args.out})
    if args.workers < 1:
        from cellax.config import ConfigError

        raise ConfigError(f"--workers {args.workers}: need at least one")
    url = args.storage or f"sqlite:///{config.out_dir / 'study.db'}"
    if args.storage:
        check_storage(url)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    study = run_study(config, base, url, workers=args.workers)
    summary = write_report(study, config, base, config.out_dir)
    best = summary.get("best")
    print(f"{summary['states']['COMPLETE']} complete, {summary['states']['PRUNED']} pruned, "
          f"{summary['states']['FAIL']} failed of {config.trials} planned")
    if best:
        print(f"best: trial {best['number']}, {summary['objective']} {best['value']:.4g} {best['unit']}; "
              f"train it with: cellax train {summary['best_config']}")
    print(f"report: {config.out_dir / 'summary.md'} ({len(summary['plots'])} PNGs)")
def _cmd_hybrid(args) -> None:
    from cellax.hybrid.evaluate import evaluate_run, format_report

    if args.hybrid_command == "train":
        from cellax.config import load_config
        from cellax.hybrid.config import HybridConfig
        from cellax.hybrid.train import train

        config = load_config(args.config, HybridConfig)
        run_dir = args.out or Path("runs") / config.name
        summary = train(config, run_dir, resume=args.resume, progress=not args.no_progress)
        print(f"run: {run_dir} ({summary['steps']} steps, {summary['train_wall_s']:.0f} s); evaluating ...", flush=True)
    else:
        run_dir = args.run_dir
    print(format_report(evaluate_run(run_dir)))
    print(f"report: {run_dir / 'report.json'}; plots: {run_dir / 'error_vs_band.png'}, {run_dir / 'overlay.png'}")


class _Parser(argparse.ArgumentParser):
    """argparse with its errors in one line (``cellax: error: ...``), like every other refusal."""

    def error(self, message):
        self.exit(2, f"cellax: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cellax", description="Data-driven battery modelling in JAX.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    quick = commands.add_parser(
        "quickstart", help="simulate a small dataset, train a model on it and evaluate it, from any folder",
        description="Runs from any folder: the default configs ship inside cellax; everything is written to "
                    f"./{QUICKSTART_DIR} of the current folder (or --out).")
    quick.add_argument("--config", type=Path,
                       help="data config (default: the quickstart data config shipped with cellax, "
                            "the same as configs/data/quickstart.yaml)")
    quick.add_argument("--out", type=Path, default=QUICKSTART_DIR,
                       help=f"output folder (default ./{QUICKSTART_DIR} of the current folder)")
    quick.add_argument("--train-config", type=Path,
                       help="training config (default: the one shipped with cellax, as configs/train/quickstart.yaml)")
    quick.add_argument("--steps", type=int, help="training steps (default: the training config's)")
    quick.add_argument("--workers", type=int, default=2)
    quick.set_defaults(run=_cmd_quickstart, kept="finished profiles and checkpoints are kept, run it again to continue")

    trainp = commands.add_parser("train", help="train a sequence model of the cell from a training config")
    trainp.add_argument("config", type=Path, help="YAML training config (see configs/train/)")
    trainp.add_argument("--out", type=Path, help="run folder (default: runs/NAME)")
    trainp.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")
    trainp.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    trainp.add_argument("--memory-gb", type=float, help="RAM the run may use (default: what /proc/meminfo says is available)")
    trainp.set_defaults(run=_cmd_train, kept="the last checkpoint is kept, continue with --resume")

    evalp = commands.add_parser("evaluate", help="free-running evaluation of a training run on held-out profiles")
    evalp.add_argument("run_dir", metavar="RUN", type=Path, help="run folder (from cellax train)")
    evalp.add_argument("--split", choices=["test", "val", "train"], default="test")
    evalp.add_argument("--max-profiles", type=int, help="evaluate at most this many profiles")
    evalp.add_argument("--data", type=Path, help="evaluate on every profile of this dataset instead of a split")
    evalp.set_defaults(run=_cmd_evaluate)

    exportp = commands.add_parser("export", help="a run's streaming step as ONNX or StableHLO files with a manifest")
    exportp.add_argument("run_dir", metavar="RUN", type=Path, help="run folder (from cellax train)")
    exportp.add_argument("--format", required=True, help="onnx or stablehlo")
    exportp.add_argument("--out", type=Path, required=True, help="new output folder")
    exportp.set_defaults(run=_cmd_export)

    servep = commands.add_parser("serve", help="serve runs to many live cells over HTTP and WebSocket")
    servep.add_argument("runs", metavar="RUN", type=Path, nargs="+", help="run folders; a session names one by its folder name")
    servep.add_argument("--port", type=int, required=True)
    servep.add_argument("--host", default="127.0.0.1")
    servep.add_argument("--token-file", type=Path, required=True, help="file holding the bearer token")
    servep.add_argument("--state-dir", type=Path, default=Path("serve-state"), help="session checkpoints (default serve-state)")
    servep.add_argument("--checkpoint-every", type=int, default=10, help="checkpoint a session every N samples (default 10)")
    servep.add_argument("--idle-expiry-s", type=float, default=3600.0, help="drop sessions idle this long (default 3600)")
    servep.add_argument("--max-wait-ms", type=float, default=2.0, help="longest a sample waits for its batch (default 2)")
    servep.set_defaults(run=_cmd_serve)

    gen = commands.add_parser("generate", help="simulate a synthetic dataset from a data config")
    gen.add_argument("config", type=Path, help="YAML data config (see configs/data/)")
    gen.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    gen.add_argument("--backend", choices=["pybamm", "jax"], help="simulator (default: the config's)")
    gen.add_argument("--workers", type=int, default=1,
                     help="worker processes (pybamm backend) or batches in flight on as many threads (jax backend); default 1")
    gen.add_argument("--resume", action="store_true", help="finish an interrupted run, keeping its profiles")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing output")
    gen.add_argument("--shard", default="0/1", help="run shard I of N (profile ids i with i %% N == I)")
    gen.add_argument("--flush-every", type=int, default=8, help="profiles per crash-safe part file (default 8)")
    gen.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    gen.set_defaults(run=_cmd_generate, kept="finished profiles are kept, run again with --resume")

    fitp = commands.add_parser("fit", help="identify cell-model parameters from a dataset's profiles")
    fitp.add_argument("config", type=Path, help="YAML fit config (see configs/fit/)")
    fitp.add_argument("--out", type=Path, help="report folder (default: the config's out)")
    fitp.set_defaults(run=_cmd_fit)

    discp = commands.add_parser("discover", help="equation discovery: sparse regression, equations ± uncertainty, Pareto")
    discp.add_argument("config", type=Path, help="YAML discovery config (see configs/discovery/)")
    discp.add_argument("--out", type=Path, help="report folder (default: the config's out)")
    discp.set_defaults(run=_cmd_discover)

    rl = commands.add_parser("rl", help="charging agents: PPO and a gradient-optimised protocol against CC-CV")
    rl_commands = rl.add_subparsers(dest="rl_command", required=True, metavar="SUBCOMMAND")
    rl_train = rl_commands.add_parser("train", help="train PPO and optimise the protocol, then evaluate")
    rl_train.add_argument("config", type=Path, help="YAML rl config (see configs/rl/)")
    rl_train.add_argument("--out", type=Path, help="run folder (default: runs/NAME)")
    rl_train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    rl_train.set_defaults(run=_cmd_rl_train)
    rl_eval = rl_commands.add_parser("evaluate", help="compare a run's agents with CC-CV from the same start")
    rl_eval.add_argument("run_dir", metavar="RUN", type=Path, help="run folder (from cellax rl train)")
    rl_eval.set_defaults(run=_cmd_rl_evaluate)

    hpo = commands.add_parser("hpo", help="hyperparameter search over a train config (Optuna; machines share --storage)")
    hpo.add_argument("config", type=Path, help="YAML study config (see configs/hpo/)")
    hpo.add_argument("--storage", help="SQLAlchemy URL (default sqlite:///OUT/study.db); e.g. postgresql://u:p@host/db")
    hpo.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    hpo.add_argument("--out", type=Path, help="report folder and trial runs (default: the config's out)")
    hpo.set_defaults(run=_cmd_hpo)
    hybrid = commands.add_parser("hybrid", help="hybrid SPMe trained on DFN data")
    hybrid_commands = hybrid.add_subparsers(dest="hybrid_command", required=True, metavar="SUBCOMMAND")
    hybrid_train = hybrid_commands.add_parser("train", help="train a hybrid (or --resume one), then evaluate it")
    hybrid_train.add_argument("config", type=Path, help="YAML hybrid config (see configs/hybrid/)")
    hybrid_train.add_argument("--out", type=Path, help="run folder (default: runs/NAME)")
    hybrid_train.add_argument("--resume", action="store_true", help="continue the run in the run folder")
    hybrid_train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    hybrid_train.set_defaults(run=_cmd_hybrid)
    hybrid_eval = hybrid_commands.add_parser("evaluate", help="SPMe and hybrid against the DFN on held-out profiles")
    hybrid_eval.add_argument("run_dir", metavar="RUN", type=Path, help="run folder (from cellax hybrid train)")
    hybrid_eval.set_defaults(run=_cmd_hybrid)

    data = commands.add_parser("data", help="inspect, picture and merge datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    info = data_commands.add_parser("info", help="summary table of a dataset")
    info.add_argument("file", type=Path)
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(run=_cmd_info)
    plot = data_commands.add_parser("plot", help="PNGs of example profiles and operating-point coverage")
    plot.add_argument("file", type=Path)
    plot.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    plot.add_argument("--profiles", type=int, default=4, help="example profiles to draw (default 4)")
    plot.set_defaults(run=_cmd_plot)
    merge = data_commands.add_parser("merge", help="join shards of one job into one file")
    merge.add_argument("out", type=Path, help="merged output file")
    merge.add_argument("inputs", type=Path, nargs="+", help="shard files")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing output")
    merge.set_defaults(run=_cmd_merge)
    return parser


def main(argv: list[str] | None = None) -> int:
    from cellax.config import UserError

    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except UserError as err:
        print(f"cellax: error: {' '.join(str(err).split())}", file=sys.stderr)  # always one line
        return 2
    except KeyboardInterrupt:
        print(f"cellax: interrupted; {getattr(args, 'kept', 'nothing was kept')}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
