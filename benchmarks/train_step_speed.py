"""Seconds per SUM training step (7 interactive rounds, AdamW update) on the local devices.

    python benchmarks/train_step_speed.py --variant tiny --images 2 --masks 8 --steps 5
    python benchmarks/train_step_speed.py --variant vit_b --images 1 --masks 4 --steps 2
    python benchmarks/train_step_speed.py --variant vit_b --img-size 512 --images 1 --masks 8

Builds a randomly initialised SAM of `--variant`, the base config (`configs/base.py`) with
full fine-tuning, a mesh over all local devices (`--mesh data,fsdp`, default `1,-1`), and a
random batch in the layout of docs/contracts.md (half the images pseudo-labelled). Prints
one JSON line: compile time (first call, including the run), then the median and all
timings of the following steps, each ended with `block_until_ready`.

`--ablations discrepancy_uncer,augseg_mixed_prompt,...` (names of configs/ablations.py) also
times those variants' steps on the same batches, interleaved with SUM's step (one step of
each in turn, so that load on the machine hits all alike), and adds per variant its median
step, its ratio to SUM's median and the spread (min, max) of the per-repeat ratios: the extra
cost of a second forward pass (teacher, second decoder) or a consistency loss.

    python benchmarks/train_step_speed.py --variant tiny --rounds 7 --steps 7 \
        --ablations discrepancy_uncer,discrepancy_dual_decoder,augseg_mixed_prompt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs import ablations, base
from sum_jax.models.sam import build_sam
from sum_jax.train import sharding
from sum_jax.train.step import init_train_state, jit_train_step


def random_batch(rng: np.random.Generator, images: int, masks: int, img: int, low: int):
    """Rectangles as targets, random uncertainty, every second image pseudo-labelled."""
    targets = np.zeros((images, masks, low, low), np.uint8)
    for i in range(images):
        for j in range(masks):
            y0, x0 = rng.integers(0, low // 2, 2)
            h, w = rng.integers(low // 16, low // 2, 2)
            targets[i, j, y0 : y0 + h, x0 : x0 + w] = 1
    return {
        "image": rng.integers(0, 256, (images, img, img, 3)).astype(np.uint8),
        "image_size": np.tile(np.array([[img, int(img * 0.75)]], np.int32), (images, 1)),
        "masks": targets,
        "mask_valid": np.ones((images, masks), bool),
        "uncertainty": rng.integers(0, 256, (images, masks, low, low)).astype(np.uint8),
        "is_pseudo": np.arange(images) % 2 == 1,
        "task_id": np.zeros(images, np.int32),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--images", type=int, default=2, help="global batch of images")
    parser.add_argument("--masks", type=int, default=8, help="masks per image")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the first")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--img-size", type=int, default=0, help="override the variant's input size (0: keep)"
    )
    parser.add_argument("--mesh", default="1,-1", help="data,fsdp mesh shape")
    parser.add_argument(
        "--ablations", default="", help="comma-separated configs/ablations.py variants to compare"
    )
    args = parser.parse_args()
    if args.ablations:
        compare_ablations(args)
        return

    config = base.get_config()
    config.model.variant = args.variant
    config.interactive.num_rounds = args.rounds
    config.sharding.mesh_shape = tuple(int(x) for x in args.mesh.split(","))
    mesh = sharding.make_mesh(config.sharding.mesh_shape)

    t0 = time.perf_counter()
    overrides = {"img_size": args.img_size} if args.img_size else {}
    model = build_sam(args.variant, **overrides)
    build_s = time.perf_counter() - t0
    state, setup = init_train_state(model, config, mesh)
    del model
    step = jit_train_step(setup)
    rng = np.random.default_rng(0)
    img, low = setup_sizes(args.variant, args.img_size)

    def one(state):
        batch = sharding.shard_batch(random_batch(rng, args.images, args.masks, img, low), mesh)
        t = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready((state, metrics))
        return state, metrics, time.perf_counter() - t

    state, metrics, first = one(state)
    times = []
    for _ in range(args.steps):
        state, metrics, t = one(state)
        times.append(t)
    result = {
        "variant": args.variant,
        "devices": f"{len(jax.devices())} x {jax.devices()[0].device_kind}",
        "mesh": dict(mesh.shape),
        "images": args.images,
        "masks_per_image": args.masks,
        "rounds": args.rounds,
        "img_size": img,
        "build_s": round(build_s, 2),
        "first_step_s (compile + run)": round(first, 2),
        "median_step_s": round(float(np.median(times)), 3) if times else None,
        "step_s": [round(t, 3) for t in times],
        "loss": float(metrics["loss"]),
    }
    print(json.dumps(result))


def compare_ablations(args) -> None:
    """SUM's step and each named ablation's, interleaved on the same batches (see the module
    docstring); prints one JSON line."""
    names = ["sum"] + [n.strip() for n in args.ablations.split(",") if n.strip()]
    overrides = {"img_size": args.img_size} if args.img_size else {}
    img, low = setup_sizes(args.variant, args.img_size)
    steps, states, compile_s = {}, {}, {}
    for name in names:
        config = base.get_config()
        ablations._apply(config, name)
        config.model.variant = args.variant
        config.interactive.num_rounds = args.rounds
        config.sharding.mesh_shape = tuple(int(x) for x in args.mesh.split(","))
        mesh = sharding.make_mesh(config.sharding.mesh_shape)
        states[name], setup = init_train_state(build_sam(args.variant, **overrides), config, mesh)
        steps[name] = jit_train_step(setup)
    rng = np.random.default_rng(0)
    batches = [
        sharding.shard_batch(random_batch(rng, args.images, args.masks, img, low), mesh)
        for _ in range(args.steps + 1)
    ]
    times = {name: [] for name in names}
    for i, batch in enumerate(batches):
        for name in names:
            t = time.perf_counter()
            states[name], metrics = steps[name](states[name], batch)
            jax.block_until_ready((states[name], metrics))
            if i == 0:
                compile_s[name] = round(time.perf_counter() - t, 2)
            else:
                times[name].append(time.perf_counter() - t)
    base_t = np.array(times["sum"])
    result = {
        "variant": args.variant,
        "devices": f"{len(jax.devices())} x {jax.devices()[0].device_kind}",
        "images": args.images,
        "masks_per_image": args.masks,
        "rounds": args.rounds,
        "img_size": img,
        "repeats": args.steps,
        "sum_median_step_s": round(float(np.median(base_t)), 4),
    }
    for name in names[1:]:
        t = np.array(times[name])
        ratios = t / base_t
        result[name] = {
            "first_step_s (compile + run)": compile_s[name],
            "median_step_s": round(float(np.median(t)), 4),
            "ratio_to_sum": round(float(np.median(t) / np.median(base_t)), 3),
            "ratio_min_max": [round(float(ratios.min()), 3), round(float(ratios.max()), 3)],
        }
    print(json.dumps(result))


def setup_sizes(variant: str, img_size: int) -> tuple[int, int]:
    """`(img_size, low_res_size)` of a variant (with an optional input-size override)."""
    from sum_jax.models.sam import VARIANTS

    cfg = VARIANTS[variant]
    img = img_size or cfg.img_size
    return img, 4 * (img // cfg.patch_size)


if __name__ == "__main__":
    main()
