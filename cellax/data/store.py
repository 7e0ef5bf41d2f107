"""The cellax HDF5 dataset format (schema version 1): write, validate, merge, read.

Profiles of any length are concatenated along time, one 1-D dataset per canonical
signal, with one row per profile in ``/profiles`` giving where it starts and how long
it is. A training window is therefore one contiguous slice of ``/signals/<name>``.
``docs/data_format.md`` documents the layout for readers with plain h5py.

Integrity: every signal chunk carries HDF5's Fletcher32 checksum (verified by HDF5 on
each read) and ``/profiles`` carries ``index_sha256``, a SHA-256 of its columns checked
on open; a damaged file is named with the damaged dataset, never read as numbers.

Crash safety: every file is written under a temporary name, flushed, marked
``complete`` as its last write, fsynced and only then renamed into place, so a file
under its final name is either complete or absent. :func:`open_dataset` refuses
anything else (foreign, truncated, incomplete or inconsistent files).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np

from cellax import __version__
from cellax.config import UserError
from cellax.signals import SIGNALS

SCHEMA_VERSION = 1

PROFILE_FIELDS: dict[str, str] = {
    "profile_id": "int64",
    "start": "int64",
    "length": "int64",
    "seed": "int64",
    "parameter_set": "str",
    "model": "str",
    "profile_kind": "str",
    "ambient_temp_degc": "float64",
    "heat_transfer_coeff": "float64",
    "initial_soc": "float64",
    "status": "str",
}
"""Per-profile index columns: name -> dtype. ``status`` is ``"ok"`` or the failure reason."""

_STR = h5py.string_dtype(encoding="utf-8")
_CHUNK_ROWS = 4096  # a 2048-step training window touches one or two chunks


class StoreError(ValueError, UserError):
    """A file is not a valid cellax dataset, or a write would lose data."""


@contextmanager
def reading(path: str | Path, what: str) -> Iterator[None]:
    """Turn HDF5's read failures (checksum mismatch, broken filter) into a :class:`StoreError` naming ``what``."""
    try:
        yield
    except OSError as err:
        raise StoreError(f"{path}: {what} is damaged (failed checksum or unreadable: {err}); "
                         "regenerate it or restore a copy") from None


def index_digest(columns: dict[str, np.ndarray]) -> str:
    """SHA-256 of the ``/profiles`` columns in :data:`PROFILE_FIELDS` order (strings as UTF-8, NUL-separated)."""
    digest = hashlib.sha256()
    for name in PROFILE_FIELDS:
        values = columns[name]
        digest.update(name.encode() + b"\0")
        if PROFILE_FIELDS[name] == "str":
            digest.update(b"\0".join(str(v).encode() for v in values))
        else:
            digest.update(np.ascontiguousarray(values, dtype=PROFILE_FIELDS[name]).tobytes())
    return digest.hexdigest()


@dataclass
class ProfileRecord:
    """One simulated profile: index fields (without ``start``/``length``) and signals."""

    meta: dict
    signals: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return len(next(iter(self.signals.values()))) if self.signals else 0


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_dataset(
    path: str | Path,
    records: Iterable[ProfileRecord],
    attrs: dict,
    signal_names: Iterable[str] = tuple(SIGNALS),
    dtype: str = "float64",
) -> Path:
    """Stream ``records`` into ``path`` crash-safely (temporary file, fsync, rename).

    Records are appended one at a time, so memory holds one profile. ``attrs`` become
    root attributes (dicts and lists stored as JSON text). The caller decides whether
    ``path`` may be replaced; this function replaces it.
    """
    path = Path(path)
    signal_names = list(signal_names)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    columns: dict[str, list] = {name: [] for name in PROFILE_FIELDS}
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["cellax_version"] = __version__
            f.attrs["created_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            for key, value in attrs.items():
                f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
            f.attrs["complete"] = False
            group = f.create_group("signals")
            for name in signal_names:
                ds = group.create_dataset(
                    name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(_CHUNK_ROWS,),
                    compression="gzip", compression_opts=4, shuffle=True, fletcher32=True,
                )
                ds.attrs["units"], ds.attrs["description"] = SIGNALS.get(name, ("", ""))
            total = 0
            for record in records:
                length = record.length
                missing = [n for n in signal_names if length and n not in record.signals]
                if missing:
                    raise StoreError(f"profile {record.meta.get('profile_id')} lacks signals {missing}")
                for name in signal_names if length else ():
                    values = np.asarray(record.signals[name], dtype=dtype)
                    if values.shape != (length,):
                        raise StoreError(f"profile {record.meta.get('profile_id')}: {name} has shape {values.shape}, expected ({length},)")
                    group[name].resize((total + length,))
                    group[name][total:] = values
                columns["start"].append(total)
                columns["length"].append(length)
                for name in PROFILE_FIELDS:
                    if name not in ("start", "length"):
                        columns[name].append(record.meta[name])
                total += length
            table = f.create_group("profiles")
            for name, kind in PROFILE_FIELDS.items():
                table.create_dataset(name, data=np.asarray(columns[name], dtype=_STR if kind == "str" else kind))
            table.attrs["index_sha256"] = index_digest(columns)
            f.flush()
            f.attrs["complete"] = True
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_path(path.parent)
    return path


class Dataset:
    """A validated, read-only cellax dataset. Use as a context manager or call ``close``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder, not a dataset file")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as err:
            raise StoreError(f"{self.path}: not a readable HDF5 file (truncated or foreign): "
                             f"{str(err).split('(')[0].strip()}") from None
        try:
            self._validate()
        except Exception:
            self.file.close()
            raise

    def _validate(self) -> None:
        f, where = self.file, str(self.path)
        if "schema_version" not in f.attrs or "signals" not in f or "profiles" not in f:
            raise StoreError(f"{where}: not a cellax dataset (no schema_version, /signals or /profiles)")
        version = f.attrs["schema_version"]
        if not isinstance(version, (int, np.integer)) or int(version) != SCHEMA_VERSION:
            raise StoreError(f"{where}: schema_version {version!r}, this cellax reads the integer {SCHEMA_VERSION}")
        if not bool(f.attrs.get("complete", False)):
            raise StoreError(f"{where}: marked incomplete (an interrupted write); regenerate or --resume")
        self.config  # decodes every JSON attribute; raises naming a malformed one
        for group in ("signals", "profiles"):
            if not isinstance(f[group], h5py.Group):
                raise StoreError(f"{where}: /{group} is not a group")
        missing = [n for n in PROFILE_FIELDS if n not in f["profiles"]]
        if missing:
            raise StoreError(f"{where}: /profiles lacks {missing}")
        for name, kind in PROFILE_FIELDS.items():
            ds = f["profiles"][name]
            if not isinstance(ds, h5py.Dataset) or ds.ndim != 1:
                raise StoreError(f"{where}: /profiles/{name} is not a 1-D dataset")
            wanted = {"str": "OSU", "int64": "iu", "float64": "f"}[kind]
            is_str = h5py.check_string_dtype(ds.dtype) is not None
            if (kind == "str") != is_str or (not is_str and ds.dtype.kind not in wanted):
                raise StoreError(f"{where}: /profiles/{name} has dtype {ds.dtype}, expected {kind}")
        counts = {f["profiles"][n].shape[0] for n in PROFILE_FIELDS}
        if len(counts) != 1:
            raise StoreError(f"{where}: /profiles columns have different lengths {sorted(counts)}")
        with reading(where, "/profiles"):
            columns = {n: f["profiles"][n].asstr()[:] if PROFILE_FIELDS[n] == "str" else f["profiles"][n][:]
                       for n in PROFILE_FIELDS}
        stored = f["profiles"].attrs.get("index_sha256")
        if stored is not None and _text(stored) != index_digest(columns):
            raise StoreError(f"{where}: /profiles is damaged (its SHA-256 differs from index_sha256); "
                             "regenerate it or restore a copy")
        starts, lengths, ids = columns["start"], columns["length"], columns["profile_id"]
        total = int(lengths.sum())
        if np.any(lengths < 0) or not np.array_equal(starts, np.concatenate([[0], np.cumsum(lengths)[:-1]])[: len(starts)]):
            raise StoreError(f"{where}: /profiles start/length do not tile /signals")
        for name, ds in f["signals"].items():
            if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or ds.dtype.kind != "f":
                raise StoreError(f"{where}: /signals/{name} is not a 1-D floating-point dataset")
            if ds.shape != (total,):
                raise StoreError(f"{where}: /signals/{name} has {ds.shape[0]} rows; the index's lengths sum to {total}")
        if np.any(ids < 0):
            raise StoreError(f"{where}: /profiles/profile_id holds negative values")
        if len(np.unique(ids)) != len(ids):
            raise StoreError(f"{where}: duplicate profile_id values")

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    @property
    def attrs(self) -> dict:
        """Root attributes; JSON-valued ones (``config``) decoded."""
        out = {}
        for key, value in self.file.attrs.items():
            if isinstance(value, (bytes, str)):
                value = _text(value)
                if value[:1] in ("{", "["):
                    try:
                        value = json.loads(value)
                    except ValueError as err:
                        raise StoreError(f"{self.path}: attribute {key!r} is not valid JSON ({err})") from None
            out[key] = value.item() if isinstance(value, np.generic) else value
        return out

    @property
    def config(self) -> dict:
        config = self.attrs.get("config", {})
        if not isinstance(config, dict):
            raise StoreError(f"{self.path}: attribute 'config' is not a JSON object")
        return config

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the index (ids, lengths, seeds, conditions, status): which profiles this file holds."""
        return index_digest({n: self.profiles[n] for n in PROFILE_FIELDS})

    @property
    def missing_profile_ids(self) -> list[int]:
        """Profile ids of the job that a merge did not find in its inputs (empty when complete)."""
        return list(self.attrs.get("missing_profile_ids", []))

    @property
    def signal_names(self) -> list[str]:
        return list(self.file["signals"].keys())

    @cached_property
    def profiles(self) -> dict[str, np.ndarray]:
        """The index table, one array per field (strings decoded); read once."""
        table = {}
        for name, ds in self.file["profiles"].items():
            values = ds[:]
            table[name] = ds.asstr()[:].astype(object) if h5py.check_string_dtype(ds.dtype) else values
        return table

    def __len__(self) -> int:
        return self.file["profiles/profile_id"].shape[0]

    def verify(self, block_rows: int = 1 << 20) -> None:
        """Read every signal chunk once (HDF5 checks each Fletcher32 sum); :class:`StoreError` naming a damaged one."""
        for name, ds in self.file["signals"].items():
            for start in range(0, ds.shape[0], block_rows):
                with reading(self.path, f"/signals/{name} rows {start}:{start + block_rows}"):
                    ds[start : start + block_rows]

    def profile(self, row: int, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """All (or the named) signals of the profile in index row ``row``."""
        start, length = int(self.profiles["start"][row]), int(self.profiles["length"][row])
        names = self.signal_names if names is None else names
        out = {}
        for n in names:
            with reading(self.path, f"/signals/{n} (profile {self.profiles['profile_id'][row]})"):
                out[n] = self.file["signals"][n][start : start + length]
        return out

    def record(self, row: int) -> ProfileRecord:
        """The profile in index row ``row`` as a :class:`ProfileRecord` (for copying)."""
        table = self.profiles
        meta = {name: table[name][row] for name in PROFILE_FIELDS if name not in ("start", "length")}
        meta = {name: value.item() if isinstance(value, np.generic) else value for name, value in meta.items()}
        return ProfileRecord(meta, self.profile(row))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def open_dataset(path: str | Path) -> Dataset:
    """Open and validate a dataset; :class:`StoreError` with a clear message otherwise."""
    return Dataset(path)


@contextmanager
def opened(dataset: Dataset | str | Path) -> Iterator[Dataset]:
    """Yield ``dataset`` as a :class:`Dataset`, opening (and later closing) it if it is a path."""
    if isinstance(dataset, Dataset):
        yield dataset
    else:
        with open_dataset(dataset) as ds:
            yield ds


def _missing_ids(config: dict, shard: str, present: dict) -> list[int]:
    """Ids of the job (``config["n_profiles"]``, shard ``"I/N"``) absent from ``present``."""
    n_profiles = config.get("n_profiles")
    if not isinstance(n_profiles, int):
        return []
    index, count = (int(x) for x in shard.split("/"))
    return [i for i in range(index, n_profiles, count) if i not in present]


_WRITTEN_ATTRS = ("schema_version", "cellax_version", "created_utc", "complete", "shard", "missing_profile_ids")
"""Root attributes a copy (merge, subset) writes anew rather than taking from its inputs."""


def merge_datasets(
    inputs: Sequence[str | Path], output: str | Path, attrs: dict | None = None, overwrite: bool = False
) -> Path:
    """Copy the profiles of several datasets (shards, parts) into one, sorted by ``profile_id``.

    The inputs must share their ``config`` (ignoring ``shard``); a ``profile_id``
    found in two inputs is an error, never silently dropped. ``attrs`` are written
    over the first input's root attributes.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise StoreError(f"{output} exists; pass overwrite to replace it")
    if not inputs:
        raise StoreError("nothing to merge")
    base_attrs: dict | None = None
    base_config: dict | None = None
    signal_names: list[str] | None = None
    order: list[tuple[int, int, int]] = []  # (profile_id, input, row)
    seen: dict[int, Path] = {}
    for index, path in enumerate(inputs):
        with open_dataset(path) as ds:
            config = {k: v for k, v in ds.config.items() if k != "shard"}
            if base_config is None:
                base_attrs, base_config, signal_names = ds.attrs, config, ds.signal_names
            elif config != base_config:
                raise StoreError(f"{path}: its config differs from {inputs[0]}; only parts of one job can be merged")
            elif ds.signal_names != signal_names:
                raise StoreError(f"{path}: signals {ds.signal_names} differ from {signal_names}")
            elif ds.attrs.get("backend_version") != base_attrs.get("backend_version"):
                raise StoreError(f"{path}: backend_version {ds.attrs.get('backend_version', 1)} differs from "
                                 f"{base_attrs.get('backend_version', 1)} of {inputs[0]}; regenerate the older one")
            for row, pid in enumerate(ds.profiles["profile_id"].tolist()):
                if pid in seen:
                    raise StoreError(f"profile_id {pid} is in both {seen[pid]} and {path}")
                seen[pid] = Path(path)
                order.append((pid, index, row))
    order.sort()
    merged_attrs = {k: v for k, v in base_attrs.items() if k not in _WRITTEN_ATTRS}
    merged_attrs["config"] = base_config
    merged_attrs.update(attrs or {})
    merged_attrs["missing_profile_ids"] = _missing_ids(base_config, merged_attrs.get("shard", "0/1"), seen)
    datasets = [open_dataset(path) for path in inputs]
    try:
        records = (datasets[index].record(row) for _, index, row in order)
        return write_dataset(output, records, merged_attrs, signal_names)
    finally:
        for ds in datasets:
            ds.close()


def subset_dataset(source: str | Path, rows: Sequence[int], output: str | Path, overwrite: bool = False) -> Path:
    """Copy the profiles in index rows ``rows`` of ``source`` (in that order) into a new dataset ``output``.

    The copy keeps the source's signals and root attributes (``config``, ``backend_version``) and records
    ``subset_of``: the source's path and :attr:`Dataset.fingerprint`. For training or evaluating on a split
    chosen elsewhere (e.g. :func:`cellax.hybrid.data.write_split`) with the tools that read whole files.
    """
    output = Path(output)
    if output.exists() and Path(source).exists() and output.resolve() == Path(source).resolve():
        raise StoreError(f"{output}: a subset cannot replace its own source")
    if output.exists() and not overwrite:
        raise StoreError(f"{output} exists; pass overwrite to replace it")
    with open_dataset(source) as ds:
        rows = [int(r) for r in rows]
        outside = [r for r in rows if not 0 <= r < len(ds)]
        if outside:
            raise StoreError(f"{source}: rows {outside} are outside its {len(ds)} profiles")
        if len(set(rows)) != len(rows):
            raise StoreError(f"{source}: rows {rows} name a profile twice")
        attrs = {k: v for k, v in ds.attrs.items() if k not in _WRITTEN_ATTRS}
        attrs["subset_of"] = {"path": str(source), "fingerprint": ds.fingerprint}
        dtype = ds.file["signals"][ds.signal_names[0]].dtype.name if ds.signal_names else "float64"
        return write_dataset(output, (ds.record(r) for r in rows), attrs, ds.signal_names, dtype)
