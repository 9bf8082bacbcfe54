"""Per-image label-map PNGs: every label value of every map is one mask.

Multi-Human Parsing stores one map per person (`{stem}_<n>_<k>.png`, part labels 1..58) so the
masks are (person, part) pairs; EasyPortrait stores one map per image (`{stem}.png`, 0
background, 1 person, 2 skin, ... 8 teeth). Palette PNGs are read as palette indices, grey PNGs
as values, colour-coded RGB maps as 24-bit colour codes. Values in `ignore_labels` (background,
"void") give no mask; the label value is kept in `mask_labels`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from sum_jax.data.formats import common
from sum_jax.data.records import Example, IssueLog

DEFAULTS = {
    "image_dir": "",
    "label_dir": "",
    "image_globs": ["*.jpg", "*.jpeg", "*.JPG"],
    "label_globs": ["{stem}.png"],
    "ignore_labels": [0, 255],
}


@dataclasses.dataclass(frozen=True)
class Item:
    image: Path
    label_maps: tuple[Path, ...]
    image_id: str


def list_items(root: Path, split_tag: str, opts: dict, log: IssueLog) -> list[Item]:
    _ignored(opts)  # a bad option stops here, before any file is read
    matches = common.match_images(
        root, split_tag, opts, log, dir_key="label_dir", globs_key="label_globs", what="label map"
    )
    return [Item(image, files, stem) for stem, image, files in matches]


def _ignored(opts: dict) -> set[int]:
    try:
        return {int(v) for v in opts["ignore_labels"]}
    except (TypeError, ValueError):
        raise ValueError(
            f"options.ignore_labels={opts['ignore_labels']!r}: must be label values "
            '(integers), e.g. --config.options.ignore_labels="0,255"'
        ) from None


def load_item(item: Item, opts: dict, log: IssueLog, require_masks: bool) -> Example | None:
    loaded = common.load_image(item.image, log)
    if loaded is None:
        return None
    data, height, width = loaded
    ignore = _ignored(opts)
    masks, labels, found = [], [], set()
    for path in item.label_maps:
        label_map = common.read_label_map(path, height, width, log)
        if label_map is None:
            continue
        for value in np.unique(label_map):
            found.add(int(value))
            if int(value) in ignore:
                continue
            masks.append(label_map == value)
            labels.append(int(value))
    if require_masks and not masks:
        if found:
            names = ", ".join(p.name for p in item.label_maps[:3])
            message = (
                f"its label maps ({names}) hold only the values {sorted(found)}, all in "
                f"ignore_labels={sorted(ignore)}: no mask (change "
                '--config.options.ignore_labels, e.g. "255", if one of them is a label)'
            )
        else:
            message = "no readable label map left for this image"
        log.report(str(item.image), message, "image without masks")
        return None
    return Example(data, item.image_id, height, width, common.encode_masks(masks), labels)
