"""Uncertainty maps of pseudo-labels (SUM §3.2.3): `u = |sigmoid(s) - sigmoid(r)|`.

`s` are SAM's low-res logits of a pseudo-label (as stored by the pseudo-label stage) and `r`
the mask-refinement module's logits for the same mask, given `s` as mask prompt, a box around
the pseudo-label and its generating point (App. D). Both live in SAM's low-res frame (256 x
256 for SAM), where `u` is stored, quantised to uint8, in the pseudo-label file.

`compute_uncertainty` walks a prepared unlabelled split, embeds each image once with the
refinement module's (frozen, SAM's) encoder, refines all its masks in one padded batch, and
adds the maps to the image's pseudo-label file. Files that already have maps are skipped,
so a killed run started again ends with the same files. The folder's
`uncertainty_made_from.json` records what its maps were made from (`made_from`); a rerun
with another refiner, source, pseudo-labels or prepared split is refused, naming what changed.

`config.source = "confidence"` replaces the refinement module by SAM's own confidence in its
pseudo-label ("SUM Confidence-Uncer", §4.3 / App. E): `u = 1 - |2 sigmoid(s) - 1|`
(`confidence_uncertainty`), from the stored logits alone, with no model and no image. With
`config.output_dir` set, the completed files are written there instead of in place, so the
refiner's and the confidence maps of the same pseudo-labels can sit side by side.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from sum_jax import fingerprint
from sum_jax.checkpointing import load_model, model_fingerprint
from sum_jax.data import builder, image_ops, sources
from sum_jax.data import pseudo_label_format as plf
from sum_jax.fileio import as_path, atomic_write
from sum_jax.inference.refiner import Refiner
from sum_jax.ops import transforms
from sum_jax.visualize import heat_map, overlay, save_png, side_by_side

log = logging.getLogger(__name__)

SOURCES = ("refiner", "confidence")


def confidence_uncertainty(logits: np.ndarray) -> np.ndarray:
    """`u = 1 - |2 sigmoid(s) - 1|` of SAM logits `s [K, L, L]`, float32 in [0, 1].

    `2 min(p, 1 - p)` with `p = sigmoid(s)`: twice the distance between SAM's probability
    and the binary pseudo-label it became (`p > 0.5`), so it lives on SUM's scale (a
    difference of probabilities, `|sigmoid(s) - sigmoid(r)|`), where `theta` means the same.
    0 where SAM is sure, 1 on its decision boundary.
    """
    p = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    return (1.0 - np.abs(2.0 * p - 1.0)).astype(np.float32)


def write_refined_labels(
    directory: str | Path, labels: plf.PseudoLabels, refined: np.ndarray, img_size: int
) -> Path:
    """The refinement module's masks (logits > 0 at the original size) and logits as a
    pseudo-label file of their own, with the SAM masks' points and scores."""
    size = (labels.height, labels.width)
    input_size = transforms.preprocess_shape(*size, img_size)
    masks = np.asarray(
        transforms.postprocess_masks(jnp.asarray(refined), input_size, size, img_size) > 0
    ).reshape((-1,) + size)
    return plf.write(
        directory,
        labels.image_id,
        height=labels.height,
        width=labels.width,
        masks=list(masks),
        low_res_logits=refined,
        points=labels.points,
        predicted_iou=labels.predicted_iou,
        stability_score=labels.stability_score,
    )


def picture(
    image: np.ndarray, labels: plf.PseudoLabels, refined: np.ndarray, u: np.ndarray, img_size: int
) -> np.ndarray:
    """Pseudo-labels | refined masks | uncertainty (max over masks), over the photo."""
    size = (labels.height, labels.width)
    input_size = transforms.preprocess_shape(*size, img_size)
    refined_masks = np.asarray(
        transforms.postprocess_masks(jnp.asarray(refined), input_size, size, img_size) > 0
    )
    u_full = np.asarray(transforms.postprocess_masks(jnp.asarray(u), input_size, size, img_size))
    return side_by_side(
        [
            overlay(image, labels.decode_masks(), alpha=0.45),
            overlay(image, refined_masks, alpha=0.45),
            heat_map(image, u_full.max(axis=0) if len(u_full) else np.zeros(size)),
        ]
    )


RECORD_FILE = "uncertainty_made_from.json"
# Written by earlier versions: the source kind alone. A folder holding it has maps.
OLD_SOURCE_FILE = "uncertainty_source.txt"


def made_from(config: Mapping[str, Any], refiner: Refiner | None = None):
    """What this config's maps are made from, and what its fingerprints name: the source
    kind, the refinement module (`config.refiner`'s content, or the given module's
    parameters), the pseudo-labels' own record (`pseudo_labels/made_from.json`) and the
    prepared split. `max_images`, `pictures` and the shard are left out."""
    from sum_jax.pseudo_labels.generation import RECORD_FILE as LABELS_RECORD

    kind = config.get("source", "refiner")
    name, split = sources.parse_ref(config["dataset"])
    labels_record = as_path(config["pseudo_labels"]) / LABELS_RECORD
    record = {
        "source": kind,
        "refiner": None,
        "pseudo_labels": fingerprint.file_hash(labels_record) if labels_record.is_file() else None,
        "dataset": f"{name}:{split}",
        "data": builder.prepared_fingerprint(config["data_dir"], name),
    }
    shown = {"pseudo_labels": str(labels_record)}
    if kind == "refiner":
        if config.get("refiner"):
            record["refiner"] = model_fingerprint(config["refiner"])
            shown["refiner"] = str(config["refiner"])
        else:
            state = nnx.to_pure_dict(nnx.state(refiner.model))
            record["refiner"] = fingerprint.arrays_hash(state)
            shown["refiner"] = "the refiner given"
    return record, shown


def _has_maps(folder: Path) -> list[Path]:
    """What shows that `folder` already holds uncertainty maps (before records existed)."""
    found = [*folder.glob("uncertainty_summary_*.json"), *folder.glob(OLD_SOURCE_FILE)]
    for f in sorted(folder.glob(f"*{plf.SUFFIX}"))[:1]:
        # A damaged file is left to the loop, which names it and stops or redoes it.
        if plf.problem(folder, f.stem) is None and plf.read(folder, f.stem).has_uncertainty:
            found.append(f)
    return found


def _claim_folders(
    config: Mapping[str, Any], folders: Mapping[Path, list[Path]], refiner: Refiner | None
) -> None:
    """Resumes into `folders` (where maps, and refined labels, go; each with the outputs
    already in it) only if they were made from what this config makes them from; refuses,
    naming each change, otherwise: a rerun skips files that have maps, whatever made them."""
    record, shown = made_from(config, refiner)
    for folder, outputs in folders.items():
        fingerprint.check_or_record(
            folder,
            RECORD_FILE,
            record,
            shown=shown,
            outputs=outputs,
            what="uncertainty maps",
            fix="pass --config.output_dir=DIR to write these maps into a copy of the "
            "pseudo-labels there (or another --config.refined_labels_dir)",
        )


def compute_uncertainty(
    config: Mapping[str, Any],
    refiner: Refiner | None = None,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Adds uncertainty maps to this process's pseudo-label files; returns a summary.

    `config.source`: "refiner" (SUM: the refinement module, `refiner` or `config.refiner`)
    or "confidence" (SAM's own logits, `confidence_uncertainty`; no model is loaded).
    """
    for key in ("data_dir", "pseudo_labels"):
        if not config[key]:
            raise ValueError(f"config.{key} is not set")
    source_kind = config.get("source", "refiner")
    if source_kind not in SOURCES:
        raise ValueError(f"config.source={source_kind!r}; known: {', '.join(SOURCES)}")
    if source_kind == "refiner" and refiner is None and not config["refiner"]:
        raise ValueError(
            "config.refiner is not set: train the mask-refinement module first "
            "(python -m sum_jax.train_refiner) and pass its model directory"
        )
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    name, split = sources.parse_ref(config["dataset"])
    source = sources.open_source(config["data_dir"], name, split)
    n = len(source) if config.get("max_images") is None else min(len(source), config["max_images"])
    out = as_path(config["pseudo_labels"], "config.pseudo_labels")
    if not out.is_dir():
        raise FileNotFoundError(
            f"{out}: no pseudo-label directory; run python -m sum_jax.pseudo_labels first"
        )
    refined_dir = config.get("refined_labels_dir") or ""
    if source_kind == "confidence" and refined_dir:
        raise ValueError("config.refined_labels_dir needs config.source='refiner'")
    # Where the completed files go: in place, or a copy per file in config.output_dir.
    dest = as_path(config.get("output_dir") or out, "config.output_dir")
    dest.mkdir(parents=True, exist_ok=True)
    claims = {dest: _has_maps(dest)}
    if refined_dir:
        refined = as_path(refined_dir, "config.refined_labels_dir")
        claims[refined] = list(refined.glob(f"*{plf.SUFFIX}"))
    _claim_folders(config, claims, refiner)  # before the refiner loads
    if source_kind == "refiner" and refiner is None:
        refiner = Refiner(load_model(config["refiner"]))
    low = refiner.config.low_res_size if refiner is not None else None
    done = skipped = masks = 0
    u_sum = 0.0
    start = time.perf_counter()
    for index in tqdm(range(process_index, n, process_count), desc="uncertainty",
                      disable=not progress, unit="img"):  # fmt: skip
        record = sources.normalize_record(source[index])
        image_id = record["image_id"]
        # Done before (and readable, maps included): skip. A damaged refined file is redone.
        if (
            plf.exists(dest, image_id)
            and plf.problem(dest, image_id, uncertainty=True) is None
            and (not refined_dir or plf.problem(refined_dir, image_id) is None)
        ):
            skipped += 1
            continue
        broken = plf.problem(out, image_id)
        if broken and "no uncertainty maps" not in broken:
            raise ValueError(
                f"{broken}. Run python -m sum_jax.pseudo_labels again with the same "
                "--config.output_dir: it redoes damaged and missing files"
            )
        labels = plf.read(out, image_id)
        if source_kind == "confidence":
            u = confidence_uncertainty(labels.logits())
            low = labels.map_size
        else:
            image = image_ops.decode_image(record["image"])
            refined, u = refiner(image, labels)
            if refined_dir:
                write_refined_labels(refined_dir, labels, refined, refiner.config.img_size)
        # Written last: a file with maps marks the image as done for a rerun.
        plf.add_uncertainty(out, image_id, u, output_directory=dest)
        if source_kind == "refiner" and done < config.get("pictures", 0):
            save_png(
                dest / "pictures" / f"{image_id}.png",
                picture(image, labels, refined, u, refiner.config.img_size),
            )
        done += 1
        masks += labels.num_masks
        u_sum += float(u.sum())
    seconds = time.perf_counter() - start
    summary = {
        "dataset": f"{name}:{split}",
        "source": source_kind,
        "process": f"{process_index}/{process_count}",
        "images_written": done,
        "skipped_existing": skipped,
        "masks": masks,
        "mean_uncertainty": u_sum / (masks * low * low) if masks and low else 0.0,
        "seconds": seconds,
    }
    atomic_write(dest / f"uncertainty_summary_{process_index}.json", json.dumps(summary, indent=2))
    log.info("uncertainty maps for %d images (%d already done), %d masks, mean u %.4f",
             done, skipped, masks, summary["mean_uncertainty"])  # fmt: skip
    return summary
