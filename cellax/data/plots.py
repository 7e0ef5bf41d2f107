"""Pictures of a cellax dataset: example profiles and operating-point coverage.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no
global figure registry, no backend switch), saved as PNG and dropped. Only profiles
whose status is ``"ok"`` are drawn. Signals are read from the store in blocks (see
:func:`cellax.data.summary.iter_ok_blocks`), so coverage plots of files with many
millions of rows keep memory bounded.

``cellax data plot FILE --out DIR`` calls :func:`plot_dataset`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from cellax.data.store import Dataset, StoreError, open_dataset, opened
from cellax.data.summary import DEFAULT_BLOCK_ROWS, iter_ok_blocks

DPI = 120
MAX_LINE_POINTS = 4000
"""Longer example profiles are drawn as a min/max envelope over this many buckets."""
MAX_COVERAGE_POINTS = 5_000_000
"""Coverage histograms use every row up to this many rows, a row stride beyond."""

_AXES = {
    "current_a": ("current (A), + = discharge", 1.0),
    "soc": ("SOC (%)", 100.0),
    "core_temp_degc": ("core temperature (°C)", 1.0),
    "surface_temp_degc": ("surface temperature (°C)", 1.0),
}
"""Coverage variables: label and scale factor."""


# --------------------------------------------------------------------------- helpers


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    fig.clear()  # the figure is not registered with pyplot; dropping it frees it
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "x"


def _envelope(n: int, values: list[np.ndarray], max_points: int = MAX_LINE_POINTS) -> np.ndarray:
    """Indices to draw ``n`` samples with at most ~``2 * max_points`` points.

    Keeps each bucket's first sample and the minimum and maximum of every signal in
    ``values``, so short current pulses survive the decimation.
    """
    if n <= 2 * max_points:
        return np.arange(n)
    size = math.ceil(n / max_points)
    nb = n // size
    base = np.arange(nb) * size
    keep = [base, np.arange(nb * size, n), [n - 1]]
    for v in values:
        body = np.asarray(v[: nb * size], dtype=float).reshape(nb, size)
        body = np.where(np.isfinite(body), body, np.nan)
        filled = np.where(np.isnan(body), np.inf, body)
        keep.append(base + filled.argmin(axis=1))
        filled = np.where(np.isnan(body), -np.inf, body)
        keep.append(base + filled.argmax(axis=1))
    return np.unique(np.concatenate(keep).astype(np.int64))


def _time_axis(time_s: np.ndarray) -> tuple[np.ndarray, str]:
    span = float(np.nanmax(time_s) - np.nanmin(time_s)) if time_s.size else 0.0
    if span <= 180:
        return time_s, "time (s)"
    if span <= 3 * 3600:
        return time_s / 60.0, "time (min)"
    return time_s / 3600.0, "time (h)"


def choose_examples(dataset: Dataset, n_profiles: int = 4, seed: int = 0) -> list[int]:
    """Index rows of ``n_profiles`` ok profiles, reproducible for a ``seed``, spread over kinds.

    Kinds are visited in a seeded order, one profile from each in turn (round robin),
    each kind's profiles in a seeded random order. Profiles with fewer than two samples
    are never chosen.
    """
    table = dataset.profiles
    ok = (table["status"] == "ok") & (table["length"] >= 2)
    kinds = np.asarray(table["profile_kind"], dtype=object)
    rng = np.random.default_rng(seed)
    pools = {}
    for kind in sorted(set(kinds[ok].tolist())):
        rows = np.flatnonzero(ok & (kinds == kind))
        pools[kind] = list(rng.permutation(rows))
    order = list(pools)
    order = [order[i] for i in rng.permutation(len(order))]
    chosen: list[int] = []
    while len(chosen) < n_profiles and any(pools.values()):
        for kind in order:
            if pools[kind] and len(chosen) < n_profiles:
                chosen.append(int(pools[kind].pop(0)))
    return chosen


# --------------------------------------------------------------------------- examples


def _example_figure(meta: dict, sig: dict[str, np.ndarray]) -> Figure:
    n = len(next(iter(sig.values())))
    t = sig["time_s"] if "time_s" in sig else np.arange(n, dtype=float)
    t, t_label = _time_axis(np.asarray(t, dtype=float))
    idx = _envelope(n, [v for k, v in sig.items() if k != "time_s"])
    x = t[idx]

    panels = []  # (y label, [(signal, label, style kwargs, scale)], extra)
    panels.append(("current (A)", [("current_a", "current (+ = discharge)", {"color": "tab:blue"}, 1.0)], None))
    panels.append(("voltage (V)", [
        ("voltage_v", "terminal voltage", {"color": "tab:red"}, 1.0),
        ("ocv_v", "OCV", {"color": "0.35", "ls": "--"}, 1.0),
    ], None))
    panels.append(("temperature (°C)", [
        ("surface_temp_degc", "surface", {"color": "tab:orange"}, 1.0),
        ("core_temp_degc", "core", {"color": "tab:red"}, 1.0),
        ("ambient_temp_degc", "ambient", {"color": "0.45", "ls": ":"}, 1.0),
    ], None))
    panels.append(("SOC (%)", [("soc", "SOC", {"color": "tab:green"}, 100.0)], None))
    panels.append(("anode potential (V)", [
        ("anode_potential_v", "anode potential vs Li/Li+", {"color": "tab:purple"}, 1.0),
    ], "plating"))
    panels = [p for p in panels if any(name in sig for name, *_ in p[1])]

    fig = Figure(figsize=(10, 1.0 + 1.9 * max(len(panels), 1)), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0] if panels else []
    for ax, (ylabel, lines, extra) in zip(axes, panels):
        for name, label, style, scale in lines:
            if name in sig:
                ax.plot(x, np.asarray(sig[name], dtype=float)[idx] * scale, lw=1.1, label=label, **style)
        if extra == "plating":
            ax.axhline(0.0, color="black", ls="--", lw=1.0, label="plating threshold (0 V)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if sum(name in sig for name, *_ in lines) > 1 or extra:
            ax.legend(loc="best", fontsize="small", ncols=4, framealpha=0.8)
    if len(axes):
        fig.align_ylabels(axes)
        axes[-1].set_xlabel(t_label)
        axes[-1].set_xlim(x[0], x[-1])
    fig.suptitle(
        f"profile {meta['profile_id']}  |  {meta['profile_kind']}  |  {meta['parameter_set']} ({meta['model']})\n"
        f"ambient {meta['ambient_temp_degc']:.1f} °C   initial SOC {100 * meta['initial_soc']:.0f} %   "
        f"h = {meta['heat_transfer_coeff']:.1f} W/m²/K",
        fontsize="medium",
    )
    return fig


def plot_examples(dataset: Dataset | str | Path, out_dir: str | Path, n_profiles: int = 4, seed: int = 0) -> list[Path]:
    """One PNG per example profile (ok profiles, chosen by :func:`choose_examples`).

    Stacked panels sharing the time axis: current (A); terminal voltage and OCV (V);
    surface, core and ambient temperature (°C); SOC (%); anode potential (V) with a
    dashed 0 V plating line. Panels whose signals the file lacks are left out. Files
    are named ``example_<k>_profile<id>_<kind>.png``; returns their paths (fewer than
    ``n_profiles`` when there are not enough ok profiles).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with opened(dataset) as ds:
        table = ds.profiles
        for k, row in enumerate(choose_examples(ds, n_profiles, seed)):
            meta = {name: values[row] for name, values in table.items()}
            sig = ds.profile(row)
            fig = _example_figure(meta, sig)
            name = f"example_{k}_profile{int(meta['profile_id'])}_{_slug(meta['profile_kind'])}.png"
            paths.append(_save(fig, out_dir / name))
    return paths


# --------------------------------------------------------------------------- coverage


def _coverage_samples(
    ds: Dataset, names: list[str], max_points: int, block_rows: int
) -> tuple[dict[str, np.ndarray], int, int]:
    """Rows of ok profiles for ``names`` (float32), with a row stride beyond ``max_points``."""
    table = ds.profiles
    n_ok_rows = int(table["length"][table["status"] == "ok"].sum())
    stride = max(1, math.ceil(n_ok_rows / max(int(max_points), 1)))
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for _, values in iter_ok_blocks(ds, names, block_rows, stride):
        for n in names:
            parts[n].append(np.asarray(values[n], dtype=np.float32))
    out = {n: np.concatenate(p) if p else np.zeros(0, np.float32) for n, p in parts.items()}
    if out:
        finite = np.logical_and.reduce([np.isfinite(v) for v in out.values()])
        if not finite.all():
            out = {n: v[finite] for n, v in out.items()}
    return out, stride, n_ok_rows


def plot_coverage(
    dataset: Dataset | str | Path,
    out_dir: str | Path,
    max_points: int = MAX_COVERAGE_POINTS,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> Path:
    """``coverage.png``: where the ok profiles operate, as histograms of the samples.

    Top row: 2-D histograms (log colour scale, samples per bin) of current × SOC,
    current × core temperature and SOC × core temperature; bottom row: 1-D histograms
    (log counts) of each. Surface temperature stands in when the file lacks core
    temperature. Rows are read in blocks of ``block_rows``; above ``max_points`` ok
    rows, every ``ceil(rows / max_points)``-th row is used (stated in the title).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with opened(dataset) as ds:
        stored = set(ds.signal_names)
        temp = "core_temp_degc" if "core_temp_degc" in stored else "surface_temp_degc"
        names = [n for n in ("current_a", "soc", temp) if n in stored]
        data, stride, n_ok_rows = _coverage_samples(ds, names, max_points, block_rows)
        n_ok = int((ds.profiles["status"] == "ok").sum())
        title = f"{ds.path.name}: operating-point coverage of {n_ok:,} ok profiles, {n_ok_rows:,} samples"
    if stride > 1:
        title += f" (1 in {stride:,} shown)"
    scaled = {n: v * _AXES[n][1] for n, v in data.items()}
    n_samples = len(next(iter(scaled.values()))) if scaled else 0
    pairs = [(a, b) for a, b in (("current_a", "soc"), ("current_a", temp), ("soc", temp)) if a in scaled and b in scaled]

    fig = Figure(figsize=(15, 8.5), layout="constrained")
    if n_samples == 0:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no samples in ok profiles", ha="center", va="center", fontsize="large")
        ax.set_axis_off()
    else:
        grid = fig.subplots(2, 3, squeeze=False)
        for ax, (a, b) in zip(grid[0], pairs):
            counts, xe, ye = np.histogram2d(scaled[a], scaled[b], bins=(90, 70))
            mesh = ax.pcolormesh(
                xe, ye, np.ma.masked_equal(counts.T, 0), cmap="viridis",
                norm=LogNorm(vmin=1, vmax=max(counts.max(), 2)), rasterized=True,
            )
            fig.colorbar(mesh, ax=ax, label="samples per bin" if stride == 1 else f"samples per bin (1 in {stride:,})")
            ax.set_xlabel(_AXES[a][0])
            ax.set_ylabel(_AXES[b][0])
        for ax in grid[0][len(pairs):]:
            ax.set_axis_off()
        for ax, n in zip(grid[1], scaled):
            ax.hist(scaled[n], bins=120, log=True, color="tab:blue", histtype="stepfilled", alpha=0.75)
            ax.set_xlabel(_AXES[n][0])
            ax.set_ylabel("samples" if stride == 1 else f"samples (1 in {stride:,})")
            ax.grid(True, alpha=0.3)
        for ax in grid[1][len(scaled):]:
            ax.set_axis_off()
    fig.suptitle(title, fontsize="medium")
    return _save(fig, out_dir / "coverage.png")


# --------------------------------------------------------------------------- all


def plot_dataset(dataset_path: str | Path, out_dir: str | Path, n_profiles: int = 4, seed: int = 0) -> list[Path]:
    """Open a dataset and write its example-profile PNGs and ``coverage.png`` into ``out_dir``.

    Creates ``out_dir``; returns the example paths followed by the coverage path. On any
    failure (a damaged file found mid-way) the PNGs of this call, and a folder it made, are removed.
    """
    if n_profiles < 0:
        raise StoreError(f"--profiles must be at least 0, got {n_profiles}")
    out_dir = Path(out_dir)
    with open_dataset(dataset_path) as ds:
        made = not out_dir.exists()
        before = set(out_dir.iterdir()) if not made else set()
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            paths = plot_examples(ds, out_dir, n_profiles=n_profiles, seed=seed)
            paths.append(plot_coverage(ds, out_dir))
        except BaseException:
            for path in set(out_dir.iterdir()) - before:
                path.unlink()
            if made:
                out_dir.rmdir()
            raise
    return paths
