"""Pseudo-labels for the unlabelled set (SUM §3.2, App. B.1): SAM's automatic masks per image.

Reads a prepared unlabelled split (e.g. SA-1B prepared with `python -m sum_jax.prepare_data`),
runs `sum_jax.inference.mask_generator.MaskGenerator` on each image of this process's shard and writes
one `sum_jax.data.pseudo_label_format` file per image: the kept masks (RLE, original size),
their low-res SAM logits (quantised), generating points, predicted IoUs and stability scores.

Resumable: an image whose file exists and reads completely is skipped; a damaged one (a
truncated copy, a full disk) is named in a warning and in the summary's `redone`, and made
again. Files are written atomically, so a run killed at any point and started again ends with
the same files as an uninterrupted run. On SIGTERM (a preemption notice) the image in
progress is written, then the run stops (`sum_jax.preemption`); a rerun makes the rest. The folder's `made_from.json` records what its files
were made from (`made_from`: the model's fingerprint, the prepared split's, the generator
settings); a rerun with anything else is refused, naming what changed, and the files stay.
Crop layers are refused: the refinement module and the training pipeline read the logits in
the whole image's low-res frame.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from sum_jax import fingerprint, preemption
from sum_jax.checkpointing import load_model, model_fingerprint
from sum_jax.cloud import size
from sum_jax.data import builder, image_ops, sources
from sum_jax.data import pseudo_label_format as plf
from sum_jax.fileio import as_path, atomic_write
from sum_jax.inference.mask_generator import GeneratorSettings, MaskGenerator
from sum_jax.inference.predictor import SamPredictor

log = logging.getLogger(__name__)

STAGES = ("candidates", "predicted_iou", "stability", "area", "crop_edge", "box_nms")
RECORD_FILE = "made_from.json"


def made_from(
    config: Mapping[str, Any], predictor: SamPredictor | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """What this config's pseudo-labels are made from, and what its fingerprints name:
    the model (`config.checkpoint`'s content, or the given predictor's parameters when no
    checkpoint is named), the prepared split, the generator settings. `max_images` and the
    shard are left out: they choose which images, not what an image's file holds."""
    spec = str(config["checkpoint"] or "")
    if spec:
        model = model_fingerprint(spec)
    elif predictor is None:
        load_model(spec)  # raises: names config.checkpoint and how to make a model directory
    else:
        from flax import nnx

        model = fingerprint.arrays_hash(nnx.to_pure_dict(nnx.state(predictor.model)))
        spec = "the predictor given"
    name, split = sources.parse_ref(config["dataset"])
    record = {
        "model": model,
        "dataset": f"{name}:{split}",
        "data": builder.prepared_fingerprint(config["data_dir"], name),
        "generator": dataclasses.asdict(generator_settings(config["generator"])),
    }
    return record, {"model": spec, "data": str(builder.dataset_dir(config["data_dir"], name))}


def check_output(config: Mapping[str, Any], predictor: SamPredictor | None = None) -> None:
    """Resumes into `config.output_dir` only if its files were made from what this config
    makes them from; refuses (naming each change) otherwise (`fingerprint.check_or_record`)."""
    out = as_path(config["output_dir"], "config.output_dir")
    record, shown = made_from(config, predictor)
    fingerprint.check_or_record(
        out,
        RECORD_FILE,
        record,
        shown=shown,
        outputs=[*out.glob(f"*{plf.SUFFIX}"), *out.glob("summary_*.json")],
        what="pseudo-labels",
        fix=f"pass another --config.output_dir to make these, or delete {out} to make it again",
    )


def generator_settings(config: Mapping[str, Any]) -> GeneratorSettings:
    fields = dict(config)
    known = {f.name for f in dataclasses.fields(GeneratorSettings)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"unknown generator settings {unknown}; known: {sorted(known)}")
    generator = GeneratorSettings(**fields)
    if generator.crop_n_layers:
        raise ValueError(
            "generator.crop_n_layers must be 0 for pseudo-labels: SUM's later stages read each "
            "mask's logits in the whole image's frame, and crop-layer masks have them in a crop's"
        )
    return generator


def generate_pseudo_labels(
    config: Mapping[str, Any],
    predictor: SamPredictor | None = None,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Writes the pseudo-labels of this process's shard; returns (and saves) a summary.

    Image `i` of the split belongs to process `i % process_count`.
    """
    for key in ("data_dir", "output_dir"):
        if not config[key]:
            raise ValueError(f"config.{key} is not set")
    generator_cfg = generator_settings(config["generator"])
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    name, split = sources.parse_ref(config["dataset"])
    source = sources.open_source(config["data_dir"], name, split)  # before the model loads
    check_output(config, predictor)
    if predictor is None:
        predictor = SamPredictor(load_model(config["checkpoint"]))
    n = len(source) if config.get("max_images") is None else min(len(source), config["max_images"])
    out = as_path(config["output_dir"], "config.output_dir")
    generator = MaskGenerator(predictor, generator_cfg)

    stats: Counter = Counter()
    written = skipped = total_bytes = 0
    redone: list[str] = []
    start = time.perf_counter()
    indices = range(process_index, n, process_count)

    def images_to_make():
        """`(image_id, image)` of each image of the shard whose file is missing or damaged."""
        nonlocal skipped, total_bytes
        bar = tqdm(indices, desc=f"pseudo-labels {name}", disable=not progress, unit="img")
        for index in bar:
            record = sources.normalize_record(source[index])
            image_id = record["image_id"]
            if plf.exists(out, image_id):
                broken = plf.problem(out, image_id)
                if broken is None:
                    skipped += 1
                    total_bytes += size(plf.path_for(out, image_id))
                    continue
                log.warning("redoing a damaged pseudo-label file: %s", broken)
                redone.append(broken)
            try:
                image = image_ops.decode_image(record["image"])
            except ValueError as e:
                raise ValueError(f"{name}:{split} image {image_id!r} (record {index}): {e}") from e
            yield image_id, image

    # One image ahead: the next image's encoding is dispatched (JAX runs it asynchronously)
    # before the host writes the current image's file, so that the two overlap.
    # A bad next image is reported after the current image's file is written.
    # SIGTERM (a preemption notice): the image in progress is written, then the run stops.
    with preemption.watch() as stop:
        todo = images_to_make()
        current, error = next(todo, None), None
        if current is not None:
            predictor.set_image(current[1])
        while current is not None:
            image_id, image = current
            masks = generator.generate(image, stats, image_is_set=True)
            try:
                current = next(todo, None)
            except ValueError as e:
                current, error = None, e
            if current is not None:
                predictor.set_image(current[1])
            low = predictor.config.low_res_size
            path = plf.write(
                out,
                image_id,
                height=image.shape[0],
                width=image.shape[1],
                masks=[m["segmentation"] for m in masks],
                low_res_logits=np.stack([m["low_res_logits"] for m in masks])
                if masks
                else np.zeros((0, low, low), np.float32),
                points=np.array([m["point_coords"][0] for m in masks], np.float32).reshape(-1, 2),
                predicted_iou=np.array([m["predicted_iou"] for m in masks], np.float32),
                stability_score=np.array([m["stability_score"] for m in masks], np.float32),
            )
            written += 1
            total_bytes += size(path)
            if stop.requested:  # SIGTERM: this image's file is complete; the rest is the rerun's
                raise preemption.Preempted(
                    f"preemption notice (SIGTERM): stopped after {path} ({written} files written "
                    f"in this run, {skipped} found done); the images left are made by the rerun."
                )
    if error is not None:
        raise error
    seconds = time.perf_counter() - start
    images = written + skipped
    summary = {
        "dataset": f"{name}:{split}",
        "process": f"{process_index}/{process_count}",
        "images": images,
        "written": written,
        "skipped_existing": skipped,
        "redone": redone,
        "masks_after_stage": {k: int(stats[k]) for k in STAGES},
        "bytes_per_image": total_bytes / images if images else 0.0,
        "seconds": seconds,
        "images_per_second_written": written / seconds if seconds > 0 else 0.0,
        "generator": dataclasses.asdict(generator_cfg),
    }
    atomic_write(out / f"summary_{process_index}.json", json.dumps(summary, indent=2) + "\n")
    kept = stats["box_nms"]
    log.info(
        "%d images (%d written, %d already there), %d masks kept of %d candidates "
        "(after IoU %d, stability %d, area %d, NMS %d), %.1f KB per image",
        images, written, skipped, kept, stats["candidates"], stats["predicted_iou"],
        stats["stability"], stats["area"], kept, summary["bytes_per_image"] / 1e3,
    )  # fmt: skip
    return summary
