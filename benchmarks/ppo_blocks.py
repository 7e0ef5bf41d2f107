"""Do cache-sized rollout blocks pay in PPO? One segment of an ``cellax rl`` config with and without them.

A/B in one process: the config's PPO segment (``updates_per_segment`` updates of ``num_envs`` environments
× ``num_steps`` steps × ``num_seeds`` seeds, the updates included) compiled once per ``env_block`` value, then
timed in interleaved rounds (medians of wall and CPU time), so a load change hits every variant alike.
The environment goes through gymnax's ``LogWrapper`` as in training. Writes
``benchmarks/results/ppo_blocks.json`` with the load average.

    python benchmarks/ppo_blocks.py [--config configs/rl/fast_charge.yaml] [--blocks 0 32 64] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "rl" / "fast_charge.yaml")
    parser.add_argument("--blocks", type=int, nargs="+", default=[0, 32, 64], help="env_block values (0: one vmap)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ppo_blocks.json")
    args = parser.parse_args()

    import jax
    from gymnax.wrappers.purerl import LogWrapper

    from cellax.config import load_config
    from cellax.rl.config import RLConfig
    from cellax.rl.ppo import make_train
    from cellax.workflows.rl import build

    config = load_config(args.config, RLConfig)
    env, params, _ = build(config)
    env = LogWrapper(env)
    load_start = os.getloadavg()
    segments = {}
    for block in args.blocks:
        ppo = config.ppo.model_copy(update={"env_block": block})
        init, segment, _ = make_train(ppo, env, params)
        runner = jax.jit(jax.vmap(init))(jax.random.split(jax.random.key(ppo.seed), ppo.num_seeds))
        run = jax.jit(jax.vmap(segment))
        jax.block_until_ready(run(runner))  # compile outside the timing
        segments[block] = (run, runner)
    rounds = {block: {"wall_s": [], "cpu_s": []} for block in segments}
    for _ in range(args.rounds):
        for block, (run, runner) in segments.items():
            cpu, wall = time.process_time(), time.perf_counter()
            jax.block_until_ready(run(runner))
            rounds[block]["wall_s"].append(time.perf_counter() - wall)
            rounds[block]["cpu_s"].append(time.process_time() - cpu)
    median = {block: {k: statistics.median(v) for k, v in r.items()} for block, r in rounds.items()}
    base = median[args.blocks[0]]
    p = config.ppo
    result = {
        "benchmark": "ppo_blocks", "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "segment": {"updates": p.updates_per_segment, "num_envs": p.num_envs, "num_steps": p.num_steps,
                    "num_seeds": p.num_seeds, "env_dtype": config.env.dtype},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_start": load_start,
                    "load_average_end": os.getloadavg()},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rounds": {str(b): r for b, r in rounds.items()},
        "median": {str(b): m for b, m in median.items()},
        f"speedup_over_env_block_{args.blocks[0]}": {
            str(b): {"wall": base["wall_s"] / m["wall_s"], "cpu": base["cpu_s"] / m["cpu_s"]} for b, m in median.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result[f"speedup_over_env_block_{args.blocks[0]}"], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
