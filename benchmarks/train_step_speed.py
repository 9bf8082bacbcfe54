"""Seconds per SUM training step (7 interactive rounds, AdamW update) on the local devices.

    python benchmarks/train_step_speed.py --variant tiny --images 2 --masks 8 --steps 5
    python benchmarks/train_step_speed.py --variant vit_b --images 1 --masks 4 --steps 2
    python benchmarks/train_step_speed.py --variant vit_b --img-size 512 --images 1 --masks 8

Builds a randomly initialised SAM of `--variant`, the base config (`configs/base.py`) with
full fine-tuning, a mesh over all local devices (`--mesh data,fsdp`, default `1,-1`), and a
random batch in the layout of docs/contracts.md (half the images pseudo-labelled). Prints
one JSON line: compile time (first call, including the run), then the median and all
timings of the following steps, each ended with `block_until_ready`.

The extra cost of a method (issue 16) as a ratio to SUM's step, the steps of all methods
interleaved on the same batches (so machine load hits them alike):

    python benchmarks/train_step_speed.py --variant tiny --methods sum,u2pl --steps 10

At full size without memory or a GPU, `--flops` lowers each method's step on abstract
shapes (1 image) and prints XLA's FLOP estimate and the ratio to `sum`:

    python benchmarks/train_step_speed.py --variant vit_h --masks 30 --methods sum,u2pl --flops

`--methods` (default `sum`) names configs/ablations.py variants (`u2pl`: U2PL's pixel
contrastive loss; `discrepancy_uncer`, `augseg_mixed_prompt`, ...: a second forward pass);
`--ablations a,b` is short for `--methods sum,a,b`; `sum_adapter` (AIM's encoder adapters,
docs/training.md "Encoder Adapter") and the LoRA variants get their adapters, `sum_hq` and
`hq_sam` HQ-SAM's parts (docs/training.md "HQ-SAM's architecture") as the trainer adds
them; variants compose with `+` (`sum_hq+full`: HQ-SAM's architecture, every parameter
training). With more than one, the JSON holds, per
method, the median step time and the ratios to `sum` of paired steps (median, min, max).

Against PyTorch (issue 23): `--torch` times our jitted step and the same SUM step written
with the official `segment_anything` model and torch autograd (tests/torch_train_step.py:
the 7 rounds with their own clicks, the same losses, `torch.optim.AdamW` with our parameter
groups), both from the same random weights (perturbed official init), interleaved on the
same batches (ours, PyTorch, ours, ...), after one warm-up step each (our compilation):

    python benchmarks/train_step_speed.py --variant vit_b --images 1 --masks 8 --steps 5 --torch

It prints one JSON line: per side the median wall and CPU seconds of the timed steps with
their min-max, the per-step ratios PyTorch / ours (above 1: ours is faster; median, min,
max), PyTorch's thread count and the load average before and after. PyTorch uses as many
threads as the machine has cores, as XLA does; both share the process's allocator settings
(`cpu_memory.keep_freed_memory`, as the trainer). tests/train/test_torch_step_reference.py
checks that the two steps compute the same loss, gradients and updates from the same
prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs import ablations, base
from sum_jax.models.sam import build_sam
from sum_jax.train import adapters, loop, sharding
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


def apply_method(config, name: str) -> None:
    """The config changes of method `name`: a configs/ablations.py variant (`sum` is the base
    config's full fine-tuning)."""
    try:
        ablations.apply(config, name)
    except ValueError as e:
        raise SystemExit(f"--methods: {e}") from e


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
    parser.add_argument("--flops", action="store_true", help="FLOP estimates, no run")
    parser.add_argument(
        "--methods", default="sum", help="comma-separated configs/ablations.py variants"
    )
    parser.add_argument(
        "--ablations", default="", help="shorthand: --methods sum,<these> (comma-separated)"
    )
    parser.add_argument(
        "--torch", action="store_true", help="against the official PyTorch SAM's step"
    )
    args = parser.parse_args()
    methods = args.methods.split(",")
    if args.ablations:
        methods = ["sum"] + [n.strip() for n in args.ablations.split(",") if n.strip()]
    if args.torch:
        return torch_compare(args)
    if args.flops:
        return flops(args, methods)
    if len(methods) > 1:
        return compare(args, methods)

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


def run_header(args, img: int) -> dict:
    """What every timing line starts with: the model, devices and batch that were timed."""
    return {
        "variant": args.variant,
        "devices": f"{len(jax.devices())} x {jax.devices()[0].device_kind}",
        "images": args.images,
        "masks_per_image": args.masks,
        "rounds": args.rounds,
        "img_size": img,
        "steps": args.steps,
    }


def compare(args, methods: list[str]) -> None:
    """Each method's step on the same model and batches, interleaved; ratios to `sum`."""
    if "sum" not in methods:
        raise SystemExit(f"--methods must include sum (the ratios are to its step): {methods}")
    overrides = {"img_size": args.img_size} if args.img_size else {}
    img, low = setup_sizes(args.variant, args.img_size)
    steps, states, first = {}, {}, {}
    for name in methods:
        config = base.get_config()
        config.model.variant = args.variant
        config.interactive.num_rounds = args.rounds
        config.sharding.mesh_shape = tuple(int(x) for x in args.mesh.split(","))
        apply_method(config, name)
        mesh = sharding.make_mesh(config.sharding.mesh_shape)
        # The method's adapters (LoRA, encoder adapters) in the model, as the trainer adds them.
        model = adapters.adapt(build_sam(args.variant, **overrides), config)
        model = loop.with_hq_parts(model, config)  # HQ-SAM's parts (`sum_hq`, `hq_sam`)
        states[name], setup = init_train_state(model, config, mesh)
        steps[name] = jit_train_step(setup)
    rng = np.random.default_rng(0)
    times = {name: [] for name in methods}
    for i in range(args.steps + 1):
        batch = sharding.shard_batch(random_batch(rng, args.images, args.masks, img, low), mesh)
        for name in methods:
            t = time.perf_counter()
            states[name], metrics = steps[name](states[name], batch)
            jax.block_until_ready((states[name], metrics))
            (times[name] if i else first.setdefault(name, [])).append(time.perf_counter() - t)
    result = run_header(args, img)
    for name in methods:
        ratios = np.array(times[name]) / np.array(times["sum"])
        result[name] = {
            "first_step_s (compile + run)": round(first[name][0], 2),
            "median_step_s": round(float(np.median(times[name])), 3),
            "ratio_to_sum": {
                "median": round(float(np.median(ratios)), 3),
                "min": round(float(ratios.min()), 3),
                "max": round(float(ratios.max()), 3),
            },
        }
    print(json.dumps(result))


def torch_compare(args) -> None:
    """Our jitted step and tests/torch_train_step.py's PyTorch step from the same weights,
    interleaved on the same batches; ratios PyTorch / ours per pair of steps."""
    import dataclasses

    from sum_jax import cpu_memory

    cpu_memory.keep_freed_memory()
    import torch

    from sum_jax.models.sam import VARIANTS
    from tests.torch_reference import flax_from_torch, torch_sam
    from tests.torch_train_step import TorchSumStep

    torch.set_num_threads(os.cpu_count() or 1)
    sam_config = VARIANTS[args.variant]
    if args.img_size:
        sam_config = dataclasses.replace(sam_config, img_size=args.img_size)
    config = base.get_config()
    config.model.variant = args.variant
    config.interactive.num_rounds = args.rounds
    config.sharding.mesh_shape = tuple(int(x) for x in args.mesh.split(","))
    mesh = sharding.make_mesh(config.sharding.mesh_shape)
    tmodel = torch_sam(sam_config, seed=0, perturb=0.02)
    state, setup = init_train_state(flax_from_torch(tmodel, sam_config), config, mesh)
    step = jit_train_step(setup)
    theirs = TorchSumStep(tmodel, sam_config, config)
    img, low = setup_sizes(args.variant, args.img_size)
    rng = np.random.default_rng(0)
    load_before = os.getloadavg()
    times = {"ours": [], "torch": []}
    first, losses = {}, {}
    for i in range(args.steps + 1):
        batch = random_batch(rng, args.images, args.masks, img, low)
        sharded = sharding.shard_batch(batch, mesh)
        t0, c0 = time.perf_counter(), time.process_time()
        state, metrics = step(state, sharded)
        jax.block_until_ready((state, metrics))
        ours = (time.perf_counter() - t0, time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = theirs.step(batch)
        pytorch = (time.perf_counter() - t0, time.process_time() - c0)
        if i == 0:
            first = {"ours": ours[0], "torch": pytorch[0]}
            losses = {"ours": float(metrics["loss"]), "torch": loss}
        else:
            times["ours"].append(ours)
            times["torch"].append(pytorch)
    result = {
        **run_header(args, img),
        "torch_threads": torch.get_num_threads(),
        "first_step_s (ours: compile + run)": {k: round(v, 2) for k, v in first.items()},
        "first_step_loss": {k: round(v, 4) for k, v in losses.items()},
    }
    for side, ts in times.items():
        wall, cpu = np.array(ts).T
        result[side] = {
            "median_step_s": round(float(np.median(wall)), 3),
            "min_max_s": [round(float(wall.min()), 3), round(float(wall.max()), 3)],
            "median_cpu_s": round(float(np.median(cpu)), 3),
        }
    for k, kind in enumerate(("wall", "cpu")):
        ratios = np.array(times["torch"])[:, k] / np.array(times["ours"])[:, k]
        result[f"ratio_torch_to_ours_{kind}"] = {
            "median": round(float(np.median(ratios)), 3),
            "min": round(float(ratios.min()), 3),
            "max": round(float(ratios.max()), 3),
        }
    result["load_average_before_after"] = [
        [round(v, 2) for v in load] for load in (load_before, os.getloadavg())
    ]
    print(json.dumps(result))


def flops(args, methods: list[str]) -> None:
    """XLA's FLOP estimate (`Lowered.cost_analysis`, before optimisation) of each method's
    step for one image, lowered on abstract shapes; ratios to the first method."""
    import dataclasses

    from sum_jax.models.sam import VARIANTS
    from sum_jax.train.step import abstract_batch, train_setup

    model_config = VARIANTS[args.variant]
    if args.img_size:
        model_config = dataclasses.replace(model_config, img_size=args.img_size)
    mesh = sharding.make_mesh((1, 1), jax.devices()[:1])
    result = {"variant": args.variant, "images": 1, "masks_per_image": args.masks,
              "rounds": args.rounds, "img_size": model_config.img_size}  # fmt: skip
    for name in methods:
        config = base.get_config()
        config.model.variant = args.variant
        config.interactive.num_rounds = args.rounds
        config.train.batch_size, config.train.masks_per_image = 1, args.masks
        apply_method(config, name)
        hq = dataclasses.replace(model_config, hq=bool(config.model.hq))
        setup, abstract = train_setup(adapters.abstract_model(hq, config), config, mesh)
        lowered = jit_train_step(setup).lower(abstract, abstract_batch(config, setup, model_config))
        result[f"{name}_flops"] = float(lowered.cost_analysis()["flops"])
    for name in methods[1:]:
        result[f"{name}_ratio_to_{methods[0]}"] = round(
            result[f"{name}_flops"] / result[f"{methods[0]}_flops"], 5
        )
    print(json.dumps(result))


def setup_sizes(variant: str, img_size: int) -> tuple[int, int]:
    """`(img_size, low_res_size)` of a variant (with an optional input-size override)."""
    from sum_jax.models.sam import VARIANTS

    cfg = VARIANTS[variant]
    img = img_size or cfg.img_size
    return img, 4 * (img // cfg.patch_size)


if __name__ == "__main__":
    main()
