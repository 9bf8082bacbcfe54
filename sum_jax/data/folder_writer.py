"""Writing images and masks that this project makes (the demo's photos, the held-out check,
the small-scale experiment's scenes) as folder datasets that `sum_jax.prepare_data` reads.

Layout (the `folder` format's "many masks" case, `sum_jax/data/formats/folder.py`):

    <root>/<split>/images/<id>.png
    <root>/<split>/masks/<id>/<k>.png     one 0/255 PNG per object

Every file is written beside its final name and renamed when complete; files already there
are kept, so an interrupted writer resumes. `folder_spec` is the matching
`sum_jax.prepare_data` config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sum_jax.fileio import atomic_path


def save_png(path: str | os.PathLike, pixels: np.ndarray) -> None:
    """`pixels` (u8 HxW or HxWx3) as a PNG at `path`, unless a file is already there."""
    path = Path(path)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format="PNG")


def write_item(
    root: str | os.PathLike, split: str, image_id: str, image: np.ndarray, masks: np.ndarray
) -> None:
    """One image and its masks (bool [K, H, W]); the image goes last, so an image file
    means its masks are complete."""
    base = Path(root) / split
    for k, mask in enumerate(masks):
        save_png(base / "masks" / image_id / f"{k:02d}.png", mask.astype(np.uint8) * 255)
    save_png(base / "images" / f"{image_id}.png", image)


def folder_spec(dataset: str, root: str | os.PathLike, task_id: int, splits: str) -> dict[str, Any]:
    """The `sum_jax.prepare_data` config of a folder `write_item` wrote; `splits` as
    `"train:train,validation:validation"`."""
    return {
        "dataset": dataset,
        "format": "folder",
        "task_id": int(task_id),
        "source_dir": str(root),
        "splits": splits,
        "options": {
            "image_dir": "{split}/images",
            "mask_dir": "{split}/masks",
            "image_globs": "*.png",
            "mask_globs": "{stem}/*.png",
        },
    }
