"""``cellax fit``: identify cell-model parameters from profiles of a cellax dataset, with a report.

Reads the measurements from HDF5 (:mod:`cellax.data.store`), runs the optimiser of
:mod:`cellax.physics.fit` and writes ``fit_report.json`` and ``fit_residuals.png``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellax.config import ConfigError
from cellax.data.store import open_dataset
from cellax.physics.config import FitConfig
from cellax.physics.fit import MEASURED, FitResult, Measurement
from cellax.signals import KELVIN, SIGNALS, error_units


def run_fit(config: FitConfig, out_dir: Path | None = None, source: str = "") -> tuple[FitResult, Path, Path]:
    """Fit ``config.parameters`` to the configured profiles; ``(result, report path, plot path)``.

    Problems with the dataset or the parameters raise :class:`ConfigError` naming ``source``.
    """
    from cellax.physics import cell_model, load_parameter_set
    from cellax.physics.fit import fit

    out_dir = Path(out_dir or config.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"out: {out_dir} is a file; the fit report needs a folder")
    try:
        data, simulation = measurements_from_dataset(config.data, config.profiles, config.signals)
        params = load_parameter_set(
            simulation.get("parameter_set", "Chen2020"),
            overrides=simulation.get("parameter_overrides"),
            thermal=simulation.get("thermal"),
        )
        model = cell_model(config.model)
        print(f"fitting {', '.join(config.parameters)} to {len(data)} profile(s) of {config.data} ...", flush=True)
        result = fit(model, params, list(config.parameters.values()), data, sigma_v=config.sigma_v, sigma_temp_k=config.sigma_temp_k,
                     max_steps=config.max_steps)
    except (ValueError, OSError) as err:
        raise ConfigError(f"{source}: {err}") from None
    report, picture = write_report(result, data, out_dir)
    return result, report, picture


def measurements_from_dataset(path, rows: Sequence[int], signals: Sequence[str]) -> tuple[list[Measurement], dict]:
    """Measurements from rows of a cellax HDF5 dataset, and the dataset's ``simulation`` config.

    Each profile's ambient temperature, initial SOC and heat-transfer coefficient
    become its measurement's conditions (the coefficient as a per-profile override).
    """
    out = []
    with open_dataset(path) as dataset:
        simulation = dataset.config.get("simulation", {})
        for row in rows:
            if not 0 <= row < len(dataset):
                raise ValueError(f"profiles: row {row} is outside the dataset's {len(dataset)} profiles")
            record = dataset.record(row)
            if record.meta.get("status", "ok") != "ok":
                raise ValueError(f"profiles: row {row} failed to simulate ({record.meta['status']}); pick another")
            missing = sorted(set(signals) - set(record.signals))
            if missing:
                raise ValueError(f"signals: the dataset lacks {missing}")
            time_s = record.signals["time_s"]
            steps = np.diff(time_s)
            if not np.allclose(steps, steps[0]):
                raise ValueError(f"profiles: row {row} is not uniformly sampled")
            out.append(
                Measurement(
                    current_a=record.signals["current_a"],
                    dt_s=float(steps[0]),
                    initial_soc=float(record.meta["initial_soc"]),
                    ambient_temp_k=float(record.meta["ambient_temp_degc"]) + KELVIN,
                    signals={k: record.signals[k] for k in signals},
                    overrides={"heat_transfer_coeff_w_m2k": float(record.meta["heat_transfer_coeff"])},
                )
            )
    return out, simulation


def write_report(result: FitResult, data: Sequence[Measurement], out_dir, truth: dict[str, float] | None = None):
    """``fit_report.json`` (values, standard deviations, RMSE, timing) and ``fit_residuals.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "values": result.values,
        "std": result.std,
        "rmse": result.rmse,
        "steps": result.steps,
        "converged": result.converged,
        "seconds": result.seconds,
        "compile_seconds": result.compile_seconds,
    }
    if truth:
        report["relative_error_pct"] = {k: 100 * (result.values[k] / v - 1) for k, v in truth.items() if k in result.values}
    (out_dir / "fit_report.json").write_text(json.dumps(report, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in MEASURED if any(k in m.signals for m in data)]
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 6), sharex="col", squeeze=False)
    for col, name in enumerate(names):
        unit, (r_scale, r_unit) = SIGNALS[name][0].replace("degC", "°C"), error_units(name)
        for k, (m, pred) in enumerate(zip(data, result.predictions)):
            if name not in m.signals:
                continue
            t_h = np.arange(len(m.current_a)) * m.dt_s / 3600
            axes[0, col].plot(t_h, m.signals[name], ".", ms=1.5, color="0.6", label="measured" if k == 0 else None)
            axes[0, col].plot(t_h, pred[name], lw=1.2, label="fitted model" if k == 0 else None)
            axes[1, col].plot(t_h, r_scale * (pred[name] - m.signals[name]), lw=0.6)
        axes[0, col].set_ylabel(f"{name} [{unit}]")
        axes[1, col].set_ylabel(f"model − measured [{r_unit}]")
        axes[1, col].set_xlabel("time [h]")
        axes[0, col].legend(loc="best", fontsize=8)
    fig.suptitle("cellax fit: " + ", ".join(f"{k}={v:.4g}±{result.std[k]:.2g}" for k, v in result.values.items()),
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "fit_residuals.png", dpi=120)
    plt.close(fig)
    return out_dir / "fit_report.json", out_dir / "fit_residuals.png"
