"""What is in a cellax dataset: counts, hours, conditions and signal ranges.

:func:`summarize` reads a dataset (see :mod:`cellax.data.store`) and returns a plain,
JSON-serialisable dict; :func:`format_summary` turns that dict into an aligned
plain-text table for the terminal (``cellax data info FILE``; ``--json`` prints the
dict instead).

Signals are read in blocks of rows (:func:`iter_ok_blocks`), so memory stays bounded
whatever the size of the file. Statistics cover the rows of profiles whose status is
``"ok"``; failed profiles are counted but their samples (if a writer kept any) are
skipped.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from cellax.data.store import Dataset, opened, reading
from cellax.signals import SIGNALS
from cellax.status import status_group

DEFAULT_BLOCK_ROWS = 1 << 19
"""Rows read per signal and block (a multiple of the store's HDF5 chunk of 16384 rows)."""


def iter_ok_blocks(
    dataset: Dataset,
    names: Sequence[str],
    block_rows: int = DEFAULT_BLOCK_ROWS,
    stride: int = 1,
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Stream the named signals over the rows of ``"ok"`` profiles, one block at a time.

    Yields ``(rows, values)``: the global row numbers kept from the block and a dict
    ``name -> values`` at those rows. With ``stride > 1`` only rows whose global row
    number is a multiple of ``stride`` are kept (the block is still read whole).
    At most ``block_rows`` rows of each signal are in memory at once.
    """
    table = dataset.profiles
    starts = table["start"].astype(np.int64)
    lengths = table["length"].astype(np.int64)
    ok = table["status"] == "ok"
    total = int(lengths.sum())
    # Intervals of rows that belong to failed profiles (usually none: failures store no samples).
    bad = (~ok) & (lengths > 0)
    bad_starts, bad_ends = starts[bad], starts[bad] + lengths[bad]
    signals = dataset.file["signals"]
    block_rows = max(int(block_rows), 1)
    stride = max(int(stride), 1)
    for a in range(0, total, block_rows):
        b = min(a + block_rows, total)
        keep = np.ones(b - a, dtype=bool)
        first = np.searchsorted(bad_ends, a, side="right")
        last = np.searchsorted(bad_starts, b, side="left")
        for s, e in zip(bad_starts[first:last], bad_ends[first:last]):
            keep[max(s, a) - a : min(e, b) - a] = False
        if stride > 1:
            offset = (-a) % stride
            sub = np.zeros_like(keep)
            sub[offset::stride] = True
            keep &= sub
        if not keep.any():
            continue
        rows = np.arange(a, b)[keep]
        everything = bool(keep.all())
        values = {}
        for name in names:
            with reading(dataset.path, f"/signals/{name} rows {a}:{b}"):
                block = signals[name][a:b]
            values[name] = block if everything else block[keep]
        yield rows, values


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _range(values: np.ndarray) -> dict | None:
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return None
    return {"min": float(np.min(values)), "max": float(np.max(values))}


def _grouped(keys: np.ndarray, ok: np.ndarray, hours: np.ndarray) -> dict:
    out = {}
    for key in sorted(set(keys.tolist())):
        sel = keys == key
        out[str(key)] = {
            "profiles": int(sel.sum()),
            "ok": int((sel & ok).sum()),
            "hours_ok": float(hours[sel & ok].sum()),
        }
    return out


def summarize(dataset: Dataset | str | Path, block_rows: int = DEFAULT_BLOCK_ROWS) -> dict:
    """Summarise a dataset as a JSON-serialisable dict.

    Keys: ``path``, ``file_size_bytes``, ``created_utc``, ``schema_version``,
    ``cellax_version``, ``pybamm_version``, ``backend_version`` (``None`` when absent), ``config_name``,
    ``n_profiles``, ``n_ok``, ``n_failed``, ``n_rows``, ``n_rows_ok``, ``hours_ok``
    (sum over ok profiles of last minus first ``time_s``; ``None`` without ``time_s``),
    ``profile_hours`` (min/mean/max over ok profiles), ``status_counts`` (failure
    reasons grouped by the text before the first ``':'``, ``"ok"`` first, then by
    count), ``profile_kinds``, ``parameter_sets`` and ``models`` (each
    ``name -> {profiles, ok, hours_ok}``), ``conditions`` (min/max over ok profiles
    of ``ambient_temp_degc``, ``heat_transfer_coeff``, ``initial_soc``), ``signals``
    (``name -> {units, min, mean, max, n_nonfinite}`` in canonical order, over the finite samples of ok
    profiles, ``None`` statistics when there are none) and ``absent_signals``
    (canonical signals the file does not store).

    Signals are streamed in blocks of ``block_rows`` rows.
    """
    with opened(dataset) as ds:
        attrs = ds.attrs
        table = ds.profiles
        starts = table["start"].astype(np.int64)
        lengths = table["length"].astype(np.int64)
        status = np.asarray(table["status"], dtype=object)
        ok = status == "ok"
        stored = ds.signal_names
        names = [n for n in SIGNALS if n in stored] + [n for n in stored if n not in SIGNALS]

        # Streaming statistics, plus first/last time of every ok profile.
        acc = {n: {"min": np.inf, "max": -np.inf, "sum": 0.0, "count": 0, "nonfinite": 0} for n in names}
        with_rows = ok & (lengths > 0)
        first_rows = starts[with_rows]
        last_rows = starts[with_rows] + lengths[with_rows] - 1
        t_first = np.full(len(first_rows), np.nan)
        t_last = np.full(len(last_rows), np.nan)
        for rows, values in iter_ok_blocks(ds, names, block_rows):
            for name, v in values.items():
                finite = np.isfinite(v)
                a = acc[name]
                if not finite.all():
                    a["nonfinite"] += int((~finite).sum())
                    v = v[finite]
                if v.size:
                    a["min"] = min(a["min"], float(v.min()))
                    a["max"] = max(a["max"], float(v.max()))
                    a["sum"] += float(np.sum(v, dtype=np.float64))
                    a["count"] += int(v.size)
            if "time_s" in values:
                lo, hi = rows[0], rows[-1]
                for targets, out in ((first_rows, t_first), (last_rows, t_last)):
                    i0, i1 = np.searchsorted(targets, [lo, hi + 1])
                    if i1 > i0:
                        out[i0:i1] = values["time_s"][np.searchsorted(rows, targets[i0:i1])]

        hours = np.zeros(len(lengths))
        if "time_s" in names:
            hours[with_rows] = np.nan_to_num((t_last - t_first) / 3600.0)  # non-finite time: 0 h
            hours_ok: float | None = float(hours[ok].sum())
            ok_hours = hours[with_rows]
            profile_hours = (
                {"min": float(ok_hours.min()), "mean": float(ok_hours.mean()), "max": float(ok_hours.max())}
                if ok_hours.size else None
            )
        else:
            hours_ok, profile_hours = None, None

        groups = Counter(status_group(s) for s in status.tolist())
        status_counts = {}
        if "ok" in groups:
            status_counts["ok"] = groups.pop("ok")
        status_counts.update(sorted(groups.items(), key=lambda kv: (-kv[1], kv[0])))

        signals = {}
        for name in names:
            a = acc[name]
            units = SIGNALS[name][0] if name in SIGNALS else str(ds.file["signals"][name].attrs.get("units", ""))
            n = a["count"]
            signals[name] = {
                "units": units,
                "min": a["min"] if n else None,
                "mean": _finite_or_none(a["sum"] / n) if n else None,
                "max": a["max"] if n else None,
                "n_nonfinite": a["nonfinite"],
            }

        config = attrs.get("config", {})
        return {
            "path": str(ds.path),
            "file_size_bytes": int(os.path.getsize(ds.path)),
            "created_utc": attrs.get("created_utc"),
            "schema_version": attrs.get("schema_version"),
            "cellax_version": attrs.get("cellax_version"),
            "pybamm_version": attrs.get("pybamm_version"),
            "backend_version": None if attrs.get("backend_version") is None else int(attrs["backend_version"]),
            "config_name": config.get("name") if isinstance(config, dict) else None,
            "n_profiles": int(len(lengths)),
            "missing_profile_ids": ds.missing_profile_ids,
            "n_ok": int(ok.sum()),
            "n_failed": int((~ok).sum()),
            "n_rows": int(lengths.sum()),
            "n_rows_ok": int(lengths[ok].sum()),
            "hours_ok": hours_ok,
            "profile_hours": profile_hours,
            "status_counts": {str(k): int(v) for k, v in status_counts.items()},
            "profile_kinds": _grouped(np.asarray(table["profile_kind"], dtype=object), ok, hours),
            "parameter_sets": _grouped(np.asarray(table["parameter_set"], dtype=object), ok, hours),
            "models": _grouped(np.asarray(table["model"], dtype=object), ok, hours),
            "conditions": {
                name: _range(table[name][ok])
                for name in ("ambient_temp_degc", "heat_transfer_coeff", "initial_soc")
                if name in table
            },
            "signals": signals,
            "absent_signals": [n for n in SIGNALS if n not in names],
        }


# --------------------------------------------------------------------------- text


def _num(x) -> str:
    """A number in at most ~7 characters of significance, '-' for missing."""
    if x is None:
        return "-"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return f"{x:,}"
    x = float(x)
    if not np.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 1e5:
        return f"{x:,.0f}"
    if abs(x) < 1e-3:
        return f"{x:.3e}"
    return f"{x:.5g}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], indent: str = "  ") -> list[str]:
    """Columns aligned: the first left, the others right."""
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]

    def line(cells):
        parts = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return (indent + "  ".join(parts)).rstrip()

    return [line(list(map(str, header)))] + [line(r) for r in rows]


def format_summary(summary: dict) -> str:
    """An aligned plain-text report of a :func:`summarize` dict, for the terminal."""
    s = summary
    hours = s.get("hours_ok")
    lines = [f"cellax dataset  {s.get('path', '')}"]
    general = [
        ("file size", _bytes(s.get("file_size_bytes"))),
        ("created (UTC)", s.get("created_utc") or "-"),
        ("schema version", s.get("schema_version") if s.get("schema_version") is not None else "-"),
        ("cellax version", s.get("cellax_version") or "-"),
        ("pybamm version", s.get("pybamm_version") or "-"),
        ("backend version", s.get("backend_version") or "-"),
        ("config", s.get("config_name") or "-"),
        ("profiles", f"{_num(s['n_profiles'])}  ({_num(s['n_ok'])} ok, {_num(s['n_failed'])} failed)"),
        *([("missing from the job", f"{len(s['missing_profile_ids'])} profile(s) a merge did not find "
            f"(first: {s['missing_profile_ids'][:5]})")] if s.get("missing_profile_ids") else []),
        ("rows", f"{_num(s['n_rows'])}  ({_num(s['n_rows_ok'])} in ok profiles)"),
        ("hours of ok data", "-" if hours is None else f"{hours:,.2f} h"),
    ]
    ph = s.get("profile_hours")
    if ph:
        general.append(("profile length", f"{ph['min']:.3g} / {ph['mean']:.3g} / {ph['max']:.3g} h (min / mean / max)"))
    width = max(len(k) for k, _ in general)
    lines += [f"  {k.ljust(width)}  {v}" for k, v in general]

    lines += ["", "status (failure reasons grouped by the text before ':')"]
    lines += _table(["status", "profiles"], [(k, _num(v)) for k, v in s.get("status_counts", {}).items()])

    for key, title in (("profile_kinds", "profile kind"), ("parameter_sets", "parameter set"), ("models", "model")):
        groups = s.get(key) or {}
        if not groups:
            continue
        lines += ["", f"{title}s"]
        lines += _table(
            [title, "profiles", "ok", "hours ok"],
            [(k, _num(v["profiles"]), _num(v["ok"]), f"{v['hours_ok']:,.2f}") for k, v in groups.items()],
        )

    conditions = {k: v for k, v in (s.get("conditions") or {}).items() if v}
    if conditions:
        units = {"ambient_temp_degc": "degC", "heat_transfer_coeff": "W/m^2/K", "initial_soc": "-"}
        lines += ["", "conditions (ok profiles)"]
        lines += _table(
            ["field", "units", "min", "max"],
            [(k, units.get(k, ""), _num(v["min"]), _num(v["max"])) for k, v in conditions.items()],
        )

    signals = s.get("signals") or {}
    if signals:
        lines += ["", "signals (ok profiles)"]
        rows = []
        any_nonfinite = any(v.get("n_nonfinite") for v in signals.values())
        for name, v in signals.items():
            row = [name, "-" if v["units"] in ("1", "") else v["units"], _num(v["min"]), _num(v["mean"]), _num(v["max"])]
            if any_nonfinite:
                row.append(_num(v.get("n_nonfinite", 0)))
            rows.append(row)
        header = ["signal", "units", "min", "mean", "max"] + (["non-finite"] if any_nonfinite else [])
        lines += _table(header, rows)
    absent = s.get("absent_signals") or []
    if absent:
        lines += ["", f"absent signals: {', '.join(absent)}"]
    return "\n".join(lines) + "\n"
