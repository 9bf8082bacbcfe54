"""The accelerator half of `benchmarks/gpu_check.sh`: ViT-H encoder forward in bfloat16 and
float32 (seconds per image, model FLOP utilisation) and one full-size SUM training step
(seconds, peak device memory), as one JSON object.

    python benchmarks/gpu_check.py --out out/gpu_check/model.json

The encoder's FLOPs are XLA's cost analysis of the compiled forward; utilisation is those
FLOPs per second over the chip's dense peak for the dtype (`PEAK_TFLOPS` by device kind, or
`--peak-bf16/--peak-f32` in TFLOP/s). The training step is `configs/ft_small.py` as shipped
(bfloat16, remat, block-group scan) on one device: 1 image x 30 masks x 7 rounds, random
weights and a random batch (`benchmarks/train_step_speed.py`'s), the median of `--steps`
steps after the compiling one; peak memory is `device.memory_stats()['peak_bytes_in_use']`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from configs import ft_small
from sum_jax.models.sam import build_sam, execution_overrides
from sum_jax.train import sharding
from sum_jax.train.step import init_train_state, jit_train_step

# Dense peak TFLOP/s (bf16 tensor cores; float32 without TF32) from the vendors' data sheets.
PEAK_TFLOPS = {
    "H100": {"bfloat16": 989.0, "float32": 67.0},
    "H200": {"bfloat16": 989.0, "float32": 67.0},
    "A100": {"bfloat16": 312.0, "float32": 19.5},
}


def peak_for(kind: str, dtype: str, args) -> float | None:
    override = args.peak_bf16 if dtype == "bfloat16" else args.peak_f32
    if override:
        return override
    for name, peaks in PEAK_TFLOPS.items():
        if name in kind:
            return peaks[dtype]
    return None


def encoder_forward(dtype: str, repeats: int, args) -> dict:
    model = build_sam("vit_h", dtype=dtype)
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda st, x: nnx.merge(graphdef, st).encode_image(x))
    x = jax.random.normal(jax.random.key(0), (1, 1024, 1024, 3), jnp.float32)
    t0 = time.perf_counter()
    compiled = fn.lower(state, x).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(state, x))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(compiled(state, x))
        times.append(time.perf_counter() - t)
    cost = compiled.cost_analysis()
    flops = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
    sec = float(np.median(times))
    peak = peak_for(jax.devices()[0].device_kind, dtype, args)
    del model, state
    return {
        "dtype": dtype,
        "seconds_per_image": round(sec, 4),
        "spread": [round(min(times), 4), round(max(times), 4)],
        "tflops_per_image": round(flops / 1e12, 3),
        "mfu": round(flops / sec / (peak * 1e12), 3) if peak else None,
        "compile_s": round(compile_s, 1),
    }


def train_step(steps: int) -> dict:
    from train_step_speed import random_batch

    config = ft_small.get_config()
    config.train.batch_size = 1
    config.train.microbatches = 1
    mesh = sharding.make_mesh((1, 1), jax.devices()[:1])
    model = build_sam("vit_h", **execution_overrides(config.model))
    state, setup = init_train_state(model, config, mesh)
    del model
    step = jit_train_step(setup)
    rng = np.random.default_rng(0)
    times = []
    for i in range(steps + 1):
        batch = sharding.shard_batch(random_batch(rng, 1, 30, 1024, 256), mesh)
        t = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready((state, metrics))
        if i:
            times.append(time.perf_counter() - t)
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "config": "configs/ft_small.py (batch 1, 30 masks, 7 rounds)",
        "median_step_s": round(float(np.median(times)), 3),
        "step_s": [round(t, 3) for t in times],
        "peak_gib": round(stats.get("peak_bytes_in_use", float("nan")) / 2**30, 2),
        "loss": float(metrics["loss"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="out/gpu_check/model.json")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--peak-bf16", type=float, default=0.0)
    parser.add_argument("--peak-f32", type=float, default=0.0)
    args = parser.parse_args()
    result = {"device": f"{len(jax.devices())} x {jax.devices()[0].device_kind}"}
    result["encoder"] = [encoder_forward(d, args.repeats, args) for d in ("bfloat16", "float32")]
    result["train_step"] = train_step(args.steps)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
