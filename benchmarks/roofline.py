"""Roofline of the Transformer training step: flops and bytes per step against what this machine does.

In one run: the machine's achievable matmul rate (a large float32 ``jnp.dot``) and
memory bandwidth (a copy-and-scale of an array far larger than the caches), then the
reference Transformer's forward + backward (``models.SPEED_MODELS``: width 64,
3 layers, 4 heads, batch 32 × 256 samples) for each attention implementation, with
XLA's own count of its flops and bytes accessed (``cost_analysis`` of the compiled
step) beside its measured time. The bound of a step is
``max(flops / peak_flops, bytes / bandwidth)``; its distance to the measured time is
what implementation can still win. Synthetic inputs (the step's cost does not depend
on the data).

Writes ``benchmarks/results/roofline.json``. Run: ``python benchmarks/roofline.py``
(``--batch``/``--window``/``--model`` for other sizes, e.g. on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from timing import timed  # beside this script

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = {"kind": "transformer", "width": 64, "n_layers": 3, "n_heads": 4, "positional": "rope", "max_len": 4096}


def machine(repeats: int, matmul_n: int, copy_mib: int) -> dict:
    """Achievable float32 matmul GFLOP/s and copy GB/s (read + write) on JAX's default device."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (matmul_n, matmul_n), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    matmul_s = timed(lambda: matmul(a), repeats, warmup=True)[0]
    buffers = [jnp.ones(copy_mib * 2**20 // 4, jnp.float32)]
    nbytes = buffers[0].nbytes
    scale = jax.jit(lambda x: 1.0001 * x, donate_argnums=0)  # in place: no fresh pages to fault in

    def copy():
        buffers[0] = scale(buffers[0])
        return buffers[0]

    copy_s = timed(copy, repeats, warmup=True)[0]
    return {"matmul_n": matmul_n, "matmul_gflop_s": 2 * matmul_n**3 / matmul_s / 1e9,
            "copy_mib": copy_mib, "copy_gb_s": 2 * nbytes / copy_s / 1e9}


def step_cost(model_config: dict, batch: int, window: int, attention: str, repeats: int, n_features: int = 8) -> dict:
    """Compiled forward + backward of an MSE loss over a batch: XLA's flop and byte counts and the median time."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from cellax.models import make_model

    # XLA's forms only: its cost analysis does not see into the C++ kernels' custom calls
    model = make_model({**model_config, "attention": attention, "swiglu": "xla"}, n_features, 3, jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_array)
    x = jax.random.normal(jax.random.key(1), (batch, window, n_features), jnp.float32)
    y = jax.random.normal(jax.random.key(2), (batch, window, 3), jnp.float32)

    def loss(p):
        return jnp.mean((jax.vmap(eqx.combine(p, static))(x) - y) ** 2)

    grad = jax.jit(jax.grad(loss))
    compiled = grad.lower(params).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    seconds = timed(lambda: compiled(params), repeats, warmup=True)[0]
    return {"attention": attention, "flops": float(cost.get("flops", 0.0)),
            "bytes_accessed": float(cost.get("bytes accessed", 0.0)), "step_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--model", type=json.loads, default={}, help="overrides of the reference model, as JSON")
    parser.add_argument("--attention", nargs="+", default=["flash", "blockwise"],
                        choices=["flash", "blockwise", "fused"], help="XLA attention forms (cost analysis cannot "
                        "count the CPU kernel's custom calls)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--matmul-n", type=int, default=2048)
    parser.add_argument("--copy-mib", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULTS / "roofline.json")
    args = parser.parse_args()

    import jax

    load_start = os.getloadavg()
    peak = machine(args.repeats, args.matmul_n, args.copy_mib)
    print(json.dumps(peak), flush=True)
    steps = []
    for attention in args.attention:
        row = step_cost({**REFERENCE, **args.model}, args.batch, args.window, attention, args.repeats)
        compute_s = row["flops"] / (peak["matmul_gflop_s"] * 1e9)
        memory_s = row["bytes_accessed"] / (peak["copy_gb_s"] * 1e9)
        row.update({"intensity_flop_per_byte": row["flops"] / max(row["bytes_accessed"], 1.0),
                    "bound_compute_s": compute_s, "bound_memory_s": memory_s,
                    "bound_s": max(compute_s, memory_s), "fraction_of_bound": max(compute_s, memory_s) / row["step_s"],
                    "achieved_gflop_s": row["flops"] / row["step_s"] / 1e9})
        steps.append(row)
        print(json.dumps(row), flush=True)
    result = {"benchmark": "roofline", "device": str(jax.devices()[0]), "platform": platform.platform(),
              "cpus": os.cpu_count(), "model": {**REFERENCE, **args.model}, "batch": args.batch, "window": args.window,
              "machine": peak, "steps": steps, "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
              "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
