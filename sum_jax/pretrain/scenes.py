"""Scenes generated on the fly: objects pasted onto real backgrounds, with their masks.

A scene is a pure function of `(seed, index)`: a background (a random crop of a real photo,
or now and then a procedural texture), then 2-7 objects pasted one over another. An object
is a real instance cut out with its human-drawn mask (`assets.cutouts`), a real silhouette
filled with a texture, a procedural form (`shapes`), or (a config's share) a composite of
parts that look different (`composite`). Each is scaled (log-uniformly, 20%
to 90% of the scene's side), rotated, flipped, colour-jittered and feathered at its edge,
and may hang over the border; later objects occlude earlier ones, and an object's mask is
what stays visible of it. A light blur and sensor noise go over the whole scene. Half the
scenes are not square (aspect 1:2 to 1:1, either way), so the model also learns SAM's
padded frame.

`scene_element(index, cfg)` returns one batch element in the training pipeline's layout
(`sum_jax.data.pipeline`), and `make_scene_dataset(cfg)` the batched, checkpointable Grain
stream the trainer reads, in place of `pipeline.make_train_dataset`.
"""

from __future__ import annotations

import functools
from typing import Any

import grain
import numpy as np
from PIL import Image

from sum_jax.data import image_ops, pipeline
from sum_jax.pretrain import assets, shapes

NUM_SCENES = 2**31 - 1  # one epoch is longer than any run: no scene repeats


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    photos = assets.backgrounds()
    if rng.uniform() < 0.15:
        return shapes.random_fill(rng, h, w, photos).astype(np.float32)
    photo = photos[int(rng.integers(len(photos)))]
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.3, 1.0)
    ch = max(int(ph * scale), 8)
    cw = min(max(int(ch * w / h * rng.uniform(0.8, 1.25)), 8), pw)
    y, x = int(rng.integers(ph - ch + 1)), int(rng.integers(pw - cw + 1))
    crop = Image.fromarray(photo[y : y + ch, x : x + cw]).resize((w, h), Image.Resampling.BILINEAR)
    out = np.asarray(crop, np.float32)
    if rng.uniform() < 0.5:
        out = out[:, ::-1]
    return out * rng.uniform(0.7, 1.2, 3) + rng.uniform(-25, 25)


# Object kinds a scene may hold: "all" (pretraining), or one of two disjoint families for
# the small-scale experiments (experiments/small_scale/): "intricate" (thin, branching,
# meshed and holed forms) and "generic" (real cut-outs, silhouettes and compact forms).
INTRICATE = ("thin_curves", "branches", "mesh", "with_holes")
GENERIC = ("ellipse", "polygon", "rounded_rectangle", "blob")
OBJECT_KINDS = ("all", "intricate", "generic")


PART_FORMS = ("ellipse", "polygon", "rounded_rectangle", "blob", "thin_curves", "with_holes")


def composite(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(rgb u8[h, w, 3], mask bool[h, w]) of one object made of 2-4 parts that look
    different: each part a procedural form with a fill of its own, or a real cut-out,
    attached where the parts so far are (its centre on one of their pixels), in front of
    them or behind; the mask is the union. Real subjects are like this (a person's cap,
    face and uniform; a motorcycle's wheels, tank and seat), and a click on one part must
    give the whole; single-fill forms never teach that."""
    canvas = np.zeros((3 * size, 3 * size, 3), np.float32)
    union = np.zeros((3 * size, 3 * size), bool)
    for part in range(int(rng.integers(2, 5))):
        if rng.uniform() < 0.25:
            cut = assets.cutouts()[int(rng.integers(len(assets.cutouts())))]
            rgb, mask = cut.rgb, cut.mask
        else:
            mask = shapes.SHAPES[PART_FORMS[int(rng.integers(len(PART_FORMS)))]](rng, 128)
            if not mask.any():
                mask = shapes.ellipse(rng, 128)
            rgb = shapes.random_fill(rng, *mask.shape, assets.backgrounds())
        side = size * (rng.uniform(0.6, 1.0) if part == 0 else rng.uniform(0.3, 0.8))
        f = side / max(mask.shape)
        wh = (max(int(mask.shape[1] * f), 2), max(int(mask.shape[0] * f), 2))
        rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize(wh), np.float32)
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(wh)) > 127
        if not mask.any():  # a thin form can vanish when shrunk
            continue
        if not union.any():
            cy, cx = 3 * size // 2, 3 * size // 2
        else:
            ys, xs = np.nonzero(union)
            pick = int(rng.integers(len(ys)))
            cy, cx = int(ys[pick]), int(xs[pick])
        h, w = mask.shape
        y0 = int(np.clip(cy - h // 2, 0, 3 * size - h))
        x0 = int(np.clip(cx - w // 2, 0, 3 * size - w))
        window = (slice(y0, y0 + h), slice(x0, x0 + w))
        paint = mask if rng.uniform() < 0.6 else mask & ~union[window]  # else behind
        canvas[window][paint] = rgb[paint]
        union[window] |= mask
    if not union.any():
        return composite(rng, size)  # every part vanished: draw again
    ys, xs = np.nonzero(union)
    crop = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    return np.clip(canvas[crop], 0, 255).astype(np.uint8), union[crop]


def _object(
    rng: np.random.Generator, side: int, objects: str = "all", composites: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(rgb float32[h, w, 3], mask bool[h, w]) of one object, longest side about `side`;
    with `objects="all"`, a `composites` share of them are `composite` objects (taken from
    the silhouettes' and procedural forms' shares)."""
    kind = rng.uniform()
    if objects == "all" and 0.3 <= kind < 0.3 + composites:
        rgb, mask = composite(rng)
        angle = rng.uniform(-45, 45)
    elif objects == "intricate":
        mask = shapes.SHAPES[INTRICATE[int(rng.integers(len(INTRICATE)))]](rng, 128)
        if not mask.any():
            mask = shapes.mesh(rng, 128)
        rgb = shapes.random_fill(rng, *mask.shape, assets.backgrounds())
        angle = rng.uniform(-180, 180)
    elif kind < 0.3:
        cut = assets.cutouts()[int(rng.integers(len(assets.cutouts())))]
        rgb, mask, angle = cut.rgb, cut.mask, rng.uniform(-30, 30)
    else:
        if kind < 0.38:
            sil = assets.silhouettes()
            mask = sil[int(rng.integers(len(sil)))]
        elif objects == "generic":
            mask = shapes.SHAPES[GENERIC[int(rng.integers(len(GENERIC)))]](rng, 128)
        else:
            mask = shapes.random_shape(rng, 128)
        rgb = shapes.random_fill(rng, *mask.shape, assets.backgrounds())
        angle = rng.uniform(-180, 180)
    if rng.uniform() < 0.5:
        rgb, mask = rgb[:, ::-1], mask[:, ::-1]
    h, w = mask.shape
    aspect = np.exp(rng.uniform(-0.3, 0.3))
    f = side / max(h, w)
    size = (max(int(w * f * aspect), 2), max(int(h * f / aspect), 2))
    rgb_im = Image.fromarray(np.ascontiguousarray(rgb)).resize(size, Image.Resampling.BILINEAR)
    mask_im = Image.fromarray(np.ascontiguousarray(mask).astype(np.uint8) * 255).resize(
        size, Image.Resampling.BILINEAR
    )
    rgb_im = rgb_im.rotate(angle, Image.Resampling.BILINEAR, expand=True)
    mask_im = mask_im.rotate(angle, Image.Resampling.BILINEAR, expand=True)
    rgb_out = np.asarray(rgb_im, np.float32) * rng.uniform(0.75, 1.25, 3) + rng.uniform(-30, 30)
    if rng.uniform() < 0.1:
        rgb_out = np.repeat(rgb_out.mean(-1, keepdims=True), 3, -1)
    return rgb_out, np.asarray(mask_im) > 127


MIN_AREA_FRAC = 0.002  # of the scene: smaller visible parts are not kept as masks


def make_scene(
    seed: int,
    index: int,
    side: int,
    *,
    max_objects: int = 7,
    objects: str = "all",
    composites: float = 0.0,
    frame_filling: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(image u8[h, w, 3], masks bool[K >= 1, h, w]) of scene `index`; max(h, w) == side.

    Masks are the visible parts of the pasted objects covering at least `MIN_AREA_FRAC` of
    the scene with at least 40% of the object left unoccluded, in pasting order. A draw
    that leaves no such object is followed by another from the same generator. `objects`
    picks the kinds of objects (`OBJECT_KINDS`); `composites` is the share of composite
    objects among "all" (configs/pretrain_small_stage2.py: 0.3). A `frame_filling` share of
    the scenes starts with one object 90%-140% of the scene's side, near its centre, that
    fills the frame and runs over its borders (a portrait's subject); 0 draws nothing for
    it, so the stream is the same as without it.
    """
    if objects not in OBJECT_KINDS:
        raise ValueError(f"objects must be one of {OBJECT_KINDS}, got {objects!r}")
    rng = np.random.default_rng([seed, index])
    while True:
        image, masks = _draw_scene(rng, side, max_objects, objects, composites, frame_filling)
        if len(masks):
            return image, masks


def _draw_scene(
    rng: np.random.Generator,
    side: int,
    max_objects: int,
    objects: str,
    composites: float,
    frame_filling: float = 0.0,
):
    h = w = side
    if rng.uniform() < 0.5:
        short = int(side * rng.uniform(0.5, 1.0))
        h, w = (short, side) if rng.uniform() < 0.5 else (side, short)
    canvas = _background(rng, h, w)
    label = np.zeros((h, w), np.int32)
    areas = []
    big = frame_filling > 0 and rng.uniform() < frame_filling
    if big:  # a few objects in front of it, so that most of it stays visible
        max_objects = min(max_objects, 3)
    for k in range(1, int(rng.integers(2, max_objects + 1)) + 1):
        if big and k == 1:  # fills the frame, centred to within 1/8 of its size
            rgb, mask = _object(rng, side * rng.uniform(0.9, 1.4), objects, composites)
            oh, ow = mask.shape
            y = (h - oh) // 2 + int(rng.integers(-(oh // 8), oh // 8 + 1))
            x = (w - ow) // 2 + int(rng.integers(-(ow // 8), ow // 8 + 1))
        else:
            obj_side = side * np.exp(rng.uniform(np.log(0.2), np.log(0.9)))
            rgb, mask = _object(rng, obj_side, objects, composites)
            oh, ow = mask.shape
            y = int(rng.integers(-oh // 4, max(h - 3 * oh // 4, -oh // 4 + 1)))
            x = int(rng.integers(-ow // 4, max(w - 3 * ow // 4, -ow // 4 + 1)))
        y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + oh, h), min(x + ow, w)
        if y1 <= y0 or x1 <= x0:
            areas.append(1)
            continue
        sub = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
        alpha = shapes.feather(mask, rng.uniform(0.0, 1.2))[sub][..., None]
        canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * (1 - alpha) + rgb[sub] * alpha
        label[y0:y1, x0:x1][mask[sub]] = k
        # A frame-filling object counts the part inside the frame: it is meant to overhang.
        areas.append(int(mask[sub].sum() if big and k == 1 else mask.sum()))
    if rng.uniform() < 0.5:
        blurred = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
        from PIL import ImageFilter

        canvas = np.asarray(
            blurred.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0))), np.float32
        )
    canvas = canvas + rng.normal(0, rng.uniform(0, 6), canvas.shape)
    image = np.clip(canvas, 0, 255).astype(np.uint8)
    masks = []
    for k, area in enumerate(areas, start=1):
        visible = label == k
        n = int(visible.sum())
        if n >= MIN_AREA_FRAC * h * w and n >= 0.4 * area:
            masks.append(visible)
    masks_arr = np.stack(masks) if masks else np.zeros((0, h, w), bool)
    return image, masks_arr


def scene_element(index: int, cfg: Any) -> dict[str, np.ndarray]:
    """Scene `index` as one training element (`pipeline` layout): the image resized and
    padded to `cfg.image_size`, up to `cfg.max_masks` of its masks (drawn at random) at
    `cfg.mask_size` (and at full size with `cfg.full_res_masks`). With `cfg.scene_ramp`
    (a curriculum) scene `i` holds at most `2 + 5 min(1, i / scene_ramp)` objects;
    `cfg.composites` and `cfg.frame_filling` are `make_scene`'s."""
    ramp = int(cfg.get("scene_ramp", 0))
    max_objects = 2 + round(5 * min(1.0, index / ramp)) if ramp > 0 else 7
    image, masks = make_scene(
        int(cfg.seed), int(index), int(cfg.image_size), max_objects=max_objects,
        composites=float(cfg.get("composites", 0.0)),
        frame_filling=float(cfg.get("frame_filling", 0.0)),
    )  # fmt: skip
    out = pipeline.empty_element(cfg)
    out["image"], out["image_size"] = image_ops.resize_longest_side_and_pad(image, cfg.image_size)
    rng = np.random.default_rng([int(cfg.seed), int(index), 1])
    pick = rng.permutation(len(masks))[: cfg.max_masks]
    for j, k in enumerate(pick):
        out["masks"][j] = image_ops.mask_to_frame(masks[k], cfg.image_size, cfg.mask_size)
        if cfg.full_res_masks:
            out["masks_full"][j] = image_ops.mask_to_frame(masks[k], cfg.image_size, cfg.image_size)
    out["mask_valid"][: len(pick)] = True
    out["task_id"] = np.int32(0)  # pretraining is SAM's: no task prompt
    return out


def make_scene_dataset(
    cfg: Any, *, process_index: int | None = None, process_count: int | None = None
) -> grain.IterDataset:
    """The infinite, batched scene stream of this process; checkpointable like
    `pipeline.make_train_dataset` (scene `i` is the same on any host layout)."""
    pi, pc = pipeline.process_index_and_count(process_index, process_count)
    ds = grain.MapDataset.range(NUM_SCENES)[pi::pc]
    ds = ds.map(functools.partial(scene_element, cfg=cfg))
    return pipeline.batched(ds, cfg)
