#!/usr/bin/env bash
# Everything the course measures on a GPU, in one short call (under 10 minutes on an
# H100/H200): the GPU tests, then chapter 13's training and generation benchmarks.
#
#     bash benchmarks/gpu_check.sh            # results in benchmarks/results/
#     OUT=/some/folder bash benchmarks/gpu_check.sh
#
# Needs PyTorch with CUDA and this repository's packages (pip install -e '.[dev]').
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -m pytest -q -m gpu tests 2>&1 | tail -5 | tee -a "$out/gpu.txt"
# gpt2 preset (124M), batch 16 x 1024: every CUDA setting, 2 repeats taking turns
python benchmarks/bench_train.py --device cuda --steps 20 --warmup 10 --repeats 2 \
    --out "$out" 2>&1 | tee "$out/bench_train-cuda.log"
python benchmarks/bench_generate.py --device cuda --repeats 2 --out "$out" 2>&1 \
    | tee "$out/bench_generate-cuda.log"
