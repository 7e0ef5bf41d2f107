"""``cellax evaluate RUN``: free-running rollouts over whole held-out test profiles, in physical units.

Loads the run's config, train statistics and best checkpoint; rolls the model
out over every test profile from ``t = 0`` (see :mod:`cellax.train.task`);
reports per-output RMSE, MAE and maximum error in mV, K and % SOC, the growth of
the error over elapsed time, and draws prediction-vs-truth and error-over-time
PNGs. Writes ``RUN/eval/report.json`` and the pictures beside it. ``--data OTHER.h5`` evaluates on every
finished profile of another dataset of the same cell (conditions it was not trained on) instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from cellax.data.loader import NormStats, iterate_profiles, split_profiles
from cellax.data.store import open_dataset
from cellax.models import make_model
from cellax.signals import error_units
from cellax.train.checkpoint import Checkpoints
from cellax.train.config import TrainConfig
from cellax.train.loop import TrainError, dataset_dt_s, optimizer
from cellax.train.losses import loss_weights
from cellax.train.metrics import error_growth, evaluate_profiles
from cellax.train.task import Task


def load_run(run_dir: Path):
    """``(config, task, stats, model, step)`` of a run's best checkpoint."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise TrainError(f"{run_dir} is not a cellax training run (no config.json)")
    config = TrainConfig.model_validate_json((run_dir / "config.json").read_text())
    stats = NormStats.from_json((run_dir / "stats.json").read_text())
    task = Task.from_config(config)
    model = make_model(config.model, task.n_features, task.n_outputs, jax.random.key(config.seed))
    opt_state = optimizer(config).init(eqx.filter(model, eqx.is_array))
    checkpoints = Checkpoints(run_dir / "checkpoints")
    try:
        restored = checkpoints.restore_best(model, opt_state) or checkpoints.restore_latest(model, opt_state)
    finally:
        checkpoints.close()
    if restored is None:
        raise TrainError(f"{run_dir} has no finished checkpoint to evaluate")
    model, _, step, _ = restored
    return config, task, stats, model, step


def evaluate(run_dir: Path, split: str = "test", max_profiles: int | None = None, plots: int = 3,
             data: Path | None = None) -> dict:
    """Evaluate a run on its ``split`` profiles, or on every finished profile of another dataset ``data``
    (e.g. conditions it was not trained on); writes ``report.json`` and PNGs (:func:`report_dir`), returns the report."""
    run_dir = Path(run_dir)
    if max_profiles is not None and max_profiles < 1:
        raise TrainError(f"--max-profiles must be at least 1, got {max_profiles}")
    config, task, stats, model, step = load_run(run_dir)
    source = Path(data) if data is not None else config.data
    try:
        dt_s = dataset_dt_s(source)
        if data is None:
            rows = split_profiles(source, config.split_fractions, config.split_seed)[split]
        else:
            with open_dataset(source) as ds:
                rows = np.flatnonzero(ds.profiles["status"] == "ok")
            split = "all"
            if dt_s != dataset_dt_s(config.data):
                raise TrainError(f"--data: {source} is sampled every {dt_s} s, the run's data every "
                                 f"{dataset_dt_s(config.data)} s")
    except OSError as err:
        raise TrainError(f"--data: cannot open {source}: {err}") from None
    if len(rows) == 0:
        raise TrainError(f"{source} has no {split} profiles")
    rows = rows[:max_profiles] if max_profiles else rows
    try:
        profiles = list(iterate_profiles(source, rows, [*task.inputs, *task.outputs]))
    except ValueError as err:
        raise TrainError(f"--data: {source}: {err}") from None
    weights = loss_weights(task.outputs, config.loss.weights)
    report, predictions = evaluate_profiles(model, task, stats, profiles, config.loss.kind, weights,
                                            config.loss.smooth_l1_beta)
    report.update(
        run=str(run_dir), checkpoint_step=step, split=split, data=str(source), n_profiles=len(profiles),
        profile_ids=[p["profile_id"] for p in profiles], hours=float(sum(len(p) for p in predictions) * dt_s / 3600),
        error_growth=error_growth(task, predictions, profiles, dt_s),
    )
    out = report_dir(run_dir, split, None if data is None else source)
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = [str(p) for p in _plots(task, predictions, profiles, report, dt_s, out, plots)]
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def report_dir(run_dir: Path, split: str = "test", data: Path | None = None) -> Path:
    """``RUN/eval`` for the test split, ``RUN/eval/<split>`` otherwise (a val report never replaces the test one),
    ``RUN/eval/data-<file stem>`` for another dataset."""
    if data is not None:
        return Path(run_dir) / "eval" / f"data-{Path(data).stem}"
    return Path(run_dir) / "eval" if split == "test" else Path(run_dir) / "eval" / split


def format_report(report: dict) -> str:
    lines = [f"{report['n_profiles']} {report['split']} profiles ({report['hours']:.1f} cell-hours), free-running "
             f"from t = 0, checkpoint step {report['checkpoint_step']}:"]
    lines += [f"  {name:20s} RMSE {m['rmse']:8.3f} {m['unit']:6s} MAE {m['mae']:8.3f}  max {m['max']:8.3f}"
              for name, m in report["outputs"].items()]
    return "\n".join(lines)


def _plots(task: Task, predictions, profiles, report, dt_s, out: Path, count: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    n = len(task.outputs)
    for k, (pred, prof) in enumerate(zip(predictions[:count], profiles[:count])):
        fig, axes = plt.subplots(n, 1, figsize=(9, 2.0 * n), sharex=True, squeeze=False)
        t_h = np.arange(len(pred)) * dt_s / 3600
        for j, name in enumerate(task.outputs):
            ax = axes[j, 0]
            ax.plot(t_h, prof[name], color="0.3", lw=1.0, label="truth")
            ax.plot(t_h, pred[:, j], color="tab:orange", lw=1.0, label="model (free-running)")
            ax.set_ylabel(name, fontsize=8)
        axes[0, 0].legend(fontsize=8, loc="best")
        axes[-1, 0].set_xlabel("time [h]")
        fig.suptitle(f"profile {prof['profile_id']}: prediction vs truth", fontsize=9)
        fig.tight_layout()
        path = out / f"profile_{prof['profile_id']}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    growth = report["error_growth"]
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.8), squeeze=False)
    minutes = np.asarray(growth["time_s"]) / 60
    for j, name in enumerate(task.outputs):
        axes[0, j].plot(minutes, growth[name], marker="o", ms=3)
        axes[0, j].set_title(f"{name} RMSE [{error_units(name)[1]}]", fontsize=8)
        axes[0, j].set_xlabel("elapsed [min]", fontsize=8)
    fig.suptitle("error growth over the free-running horizon", fontsize=9)
    fig.tight_layout()
    path = out / "error_over_time.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [*paths, path]
