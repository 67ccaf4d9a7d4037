#!/usr/bin/env bash
# GPU speed check: the speed benchmark at fp32, bf16, bf16 + channels_last, bf16 + channels_last + compile,
# on full-size Fashion-MNIST with the CRD pair (resnet32x4 -> resnet8x4).
#   bash scripts/bench/gpu.sh <fashion-mnist folder> <output folder>     (from the repository root)
set -euo pipefail
root=${1:-/usr/share/datasets/fashion-mnist}
out=${2:-bench_gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
common=(--dataset fashion_mnist --fashion-root "$root" --samples 55000 --epochs 3 --batch-size 256
        --student cifar_resnet8x4 --teacher cifar_resnet32x4)
python3 -m scripts.bench speed "${common[@]}" --out "$out/fp32.json"
python3 -m scripts.bench speed "${common[@]}" --precision bf16-mixed --out "$out/bf16.json"
python3 -m scripts.bench speed "${common[@]}" --precision bf16-mixed --channels-last --out "$out/bf16_cl.json"
python3 -m scripts.bench speed "${common[@]}" --precision bf16-mixed --channels-last --compile \
  --out "$out/bf16_cl_compile.json"
