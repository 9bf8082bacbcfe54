"""Throughput of pseudo-label generation, our `MaskGenerator` next to the official
`segment_anything.SamAutomaticMaskGenerator`, same weights, same process, same photos.

    python benchmarks/pseudo_label_speed.py --variant tiny --images 3
    python benchmarks/pseudo_label_speed.py --variant vit_b --images 2
    python benchmarks/pseudo_label_speed.py --variant vit_b --images 2 --keep-all --no-torch
    python benchmarks/pseudo_label_speed.py --variant vit_h --dtype bfloat16 --no-torch  # GPU

Both generators run the paper's settings (App. B.1, `configs/pseudo_labels.py`): a 32x32
grid of single clicks, 3 masks per click, 64 clicks per batch, predicted IoU > 0.88,
stability >= 0.95, box NMS 0.7; ours also drops masks covering >= 95% of the image (SAM's
data engine; the released official generator has no such filter). The model is the official
PyTorch SAM with random, perturbed weights (`tests/torch_reference.py`, as the tests build
it) and the same weights converted into sum_jax. The images are photos that ship with
scikit-image (astronaut, coffee, chelsea, rocket, ...), cycled for `--images`.

Random weights make the filters keep few masks, so the masks-per-image numbers say nothing
about a trained SAM. `--keep-all` opens the two score filters (pred_iou_thresh=0,
stability_score_thresh=0; NMS and the area filter stay) so that the file sizes are measured
over more masks. Ours then runs at nearly the same speed (the filters act after the model);
the official generator slows down, as it RLE-encodes every surviving candidate before NMS.
With random weights NMS still leaves about one mask per image (their boxes cover the image).

Warm-up, reported separately and not in the throughput: each generator first runs once per
distinct image size with a 2x2 grid. Our grid prompts go in fixed batches of
`--points_per_batch`, so this compiles exactly what the full grid runs (the decoder batch is
compiled per image size: the upscaling to the original size is static). The compilation
time given is that first pass minus a second, warm one. PyTorch warms up on the first image.

Prints one line per image (seconds, masks kept, file bytes), then a table: images per second,
the ratio PyTorch time / JAX time (above 1: JAX is faster), masks per image, masks after
each filter, and the bytes per image of our pseudo-label file for those masks (written with
`sum_jax.data.pseudo_label_format.write`, without uncertainty maps, into a temporary folder),
split into RLE and logits, with the bytes per image extrapolated to 30 masks. Writes the same
numbers as JSON to `--out` (atomically).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina")
STAGES = ("candidates", "predicted_iou", "stability", "area", "crop_edge", "box_nms")


def load_photos(count: int, short_side: int) -> list[tuple[str, np.ndarray]]:
    """`count` uint8 RGB photos from scikit-image, cycled; resized if `short_side` > 0."""
    import PIL.Image
    import skimage.data

    out = []
    for i in range(count):
        name = PHOTOS[i % len(PHOTOS)]
        image = np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])
        if short_side:
            h, w = image.shape[:2]
            scale = short_side / min(h, w)
            size = (round(w * scale), round(h * scale))
            image = np.asarray(PIL.Image.fromarray(image).resize(size, PIL.Image.BICUBIC))
        out.append((f"{name}_{i}", image))
    return out


def file_bytes(directory: Path, image_id: str, image: np.ndarray, masks: list[dict]) -> dict:
    """Writes one image's pseudo-label file as the pseudo-label stage does; its sizes."""
    from sum_jax.data import pseudo_label_format as plf

    h, w = image.shape[:2]
    low = [m["low_res_logits"] for m in masks]
    path = plf.write(
        directory,
        image_id,
        height=h,
        width=w,
        masks=[m["segmentation"] for m in masks],
        low_res_logits=np.stack(low).astype(np.float32) if masks else np.zeros((0, 1, 1)),
        points=np.array([m["point_coords"][0] for m in masks], np.float32).reshape(-1, 2),
        predicted_iou=np.array([m["predicted_iou"] for m in masks], np.float32),
        stability_score=np.array([m["stability_score"] for m in masks], np.float32),
    )
    with np.load(path, allow_pickle=False) as z:
        rle_bytes, logits_bytes = int(z["rle"].size), int(z["logits"].size)
    empty = plf.write(
        directory,
        f"{image_id}_empty",
        height=h,
        width=w,
        masks=[],
        low_res_logits=np.zeros((0, 1, 1), np.float32),
        points=np.zeros((0, 2), np.float32),
        predicted_iou=np.zeros(0, np.float32),
        stability_score=np.zeros(0, np.float32),
    )
    return {
        "bytes": path.stat().st_size,
        "empty_file_bytes": empty.stat().st_size,
        "rle_bytes": rle_bytes,
        "logits_bytes": logits_bytes,
    }


def summarize_bytes(rows: list[dict]) -> dict[str, float]:
    """Mean bytes per image, and per image extrapolated to 30 masks from the bytes per mask."""
    masks = sum(r["masks"] for r in rows)
    per_image = float(np.mean([r["bytes"] for r in rows]))
    overhead = float(np.mean([r["empty_file_bytes"] for r in rows]))
    out = {"bytes_per_image": per_image, "empty_file_bytes": overhead}
    if masks:
        per_mask = sum(r["bytes"] - r["empty_file_bytes"] for r in rows) / masks
        out.update(
            bytes_per_mask=per_mask,
            rle_bytes_per_mask=sum(r["rle_bytes"] for r in rows) / masks,
            logits_bytes_per_mask=sum(r["logits_bytes"] for r in rows) / masks,
            bytes_per_image_at_30_masks=overhead + 30 * per_mask,
        )
    return out


def print_table(r: dict[str, Any]) -> None:
    """The readable summary of a result dict (JAX column, PyTorch column when timed)."""

    def row(label: str, key: str, fmt: str) -> None:
        theirs = format(r[f"torch_{key}"], fmt) if f"torch_{key}" in r else "-"
        print(f"{label:24}{format(r[f'jax_{key}'], fmt):>16}{theirs:>22}")

    print(f"\n{'':24}{'JAX (sum_jax)':>16}{'PyTorch (official)':>22}")
    row("images per second", "images_per_s", ".4f")
    row("seconds per image", "s_per_image", ".2f")
    row("masks per image", "masks_per_image", ".1f")
    if "ratio_torch_over_jax" in r:
        print(f"ratio PyTorch time / JAX time: {r['ratio_torch_over_jax']:.2f}x")
    stages = ", ".join(f"{k} {v:.1f}" for k, v in r["jax_masks_after_stage"].items())
    print(f"JAX masks per image after each stage: {stages}")
    line = f"pseudo-label file: {r['bytes_per_image'] / 1e3:.1f} KB per image"
    if "bytes_per_mask" in r:
        line += (
            f", {r['bytes_per_mask'] / 1e3:.2f} KB per mask (RLE "
            f"{r['rle_bytes_per_mask'] / 1e3:.2f}, logits {r['logits_bytes_per_mask'] / 1e3:.2f})"
            f"; {r['bytes_per_image_at_30_masks'] / 1e3:.1f} KB per image at 30 masks"
            " (without uncertainty maps)"
        )
    print(line)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average (1, 5, 15 min) at the end: {load}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="tiny", choices=["tiny", "vit_b", "vit_l", "vit_h"])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--no-torch", action="store_true", help="time only the JAX generator")
    parser.add_argument(
        "--keep-all",
        action="store_true",
        help="pred_iou_thresh=0, stability_score_thresh=0 (NMS and the area filter stay)",
    )
    parser.add_argument("--points_per_side", type=int, default=32)
    parser.add_argument("--points_per_batch", type=int, default=64)
    parser.add_argument(
        "--short_side", type=int, default=0, help="resize photos to this short side (SA-1B: 1500)"
    )
    parser.add_argument("--out", default="out/pseudo_label_speed.json")
    args = parser.parse_args()

    import jax
    import torch
    from segment_anything import SamAutomaticMaskGenerator

    from sum_jax.fileio import atomic_write
    from sum_jax.inference.mask_generator import GeneratorSettings, MaskGenerator
    from sum_jax.inference.predictor import SamPredictor
    from sum_jax.models.sam import VARIANTS
    from tests.torch_reference import flax_from_torch, torch_sam

    torch.set_num_threads(os.cpu_count() or 1)
    config = VARIANTS[args.variant]
    tmodel = torch_sam(config, seed=0, perturb=0.02)
    predictor = SamPredictor(flax_from_torch(tmodel, config, dtype=args.dtype))
    gen_cfg = GeneratorSettings(
        points_per_side=args.points_per_side, points_per_batch=args.points_per_batch
    )
    if args.keep_all:
        gen_cfg = dataclasses.replace(gen_cfg, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    ours = MaskGenerator(predictor, gen_cfg)
    ours_warm = MaskGenerator(predictor, dataclasses.replace(gen_cfg, points_per_side=2))
    official_kwargs = {
        "points_per_side": gen_cfg.points_per_side,
        "points_per_batch": gen_cfg.points_per_batch,
        "pred_iou_thresh": gen_cfg.pred_iou_thresh,
        "stability_score_thresh": gen_cfg.stability_score_thresh,
        "stability_score_offset": gen_cfg.stability_score_offset,
        "box_nms_thresh": gen_cfg.box_nms_thresh,
        "output_mode": "binary_mask",
    }
    official = SamAutomaticMaskGenerator(tmodel, **official_kwargs)
    official_warm = SamAutomaticMaskGenerator(tmodel, **dict(official_kwargs, points_per_side=2))
    photos = load_photos(args.images, args.short_side)
    device = jax.devices()[0]
    print(
        f"device: {device.device_kind}, {args.variant}, {args.dtype}, "
        f"{gen_cfg.points_per_side}x{gen_cfg.points_per_side} grid, "
        f"filters {'open (--keep-all)' if args.keep_all else 'paper'}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )

    # Warm-up: every distinct image size once (compiles), then again (warm) for the estimate.
    warmup: dict[str, Any] = {"jax": {}, "torch": None}
    sizes = {}
    for _, image in photos:
        sizes.setdefault(image.shape, image)
    for image in sizes.values():
        t0 = time.perf_counter()
        ours_warm.generate(image)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours_warm.generate(image)
        second = time.perf_counter() - t0
        key = "x".join(map(str, image.shape[:2]))
        warmup["jax"][key] = {"first_s": first, "warm_s": second, "compile_s": first - second}
        print(f"jax   warm-up {key:>9}: {first:7.2f} s, then {second:.2f} s warm (2x2 grid)")
    if not args.no_torch:
        t0 = time.perf_counter()
        official_warm.generate(photos[0][1])
        warmup["torch"] = {"first_s": time.perf_counter() - t0}
        print(f"torch warm-up: {warmup['torch']['first_s']:.2f} s (2x2 grid)")

    rows = []
    stats: Counter = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for image_id, image in photos:
            t0 = time.perf_counter()
            masks = ours.generate(image, stats)
            row: dict[str, Any] = {
                "image": image_id,
                "size": list(image.shape[:2]),
                "jax_s": time.perf_counter() - t0,
                "masks": len(masks),
            }
            row.update(file_bytes(Path(tmp), image_id, image, masks))
            if not args.no_torch:
                t0 = time.perf_counter()
                ref = official.generate(image)
                row["torch_s"] = time.perf_counter() - t0
                row["torch_masks"] = len(ref)
            rows.append(row)
            line = (
                f"{image_id:>22} {image.shape[0]}x{image.shape[1]}: jax {row['jax_s']:7.2f} s, "
                f"{row['masks']} masks, {row['bytes'] / 1e3:.1f} KB"
            )
            if "torch_s" in row:
                line += f" | torch {row['torch_s']:7.2f} s, {row['torch_masks']} masks"
            print(line, flush=True)

    jax_total = sum(r["jax_s"] for r in rows)
    result: dict[str, Any] = {
        "variant": args.variant,
        "dtype": args.dtype,
        "device": f"{device.platform}: {device.device_kind}",
        "cpu_count": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()),
        "command": "python " + " ".join(sys.argv),
        "generator": dataclasses.asdict(gen_cfg),
        "keep_all": args.keep_all,
        "images": len(rows),
        "warmup": warmup,
        "jax_images_per_s": len(rows) / jax_total,
        "jax_s_per_image": jax_total / len(rows),
        "jax_masks_per_image": sum(r["masks"] for r in rows) / len(rows),
        "jax_masks_after_stage": {k: stats[k] / len(rows) for k in STAGES},
        **summarize_bytes(rows),
        "per_image": rows,
    }
    if not args.no_torch:
        torch_total = sum(r["torch_s"] for r in rows)
        result.update(
            torch_threads=torch.get_num_threads(),
            torch_images_per_s=len(rows) / torch_total,
            torch_s_per_image=torch_total / len(rows),
            torch_masks_per_image=sum(r["torch_masks"] for r in rows) / len(rows),
            ratio_torch_over_jax=torch_total / jax_total,
        )

    print_table(result)
    atomic_write(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
