"""What a finished study leaves: the best trial as a train config, a summary table, JSON, and Optuna's pictures."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from cellax.hpo.config import HpoConfig
from cellax.hpo.study import sample
from cellax.train.config import TrainConfig


def best_config(study: optuna.Study, config: HpoConfig, base: TrainConfig) -> TrainConfig:
    """The best trial's train config, named ``<study>_best``, training into ``runs/<study>_best``."""
    best = study.best_trial
    trained = sample(optuna.trial.FixedTrial(best.params, best.number), config, base, config.out_dir,
                     best.user_attrs.get("planned_steps"))
    return trained.model_copy(update={"name": f"{config.name}_best", "out": None})


def trial_rows(study: optuna.Study) -> list[dict]:
    return [{
        "number": t.number, "state": t.state.name, "value": t.value, "steps": t.user_attrs.get("steps"),
        "planned_steps": t.user_attrs.get("planned_steps"), "step_s": t.user_attrs.get("step_s"),
        "train_s": t.user_attrs.get("train_s"), "load_avg": t.user_attrs.get("load_avg"), "params": t.params,
        "retry_of": t.system_attrs.get("failed_trial"), "fail_reason": t.user_attrs.get("fail_reason", ""),
    } for t in study.get_trials(deepcopy=False)]


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances of the parameters for the objective (empty with fewer than two complete trials)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "too few trials": the values are then equal, and shown as such
        try:
            return dict(optuna.importance.get_param_importances(study))
        except (ValueError, RuntimeError):
            return {}


def write_report(study: optuna.Study, config: HpoConfig, base: TrainConfig, out_dir: Path) -> dict:
    """``best_config.yaml``, ``summary.md``, ``summary.json`` and PNGs (history, importances, parallel coordinates)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    counts = {s.name: sum(r["state"] == s.name for r in rows) for s in TrialState}
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    summary = {"study": config.name, "objective": f"{config.objective.output} {config.objective.metric}",
               "planned": config.trials, "states": counts, "importances": importances(study), "trials": rows}
    unit = {"voltage_v": "mV", "ocv_v": "mV", "soc": "% SOC"}.get(config.objective.output, "K")
    if complete:
        best = study.best_trial
        summary["best"] = {"number": best.number, "value": best.value, "unit": unit, "params": best.params}
        path = out_dir / "best_config.yaml"
        path.write_text(yaml.safe_dump(best_config(study, config, base).model_dump(mode="json", exclude={"out"}),
                                       sort_keys=False))
        summary["best_config"] = str(path)
    summary["plots"] = plots(study, out_dir) if complete else []
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out_dir / "summary.md").write_text(table(summary, unit))
    return summary


def table(summary: dict, unit: str) -> str:
    lines = [f"# study {summary['study']}: {summary['objective']} ({unit}), lower is better", "",
             ", ".join(f"{k.lower()} {v}" for k, v in summary["states"].items() if v), "",
             "| trial | state | value | steps | train s | parameters | note |", "| --- | --- | --- | --- | --- | --- | --- |"]
    ordered = sorted(summary["trials"], key=lambda r: (r["value"] is None, r["value"] or 0.0))
    for r in ordered:
        value = f"{r['value']:.4g}" if r["value"] is not None else ""
        note = r["fail_reason"] or (f"retry of {r['retry_of']}" if r["retry_of"] is not None else "")
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
        steps = f"{r['steps']}/{r['planned_steps']}" if r.get("planned_steps") else (r["steps"] or "")
        lines.append(f"| {r['number']} | {r['state'].lower()} | {value} | {steps} | {r['train_s'] or ''} "
                     f"| {params} | {note} |")
    if summary["importances"]:
        lines += ["", "importances: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["importances"].items())]
    return "\n".join(lines) + "\n"


def plots(study: optuna.Study, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    drawn = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        for name, draw in (("history", vis.plot_optimization_history), ("importances", vis.plot_param_importances),
                           ("parallel_coordinates", vis.plot_parallel_coordinate)):
            try:
                ax = draw(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # e.g. importances need two complete trials with varied parameters
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            path = out_dir / f"{name}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            drawn.append(str(path))
    if any("step_s" in t.user_attrs for t in study.get_trials(deepcopy=False)):
        drawn.append(speed_accuracy(study, out_dir / "speed_accuracy.png"))
    return drawn


def speed_accuracy(study: optuna.Study, path: Path) -> str:
    """Each trial's last validation value against its measured training-step time (``budget.steps: fit``).

    Under a wall-time budget a slower step buys fewer steps; the lower-left edge of the cloud is the
    speed/accuracy Pareto front of the searched space. Pruned trials are drawn at the value they were stopped with."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for state, marker in ((TrialState.COMPLETE, "o"), (TrialState.PRUNED, "x")):
        points = [(t.user_attrs["step_s"], t.value if t.value is not None else t.intermediate_values[t.last_step])
                  for t in study.get_trials(deepcopy=False, states=(state,))
                  if "step_s" in t.user_attrs and (t.value is not None or t.intermediate_values)]
        if points:
            ax.scatter(*zip(*points), marker=marker, label=f"{state.name.lower()} ({len(points)})")
    ax.set(xscale="log", yscale="log", xlabel="training step time (s)",
           ylabel=f"validation {study.user_attrs.get('objective', 'objective')}",
           title=f"{study.study_name}: speed and accuracy of the trials")
    for axis in (ax.xaxis, ax.yaxis):  # 1-2-5 ticks: readable on a log axis of one or two decades
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
