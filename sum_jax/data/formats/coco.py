"""COCO-style instance JSON with polygon or RLE segmentations.

EntitySeg, Fashionpedia, PACO and LVIS all ship this format: `images` (`id`, `file_name`, and
usually `height`/`width`), `annotations` (`image_id`, `segmentation`, optional `iscrowd`,
`category_id`). Polygons are rasterised with pycocotools (as the benchmarks' own evaluation
does); compressed RLE strings are validated and kept as they are; uncompressed RLE is
compressed. Masks keep the JSON's annotation order; images keep the JSON's image order, which
is what "the first 1,000 images of the validation set" refers to.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from sum_jax.data import rle
from sum_jax.data.formats import common
from sum_jax.data.records import DataError, Example, IssueLog

DEFAULTS = {
    "annotation_file": "annotations.json",
    "image_dir": "images",
    "skip_crowd": True,
    "category_ids": None,  # None keeps every category; a list keeps only those.
}


@dataclasses.dataclass(frozen=True)
class Item:
    image: Path
    image_id: str
    height: int | None
    width: int | None
    annotations: tuple[Any, ...]
    json_path: Path


def list_items(root: Path, split_tag: str, opts: dict, log: IssueLog) -> list[Item]:
    json_path = common.resolve(root, opts["annotation_file"], split_tag)
    image_dir = common.resolve(root, opts["image_dir"], split_tag)
    try:
        with open(json_path) as f:
            coco = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{json_path}: annotation file does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(str(json_path), f"not valid JSON: {e}", "bad json") from e
    # Without these the file is not a COCO file at all: no per-item skipping can help.
    for field in ("images", "annotations"):
        if not isinstance(coco, dict) or not isinstance(coco.get(field), list):
            raise DataError(
                str(json_path), f"missing top-level list '{field}'", "json missing field"
            )

    keep = None if opts["category_ids"] is None else {int(c) for c in opts["category_ids"]}
    per_image: dict[Any, list] = {}
    for k, ann in enumerate(coco["annotations"]):
        missing = [f for f in ("image_id", "segmentation") if f not in ann]
        if missing:
            log.report(str(json_path), f"annotation #{k} lacks {missing}", "json missing field")
            continue
        if opts["skip_crowd"] and ann.get("iscrowd", 0):
            continue
        if keep is not None and int(ann.get("category_id", -1)) not in keep:
            continue
        per_image.setdefault(ann["image_id"], []).append(ann)

    items = []
    for k, image in enumerate(coco["images"]):
        if "file_name" not in image and "coco_url" in image:
            # LVIS v1 names images by URL only: .../val2017/000000397133.jpg.
            image = {**image, "file_name": "/".join(image["coco_url"].split("/")[-2:])}
        missing = [f for f in ("id", "file_name") if f not in image]
        if missing:
            log.report(str(json_path), f"image entry #{k} lacks {missing}", "json missing field")
            continue
        anns = per_image.get(image["id"], [])
        if not anns:
            # Categories filtered away or no annotation at all: nothing to train or evaluate on.
            continue
        items.append(
            Item(
                image_dir / image["file_name"],
                str(image["id"]),
                image.get("height"),
                image.get("width"),
                tuple(anns),
                json_path,
            )
        )
    return items


def load_item(item: Item, opts: dict, log: IssueLog, require_masks: bool) -> Example | None:
    loaded = common.load_image(item.image, log)
    if loaded is None:
        return None
    data, height, width = loaded
    if (item.height, item.width) != (None, None) and (item.height, item.width) != (height, width):
        log.report(
            str(item.image),
            f"image is {height}x{width} but {item.json_path.name} says {item.height}x{item.width}",
            "mask size differs from image",
        )
        return None
    masks, labels = [], []
    for ann in item.annotations:
        where = f"{item.json_path} (annotation id {ann.get('id', '?')}, image {item.image.name})"
        try:
            counts = rle.from_coco_segmentation(ann["segmentation"], height, width)
        except rle.RLEError as e:
            log.report(where, f"segmentation does not decode: {e}", "bad segmentation")
            continue
        if rle.area(counts, height, width) == 0:
            log.report(where, "mask is empty (no foreground pixel)", "empty mask")
            continue
        masks.append(counts)
        labels.append(int(ann.get("category_id", -1)))
    if require_masks and not masks:
        log.report(str(item.image), "no usable mask left for this image", "image without masks")
        return None
    return Example(data, item.image_id, height, width, masks, labels)
