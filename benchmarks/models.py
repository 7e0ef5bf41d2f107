"""Sequence models: accuracy after a fixed CPU budget, training throughput against PyTorch, streaming latency.

In one run on one machine (``pip install -e ".[bench]"`` for PyTorch):

1. **Accuracy.** A dataset of 1 h dynamic profiles from the jax backend; each
   reference config of ``configs/train/{simulate,estimate}_{transformer,mamba,gru}.yaml``
   trained for ``--budget-s`` seconds of wall time (its step count set from its
   measured step time so the cosine schedule ends with the budget), then
   evaluated free-running over every test profile (``cellax evaluate``); each
   run's report and two of its pictures are kept as ``models_reference_run_<name>*``.
   Targets: simulate voltage RMSE ≤ 10 mV and temperatures ≤ 0.2 K over the
   whole hour; estimate SOC RMSE ≤ 1 %. Beside them the baseline they must beat
   (``--kinds ecm``): the equivalent circuit of ``cellax/physics/ecm.py`` fitted on
   training profiles, free-running (simulate) and as a Kalman filter (estimate).
2. **Throughput.** Sample-steps per second of cellax's jitted training step (the
   Transformer of ``simulate_transformer.yaml``, one chunk per window) against the
   same Llama-style Transformer written in PyTorch (same parameter count, RoPE,
   SwiGLU, RMSNorm, AdamW) trained on the same batches; ``--ablate-attention`` times both with attention replaced
   by passing ``V`` through, to show what the rest of the step costs in each framework.
3. **Streaming latency.** Per-sample latency of a ~1 M-parameter Transformer with
   KV cache and a ~1 M-parameter Mamba in recurrent mode, on one CPU core (this
   process pinned to core 0), as a jitted call per sample with the weights as
   constants of the compiled step and the state donated (the deployed form; the
   weights-as-arguments figure beside it); for Mamba also the same step as one
   hand-fused CPU kernel (``cellax.deploy.fused_mamba``) with its largest output
   deviation from the XLA step; the variants interleaved in three rounds; and the
   naive alternative of re-running the whole window every sample.

Writes ``benchmarks/results/models.json``. Run: ``python benchmarks/models.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
KINDS = ("transformer", "mamba", "gru")
# The throughput comparisons keep the models they were first measured on (the reference configs before the
# issue-14 search changed them), so that figures stay comparable across runs; --model changes fields on top.
SPEED_MODELS = {"simulate_transformer": {"width": 64, "n_layers": 3, "n_heads": 4, "positional": "rope"},
                "simulate_mamba": {"width": 64, "n_layers": 3, "state_size": 16, "expand": 2}}
BASELINES = ("ecm",)


def make_dataset(path: Path, n_profiles: int) -> None:
    from cellax.config import validate_config
    from cellax.data.config import DataConfig
    from cellax.data.generate import generate

    if path.exists():
        return
    config = validate_config(DataConfig, {
        "name": "bench_dynamic", "seed": 77, "n_profiles": n_profiles, "backend": "jax",
        "profiles": {"duration_s": 3600, "kinds": {"dynamic": 1}},
        "conditions": {"ambient_temp_degc": [15, 35], "heat_transfer_coeff": [5, 30], "initial_soc": [0.3, 0.9]},
    })
    generate(config, path, progress=False, log=lambda *_: None)


def timed_steps(step, state, batches, repeats):
    import jax

    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in batches:
            state = step(*state, batch)[:2]
        jax.block_until_ready(state)
        times.append((time.perf_counter() - started) / len(batches))
    return statistics.median(times), state


def keep_report(run_dir: Path, report: dict, results: Path) -> None:
    """The reference run's evaluation report and its error-over-time and first profile PNGs, beside the JSON."""
    import shutil

    name = f"models_reference_run_{run_dir.name}"
    pictures = {"error": run_dir / "eval" / "error_over_time.png", "profile": Path(report["plots"][0])}
    for label, path in pictures.items():
        shutil.copyfile(path, results / f"{name}_{label}.png")
    kept = {**report, "run": run_dir.name, "plots": [f"{name}_{label}.png" for label in pictures]}
    (results / f"{name}.json").write_text(json.dumps(kept, indent=2) + "\n")


def accuracy(data: Path, out: Path, budget_s: float, results_dir: Path, kinds=KINDS, suffix: str = "",
             tasks=("simulate", "estimate")) -> dict:
    import equinox as eqx
    import jax

    from cellax.config import load_config
    from cellax.models import make_model
    from cellax.train.budget import measure_step_s, steps_for_seconds
    from cellax.train.config import TrainConfig
    from cellax.train.loop import train
    from cellax.train.task import Task
    from cellax.workflows.evaluate import evaluate

    results = {}
    for task_name in tasks:
        for kind in kinds:
            name = f"{task_name}_{kind}"
            config = load_config(ROOT / "configs" / "train" / f"{name}.yaml", TrainConfig)
            config = config.model_copy(update={"data": data, "out": out / f"{name}{suffix}"})
            step_s = measure_step_s(config, budget_s=budget_s)  # -> steps that fill the budget (the schedule then ends with it)
            steps = steps_for_seconds(step_s, budget_s)
            config = config.model_copy(update={"steps": steps, "eval_every": max(steps // 8, 1),
                                               "checkpoint_every": max(steps // 8, 1)})
            task = Task.from_config(config)
            model = make_model(config.model, task.n_features, task.n_outputs, jax.random.key(0))
            started = time.perf_counter()
            train(config, progress=False, time_budget_s=budget_s, log=lambda *_: None)
            wall = time.perf_counter() - started
            report = evaluate(config.out)
            keep_report(config.out, report, results_dir)
            results[name] = {
                "config": config.model_dump(mode="json"),
                "params": int(sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array)))),
                "train_wall_s": wall, "planned_steps": steps, "step_s": step_s,
                "test": {k: {m: v[m] for m in ("rmse", "mae", "max", "unit")} for k, v in report["outputs"].items()},
                "test_profiles": report["n_profiles"], "test_hours": report["hours"],
                "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_avg": os.getloadavg(),
            }
            print(name, json.dumps(results[name]["test"]), flush=True)
    return results


def ecm_accuracy(data: Path, fit_steps: int = 50, fit_profiles: int = 64) -> dict:
    """The fitted equivalent circuit (``cellax.physics.ecm``) on the simulate task's splits: fit on train profiles
    (the first ``fit_profiles``), free-running over every test profile from its measured initial state."""
    import jax.numpy as jnp
    import numpy as np

    from cellax.config import load_config
    from cellax.data.loader import compute_stats, iterate_profiles, split_profiles
    from cellax.physics import ecm
    from cellax.train.config import TrainConfig
    from cellax.signals import ERROR_UNITS as UNITS

    config = load_config(ROOT / "configs" / "train" / "simulate_gru.yaml", TrainConfig)
    splits = split_profiles(data, config.split_fractions, config.split_seed)
    names = ["current_a", "ambient_temp_degc", "heat_transfer_coeff", *ecm.OUTPUTS]

    def batch(rows):
        profiles = list(iterate_profiles(data, rows, names))
        return ecm.stack(profiles, np.array([p["heat_transfer_coeff"][0] for p in profiles])), profiles

    stats = compute_stats(data, splits["train"], list(ecm.OUTPUTS))
    scales = jnp.asarray([stats.std[k] for k in ecm.OUTPUTS], jnp.float32)
    train_batch, _ = batch(splits["train"][:fit_profiles])
    started = time.perf_counter()
    model, history = ecm.fit(ecm.ECM(ecm.ocv_table(config_parameter_set(data))), train_batch, scales, fit_steps,
                             log=lambda m: print(m, flush=True))
    fit_s = time.perf_counter() - started
    test_batch, profiles = batch(splits["test"])
    lengths = [len(p["current_a"]) for p in profiles]

    def errors(pred, outputs):
        test = {}
        for j, name in enumerate(outputs):
            scale, unit = UNITS[name]
            err = np.concatenate([(pred[i, :n, j] - profiles[i][name]) * scale for i, n in enumerate(lengths)])
            test[name] = {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err))),
                          "max": float(np.max(np.abs(err))), "unit": unit}
        return test

    test = errors(np.asarray(ecm.predict(model, test_batch), np.float64), ecm.OUTPUTS)
    estimated = errors(np.asarray(ecm.estimate_batch(model, test_batch), np.float64),
                       ("soc", "core_temp_degc", "ocv_v"))
    shared = {"test_profiles": len(profiles), "test_hours": float(sum(lengths) / 3600)}
    return {"estimate_ecm": {
        "model": "extended Kalman filter on the fitted ECM below (state soc, v1, v2 from soc 0.5 +- 0.3; measured "
                 "voltage, 10 mV noise; core node driven by the measured surface temperature)",
        "test": estimated, **shared,
    }, "simulate_ecm": {
        "model": "R0 + 2 RC, OCV(SOC, T) from the parameter set, Arrhenius resistances, two-node thermal "
                 "(cellax/physics/ecm.py)",
        "constants": {k: float(v) for k, v in model.constants.items()}, "params": len(model.log),
        "fit": {"steps": fit_steps, "profiles": len(train_batch["h"]), "wall_s": fit_s,
                "loss_first": history[0], "loss_last": history[-1]},
        "test": test, **shared,
    }}


def config_parameter_set(data: Path) -> str:
    from cellax.data.store import open_dataset

    with open_dataset(data) as ds:
        return ds.config.get("simulation", {}).get("parameter_set", "Chen2020")


def throughput(data: Path, repeats: int, rounds: int = 3, model: dict | None = None, batch_size: int | None = None,
               window: int | None = None, attention: tuple[str, ...] = ("kernel", "flash", "blockwise"),
               num_batches: int = 20, config_name: str = "simulate_transformer", threads: int | None = None,
               ablate_attention: bool = False) -> dict:
    """Training sample-steps/s of cellax (each ``attention`` implementation) and PyTorch, interleaved ``rounds`` times.

    ``ablate_attention`` replaces attention in *both* models by passing ``V`` through (everything else unchanged), to
    measure what the rest of the step costs in each framework.

    Each round times every variant once over the same batches (``repeats`` passes, median); the
    figures are the medians over rounds, so a load change on a shared machine hits all of them alike.
    Sizes default to ``configs/train/<config_name>.yaml`` (the model to ``SPEED_MODELS``); PyTorch runs on the device JAX uses. A
    model other than the Transformer is timed alone (no PyTorch twin here).
    """
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from cellax.config import load_config
    from cellax.data.loader import WindowLoader, compute_stats, split_profiles
    from cellax.models import make_model
    from cellax.train.config import TrainConfig
    from cellax.train.loop import make_step, optimizer
    from cellax.train.task import Task

    config = load_config(ROOT / "configs" / "train" / f"{config_name}.yaml", TrainConfig)
    update = {"data": data, "chunks_per_window": 1, "charge_throughput": False,
              "model": with_fields(config.model, {**SPEED_MODELS.get(config_name, {}), **(model or {})})}
    if batch_size:
        update["batch_size"] = batch_size
    if window:
        update["chunk_len"] = window
    config = config.model_copy(update=update)
    task = Task.from_config(config)
    splits = split_profiles(data, config.split_fractions, config.split_seed)
    names = [*task.inputs, *task.outputs]
    stats = compute_stats(data, splits["train"], names)
    with WindowLoader(data, splits["train"], names, config.window_len, config.batch_size, seed=1, stats=stats,
                      num_batches=num_batches) as loader:
        batches = [jax.device_put(b) for b in loader]
    tx = optimizer(config)
    transformer = config.model.kind == "transformer"
    if ablate_attention:
        if not transformer:
            raise ValueError("ablate_attention needs the Transformer")
        ablate_attention_in_both()
    steps = {}
    for implementation in attention if transformer else ("cellax",):
        extra = {"attention": implementation} if transformer else {}
        variant = config.model_copy(update={"model": with_fields(config.model, extra)})
        m = make_model(variant.model, task.n_features, task.n_outputs, jax.random.key(0))
        state = (m, tx.init(eqx.filter(m, eqx.is_array)))
        step = make_step(task, variant, tx)
        jax.block_until_ready(step(*state, batches[0]))
        steps[implementation] = (step, state)
    n_jax = int(sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_array))))
    samples = config.batch_size * config.window_len
    common = {"model": config.model.model_dump(), "batch_size": config.batch_size, "window": config.window_len,
              "params_cellax": n_jax, "device": str(jax.devices()[0]), "rounds": rounds, "threads": threads or os.cpu_count(),
              "loadavg": os.getloadavg()}
    if not transformer:
        times = [timed_steps(*steps["cellax"], batches, repeats)[0] for _ in range(rounds)]
        return {**common, "step_s_per_round": times, "cellax_sample_steps_per_s": samples / statistics.median(times)}

    # the same inputs the cellax step builds: signals, then initial conditions and the known flag
    def features(batch):
        x, y = jax.vmap(task.split)(batch)
        cond = jnp.concatenate([y[:, :1, :], jnp.ones_like(y[:, :1, :1])], -1)
        return np.array(jnp.concatenate([x, jnp.broadcast_to(cond, (*x.shape[:2], cond.shape[-1]))], -1)), np.array(y)  # writable, as torch.from_numpy wants

    device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    pairs = [tuple(torch.from_numpy(a).to(device) for a in features(b)) for b in batches]
    if device == "cpu":
        torch.set_num_threads(threads or os.cpu_count() or 1)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        getattr(config.model, "compute_dtype", "float32")]
    ref = torch_transformer(task.n_features, task.n_outputs,
                            **{k: getattr(config.model, k) for k in ("width", "n_layers", "n_heads")}).to(device)
    o = config.optimizer
    opt = torch.optim.AdamW(ref.parameters(), lr=o.learning_rate, betas=(o.b1, o.b2), weight_decay=o.weight_decay)

    def torch_step(x, y):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            loss = torch.mean((ref(x).float() - y) ** 2)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), o.clip_norm)
        opt.step()

    def time_torch():
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            for x, y in pairs:
                torch_step(x, y)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - started) / len(pairs))
        return statistics.median(times)

    torch_step(*pairs[0])
    rounds_s = {name: [] for name in [*steps, "torch"]}
    for _ in range(rounds):
        for name, (step, state) in steps.items():
            rounds_s[name].append(timed_steps(step, state, batches, repeats)[0])
        rounds_s["torch"].append(time_torch())
    median_s = {name: statistics.median(times) for name, times in rounds_s.items()}
    best = min(steps, key=median_s.get)
    return {
        **common, "params_torch": int(sum(p.numel() for p in ref.parameters())), "torch_device": device,
        "step_s_per_round": rounds_s,
        "sample_steps_per_s": {name: samples / s for name, s in median_s.items()},
        "cellax_attention": best,
        "cellax_sample_steps_per_s": samples / median_s[best], "torch_sample_steps_per_s": samples / median_s["torch"],
        "ratio_cellax_over_torch": median_s["torch"] / median_s[best],
        "ratio_per_attention": {name: median_s["torch"] / median_s[name] for name in steps},
        "torch_version": torch.__version__, "loadavg_end": os.getloadavg(),
    }


def ablate_attention_in_both() -> None:
    """Attention in cellax's Transformer and in :func:`torch_transformer` replaced by passing ``V`` through (Q and K
    still reach the loss, times zero, so their projections stay in the backward pass); for this process."""
    import jax.numpy as jnp
    import torch

    from cellax.models import attention_kernel, transformer

    def passthrough(q, k, v, positions, slopes):
        length = q.shape[0]
        heads_first = lambda a: a.transpose(1, 0, 2).reshape(length, -1)  # (heads, T, d) -> (T, heads * d)
        return heads_first(v) + 0.0 * (q.reshape(length, -1) + heads_first(k))

    def position_major_passthrough(q, k, v):  # the layout fused_attend and the kernel take: (T, heads, d)
        length = q.shape[0]
        return v.reshape(length, -1) + 0.0 * (q.reshape(length, -1) + k.reshape(length, -1))

    def kernel_passthrough(qkv, heads, slopes, rope_theta=None):  # the kernel's input: [q, k, v] heads in one array
        kv_heads = (qkv.shape[1] - heads) // 2
        return position_major_passthrough(*jnp.split(qkv, [heads, heads + kv_heads], axis=1))

    transformer.flash_attend = transformer.causal_self_attend = passthrough
    transformer.fused_attend = lambda q, k, v, positions, slopes: position_major_passthrough(q, k, v)
    attention_kernel.kernel_attend = kernel_passthrough
    torch.nn.functional.scaled_dot_product_attention = lambda q, k, v, is_causal: v + 0.0 * (q + k)


def with_fields(model_config, fields: dict | None):
    """``model_config`` with ``fields`` replaced, validated again."""
    return type(model_config).model_validate({**model_config.model_dump(), **(fields or {})})


def torch_transformer(n_features, n_outputs, width, n_layers, n_heads, theta=10_000.0):
    """cellax's Transformer (pre-norm RMSNorm, RoPE causal attention, SwiGLU, separate head) in PyTorch."""
    import torch
    from torch import nn

    hidden = 8 * ((8 * width // 3 + 7) // 8)
    head = width // n_heads

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = nn.RMSNorm(width, eps=1e-5), nn.RMSNorm(width, eps=1e-5)
            self.qkv = nn.Linear(width, 3 * width, bias=False)
            self.proj = nn.Linear(width, width, bias=False)
            self.gate_up = nn.Linear(width, 2 * hidden, bias=False)
            self.down = nn.Linear(hidden, width, bias=False)

        def forward(self, h, cos, sin):
            b, t, _ = h.shape
            q, k, v = self.qkv(self.n1(h)).view(b, t, 3, n_heads, head).unbind(2)
            q, k = (rotate(z, cos, sin).transpose(1, 2) for z in (q, k))
            a = nn.functional.scaled_dot_product_attention(q, k, v.transpose(1, 2), is_causal=True)
            h = h + self.proj(a.transpose(1, 2).reshape(b, t, width))
            g, u = self.gate_up(self.n2(h)).chunk(2, -1)
            return h + self.down(nn.functional.silu(g) * u)

    def rotate(z, cos, sin):
        z1, z2 = z[..., : head // 2], z[..., head // 2 :]
        return torch.cat([z1 * cos - z2 * sin, z1 * sin + z2 * cos], -1)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(n_features, width)
            self.blocks = nn.ModuleList(Block() for _ in range(n_layers))
            self.norm = nn.RMSNorm(width, eps=1e-5)
            self.out = nn.Linear(width, n_outputs)

        def forward(self, x):
            t = x.shape[1]
            freq = theta ** (-torch.arange(0, head // 2, dtype=torch.float32) / (head // 2))
            angle = torch.arange(t, dtype=torch.float32)[:, None] * freq[None]
            cos, sin = angle.cos()[None, :, None], angle.sin()[None, :, None]
            h = self.embed(x)
            for block in self.blocks:
                h = block(h, cos, sin)
            return self.out(self.norm(h))

    return Model()


def fused_deviation(model, fused, samples: int = 200) -> float:
    """Largest ``|y_fused - y_xla|`` over a free-running stream of random inputs (the same model)."""
    import jax
    import jax.numpy as jnp

    inputs = jax.random.normal(jax.random.key(1), (samples, model.embed.in_features), jnp.float32)

    def stream(step, state):
        return jax.lax.scan(lambda s, x: step(s, x)[::-1], state, inputs)[1]

    reference = stream(lambda s, x: model.step(s, x), model.init_state())
    return float(jnp.max(jnp.abs(stream(lambda s, x: fused.step(s, x), fused.init_state()) - reference)))


def latency(window: int, samples: int, rounds: int = 3) -> dict:
    """Per-sample streaming latency on one core (run in a pinned subprocess); variants interleaved in ``rounds``."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from cellax.models import make_model

    configs = {
        "transformer_kv_cache": {"kind": "transformer", "width": 192, "n_layers": 2, "n_heads": 6, "max_len": window},
        "mamba_recurrent": {"kind": "mamba", "width": 192, "n_layers": 4},
    }
    out = {}
    for name, cfg in configs.items():
        model = make_model(cfg, 8, 5, jax.random.key(0))
        params = int(sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))))
        weights, static = eqx.partition(model, eqx.is_array)
        x_t = jnp.ones(8, jnp.float32)
        # deployed: the weights are constants of the compiled step and the state buffers are donated (updated in
        # place); for comparison, the weights passed as arguments on every call (a pytree of ~20-50 arrays)
        deployed = jax.jit(lambda s, x: model.step(s, x), donate_argnums=0)
        as_arguments = jax.jit(lambda w, s, x: eqx.combine(w, static).step(s, x), donate_argnums=1)
        variants = {"deployed": deployed, "weights_as_arguments": lambda s, x: as_arguments(weights, s, x)}
        extra = {}
        if cfg["kind"] == "mamba":  # the same step as one hand-fused CPU kernel (cellax.deploy.fused_mamba)
            from cellax.deploy.fused_mamba import FusedMambaStep, KernelUnavailable

            try:
                fused = FusedMambaStep(model)
            except KernelUnavailable as err:
                extra["fused_kernel_unavailable"] = str(err)
            else:
                variants["fused_kernel"] = jax.jit(lambda s, x: fused.step(s, x), donate_argnums=0)
                extra["fused_kernel_max_abs_diff"] = fused_deviation(model, fused)
        per_round = {label: [] for label in variants}
        for _ in range(rounds):  # interleaved, so a drift of the machine hits every variant alike
            for label, step in variants.items():
                state = step(model.init_state(), x_t)[1]
                times = []
                for i in range(samples // rounds):
                    if i % window == window - 2:  # a full KV cache starts a new stream (its size is the window)
                        state = model.init_state()
                    started = time.perf_counter()
                    y, state = step(state, x_t)
                    y.block_until_ready()
                    times.append(time.perf_counter() - started)
                per_round[label].append(times)
        figures = {}
        for label, rounds_times in per_round.items():
            times = [t for r in rounds_times for t in r]
            figures[label] = (1e6 * statistics.median(times), 1e6 * sorted(times)[int(0.95 * len(times))],
                              [1e6 * statistics.median(r) for r in rounds_times])
        if "fused_kernel" in figures:
            extra.update(fused_kernel_latency_us_median=figures["fused_kernel"][0],
                         fused_kernel_latency_us_p95=figures["fused_kernel"][1],
                         fused_kernel_us_per_round=figures["fused_kernel"][2],
                         deployed_over_fused=figures["deployed"][0] / figures["fused_kernel"][0])
        full = jax.jit(lambda x: model(x)[-1])
        window_x = jnp.ones((window, 8), jnp.float32)
        jax.block_until_ready(full(window_x))
        naive = []
        for _ in range(max(5, samples // 50)):
            started = time.perf_counter()
            full(window_x).block_until_ready()
            naive.append(time.perf_counter() - started)
        out[name] = {"config": cfg, "params": params,
                     "step_latency_us_median": figures["deployed"][0], "step_latency_us_p95": figures["deployed"][1],
                     "deployed_us_per_round": figures["deployed"][2],
                     "weights_as_arguments_us_median": figures["weights_as_arguments"][0], **extra,
                     "naive_rerun_window_us_median": 1e6 * statistics.median(naive), "window": window,
                     "loadavg": os.getloadavg()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profiles", type=int, default=192, help="1 h dynamic profiles in the dataset")
    parser.add_argument("--budget-s", type=float, default=240.0, help="training wall time per reference config")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_models")
    parser.add_argument("--only", choices=["accuracy", "throughput", "latency"], action="append")
    parser.add_argument("--kinds", nargs="+", choices=KINDS + BASELINES, default=list(KINDS + BASELINES),
                        help="models in the accuracy part (ecm: the fitted equivalent circuit, simulate task)")
    parser.add_argument("--tasks", nargs="+", choices=["simulate", "estimate"], default=["simulate", "estimate"],
                        help="tasks of the accuracy part's sequence models")
    parser.add_argument("--accuracy-key", default="accuracy",
                        help="JSON key of the accuracy part (e.g. accuracy_900s for a longer budget beside it); "
                             "its run folders and reports get the part after the last '_' as a suffix")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the throughput comparison")
    parser.add_argument("--batch-size", type=int, help="throughput batch (default: the reference config's)")
    parser.add_argument("--window", type=int, help="throughput window in samples (default: the reference config's)")
    parser.add_argument("--model", type=json.loads, default={},
                        help='throughput model overrides as JSON, e.g. \'{"width": 512, "compute_dtype": "bfloat16"}\'')
    parser.add_argument("--attention", nargs="+", default=["kernel", "flash", "blockwise"],
                        choices=["kernel", "flash", "blockwise", "fused", "auto"], help="cellax attention variants to time")
    parser.add_argument("--threads", type=int, help="throughput: CPU cores for both JAX and PyTorch (the process is "
                        "pinned to that many; 1 also on a loaded machine, where spinning thread pools distort a "
                        "multi-thread comparison)")
    parser.add_argument("--num-batches", type=int, default=20, help="throughput batches per timed pass")
    parser.add_argument("--ablate-attention", action="store_true",
                        help="throughput with attention replaced by passing V through, in both models (written as "
                             "throughput_without_attention): what the rest of the step costs in each framework")
    parser.add_argument("--latency-window", type=int, default=512)
    parser.add_argument("--latency-samples", type=int, default=2000)
    parser.add_argument("--latency-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "models.json")
    args = parser.parse_args()
    if args.latency_child:
        os.sched_setaffinity(0, {0})
        print(json.dumps(latency(window=args.latency_window, samples=args.latency_samples)))
        return
    if args.threads:  # before JAX starts its CPU client: XLA's thread pool (and the CPU kernels on it) sizes itself
        # by the cores it may use, so the process is pinned to `threads` cores for both frameworks
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.threads]))
    if args.threads == 1:
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    parts = args.only or ["accuracy", "throughput", "latency"]
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / "bench_dynamic.h5"
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result.update({"benchmark": "models", "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                   "created_utc": now})
    if "accuracy" in parts or "throughput" in parts:
        make_dataset(data, args.profiles)
    if "throughput" in parts:
        key = "throughput" if args.threads is None else f"throughput_{args.threads}_thread"
        key += "_without_attention" if args.ablate_attention else ""
        result[key] = {**throughput(data, args.repeats, args.rounds, args.model, args.batch_size, args.window,
                                    tuple(args.attention), args.num_batches, threads=args.threads,
                                    ablate_attention=args.ablate_attention), "measured_utc": now}
        print(json.dumps(result[key], indent=2), flush=True)
    if "latency" in parts:
        env = {**os.environ, "JAX_PLATFORMS": "cpu",  # the target is a CPU core, also on a GPU machine
               "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
        child = subprocess.run([sys.executable, __file__, "--latency-child", "--latency-window", str(args.latency_window),
                                "--latency-samples", str(args.latency_samples)], capture_output=True, text=True, env=env)
        if child.returncode != 0:
            raise SystemExit(child.stderr[-3000:])
        result["latency_one_core"] = {**json.loads(child.stdout.strip().splitlines()[-1]), "measured_utc": now}
        print(json.dumps(result["latency_one_core"], indent=2), flush=True)
    if "accuracy" in parts and "ecm" in args.kinds:  # added to the accuracy part's runs beside the sequence models
        part = result.setdefault(args.accuracy_key, {"runs": {}})
        part["runs"].update({k: {**v, "measured_utc": now, "load_avg": os.getloadavg()}
                             for k, v in ecm_accuracy(data).items()})
        print(json.dumps({k: part["runs"][k]["test"] for k in ("simulate_ecm", "estimate_ecm")}), flush=True)
    if "accuracy" in parts and set(args.kinds) - set(BASELINES):
        result[args.accuracy_key] = {**result.get(args.accuracy_key, {}), "budget_s_per_config": args.budget_s, "profiles": args.profiles, "measured_utc": now,
                              "runs": {**result.get(args.accuracy_key, {}).get("runs", {}),
                                       **accuracy(data, args.work, args.budget_s, args.out.parent,
                                                  [k for k in args.kinds if k not in BASELINES],
                                                  "" if args.accuracy_key == "accuracy" else "_" + args.accuracy_key.split("_")[-1],
                                                  args.tasks)},
                              "targets": {"simulate": "voltage RMSE <= 10 mV, temperatures <= 0.2 K",
                                          "estimate": "SOC RMSE <= 1 %"}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
