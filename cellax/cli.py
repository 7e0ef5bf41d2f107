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
    import time

    from cellax.config import load_config, validate_config
    from cellax.data.config import DataConfig
    from cellax.data.generate import generate
    from cellax.data.plots import plot_dataset
    from cellax.data.store import open_dataset
    from cellax.data.summary import format_summary, summarize
    from cellax.defaults import QUICKSTART_DATA, QUICKSTART_TRAIN, default_config
    from cellax.train.config import TrainConfig
    from cellax.train.evaluate import evaluate, format_report
    from cellax.train.loop import changed_fields, train

    started = time.perf_counter()
    out_dir = Path(args.out)
    dataset = out_dir / "data.h5"
    run_dir = out_dir / "model"
    config = load_config(args.config or default_config(QUICKSTART_DATA), DataConfig)
    train_source = args.train_config or default_config(QUICKSTART_TRAIN)
    train_config = load_config(train_source, TrainConfig).model_dump()
    train_config.update(data=dataset, out=run_dir, **({"steps": args.steps} if args.steps is not None else {}))
    train_config = validate_config(TrainConfig, train_config, f"{train_source} (with --steps)")
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"[1/3] simulating {config.n_profiles} profiles of {config.profiles.duration_s / 60:g} min "
          f"({config.backend} backend) -> {dataset}", flush=True)
    report = generate(config, dataset, workers=args.workers, resume=dataset.exists() or dataset.with_name("data.h5.parts").exists())
    with open_dataset(dataset) as ds:
        print(format_summary(summarize(ds)))
    plots = plot_dataset(dataset, out_dir / "plots")
    resume = (run_dir / "config.json").exists()
    if resume and (changed := changed_fields(run_dir, train_config)):
        kept = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(kept)
        print(f"note: {run_dir} was trained with a config that differs in {', '.join(changed)}; "
              f"moved it to {kept} and training afresh", flush=True)
        resume = False
    print(f"\n[2/3] training a {train_config.model['kind']} to {train_config.task} the cell -> {run_dir}", flush=True)
    train(train_config, resume=resume)
    print("\n[3/3] evaluating free-running on the held-out test profiles", flush=True)
    result = evaluate(run_dir)
    print(format_report(result))
    print(f"\ndataset:  {report.out} (plots: {out_dir / 'plots'}, {len(plots)} PNGs)")
    print(f"model:    {run_dir} (metrics.jsonl, checkpoints/)")
    print(f"report:   {run_dir / 'eval' / 'report.json'} and {len(result['plots'])} PNGs in {run_dir / 'eval'}")
    print(f"done in {time.perf_counter() - started:.0f} s")


def _cmd_train(args) -> None:
    from cellax.config import load_config
    from cellax.train.config import TrainConfig
    from cellax.train.loop import train

    config = load_config(args.config, TrainConfig)
    if args.out:
        config = config.model_copy(update={"out": args.out})
    run_dir = train(config, resume=args.resume, progress=not args.no_progress)
    print(f"run: {run_dir} (metrics.jsonl, checkpoints/); evaluate with: cellax evaluate {run_dir}")


def _cmd_evaluate(args) -> None:
    from cellax.train.evaluate import evaluate, format_report, report_dir

    report = evaluate(args.run_dir, split=args.split, max_profiles=args.max_profiles)
    print(format_report(report))
    print(f"report: {report_dir(args.run_dir, args.split) / 'report.json'}; plots: {', '.join(report['plots'])}")


def _cmd_fit(args) -> None:
    from cellax.config import load_config
    from cellax.physics.config import FitConfig
    from cellax.workflows.fit import run_fit

    result, report, picture = run_fit(load_config(args.config, FitConfig), args.out, source=str(args.config))
    print(result.summary())
    print(f"\nreport: {report}\nplot:   {picture}")


def _cmd_rl_train(args) -> None:
    from cellax.config import load_config
    from cellax.rl.config import RLConfig
    from cellax.rl.runs import evaluate_run, format_report, train_run

    config = load_config(args.config, RLConfig)
    if args.out:
        config = config.model_copy(update={"out": args.out})
    run_dir = train_run(config, progress=not args.no_progress)
    print(f"run: {run_dir}; evaluating against CC-CV ...", flush=True)
    report = evaluate_run(run_dir)
    print(format_report(report))
    print(f"report: {run_dir / 'eval' / 'report.json'}; plot: {report.get('plot')}")


def _cmd_rl_evaluate(args) -> None:
    from cellax.rl.runs import evaluate_run, format_report

    if not (args.run_dir / "config.json").exists():
        from cellax.config import ConfigError

        raise ConfigError(f"{args.run_dir} is not a cellax rl run (no config.json)")
    report = evaluate_run(args.run_dir)
    print(format_report(report))
    print(f"report: {args.run_dir / 'eval' / 'report.json'}; plot: {report.get('plot')}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cellax", description="Data-driven battery modelling in JAX.")
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
    trainp.set_defaults(run=_cmd_train, kept="the last checkpoint is kept, continue with --resume")

    evalp = commands.add_parser("evaluate", help="free-running evaluation of a training run on held-out profiles")
    evalp.add_argument("run_dir", metavar="RUN", type=Path, help="run folder (from cellax train)")
    evalp.add_argument("--split", choices=["test", "val", "train"], default="test")
    evalp.add_argument("--max-profiles", type=int, help="evaluate at most this many profiles")
    evalp.set_defaults(run=_cmd_evaluate)

    gen = commands.add_parser("generate", help="simulate a synthetic dataset from a data config")
    gen.add_argument("config", type=Path, help="YAML data config (see configs/data/)")
    gen.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    gen.add_argument("--backend", choices=["pybamm", "jax"], help="simulator (default: the config's)")
    gen.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
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
    from cellax.config import ConfigError
    from cellax.data.generate import GenerateError
    from cellax.data.store import StoreError
    from cellax.rl.config import RLError
    from cellax.train.checkpoint import CheckpointError
    from cellax.train.loop import TrainError

    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ConfigError, GenerateError, StoreError, TrainError, RLError, CheckpointError) as err:
        print(f"cellax: error: {' '.join(str(err).split())}", file=sys.stderr)  # always one line
        return 2
    except KeyboardInterrupt:
        print(f"cellax: interrupted; {getattr(args, 'kept', 'nothing was kept')}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
