"""``cellax quickstart``: simulate a small dataset, picture it, train a model on it, evaluate it free-running.

Re-running continues where the last run stopped: finished profiles and the
training checkpoint are kept; a training run made with a different config is moved
aside (``model.old-<time>``) and trained afresh.
"""

from __future__ import annotations

import time
from pathlib import Path

from cellax.config import load_config, validate_config
from cellax.data.config import DataConfig
from cellax.data.generate import generate
from cellax.data.plots import plot_dataset
from cellax.data.store import open_dataset
from cellax.data.summary import format_summary, summarize
from cellax.defaults import QUICKSTART_DATA, QUICKSTART_TRAIN, default_config
from cellax.train.config import TrainConfig
from cellax.train.loop import changed_fields, train
from cellax.workflows.evaluate import evaluate, format_report


def quickstart(config: Path | None, train_config: Path | None, out_dir: Path, steps: int | None = None,
               workers: int = 2, log=print) -> dict:
    """Run the three stages into ``out_dir`` (``data.h5``, ``plots/``, ``model/``); returns the evaluation report.

    ``config`` and ``train_config`` default to the configs shipped inside the package, so this runs
    from any folder; both are validated (with ``steps``) before any folder is made.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    dataset = out_dir / "data.h5"
    run_dir = out_dir / "model"
    data_config = load_config(config or default_config(QUICKSTART_DATA), DataConfig)
    train_source = train_config or default_config(QUICKSTART_TRAIN)
    training = load_config(train_source, TrainConfig).model_dump()
    training.update(data=dataset, out=run_dir, **({"steps": steps} if steps is not None else {}))
    training = validate_config(TrainConfig, training, f"{train_source} (with --steps)")
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"[1/3] simulating {data_config.n_profiles} profiles of {data_config.profiles.duration_s / 60:g} min "
        f"({data_config.backend} backend) -> {dataset}", flush=True)
    report = generate(data_config, dataset, workers=workers,
                      resume=dataset.exists() or dataset.with_name("data.h5.parts").exists())
    with open_dataset(dataset) as ds:
        log(format_summary(summarize(ds)))
    plots = plot_dataset(dataset, out_dir / "plots")
    resume = (run_dir / "config.json").exists()
    if resume and (changed := changed_fields(run_dir, training)):
        kept = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(kept)
        log(f"note: {run_dir} was trained with a config that differs in {', '.join(changed)}; "
            f"moved it to {kept} and training afresh", flush=True)
        resume = False
    log(f"\n[2/3] training a {training.model.kind} to {training.task} the cell -> {run_dir}", flush=True)
    train(training, resume=resume)
    log("\n[3/3] evaluating free-running on the held-out test profiles", flush=True)
    result = evaluate(run_dir)
    log(format_report(result))
    log(f"\ndataset:  {report.out} (plots: {out_dir / 'plots'}, {len(plots)} PNGs)")
    log(f"model:    {run_dir} (metrics.jsonl, checkpoints/)")
    log(f"report:   {run_dir / 'eval' / 'report.json'} and {len(result['plots'])} PNGs in {run_dir / 'eval'}")
    log(f"done in {time.perf_counter() - started:.0f} s")
    return result
