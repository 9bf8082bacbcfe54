"""Evaluation-set reader: images at original resolution with their GT masks and task.

The evaluator measures IoU and boundary IoU at the GT's original resolution (App. B.3), so
nothing is resized here. Records come in the prepared (source) order, which makes
`max_images=1000` the paper's "first 1,000 images of the validation set" (§4.1), and each
process reads every `process_count`-th image of that order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from sum_jax.data import image_ops, sources


def read_eval_set(
    ref: str,
    *,
    data_dir: str | os.PathLike,
    task_id: int | None = None,
    max_images: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict]:
    """Yields the examples of one prepared evaluation split.

    Args:
      ref: `"name:split"`, e.g. `"coift:validation"` (a bare name reads `train`).
      data_dir: root of prepared datasets.
      task_id: overrides the task id stored at preparation.
      max_images: only the first `max_images` images (in source order).
      process_index, process_count: this process's share (image i goes to i % count).

    Yields:
      dicts with `image u8[H, W, 3]`, `masks bool[K, H, W]`, `task i32`, `dataset str`,
      `image_id str`, and `mask_labels i32[K]` (category or label value, -1 if none).
    """
    name, split = sources.parse_ref(ref)
    source = sources.open_source(data_dir, name, split)
    n = len(source) if max_images is None else min(len(source), int(max_images))
    for index in range(process_index, n, process_count):
        record = sources.normalize_record(source[index])
        image = image_ops.decode_image(record["image"])
        yield {
            "image": image,
            "masks": sources.decode_masks(record),
            "task": np.int32(record["task_id"] if task_id is None else task_id),
            "dataset": record["dataset"],
            "image_id": record["image_id"],
            "mask_labels": np.asarray(record["mask_labels"], np.int32),
        }


def eval_set_size(ref: str, *, data_dir: str | os.PathLike, max_images: int | None = None) -> int:
    """Number of images `read_eval_set` yields over all processes."""
    name, split = sources.parse_ref(ref)
    n = len(sources.open_source(data_dir, name, split))
    return n if max_images is None else min(n, int(max_images))
