"""Prepare one dataset (images + masks on disk) into ArrayRecord files for sum_jax.

Run, from the repository root:

    python -m sum_jax.prepare_data --config=configs/data/prepare.py \
        --config.dataset=dis5k --config.source_dir=/data/DIS5K --config.data_dir=/data/prepared

It shows a progress bar per split, then prints what it found (images and masks per split) and
every skipped problem, and writes <data_dir>/sum_segmentation/dis5k/1.0.0/ (with a
prepare_report.json). Known dataset names, their format, task id and folder layout are in
sum_jax/data/registry.py; anything can be overridden, e.g. for a custom folder dataset:

    --config.dataset=my_objects --config.format=folder --config.task_id=1 \
    --config.options.image_dir=images --config.options.mask_dir=masks \
    --config.options.mask_globs="{stem}.png,{stem}/*.png"

Add --config.dry_run to list what would be prepared and check the first few images.

Sized for: one CPU machine (decoding and RLE encoding; no accelerator). Run time: about
the time to read and decode every image once.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from sum_jax.data import formats


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.dataset = ""  # Registry name (see sum_jax.data.registry) or a new [a-z0-9_] name.
    c.source_dir = ""  # The folder as downloaded.
    c.data_dir = ""  # Root of prepared datasets.
    c.format = placeholder(str)  # folder | coco | label_map | sa1b (registry default).
    c.task_id = placeholder(int)  # 0 unlabelled, 1 salient, 2 entity, 3 part.
    c.splits = placeholder(str)  # "train:DIS-TR,validation:DIS-VD" ({split} tags).
    c.max_images = placeholder(int)  # Keep the first N images of each split.
    c.on_error = "skip"  # skip (count and report bad files) | raise (stop at the first).
    c.overwrite = False  # Re-prepare a finished copy (kept until the new one is complete).
    c.dry_run = False  # Only list what would be prepared and check a few items.
    # Format options, unset = registry/format default; lists as comma-separated strings.
    c.options = ml_collections.ConfigDict(
        {
            name: placeholder(bool) if name in ("skip_crowd", "keep_masks") else placeholder(str)
            for name in sorted(formats.all_option_names())
        }
    )
    return c
