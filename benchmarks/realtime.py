"""Real time: per-sample latency of the exported step on one core, and a load test of ``cellax serve``.

In one run on one machine:

1. **Latency.** For a ~1 M-parameter GRU, Transformer (KV cache of ``chunk_len`` rows) and
   Mamba (recurrent), each wrapped as the deployed step of an ``estimate`` task (charge
   channels, one condition, chunk 256): per-sample median and p99 of the in-process deployed
   step (jitted, weights as constants, state donated; the anchor), of ONNX Runtime on the
   ``cellax export`` file (one intra-op thread) and of the deserialized StableHLO module,
   in a subprocess pinned to one core. Target: ≤ 100 µs per step in ONNX Runtime.
2. **Load.** A small GRU estimator trained with ``cellax train`` on jax-backend data, served by
   ``cellax serve`` on a loopback port; ``--cells`` simulated cells each open a session and a
   WebSocket and stream one sample per second for ``--duration-s``; every answer's latency
   (send → reply), throughput, and that every sample was answered exactly once and in order.
   Then ``kill -9`` of the server, a restart, and how many answered samples each session lost
   (at most ``--checkpoint-every - 1`` by design).

The machine may be shared: the load average is recorded. Writes ``benchmarks/results/realtime.json``.
Run: ``python benchmarks/realtime.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LATENCY_MODELS = {  # ~1 M parameters each
    "gru": {"kind": "gru", "width": 288, "n_layers": 2},
    "transformer": {"kind": "transformer", "width": 192, "n_layers": 2, "n_heads": 6, "max_len": 256},
    "mamba": {"kind": "mamba", "width": 192, "n_layers": 4},
}
TOKEN = "realtime-benchmark-token-0123456789"


def percentiles(times_s: list[float]) -> dict:
    ordered = sorted(times_s)
    return {"median_us": 1e6 * statistics.median(ordered), "p99_us": 1e6 * ordered[int(0.99 * (len(ordered) - 1))],
            "samples": len(ordered)}


def stream_times(step, state, inputs) -> dict:
    """Latency of ``y, *state = step(u, *state)`` per sample (the first 10 left out as warm-up)."""
    times = []
    for u in inputs:
        started = time.perf_counter()
        y, *state = step(u, *state)
        np.asarray(y)  # waits for the result
        times.append(time.perf_counter() - started)
    return percentiles(times[10:])


def latency(samples: int) -> dict:
    """Per-sample latency of each model in each form (run pinned to one core)."""
    import equinox as eqx
    import jax
    import onnxruntime as ort

    from cellax.data.loader import NormStats
    from cellax.deploy.onnx import export_onnx
    from cellax.deploy.stablehlo import export_stablehlo
    from cellax.deploy.step import DeployedStep
    from cellax.models import make_model
    from cellax.train.task import Task

    task = Task(("current_a", "voltage_v", "surface_temp_degc", "ambient_temp_degc", "heat_transfer_coeff"),
                ("soc", "core_temp_degc", "ocv_v"), False, 256, None, True, True)
    names = [*task.inputs, *task.outputs]
    stats = NormStats({n: 0.0 for n in names}, {n: 1.0 for n in names})
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(samples, len(task.inputs))).astype(np.float32)
    out = {}
    for kind, cfg in LATENCY_MODELS.items():
        model = make_model(cfg, task.n_features, task.n_outputs, jax.random.key(0))
        params = int(sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))))
        step = DeployedStep(model, task, stats)
        init_fn, step_fn = step.flat()
        folder = Path(tempfile.mkdtemp())
        export_onnx(step, folder)
        export_stablehlo(step, folder)
        forms = {}

        initial = np.zeros(task.n_outputs, np.float32)
        deployed = jax.jit(step_fn, donate_argnums=tuple(range(1, 1 + len(step.state_spec()))))
        forms["in_process_deployed_step"] = stream_times(deployed, init_fn(initial), inputs)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(str(folder / "step.onnx"), options, providers=["CPUExecutionProvider"])
        names = [n for n, _, _ in step.state_spec()]
        forms["onnxruntime"] = stream_times(lambda u, *s: session.run(None, {"inputs": u, **dict(zip(names, s))}),
                                            [np.asarray(a) for a in init_fn(initial)], inputs)
        exported = jax.jit(jax.export.deserialize((folder / "step.stablehlo").read_bytes()).call)
        forms["stablehlo_jax_export"] = stream_times(exported, init_fn(initial), inputs)
        anchor = forms["in_process_deployed_step"]["median_us"]
        for form in forms.values():
            form["ratio_to_in_process"] = form["median_us"] / anchor
        out[kind] = {"config": cfg, "params": params, "chunk_len": task.chunk_len, "forms": forms,
                     "onnx_target_100us_met": forms["onnxruntime"]["median_us"] <= 100.0}
        print(kind, json.dumps(forms), flush=True)
    return out


def train_run(work: Path) -> Path:
    """A small GRU estimator, trained briefly on jax-backend data (what is served)."""
    from cellax.config import validate_config
    from cellax.data.config import DataConfig
    from cellax.data.generate import generate
    from cellax.train.config import TrainConfig
    from cellax.train.loop import train

    data = work / "data.h5"
    if not data.exists():
        generate(validate_config(DataConfig, {"name": "realtime", "seed": 11, "n_profiles": 16, "backend": "jax",
                                              "profiles": {"duration_s": 1800}}), data, progress=False,
                 log=lambda *_: None)
    run = work / "estimate_gru"
    if not (run / "config.json").exists():
        train(TrainConfig(name="estimate_gru", data=data, task="estimate", model={"kind": "gru", "width": 64},
                          charge_throughput=True, residual=True, chunk_len=64, chunks_per_window=2, batch_size=8,
                          steps=60, eval_every=60, checkpoint_every=60, eval_profiles=2, out=run),
              progress=False, log=lambda *_: None)
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, state: Path, token_file: Path, port: int, checkpoint_every: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "cellax.cli", "serve", str(run), "--port", str(port),
                             "--token-file", str(token_file), "--state-dir", str(state),
                             "--checkpoint-every", str(checkpoint_every)], stdout=subprocess.DEVNULL)
    while True:
        if proc.poll() is not None:
            raise SystemExit("the server exited during start-up")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.2)


async def load(url: str, model: str, cells: int, duration_s: float, inputs: np.ndarray) -> dict:
    import httpx
    import websockets

    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=64)) as client:
        async def open_one():
            r = await client.post("/sessions", json={"model": model}, headers=headers)
            r.raise_for_status()
            return r.json()["session"]

        sessions = await asyncio.gather(*(open_one() for _ in range(cells)))
    n_samples = int(duration_s)
    latencies, replies, errors = [], {}, []
    start = time.monotonic() + 2.0

    async def cell(index: int, sid: str):
        got = replies.setdefault(sid, [])
        try:
            async with websockets.connect(url.replace("http", "ws") + f"/sessions/{sid}/stream?token={TOKEN}",
                                          max_queue=None, open_timeout=120) as ws:
                await ws.recv()
                offset = index / cells  # cells spread evenly over each second
                for k in range(n_samples):
                    await asyncio.sleep(max(0.0, start + offset + k - time.monotonic()))
                    u = inputs[(index * 7 + k) % len(inputs)].tolist()
                    sent = time.perf_counter()
                    await ws.send(json.dumps({"seq": k, "inputs": u}))
                    reply = json.loads(await ws.recv())
                    latencies.append(time.perf_counter() - sent)
                    got.append(reply.get("seq"))
                    if "error" in reply:
                        errors.append(f"sample {k}: {reply}")
        except Exception as err:  # counted, not raised: the figure says how many cells failed
            errors.append(f"{type(err).__name__}: {err}")

    began = time.perf_counter()
    await asyncio.gather(*(cell(i, sid) for i, sid in enumerate(sessions)))
    wall = time.perf_counter() - began
    in_order = sum(seqs == list(range(n_samples)) for seqs in replies.values())
    answered = sum(len(seqs) for seqs in replies.values())
    return {"cells": cells, "rate_hz_per_cell": 1.0, "duration_s": duration_s, "transport": "websocket",
            "samples_sent": cells * n_samples, "samples_answered": answered,
            "cells_all_answered_once_in_order": in_order, "errors": len(errors), "first_errors": errors[:3],
            "latency": percentiles(latencies) if latencies else None,
            "throughput_samples_per_s": answered / wall, "wall_s": wall, "sessions": sessions,
            "answered_per_session": {sid: len(seqs) for sid, seqs in replies.items()}}


def restart_loss(url, run, state, token_file, port, checkpoint_every, result) -> dict:
    """``kill -9`` the server, start it again, and compare each session's ``next_seq`` with what it had answered."""
    import httpx

    proc = start_server(run, state, token_file, port, checkpoint_every)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            lost = [result["answered_per_session"][sid] - client.get(f"/sessions/{sid}").json()["next_seq"]
                    for sid in result["sessions"]]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return {"sessions": len(lost), "lost_samples_max": max(lost), "lost_samples_min": min(lost),
            "checkpoint_every": checkpoint_every, "within_interval": all(0 <= x < checkpoint_every for x in lost)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=3000, help="latency samples per model and form")
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--duration-s", type=float, default=33.0, help="seconds of streaming (samples per cell)")
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--only", choices=["latency", "load"], action="append")
    parser.add_argument("--load-key", default="load", help="JSON key of the load part (e.g. load_200_cells beside it)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_realtime")
    parser.add_argument("--latency-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "realtime.json")
    args = parser.parse_args()
    if args.latency_child:
        os.sched_setaffinity(0, {0})
        print(json.dumps(latency(args.samples)))
        return
    parts = args.only or ["latency", "load"]
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result.update({"benchmark": "realtime", "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                   "created_utc": now})
    if "latency" in parts:
        load_before = os.getloadavg()
        env = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
               "OMP_NUM_THREADS": "1"}
        child = subprocess.run([sys.executable, __file__, "--latency-child", "--samples", str(args.samples)],
                               capture_output=True, text=True, env=env)
        if child.returncode != 0:
            raise SystemExit(child.stderr[-3000:])
        result["latency_one_core"] = {"models": json.loads(child.stdout.strip().splitlines()[-1]),
                                      "target": "<= 100 us per step in ONNX Runtime for ~1 M parameters",
                                      "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                                      "measured_utc": now}
    if "load" in parts:
        args.work.mkdir(parents=True, exist_ok=True)
        run = train_run(args.work)
        state = Path(tempfile.mkdtemp(prefix="serve-state-"))
        token_file = state.parent / f"{state.name}.token"
        token_file.write_text(TOKEN)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        from cellax.deploy.export import load_step

        step, _ = load_step(run)
        inputs = np.column_stack([np.linspace(-3, 5, 97), np.full(97, 3.7), np.full(97, 25.0), np.full(97, 25.0)])
        assert step.n_inputs == inputs.shape[1]
        load_before = os.getloadavg()
        proc = start_server(run, state, token_file, port, args.checkpoint_every)
        try:
            figures = asyncio.run(load(url, run.name, args.cells, args.duration_s, inputs))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        figures["restart_after_kill_9"] = restart_loss(url, run, state, token_file, port, args.checkpoint_every,
                                                       figures)
        figures.pop("sessions")
        figures.pop("answered_per_session")
        figures.update(loadavg_before=load_before, loadavg_after=os.getloadavg(), measured_utc=now,
                       all_answered_once_in_order=figures["cells_all_answered_once_in_order"] == args.cells
                       and figures["samples_answered"] == figures["samples_sent"])
        result[args.load_key] = figures
        print(json.dumps(figures, indent=2), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
