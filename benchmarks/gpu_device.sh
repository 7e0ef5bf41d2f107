#!/usr/bin/env bash
# Run benchmarks/gpu.py on a lent GPU machine: install the carried wheels (benchmarks/gpu_wheels.py made them
# in .whl/), record the machine, and measure within a time budget, writing everything under $OUT as it goes.
# Arguments go to gpu.py; GPU_BUDGET_S (default 300) is the seconds gpu.py plans its parts within, so that a
# 15-minute lease holds a second try. Compiled programs are cached in /tmp, where a warm machine keeps them.
set -uo pipefail
out="${OUT:-runs/gpu_device}"
mkdir -p "$out"
ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: run benchmarks/gpu_wheels.py and carry .whl"; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 3
export PYTHONPATH="/tmp/site:$PWD" PYBAMM_DISABLE_TELEMETRY=true PYTHONUNBUFFERED=1 \
    JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
{ nvidia-smi; python3 -m pip list 2>/dev/null; } > "$out/machine.txt" 2>&1
budget="${GPU_BUDGET_S:-300}"
timeout --signal=INT --kill-after=20 $((budget + 60)) \
    python3 benchmarks/gpu.py --budget-s "$budget" --work /tmp/bench_gpu --out "$out/gpu.json" "$@" 2>&1 \
    | tee "$out/gpu.log"
