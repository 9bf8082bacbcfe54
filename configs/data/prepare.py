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
"""

import ml_collections

from sum_jax.data.builder import prepare_config


def get_config() -> ml_collections.ConfigDict:
    return prepare_config()
