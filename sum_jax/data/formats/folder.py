"""Folder of images + binary mask files: one or many masks per image.

Covers HQSeg-44K's parts (DIS5K, ThinObject5K, FSS-1000, ECSSD, MSRA-10K, DUT-OMRON), COIFT,
HRSOD, BIG and VOCEVAL. Images are found with `image_globs` under `image_dir`; each image's masks
are the files matching `mask_globs` under `mask_dir`, with `{stem}` standing for the image's
path relative to `image_dir` minus the glob's suffix:

    images/cat.jpg  + masks/cat.png             image_globs=["*.jpg"], mask_globs=["{stem}.png"]
    x/cat_im.jpg    + x/cat_gt.png              image_globs=["*_im.jpg"], mask_globs=["{stem}_gt.png"]
    im/cat.jpg      + gt/cat/0.png, gt/cat/1.png   mask_globs=["{stem}/*.png"]   (many masks)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sum_jax.data.formats import common
from sum_jax.data.records import Example, IssueLog

DEFAULTS = {
    "image_dir": "",
    "mask_dir": "",
    "image_globs": ["*.jpg", "*.jpeg", "*.JPG"],
    "mask_globs": ["{stem}.png"],
    "mask_threshold": "auto",
}


@dataclasses.dataclass(frozen=True)
class Item:
    image: Path
    masks: tuple[Path, ...]
    image_id: str


def list_items(root: Path, split_tag: str, opts: dict, log: IssueLog) -> list[Item]:
    common.check_threshold(opts["mask_threshold"])
    matches = common.match_images(
        root, split_tag, opts, log, dir_key="mask_dir", globs_key="mask_globs", what="mask file"
    )
    return [Item(image, files, stem) for stem, image, files in matches]


def load_item(item: Item, opts: dict, log: IssueLog, require_masks: bool) -> Example | None:
    loaded = common.load_image(item.image, log)
    if loaded is None:
        return None
    data, height, width = loaded
    masks = []
    for path in item.masks:
        mask = common.read_binary_mask(path, height, width, opts["mask_threshold"], log)
        if mask is not None:
            masks.append(mask)
    if require_masks and not masks:
        log.report(str(item.image), "no usable mask left for this image", "image without masks")
        return None
    return Example(
        data, item.image_id, height, width, common.encode_masks(masks), [-1] * len(masks)
    )
