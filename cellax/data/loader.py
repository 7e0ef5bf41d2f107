"""The dataset as JAX batches: splits by profile, normalisation stats, random windows.

Splits are made per profile (never per window), so no profile leaks between train,
validation and test. Statistics come from the train rows only. A training window is
one contiguous slice of ``/signals/<name>`` inside one profile (the HDF5 layout of
:mod:`cellax.data.store`), so windows never straddle two profiles.

Batches are ``float32`` by default (for neural networks); statistics and
normalisation are computed in ``float64`` before the cast.

Besides signals, every reader accepts *profile conditions*: a numeric column of
the ``/profiles`` index (``heat_transfer_coeff``) or ``column=value`` for a text
column (``parameter_set=Chen2020``: 1 where it matches, else 0, a one-hot cell
identity). A condition reads as a signal that is constant over each profile, so
models, statistics and windows treat it like any other input channel.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from cellax.data.store import Dataset, open_dataset, opened, reading

SPLITS = ("train", "val", "test")

_CACHE_AUTO_BYTES = 2**30  # cache_in_memory=None caches the needed signals below this
_CHUNK_CACHE_BYTES = 16 * 2**20  # h5py chunk cache per signal in the reader thread
_STATS_BLOCK = 2**20  # samples read at a time by compute_stats


# --------------------------------------------------------------------------- helpers


def _check_rows(rows, n_profiles: int, *, unique: bool) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
        raise ValueError(f"rows must be a 1-D array of integer index rows, got shape {rows.shape} dtype {rows.dtype}")
    rows = rows.astype(np.int64)
    bad = rows[(rows < 0) | (rows >= n_profiles)]
    if bad.size:
        raise IndexError(f"rows {bad[:5].tolist()} out of range for a dataset of {n_profiles} profiles")
    if unique and len(np.unique(rows)) != len(rows):
        raise ValueError("rows contain duplicates (each profile may appear once)")
    return rows


def condition_values(ds: Dataset, name: str) -> np.ndarray | None:
    """Per-profile float64 values of the profile condition ``name`` (see the module docstring), or None."""
    column, _, value = name.partition("=")
    if column not in ds.file["profiles"] or column in ("start", "length", "status"):
        return None
    table = ds.profiles[column]
    if value:
        return (table == value).astype(np.float64) if table.dtype == object else None
    return table.astype(np.float64) if np.issubdtype(table.dtype, np.number) else None


def _check_names(ds: Dataset, names: Sequence[str]) -> list[str]:
    if isinstance(names, str):
        raise TypeError(f"names must be a sequence of signal names, got the string {names!r}")
    names = list(names)
    if not names:
        raise ValueError("names is empty; give at least one signal name")
    missing = [n for n in names if n not in ds.signal_names and condition_values(ds, n) is None]
    if missing:
        raise KeyError(
            f"signals {missing} not in {ds.path} (it has {ds.signal_names}, and the profile conditions of the "
            f"numeric index columns, or column=value for a text column)"
        )
    return names


def _conditions(ds: Dataset, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``{name: (n_profiles,) values}`` for the names that are profile conditions rather than signals."""
    return {n: condition_values(ds, n) for n in names if n not in ds.signal_names}


def signal_bytes(path: str | Path, rows: Iterable[int], names: Sequence[str], min_length: int = 1) -> int:
    """Bytes that the ``names`` signals (in the file's dtypes; conditions float64) of the profiles in ``rows``
    at least ``min_length`` samples long take in memory (read from the index only)."""
    with open_dataset(path) as ds:
        names = _check_names(ds, names)
        lengths = ds.file["profiles/length"][:][_check_rows(list(rows), len(ds), unique=False)]
        itemsize = sum(ds.file["signals"][n].dtype.itemsize if n in ds.signal_names else 8 for n in names)
    return int(lengths[lengths >= min_length].sum()) * itemsize


def loader_resident_bytes(path: str | Path, rows: Iterable[int], signals: Sequence[str], window_len: int) -> int:
    """Bytes a :class:`WindowLoader` (``cache_in_memory=None``) over these rows and signals keeps in RAM."""
    nbytes = signal_bytes(path, rows, signals, window_len)
    return nbytes if _cached(nbytes) else 0


def _cached(nbytes: int) -> bool:
    return nbytes <= _CACHE_AUTO_BYTES


def _runs(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge ranges ``[start, start + length)`` that follow each other back to back in
    the given order into ``(start, length)`` runs, so adjacent profiles are one read."""
    if len(starts) == 0:
        return starts, lengths
    ends = starts + lengths
    breaks = np.flatnonzero(starts[1:] != ends[:-1]) + 1
    first = np.concatenate([[0], breaks])
    last = np.concatenate([breaks, [len(starts)]]) - 1
    return starts[first], ends[last] - starts[first]


# --------------------------------------------------------------------------- splits


def _unit_draw(seed: int, profile_id: int) -> float:
    """u in [0, 1): the top 53 bits of ``SeedSequence(seed, spawn_key=(profile_id,))``."""
    word = np.random.SeedSequence(seed, spawn_key=(profile_id,)).generate_state(1, np.uint64)[0]
    return int(word >> np.uint64(11)) * 2.0**-53


def split_profiles(
    dataset: str | Path | Dataset, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, np.ndarray]:
    """Assign each ``"ok"`` profile to ``"train"``, ``"val"`` or ``"test"``.

    Profile ``p`` goes to split ``i`` when ``F[i-1] <= u(seed, profile_id_p) < F[i]``,
    ``F`` the cumulative ``fractions`` and ``u`` a hash of ``(seed, profile_id)`` (see
    :func:`_unit_draw`). A profile's split therefore depends only on its id and the
    seed: not on file order, sharding or how many other profiles exist. Failed
    profiles are in no split.

    Returns index rows (sorted int64 arrays, for :meth:`Dataset.profile` and friends)
    keyed by ``"train"``, ``"val"``, ``"test"``.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.shape != (3,):
        raise ValueError(f"fractions must be three numbers (train, val, test), got {fractions.tolist()}")
    if not np.all(np.isfinite(fractions)) or np.any(fractions < 0):
        raise ValueError(f"fractions must be finite and non-negative, got {fractions.tolist()}")
    if abs(fractions.sum() - 1.0) > 1e-9:
        raise ValueError(f"fractions must sum to 1, got {fractions.tolist()} (sum {fractions.sum()!r})")
    if int(seed) < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    bounds = np.cumsum(fractions)
    bounds[-1] = 1.0
    with opened(dataset) as ds:
        ids, status = ds.profiles["profile_id"], ds.profiles["status"]
    if np.any(ids < 0):
        raise ValueError("split_profiles needs non-negative profile_id values")
    ok = np.flatnonzero(status == "ok")
    draws = np.array([_unit_draw(int(seed), int(ids[row])) for row in ok], dtype=np.float64)
    which = np.searchsorted(bounds, draws, side="right")
    return {name: ok[which == i].astype(np.int64) for i, name in enumerate(SPLITS)}


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class NormStats:
    """Per-signal mean and standard deviation, ``x_norm = (x - mean) / std``.

    ``mean`` and ``std`` map signal names to floats; ``count`` is the number of
    samples they were computed from. Signals without an entry pass through
    :meth:`normalise` and :meth:`denormalise` unchanged. A PyTree (``mean`` and
    ``std`` are leaves), so it can be passed into ``jit``.
    """

    mean: dict[str, float]
    std: dict[str, float]
    count: int = 0

    def __post_init__(self):
        if set(self.mean) != set(self.std):
            raise ValueError(f"mean and std name different signals: {sorted(self.mean)} vs {sorted(self.std)}")

    @property
    def names(self) -> list[str]:
        return list(self.mean)

    def normalise(self, batch: dict) -> dict:
        """``{name: (x - mean) / std}`` for named signals; arrays of any shape, dtype kept."""
        return {k: ((v - self.mean[k]) / self.std[k]).astype(v.dtype) if k in self.mean else v for k, v in batch.items()}

    def denormalise(self, batch: dict) -> dict:
        """Inverse of :meth:`normalise`: ``{name: x * std + mean}``."""
        return {k: (v * self.std[k] + self.mean[k]).astype(v.dtype) if k in self.mean else v for k, v in batch.items()}

    def to_json(self) -> str:
        """JSON text for run folders (never pickle)."""
        return json.dumps(
            {
                "format": "cellax.NormStats",
                "version": 1,
                "count": int(self.count),
                "mean": {k: float(v) for k, v in self.mean.items()},
                "std": {k: float(v) for k, v in self.std.items()},
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> "NormStats":
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != "cellax.NormStats":
            raise ValueError("not cellax NormStats JSON (no format: cellax.NormStats)")
        if data.get("version") != 1:
            raise ValueError(f"NormStats JSON version {data.get('version')}, this cellax reads 1")
        mean = {str(k): float(v) for k, v in data["mean"].items()}
        std = {str(k): float(v) for k, v in data["std"].items()}
        bad = [k for k, v in std.items() if not (math.isfinite(v) and v > 0)] + [
            k for k, v in mean.items() if not math.isfinite(v)
        ]
        if bad:
            raise ValueError(f"NormStats JSON has non-finite mean or non-positive std for {bad}")
        return cls(mean, std, int(data.get("count", 0)))


jax.tree_util.register_dataclass(NormStats, data_fields=["mean", "std"], meta_fields=["count"])


def compute_stats(
    dataset: str | Path | Dataset, rows: Iterable[int], names: Sequence[str], min_std: float = 1e-6
) -> NormStats:
    """Mean and (population, ``ddof=0``) std of each signal over the profiles in ``rows``.

    Give the train rows only. Streams over the rows in file order, in blocks of at most
    2**20 samples (adjacent profiles read together), in float64, merging block
    moments with Chan et al.'s pairwise update; ``std`` is floored at
    ``min_std`` so a constant signal normalises to 0 rather than dividing by zero.
    """
    with opened(dataset) as ds:
        names = _check_names(ds, names)
        rows = np.sort(_check_rows(list(rows), len(ds), unique=True))  # file order: sequential reads
        lengths = ds.file["profiles/length"][:][rows]
        runs = _runs(ds.file["profiles/start"][:][rows], lengths)
        conditions = _conditions(ds, names)
        moments = {name: (0, 0.0, 0.0) for name in names}  # (n, mean, M2)
        for name in names:
            if name in conditions:  # constant per profile: length-weighted moments of the index values
                x, n = conditions[name][rows], int(lengths.sum())
                mean = float(np.sum(lengths * x) / n) if n else 0.0
                moments[name] = (n, mean, float(np.sum(lengths * (x - mean) ** 2)))
                continue
            signal = ds.file["signals"][name]
            for start, length in zip(*runs):
                for lo in range(int(start), int(start + length), _STATS_BLOCK):
                    hi = min(lo + _STATS_BLOCK, start + length)
                    with reading(ds.path, f"/signals/{name} rows {lo}:{hi}"):
                        x = signal[lo:hi].astype(np.float64)
                    n_b, mean_b = x.size, float(x.mean())
                    m2_b = float(np.sum((x - mean_b) ** 2))
                    n_a, mean_a, m2_a = moments[name]
                    n = n_a + n_b
                    delta = mean_b - mean_a
                    moments[name] = (n, mean_a + delta * n_b / n, m2_a + m2_b + delta**2 * n_a * n_b / n)
    count = moments[names[0]][0]
    if count == 0:
        raise ValueError("compute_stats: the given rows hold no samples (empty or all failed profiles)")
    mean = {name: moments[name][1] for name in names}
    std = {name: max(math.sqrt(moments[name][2] / count), min_std) for name in names}
    bad = [name for name in names if not (math.isfinite(mean[name]) and math.isfinite(std[name]))]
    if bad:
        raise ValueError(f"compute_stats: non-finite values in signals {bad}")
    return NormStats(mean, std, count)


# --------------------------------------------------------------------------- profiles


def iterate_profiles(
    path_or_dataset: str | Path | Dataset, rows: Iterable[int], names: Sequence[str]
) -> Iterator[dict]:
    """Yield each profile in ``rows`` (in the given order) whole, for evaluation.

    Each item is ``{name: np.ndarray of shape (length,)}`` in the file's dtype (float64
    for profile conditions), plus ``"profile_id": int``. A failed profile yields arrays of length 0.
    """
    with opened(path_or_dataset) as ds:
        names = _check_names(ds, names)
        rows = _check_rows(list(rows), len(ds), unique=False)
        starts, lengths = ds.file["profiles/start"][:], ds.file["profiles/length"][:]
        ids = ds.file["profiles/profile_id"][:]
        conditions = _conditions(ds, names)
        for row in rows:
            start, length = int(starts[row]), int(lengths[row])
            with reading(ds.path, f"/signals (profile {int(ids[row])})"):
                item = {
                    name: np.full(length, conditions[name][row]) if name in conditions
                    else ds.file["signals"][name][start : start + length]
                    for name in names
                }
            item["profile_id"] = int(ids[row])
            yield item


# --------------------------------------------------------------------------- windows


@dataclass
class _Plan:
    """Everything the reader thread needs (no reference to the loader itself)."""

    path: Path
    names: list[str]
    starts: np.ndarray  # (P,) first sample of each qualifying profile in /signals
    lengths: np.ndarray  # (P,)
    window_len: int
    batch_size: int
    seed: int
    num_batches: int | None
    cache: bool
    stats: NormStats | None
    dtype: np.dtype
    conditions: dict[str, np.ndarray]  # name -> (P,) value of each qualifying profile
    start_batch: int = 0
    cum_windows: np.ndarray = field(init=False)  # (P,) cumulative count of valid starts

    def __post_init__(self):
        self.cum_windows = np.cumsum(self.lengths - self.window_len + 1)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Profile indices and offsets of one batch; every valid start equally likely."""
        k = rng.integers(0, self.cum_windows[-1], size=self.batch_size)
        profile = np.searchsorted(self.cum_windows, k, side="right")
        offset = k - (self.cum_windows[profile] - (self.lengths[profile] - self.window_len + 1))
        return profile, offset


class _Reader:
    """Opens the file in the reader thread; reads windows from it or from a memory cache."""

    def __init__(self, plan: _Plan):
        self.plan = plan
        self.file = h5py.File(plan.path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES, rdcc_nslots=10007)
        self.signal_names = [name for name in plan.names if name not in plan.conditions]
        self.signals = [self.file["signals"][name] for name in self.signal_names]
        self.cached = None
        try:
            if plan.cache:  # the profiles back to back, in plan order
                self.cache_starts = np.concatenate([[0], np.cumsum(plan.lengths)[:-1]])
                self.cached = [self._read_all(signal) for signal in self.signals]
        except BaseException:
            self.file.close()
            raise

    def _read_all(self, signal: h5py.Dataset) -> np.ndarray:
        out, at = np.empty(int(self.plan.lengths.sum()), dtype=signal.dtype), 0
        for start, length in zip(*_runs(self.plan.starts, self.plan.lengths)):
            with reading(self.plan.path, f"{signal.name} rows {start}:{start + length}"):
                signal.read_direct(out, np.s_[start : start + length], np.s_[at : at + length])
            at += length
        return out

    def close(self) -> None:
        self.file.close()

    def read(self, profile: np.ndarray, offset: np.ndarray) -> dict[str, np.ndarray]:
        """``{name: (batch_size, window_len)}`` arrays in the file's dtype."""
        plan, length = self.plan, self.plan.window_len
        out = {name: np.repeat(values[profile][:, None], length, axis=1) for name, values in plan.conditions.items()}
        if self.cached is not None:
            starts = self.cache_starts[profile] + offset
            for name, values in zip(self.signal_names, self.cached):
                out[name] = np.lib.stride_tricks.sliding_window_view(values, length)[starts]
        else:
            starts = plan.starts[profile] + offset
            order = np.argsort(starts, kind="stable")  # file order, for the chunk cache
            for name, signal in zip(self.signal_names, self.signals):
                block = np.empty((len(starts), length), dtype=signal.dtype)
                with reading(plan.path, signal.name):
                    for i in order:
                        signal.read_direct(block, np.s_[starts[i] : starts[i] + length], np.s_[i])
                out[name] = block
        return {name: out[name] for name in plan.names}

    def batch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One batch: ``{name: (batch_size, window_len)}`` in ``dtype``, normalised in float64."""
        stats, out = self.plan.stats, {}
        for name, values in self.read(*self.plan.sample(rng)).items():
            if stats is not None and name in stats.mean:
                values = values.astype(np.float64)
                values -= stats.mean[name]
                values /= stats.std[name]
            out[name] = np.ascontiguousarray(values, dtype=self.plan.dtype)
        return out


class _End:
    """Queue marker: the finite loader is exhausted."""


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            pass
    return False


def _produce(plan: _Plan, q: queue.Queue, stop: threading.Event) -> None:
    """Reader-thread body: fill ``q`` with numpy batches until stopped or done."""
    try:
        reader = _Reader(plan)
        try:
            rng = np.random.default_rng(plan.seed)
            for _ in range(plan.start_batch):  # resume: replay the draws (no reads), not the batches
                plan.sample(rng)
            made = 0
            while not stop.is_set() and (plan.num_batches is None or made < plan.num_batches):
                if not _put(q, reader.batch(rng), stop):
                    return
                made += 1
        finally:
            reader.close()
        _put(q, _End(), stop)
    except BaseException as error:  # re-raised in the consumer
        _put(q, _Failure(error), stop)


def _shutdown(stop: threading.Event, q: queue.Queue, thread: threading.Thread, timeout: float) -> None:
    stop.set()
    while True:  # unblock a producer waiting on a full queue
        try:
            q.get_nowait()
        except queue.Empty:
            break
    if thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout)


class WindowLoader:
    """Random training windows as JAX arrays, read in a background thread.

    Each ``next(loader)`` is ``{name: jax.Array of shape (batch_size, window_len)}``
    (dtype ``dtype``, float32 by default for neural networks). Window ``b`` is
    ``/signals/<name>[s : s + window_len]`` for one profile of ``rows`` and a start
    ``s`` drawn uniformly from all valid starts of all qualifying profiles, so a
    profile is picked with probability proportional to ``length - window_len + 1``.
    Windows are drawn with replacement; profiles shorter than ``window_len`` are
    skipped. The batch sequence depends only on ``seed`` (and the data), not on
    timing or ``cache_in_memory``. ``start_batch=k`` starts at the ``k``-th batch of
    that sequence (exact resume of a training run).

    With ``stats``, the named signals are normalised (in float64, before the cast).
    ``cache_in_memory`` reads the needed profiles once into RAM (fast random access);
    ``None`` does so when they take under 1 GiB and otherwise reads one slice per
    window per signal from the file, so datasets larger than RAM work.

    ``prefetch`` batches are read ahead in a daemon thread with its own h5py handle.
    An error there is raised by the next ``next()``. Infinite unless ``num_batches``
    is given. Stop the thread with :meth:`close` or a ``with`` block.
    """

    def __init__(
        self,
        path: str | Path,
        rows: Iterable[int],
        names: Sequence[str],
        window_len: int,
        batch_size: int,
        seed: int,
        prefetch: int = 2,
        stats: NormStats | None = None,
        dtype=jnp.float32,
        cache_in_memory: bool | None = None,
        num_batches: int | None = None,
        device: jax.Device | jax.sharding.Sharding | None = None,
        start_batch: int = 0,
    ):
        for label, value, least in (("window_len", window_len, 1), ("batch_size", batch_size, 1), ("prefetch", prefetch, 1)):
            if int(value) != value or value < least:
                raise ValueError(f"{label} must be an integer >= {least}, got {value!r}")
        if int(start_batch) != start_batch or start_batch < 0:
            raise ValueError(f"start_batch must be a non-negative integer, got {start_batch!r}")
        if num_batches is not None and (int(num_batches) != num_batches or num_batches < 0):
            raise ValueError(f"num_batches must be a non-negative integer or None, got {num_batches!r}")
        with open_dataset(path) as ds:
            self.path = ds.path
            self.names = _check_names(ds, names)
            rows = np.sort(_check_rows(list(rows), len(ds), unique=True))  # order of rows is irrelevant
            starts = ds.file["profiles/start"][:][rows]
            lengths = ds.file["profiles/length"][:][rows]
            conditions = {name: values[rows] for name, values in _conditions(ds, self.names).items()}
            itemsize = sum(ds.file["signals"][name].dtype.itemsize for name in self.names if name not in conditions)
        if rows.size == 0:
            raise ValueError("WindowLoader: rows is empty")
        keep = lengths >= window_len
        if not keep.any():
            raise ValueError(
                f"no profile in rows is at least window_len={window_len} samples long "
                f"(the longest has {int(lengths.max())}); use a shorter window_len"
            )
        self.window_len, self.batch_size, self.seed = int(window_len), int(batch_size), int(seed)
        self.rows, self.skipped_rows = rows[keep], rows[~keep]
        self.num_windows = int(np.sum(lengths[keep] - window_len + 1))
        if cache_in_memory is None:
            cache_in_memory = _cached(int(lengths[keep].sum()) * itemsize)
        self.cache_in_memory = bool(cache_in_memory)
        self._device = device
        plan = _Plan(
            self.path, self.names, starts[keep], lengths[keep], self.window_len, self.batch_size,
            self.seed, num_batches, self.cache_in_memory, stats, np.dtype(dtype),
            {name: values[keep] for name, values in conditions.items()}, int(start_batch),
        )
        self._queue: queue.Queue = queue.Queue(maxsize=int(prefetch))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_produce, args=(plan, self._queue, self._stop), name="cellax-window-loader", daemon=True
        )
        self._done: BaseException | None = None
        self._thread.start()
        # Stops the thread when the loader is closed, garbage-collected or at exit.
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, self._queue, self._thread, 5.0)

    def __iter__(self) -> "WindowLoader":
        return self

    def __next__(self) -> dict[str, jax.Array]:
        if self._done is not None:
            if isinstance(self._done, StopIteration):
                raise StopIteration
            raise RuntimeError("WindowLoader failed earlier or was closed") from self._done
        while True:
            try:
                item = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self._done = RuntimeError("WindowLoader reader thread stopped")
                    raise self._done from None
        if isinstance(item, _End):
            self._done = StopIteration()
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self._done = item.error
            self.close()
            raise item.error
        return jax.device_put(item, self._device)

    def close(self) -> None:
        """Stop the reader thread (idempotent)."""
        if self._done is None:
            self._done = RuntimeError("WindowLoader is closed")
        self._finalizer()

    @property
    def closed(self) -> bool:
        """True once the reader thread is stopped (or asked to stop)."""
        return self._stop.is_set()

    def __enter__(self) -> "WindowLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
