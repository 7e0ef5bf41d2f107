"""Whole-profile free-running evaluation in physical units (shared by validation and ``cellax evaluate``)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from cellax.data.loader import NormStats
from cellax.signals import error_units
from cellax.train.losses import feature_loss
from cellax.train.task import Task, rollout



def stack_profiles(task: Task, stats: NormStats, profiles: list[dict]):
    """Normalised inputs/targets of whole profiles, padded to one length (whole chunks) with a mask.

    Returns ``(x (P, T, n_in), y (P, T, n_out), mask (P, T), lengths)``.
    """
    lengths = [len(p[task.outputs[0]]) for p in profiles]
    padded = -(-max(lengths) // task.chunk_len) * task.chunk_len
    xs, ys = [], []
    for p in profiles:
        signals = stats.normalise({k: np.asarray(p[k], dtype=np.float64) for k in (*task.inputs, *task.outputs)})
        n = len(signals[task.outputs[0]])
        signals = {k: np.concatenate([v, np.full(padded - n, v[-1])]) for k, v in signals.items()}
        x, y = task.split({k: jnp.asarray(v, jnp.float32) for k, v in signals.items()})
        xs.append(x)
        ys.append(y)
    mask = np.arange(padded)[None, :] < np.asarray(lengths)[:, None]
    return jnp.stack(xs), jnp.stack(ys), jnp.asarray(mask), lengths


@eqx.filter_jit
def predict(model, task: Task, x, y):
    """Free-running predictions for a batch of whole (padded) profiles."""
    return jax.vmap(lambda xi, yi: rollout(model, task, xi, task.initial(yi)))(x, y)


def evaluate_profiles(model, task: Task, stats: NormStats, profiles: list[dict], loss_kind: str, weights, beta=1.0):
    """Loss (normalised, as in training) and per-output RMSE / MAE / max error in physical units.

    Returns ``(report, predictions)`` with predictions in physical units, one array ``(length, n_out)`` per profile.
    """
    x, y, mask, lengths = stack_profiles(task, stats, profiles)
    prediction = predict(model, task, x, y)
    m = mask[..., None]
    loss, per_output = feature_loss(jnp.where(m, prediction, y), y, weights, loss_kind, beta)
    valid = float(jnp.sum(mask)) / mask.size  # the loss above averages over padding too: undo it
    report = {"loss": float(loss) / valid, "outputs": {}}
    pred = np.asarray(prediction, dtype=np.float64)
    true = np.asarray(y, dtype=np.float64)
    physical = []
    for j, name in enumerate(task.outputs):
        scale, unit = error_units(name)
        std = stats.std[name]
        errors = np.concatenate([(pred[i, :n, j] - true[i, :n, j]) * std * scale for i, n in enumerate(lengths)])
        report["outputs"][name] = {
            "unit": unit,
            "rmse": float(np.sqrt(np.mean(errors**2))),
            "mae": float(np.mean(np.abs(errors))),
            "max": float(np.max(np.abs(errors))),
            "loss": float(per_output[j]) / valid,
        }
    for i, n in enumerate(lengths):
        physical.append(np.stack([pred[i, :n, j] * stats.std[k] + stats.mean[k] for j, k in enumerate(task.outputs)], -1))
    return report, physical


def error_growth(task: Task, predictions: list[np.ndarray], profiles: list[dict], dt_s: float, bins: int = 12):
    """RMSE per output in ``bins`` equal spans of elapsed time (physical units): how errors grow free-running."""
    horizon = max(len(p) for p in predictions)
    edges = np.linspace(0, horizon, bins + 1).astype(int)
    growth = {"time_s": [float(0.5 * (a + b) * dt_s) for a, b in zip(edges[:-1], edges[1:])]}
    for j, name in enumerate(task.outputs):
        scale = error_units(name)[0]
        rows = []
        for a, b in zip(edges[:-1], edges[1:]):
            err = [
                (pred[a:b, j] - np.asarray(p[name][a:b])) * scale
                for pred, p in zip(predictions, profiles)
                if len(pred) > a
            ]
            err = np.concatenate(err) if err else np.array([np.nan])
            rows.append(float(np.sqrt(np.mean(err**2))))
        growth[name] = rows
    return growth
