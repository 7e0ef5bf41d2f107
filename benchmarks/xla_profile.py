"""Where a compiled step spends its time, per XLA:CPU kernel, grouped by the JAX operation it came from.

XLA:CPU emits a trace event per kernel ("thunk") with ``--xla_cpu_enable_xprof_traceme``; this script
traces ``--steps`` calls of one step under ``jax.profiler``, maps each kernel to its HLO instruction's
``op_name`` (from the compiled module's text) and sums the time by direction (forward / backward) and
operation (the fusion's root: ``dot_general``, ``exp``, ``mul`` …), and by kind (library matmuls such as
``ynn_fusion`` against XLA's own fusions). Targets:

* ``transformer``: the training step of ``benchmarks/models.py``'s speed reference (``--attention``: the CPU
  kernel by default, whose calls appear as ``custom-call`` kernels);
* ``mamba``: the deployed streaming step of ``benchmarks/models.py --only latency`` (one core).

Tracing adds a fixed cost per kernel, so shares, not absolute times, are the result; the untraced
step time is reported beside them. Writes ``benchmarks/results/xla_profile_<target>.json``.

    python benchmarks/xla_profile.py --target transformer
    taskset -c 0 python benchmarks/xla_profile.py --target mamba
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()


def transformer_step(data: Path, attention: str = "kernel"):
    """``(call, compiled HLO text, samples per call)`` of the Transformer speed reference's training step."""
    import equinox as eqx
    import jax
    from models import SPEED_MODELS, make_dataset, with_fields

    from cellax.config import load_config
    from cellax.data.loader import WindowLoader, compute_stats, split_profiles
    from cellax.models import make_model
    from cellax.train.config import TrainConfig
    from cellax.train.loop import make_step, optimizer
    from cellax.train.task import Task

    if not data.exists():
        make_dataset(data, 32)
    config = load_config(ROOT / "configs" / "train" / "simulate_transformer.yaml", TrainConfig)
    config = config.model_copy(update={
        "data": data, "chunks_per_window": 1, "charge_throughput": False,
        "model": with_fields(config.model, {**SPEED_MODELS["simulate_transformer"], "attention": attention})})
    task = Task.from_config(config)
    splits = split_profiles(data, config.split_fractions, config.split_seed)
    names = [*task.inputs, *task.outputs]
    stats = compute_stats(data, splits["train"], names)
    with WindowLoader(data, splits["train"], names, config.window_len, config.batch_size, seed=1, stats=stats,
                      num_batches=2) as loader:
        batch = jax.device_put(next(iter(loader)))
    tx = optimizer(config)
    model = make_model(config.model, task.n_features, task.n_outputs, jax.random.key(0))
    state = (model, tx.init(eqx.filter(model, eqx.is_array)))
    step = make_step(task, config, tx)
    hlo = step.lower(*state, batch).compile().as_text()
    return (lambda: jax.block_until_ready(step(*state, batch))), hlo, config.batch_size * config.window_len


def mamba_step():
    """The deployed Mamba streaming step (weights as constants, state donated), as in the latency benchmark."""
    import jax
    import jax.numpy as jnp

    from cellax.models import make_model

    model = make_model({"kind": "mamba", "width": 192, "n_layers": 4}, 8, 5, jax.random.key(0))
    x = jnp.ones(8, jnp.float32)
    step = jax.jit(lambda s, x: model.step(s, x), donate_argnums=0)
    hlo = step.lower(model.init_state(), x).compile().as_text()
    state = [step(model.init_state(), x)[1]]

    def call():
        y, state[0] = step(state[0], x)
        y.block_until_ready()

    return call, hlo, 1


def op_names(hlo: str) -> dict[str, str]:
    """HLO instruction name -> the ``op_name`` of its metadata (the JAX operation it came from), or its
    opcode where XLA kept no metadata (e.g. the dots it rewrote)."""
    names = {}
    for line in hlo.splitlines():
        match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = \S+ ([\w\-]+)\(", line)
        if match:
            op_name = re.search(r'op_name="([^"]*)"', line)
            names[match.group(1)] = op_name.group(1) if op_name else match.group(2)
    return names


def kernel_times(call, steps: int) -> dict[str, float]:
    """Total traced microseconds per kernel name over ``steps`` calls."""
    import jax

    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        for _ in range(steps):
            call()
        jax.profiler.stop_trace()
        (trace,) = Path(trace_dir).rglob("*.trace.json.gz")
        events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    totals = collections.defaultdict(float)
    for event in events:
        if event.get("ph") == "X":
            totals[event["name"]] += event["dur"]
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["transformer", "mamba"], default="transformer")
    parser.add_argument("--steps", type=int, default=None, help="traced calls (default 8 transformer, 500 mamba)")
    parser.add_argument("--data", type=Path, default=ROOT / "runs" / "bench_models" / "bench_dynamic.h5")
    parser.add_argument("--top", type=int, default=25, help="groups listed")
    parser.add_argument("--attention", choices=["kernel", "flash", "blockwise"], default="kernel",
                        help="the Transformer's attention")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    steps = args.steps or (8 if args.target == "transformer" else 500)
    out = args.out or ROOT / "benchmarks" / "results" / f"xla_profile_{args.target}.json"

    call, hlo, samples = transformer_step(args.data, args.attention) if args.target == "transformer" else mamba_step()
    for _ in range(3):
        call()
    started = time.perf_counter()
    for _ in range(steps):
        call()
    untraced_s = (time.perf_counter() - started) / steps
    names = op_names(hlo)
    kernels = {name: us / steps for name, us in kernel_times(call, steps).items() if name in names}
    total = sum(kernels.values())
    groups, kinds = collections.defaultdict(float), collections.defaultdict(float)
    for name, us in kernels.items():
        op = names[name]
        direction = "backward" if "transpose(" in op else "forward"
        groups[f"{direction} {op.split('/')[-1]}"] += us
        kinds["library matmul (ynn/xnn/onednn)" if re.match(r"(ynn|xnn|onednn)", name) else "XLA fusion or op"] += us
    share = lambda table: [{"group": k, "us_per_step": v, "share": v / total}
                           for k, v in sorted(table.items(), key=lambda kv: -kv[1])]
    result = {
        "benchmark": "xla_profile", "target": args.target, "traced_steps": steps, "samples_per_step": samples,
        "untraced_step_us": 1e6 * untraced_s, "traced_kernel_us_per_step": total, "kernels": len(kernels),
        "load_average": os.getloadavg(), "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "by_kind": share(kinds), "by_operation": share(groups)[: args.top],
        "top_kernels": [{"kernel": k, "op_name": names[k], "us_per_step": v}
                        for k, v in sorted(kernels.items(), key=lambda kv: -kv[1])[: args.top]],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.target}: untraced {1e6 * untraced_s:.0f} us/step, traced kernels {total:.0f} us/step "
          f"({len(kernels)} kernels)")
    for row in result["by_kind"] + result["by_operation"]:
        print(f"  {100 * row['share']:5.1f} %  {row['group']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
