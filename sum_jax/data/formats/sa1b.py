"""SA-1B: `sa_<n>.jpg` next to `sa_<n>.json` (`image` info + `annotations` with COCO RLE).

This is the unlabelled set (task 0): SUM trains on SAM's own pseudo-labels of these images, not
on SA-1B's masks. The masks are still kept by default (`keep_masks`), validated, at ~1 KB each,
so the same prepared set can serve SAM-style supervised runs; `keep_masks=False` drops them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from sum_jax.data import rle
from sum_jax.data.formats import common
from sum_jax.data.records import Example, IssueLog

DEFAULTS = {
    "image_dir": "",
    "image_globs": ["**/sa_*.jpg"],
    "keep_masks": True,
}


@dataclasses.dataclass(frozen=True)
class Item:
    image: Path
    annotation: Path
    image_id: str


def list_items(root: Path, split_tag: str, opts: dict, log: IssueLog) -> list[Item]:
    image_dir = common.resolve(root, opts["image_dir"], split_tag)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: image folder does not exist")
    items = {}
    for path in common.find_files(image_dir, opts["image_globs"], log):
        annotation = path.with_suffix(".json")
        if not annotation.is_file():
            log.report(
                str(path), f"no annotation file {annotation.name} next to it", "missing json"
            )
            continue
        if path.stem in items:
            log.report(
                str(path),
                f"image id {path.stem!r} is taken by {items[path.stem].image}, found first; "
                "skipped (SA-1B ids are file names: remove the copy)",
                "duplicate image id",
            )
            continue
        items[path.stem] = Item(path, annotation, path.stem)
    return [items[k] for k in sorted(items)]


def load_item(item: Item, opts: dict, log: IssueLog, require_masks: bool) -> Example | None:
    loaded = common.load_image(item.image, log)
    if loaded is None:
        return None
    data, height, width = loaded
    try:
        with open(item.annotation) as f:
            record = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        log.report(str(item.annotation), f"not valid JSON: {e}", "bad json")
        return None
    except RecursionError:
        log.report(str(item.annotation), "JSON nested too deeply to read", "bad json")
        return None
    info = record.get("image") if isinstance(record, dict) else None
    if not isinstance(info, dict) or "height" not in info or "width" not in info:
        log.report(
            str(item.annotation), "missing 'image' with 'height' and 'width'", "json missing field"
        )
        return None
    if (info["height"], info["width"]) != (height, width):
        log.report(
            str(item.image),
            f"image is {height}x{width} but {item.annotation.name} says {info['height']}x{info['width']}",
            "mask size differs from image",
        )
        return None
    if not isinstance(record.get("annotations"), list):
        log.report(str(item.annotation), "missing list 'annotations'", "json missing field")
        return None
    masks = []
    if opts["keep_masks"]:
        for k, ann in enumerate(record["annotations"]):
            if not isinstance(ann, dict):
                kind = "null" if ann is None else f"a JSON {type(ann).__name__}"
                message = f"annotations[{k}] is {kind}, not an object"
                log.report(str(item.annotation), message, "json bad entry")
                continue
            where = f"{item.annotation} (annotation #{k}, id {ann.get('id', '?')})"
            if "segmentation" not in ann:
                log.report(where, "lacks 'segmentation'", "json missing field")
                continue
            try:
                counts = rle.from_coco_segmentation(ann["segmentation"], height, width)
            except rle.RLEError as e:
                log.report(where, f"RLE does not decode: {e}", "bad segmentation")
                continue
            if rle.area(counts, height, width) == 0:
                log.report(where, "mask is empty (no foreground pixel)", "empty mask")
                continue
            masks.append(counts)
    if require_masks and not masks:
        log.report(str(item.image), "no usable mask left for this image", "image without masks")
        return None
    return Example(data, item.image_id, height, width, masks, [-1] * len(masks))
