"""Run a simulator backend over seeded profiles: workers, shards, crash-safe resume.

A job is a :class:`~cellax.data.config.DataConfig`; profile ``i`` of it is fully
determined by ``(config, i)`` (its random stream is
``SeedSequence(config.seed, spawn_key=(i,))``), so any worker, shard or resumed run
produces the same profile.

While a job runs, finished profiles are written in small batches to
``<out>.parts/part-NNNNN.h5``, each file complete before it gets its name (see
:mod:`cellax.data.store`). ``kill -9`` therefore loses at most the batch in flight;
``resume=True`` reads which profile ids the parts hold, simulates only the rest,
then merges everything into ``<out>`` and removes the parts folder.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cellax.config import UserError
from cellax.data.config import DataConfig
from cellax.data.profiles import choose_kind, make_profile, profile_rng
from cellax.data.store import ProfileRecord, StoreError, merge_datasets, open_dataset, write_dataset
from cellax.signals import SIGNALS

FLUSH_PROFILES = 8
FLUSH_SECONDS = 10.0
JAX_BATCH = 64  # profiles per vmapped call of the jax backend


class GenerateError(RuntimeError, UserError):
    """A job that cannot start or finish as asked; nothing was deleted."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the profile ids ``i`` with ``i % count == index``."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> "Shard":
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise GenerateError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
        if not 0 <= index < count:
            raise GenerateError(f"--shard {text}: need 0 <= I < N")
        return cls(index, count)

    def profile_ids(self, n_profiles: int) -> list[int]:
        return list(range(self.index, n_profiles, self.count))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass
class GenerateReport:
    out: Path
    n_profiles: int
    n_ok: int
    n_simulated: int
    cell_hours: float
    wall_s: float

    @property
    def cell_hours_per_s(self) -> float:
        return self.cell_hours / self.wall_s if self.wall_s > 0 else float("nan")


def plan_profile(config: DataConfig, profile_id: int) -> tuple[dict, np.ndarray]:
    """The index fields and the current samples of profile ``profile_id`` of a job."""
    rng = profile_rng(config.seed, profile_id)
    kind = choose_kind(rng, config.profiles)
    draw = lambda r: float(rng.uniform(r.low, r.high))  # noqa: E731
    conditions = config.conditions
    meta = dict(
        profile_id=profile_id,
        seed=config.seed,
        parameter_set=config.simulation.parameter_set,
        model=config.simulation.model,
        profile_kind=kind,
        ambient_temp_degc=draw(conditions.ambient_temp_degc),
        heat_transfer_coeff=draw(conditions.heat_transfer_coeff),
        initial_soc=draw(conditions.initial_soc),
    )
    current_a = make_profile(kind, rng, config.cell, config.profiles, meta["initial_soc"])
    return meta, current_a


_worker_backend = None


def _make_backend(config: DataConfig):
    from cellax.data.backend import make_backend

    try:
        return make_backend(config)
    except ValueError as err:
        raise GenerateError(str(err)) from None


def _init_worker(config_json: str) -> None:
    """A PyBaMM worker needs no accelerator: JAX there is kept on the CPU, so that on a GPU machine a worker never
    takes the device (and most of its memory) that the parent holds."""
    import jax

    jax.config.update("jax_platforms", "cpu")
    global _worker_backend
    _worker_backend = _make_backend(DataConfig.model_validate_json(config_json))


def simulate_profile(backend, config: DataConfig, profile_id: int) -> ProfileRecord:
    """Plan and simulate one profile; failures come back as a status, never an exception."""
    meta, current_a = plan_profile(config, profile_id)
    result = backend.simulate(
        current_a, config.profiles.dt_s, meta["ambient_temp_degc"], meta["heat_transfer_coeff"], meta["initial_soc"]
    )
    return ProfileRecord({**meta, "status": result.status}, result.signals)


def simulate_profiles(backend, config: DataConfig, profile_ids: list[int]) -> list[ProfileRecord]:
    """Plan and simulate several profiles in one batched call (the jax backend)."""
    plans = [plan_profile(config, i) for i in profile_ids]
    metas = [meta for meta, _ in plans]
    results = backend.simulate_batch(
        [current for _, current in plans],
        config.profiles.dt_s,
        [m["ambient_temp_degc"] for m in metas],
        [m["heat_transfer_coeff"] for m in metas],
        [m["initial_soc"] for m in metas],
    )
    return [ProfileRecord({**meta, "status": r.status}, r.signals) for meta, r in zip(metas, results)]


def _simulate_batches(backend, config: DataConfig, profile_ids: list[int], threads: int, collect) -> None:
    """The jax backend's batches of ``JAX_BATCH`` profiles, ``threads`` of them in flight at once.

    XLA releases the GIL while it computes, so each thread's batch runs on its own core: 1.6x the
    profiles per second of one batch at a time on 2 cores (256 one-hour profiles). Records reach
    ``collect`` in this thread, batch by batch as they finish; on an exception or Ctrl-C the queued
    batches are cancelled and the running ones (seconds each) finish before it propagates.
    """
    batches = [profile_ids[start : start + JAX_BATCH] for start in range(0, len(profile_ids), JAX_BATCH)]
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(simulate_profiles, backend, config, batch) for batch in batches]
        try:
            for future in as_completed(futures):
                for record in future.result():
                    collect(record)
        finally:
            for future in futures:
                future.cancel()


def _worker_simulate(config_json: str, profile_id: int) -> ProfileRecord:
    return simulate_profile(_worker_backend, DataConfig.model_validate_json(config_json), profile_id)


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def backend_version(config: DataConfig) -> int:
    from cellax.data.backend import backend_class

    return backend_class(config.backend).version


def _job_manifest(config: DataConfig, shard: Shard) -> dict:
    return {"config": config.model_dump(mode="json"), "shard": str(shard), "backend_version": backend_version(config)}


def _completed_parts(parts: Path) -> tuple[list[Path], set[int]]:
    """The part files of an earlier run and the profile ids they hold."""
    files = sorted(parts.glob("part-*.h5"))
    done: set[int] = set()
    for path in files:
        try:
            with open_dataset(path) as ds:
                ds.verify()
                ids = set(ds.profiles["profile_id"].tolist())
        except StoreError as err:
            raise GenerateError(f"{path} is damaged ({err}); move it away and --resume again") from None
        if ids & done:
            raise GenerateError(f"{path} repeats profile ids {sorted(ids & done)[:5]} of another part")
        done |= ids
    return files, done


def job_size(config: DataConfig, shard: Shard) -> tuple[int, float, int]:
    """``(profiles, cell-hours, bytes)`` of a job: the bytes are the uncompressed float64 signals, written
    twice at the end (part files and the merged file coexist until the merge is done)."""
    n_profiles = len(shard.profile_ids(config.n_profiles))
    samples = n_profiles * config.profiles.n_samples
    return n_profiles, samples * config.profiles.dt_s / 3600, 2 * samples * len(SIGNALS) * 8


def _check_size(out: Path, config: DataConfig, shard: Shard, log) -> None:
    n_profiles, cell_hours, need = job_size(config, shard)
    free = shutil.disk_usage(out.parent).free
    log(f"job: {n_profiles} profiles, {cell_hours:.1f} cell-hours, at most {need / 1e9:.2f} GB on disk "
        f"({free / 1e9:.1f} GB free in {out.parent})")
    if need > free:
        raise GenerateError(f"job needs up to {need / 1e9:.2f} GB in {out.parent} but {free / 1e9:.2f} GB are free; "
                            "fewer n_profiles, shorter profiles or another --out")


def _prepare_output(out: Path, config: DataConfig, shard: Shard, resume: bool, overwrite: bool, log) -> tuple[Path, set[int], int]:
    """Check what exists at ``out`` against the flags; returns (parts folder, done ids, next part number)."""
    if resume and overwrite:
        raise GenerateError("--resume and --overwrite contradict each other; pick one")
    if not out.parent.is_dir():
        raise GenerateError(f"--out {out}: folder {out.parent} does not exist")
    try:
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as err:
        raise GenerateError(f"--out {out}: folder {out.parent} is not writable ({err.strerror})") from None
    parts = parts_dir(out)
    manifest = _job_manifest(config, shard)
    if out.is_dir():
        raise GenerateError(f"--out {out} is a folder; give a file name such as {out / 'data.h5'}")
    if out.exists() and not (resume or overwrite):
        raise GenerateError(f"{out} exists; pass --resume to complete it or --overwrite to replace it")
    if parts.exists() and not (resume or overwrite):
        raise GenerateError(f"{parts} holds an interrupted run; pass --resume to finish it or --overwrite to start anew")
    if overwrite and parts.exists():
        log(f"--overwrite: removing {len(list(parts.glob('part-*.h5')))} part file(s) of an earlier run in {parts}")
        shutil.rmtree(parts)
    if resume and parts.exists():
        stored = json.loads((parts / "job.json").read_text()) if (parts / "job.json").exists() else None
        if stored != manifest:
            raise GenerateError(f"{parts} belongs to a different job (config, shard or backend version changed); cannot --resume it")
        for stale in [*parts.glob(".part-*.tmp-*"), *out.parent.glob(f".{out.name}.tmp-*")]:
            log(f"removing unfinished temporary file {stale} (it was being written when the run died)")
            stale.unlink()
        files, done = _completed_parts(parts)
        next_part = 1 + max((int(p.stem.split("-")[1]) for p in files), default=-1)
        return parts, done, next_part
    _check_size(out, config, shard, log)
    parts.mkdir()
    _write_json_atomic(parts / "job.json", manifest)
    return parts, set(), 0


@contextmanager
def _remembered_ctrl_c():
    """SIGINT raises ``KeyboardInterrupt`` as usual and is also remembered: one swallowed where Python
    ignores exceptions (a finaliser, e.g. h5py closing a file during a flush) is raised again at the next
    finished profile, so a Ctrl-C never lets the job run on to the end."""
    hit = {"ctrl_c": False}
    if threading.current_thread() is not threading.main_thread():
        yield hit
        return

    def handler(signum, frame):
        hit["ctrl_c"] = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield hit
    finally:
        signal.signal(signal.SIGINT, previous)


def generate(
    config: DataConfig,
    out: str | Path,
    workers: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    shard: Shard = Shard(),
    progress: bool = True,
    flush_every: int = FLUSH_PROFILES,
    log=print,
) -> GenerateReport:
    """Simulate every profile of ``config`` (or of one shard) into the dataset ``out``.

    Finished profiles go to a new part file every ``flush_every`` profiles or
    ``FLUSH_SECONDS`` seconds, whichever comes first.
    """
    out = Path(out)
    if workers < 1:
        raise GenerateError(f"--workers must be at least 1, got {workers}")
    if flush_every < 1:
        raise GenerateError(f"--flush-every must be at least 1, got {flush_every}")
    if resume and out.exists() and not parts_dir(out).exists():
        with open_dataset(out) as ds:
            same = ds.config == config.model_dump(mode="json") and ds.attrs.get("shard", "0/1") == str(shard)
            if not same:
                raise GenerateError(f"{out} was made by a different job; refusing to touch it")
            if ds.attrs.get("backend_version") != backend_version(config):
                raise GenerateError(f"{out} was made by backend_version {ds.attrs.get('backend_version', 1)} of the "
                                    f"{config.backend} backend, this is {backend_version(config)}; --overwrite to regenerate it")
            log(f"{out} is already complete ({len(ds)} profiles); nothing to do")
            return GenerateReport(out, len(ds), int(np.sum(ds.profiles["status"] == "ok")), 0, 0.0, 0.0)
    parts, done, next_part = _prepare_output(out, config, shard, resume, overwrite, log)
    todo = [i for i in shard.profile_ids(config.n_profiles) if i not in done]
    if done:
        log(f"resuming: {len(done)} profile(s) already done, {len(todo)} to go")

    backend = _make_backend(config)  # validates the parameter set before any worker starts
    started = time.perf_counter()
    buffer: list[ProfileRecord] = []
    last_flush = time.perf_counter()
    stats = {"ok": 0, "failed": 0, "hours": 0.0}

    def flush() -> None:
        nonlocal next_part, last_flush
        if buffer:
            write_dataset(parts / f"part-{next_part:05d}.h5", buffer, {"config": config.model_dump(mode="json")})
            next_part += 1
            buffer.clear()
        last_flush = time.perf_counter()

    bar = tqdm(total=len(todo), disable=not progress, unit="profile", desc=f"simulating ({config.simulation.model})")

    def collect(record: ProfileRecord) -> None:
        buffer.append(record)
        if interrupted["ctrl_c"]:
            raise KeyboardInterrupt
        ok = record.meta["status"] == "ok"
        stats["ok" if ok else "failed"] += 1
        stats["hours"] += record.length * config.profiles.dt_s / 3600
        elapsed = time.perf_counter() - started
        bar.set_postfix(failed=stats["failed"], cell_h_per_s=f"{stats['hours'] / max(elapsed, 1e-9):.2f}")
        bar.update()
        if len(buffer) >= flush_every or time.perf_counter() - last_flush >= FLUSH_SECONDS:
            flush()

    with _remembered_ctrl_c() as interrupted:
        try:
            if config.backend == "jax":
                _simulate_batches(backend, config, todo, workers, collect)
            elif workers == 1:
                for profile_id in todo:
                    collect(simulate_profile(backend, config, profile_id))
            else:
                context = multiprocessing.get_context("spawn")
                config_json = config.model_dump_json()
                pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(config_json,))
                try:
                    futures = [pool.submit(_worker_simulate, config_json, i) for i in todo]
                    for future in as_completed(futures):
                        collect(future.result())
                except BrokenProcessPool as err:
                    raise GenerateError(f"a worker process died ({err}); finished profiles are kept, run again with --resume") from None
                finally:
                    pool.shutdown(wait=False, cancel_futures=True)
        finally:
            flush()  # every finished profile is kept, also on Ctrl-C or an error
            bar.close()
        if interrupted["ctrl_c"]:
            raise KeyboardInterrupt
    wall_s = time.perf_counter() - started

    from cellax.pybamm_import import pybamm_version

    files, ids = _completed_parts(parts)
    expected = set(shard.profile_ids(config.n_profiles))
    if ids != expected:
        raise GenerateError(f"parts in {parts} hold {len(ids)} of {len(expected)} profiles; run again with --resume")
    attrs = {"config": config.model_dump(mode="json"), "pybamm_version": pybamm_version(), "backend": config.backend,
             "backend_version": backend_version(config)}
    if shard.count > 1:
        attrs["shard"] = str(shard)
    merge_datasets(files, out, attrs=attrs, overwrite=True)
    with open_dataset(out) as ds:
        n_rows, n_ok = len(ds), int(np.sum(ds.profiles["status"] == "ok"))
    shutil.rmtree(parts)
    return GenerateReport(out, n_rows, n_ok, len(todo), stats["hours"], wall_s)
