"""COCO-style instance JSON with polygon or RLE segmentations.

EntitySeg, Fashionpedia, PACO and LVIS all ship this format: `images` (`id`, `file_name`, and
usually `height`/`width`), `annotations` (`image_id`, `segmentation`, optional `iscrowd`,
`category_id`). Polygons are rasterised with pycocotools (as the benchmarks' own evaluation
does); compressed RLE strings are validated and kept as they are; uncompressed RLE is
compressed. Masks keep the JSON's annotation order; images keep the JSON's image order, which
is what "the first 1,000 images of the validation set" refers to.

Every entry is checked before it is used (docs/data.md lists the rules): null or mistyped
entries, an image id listed twice, annotations of unknown images or categories are reported
with the file, the entry and the field; segmentations are checked in `rle` before
pycocotools sees them.
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
    except IsADirectoryError:
        raise IsADirectoryError(
            f"{json_path}: is a folder, not a COCO JSON file (options.annotation_file="
            f"{opts['annotation_file']!r})"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(str(json_path), f"not valid JSON: {e}", "bad json") from e
    except RecursionError:
        raise DataError(str(json_path), "JSON nested too deeply to read", "bad json") from None
    # Without these the file is not a COCO file at all: no per-item skipping can help.
    for field in ("images", "annotations"):
        if not isinstance(coco, dict) or not isinstance(coco.get(field), list):
            raise DataError(
                str(json_path), f"missing top-level list '{field}'", "json missing field"
            )
    images, skipped = _index_images(coco["images"], json_path, log)
    categories = _category_ids(coco, json_path, log)
    keep = _kept_categories(opts["category_ids"])
    per_image: dict[Any, list] = {}
    for k, ann in enumerate(coco["annotations"]):
        ann = _checked_annotation(ann, k, images, skipped, categories, json_path, log)
        if ann is None:
            continue
        if opts["skip_crowd"] and ann.get("iscrowd", 0):
            continue
        if keep is not None and ann.get("category_id", -1) not in keep:
            continue
        per_image.setdefault(ann["image_id"], []).append(ann)

    items = []
    for image_id, image in images.items():
        anns = per_image.get(image_id, [])
        if not anns:
            # Categories filtered away or no annotation at all: nothing to train or evaluate on.
            continue
        items.append(
            Item(
                image_dir / image["file_name"],
                str(image_id),
                image.get("height"),
                image.get("width"),
                tuple(anns),
                json_path,
            )
        )
    return items


def _is_id(value: Any) -> bool:
    """COCO ids are integers; strings are accepted too (some exports use file stems)."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and value != ""
    )


def _what(value: Any) -> str:
    return "null" if value is None else f"a JSON {type(value).__name__}"


def _index_images(
    entries: list, json_path: Path, log: IssueLog
) -> tuple[dict[Any, dict], set[Any]]:
    """`{id: entry}` of the usable `images` entries in file order, and the ids of the entries
    left out (reported here, so their annotations are dropped without a second report).

    An id listed twice is left out with every entry of it: its annotations cannot be told
    apart (taking both would give each image the other's masks)."""
    where = str(json_path)
    by_id: dict[Any, list[tuple[int, dict]]] = {}
    skipped: set[Any] = set()
    for k, image in enumerate(entries):
        if not isinstance(image, dict):
            log.report(where, f"images[{k}] is {_what(image)}, not an object", "json bad entry")
            continue
        if "file_name" not in image and isinstance(image.get("coco_url"), str):
            # LVIS v1 names images by URL only: .../val2017/000000397133.jpg.
            image = {**image, "file_name": "/".join(image["coco_url"].split("/")[-2:])}
        missing = [f for f in ("id", "file_name") if f not in image]
        if missing:
            log.report(where, f"images[{k}] lacks {missing}", "json missing field")
            continue
        name = f"images[{k}] (id {image['id']!r})"
        problem = None
        if not _is_id(image["id"]):
            problem = f"'id' is {_short(image['id'])}, not an integer or a string"
        elif not isinstance(image["file_name"], str) or not image["file_name"]:
            problem = f"'file_name' is {_short(image['file_name'])}, not a file name"
        else:
            for field in ("height", "width"):
                value = image.get(field)
                if field in image and not _positive_int(value):
                    problem = f"'{field}' is {_short(value)}, not a positive integer"
        if problem:
            log.report(where, f"{name}: {problem}", "json bad entry")
            if _is_id(image["id"]):
                skipped.add(image["id"])
            continue
        by_id.setdefault(image["id"], []).append((k, image))
    images = {}
    for image_id, listed in by_id.items():
        if len(listed) == 1:
            images[image_id] = listed[0][1]
            continue
        skipped.add(image_id)
        shown = ", ".join(f"images[{k}] {e['file_name']!r}" for k, e in listed[:4])
        log.report(
            where,
            f"image id {image_id!r} is listed {len(listed)} times ({shown}); its annotations "
            "cannot be told apart, so every entry with this id is skipped: give each image "
            "its own id",
            "duplicate image id",
        )
    return images, skipped - set(images)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _short(value: Any) -> str:
    text = json.dumps(value) if value is None or isinstance(value, bool) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _category_ids(coco: dict, json_path: Path, log: IssueLog) -> set[int] | None:
    """The ids of `categories`; None when `categories` is missing, null or empty (then any
    `category_id` is taken as it is: class-agnostic sets may leave the list empty)."""
    if coco.get("categories") in (None, []):
        return None
    if not isinstance(coco["categories"], list):
        raise DataError(
            str(json_path),
            f"'categories' is {_what(coco['categories'])}, not a list of {{'id': ...}} objects",
            "json bad entry",
        )
    ids = set()
    for k, category in enumerate(coco["categories"]):
        if not isinstance(category, dict):
            problem = f"{_what(category)}, not an object"
        elif not _is_int(category.get("id")):
            problem = f"an object whose 'id' is {_short(category.get('id'))}, not an integer"
        else:
            ids.add(category["id"])
            continue
        log.report(str(json_path), f"categories[{k}] is {problem}", "json bad entry")
    return ids


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kept_categories(option: Any) -> set[int] | None:
    if option is None:
        return None
    values = option if isinstance(option, (list, tuple)) else [option]
    try:
        return {int(v) for v in values}
    except (TypeError, ValueError):
        raise ValueError(
            f"options.category_ids={option!r}: must be category ids (integers), e.g. "
            '--config.options.category_ids="27,28,29"'
        ) from None


def _checked_annotation(
    ann: Any,
    k: int,
    images: dict[Any, dict],
    skipped: set[Any],
    categories: set[int] | None,
    json_path: Path,
    log: IssueLog,
) -> dict | None:
    """`ann` if it can be attributed to one image and category, else None (reported).

    Its `segmentation` is checked later, against the image's real size."""
    where = str(json_path)
    if not isinstance(ann, dict):
        log.report(where, f"annotations[{k}] is {_what(ann)}, not an object", "json bad entry")
        return None
    name = f"annotations[{k}]" + (f" (id {ann['id']!r})" if "id" in ann else "")
    missing = [f for f in ("image_id", "segmentation") if f not in ann]
    if missing:
        log.report(where, f"{name} lacks {missing}", "json missing field")
        return None
    image_id = ann["image_id"]
    if not _is_id(image_id):
        log.report(
            where,
            f"{name}: 'image_id' is {_short(image_id)}, not an integer or a string",
            "json bad entry",
        )
        return None
    if image_id in skipped:
        return None  # its image entry was reported
    if image_id not in images:
        log.report(
            where,
            f"{name}: 'image_id' {image_id!r} is not the id of any entry of 'images'",
            "unknown image id",
        )
        return None
    if "category_id" in ann:
        category = ann["category_id"]
        if not _is_int(category):
            log.report(
                where,
                f"{name}: 'category_id' is {_short(category)}, not an integer",
                "json bad entry",
            )
            return None
        if categories is not None and category not in categories:
            log.report(
                where,
                f"{name}: 'category_id' {category} is not the id of any entry of 'categories'",
                "unknown category",
            )
            return None
    return ann


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
