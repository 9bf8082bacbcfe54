#!/usr/bin/env bash
# One-command check of sum_jax on one GPU (H100/H200; budget under 9 minutes):
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      # default out/gpu_check
#
# 1. ViT-H encoder forward, bfloat16 and float32: seconds per image and model FLOP
#    utilisation; one full-size SUM training step (configs/ft_small.py: 1 image x 30 masks x
#    7 rounds) with its peak device memory                       -> OUT_DIR/model.json
# 2. Pseudo-label generation (ViT-H, bfloat16, the paper's 32x32 grid) on one photo
#                                                                  -> OUT_DIR/pseudo_labels.json
# 3. Evaluation of 4 images (ViT-H, point protocol)              -> OUT_DIR/evaluation.log
#
# Random weights throughout: speed and memory only. Each stage has its own time limit so
# that one slow stage cannot take the whole budget.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/gpu_check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" || true
timeout 300 python benchmarks/gpu_check.py --out "$OUT/model.json"
timeout 120 python benchmarks/pseudo_label_speed.py --variant vit_h --dtype bfloat16 \
    --no-torch --images 1 --out "$OUT/pseudo_labels.json" || echo "pseudo-labels: failed/timed out"
timeout 90 python benchmarks/evaluation_speed.py --variant vit_h --images 4 \
    > "$OUT/evaluation.log" 2>&1 || echo "evaluation: failed/timed out"
echo "results in $OUT"
