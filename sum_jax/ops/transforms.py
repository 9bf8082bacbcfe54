"""SAM's pre- and post-processing, identical to the official package.

- Host side (`resize_image`, `preprocess`): resize the longest side to `img_size` with PIL's
  bilinear filter (what `ResizeLongestSide.apply_image` does through torchvision), sizes rounded
  as `int(x * scale + 0.5)`.
- Device side (`normalize_and_pad`, `postprocess_masks`): normalise with SAM's pixel mean/std
  and zero the padding (bottom/right); upscale low-res logits bilinearly to `img_size`, crop the
  padding away, and resize bilinearly to the original size (PyTorch's `align_corners=False`).
  Each resize is separable with two taps per output (`bilinear_taps`: a gather and a weighted
  sum, O(output) work) rather than dense resize matrices; `postprocess_taps` /
  `apply_postprocess` give the same map with traced taps, so one compilation serves every
  image size of a size bucket (the evaluator, the mask generator).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
MASK_THRESHOLD = 0.0


def preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """`(new_h, new_w)` with the longest side `long_side`, rounded as SAM rounds."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Returns `image` if it is an `HxWx3` uint8 array, else raises a ValueError saying why."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(
            f"{name} must be uint8 RGB (HxWx3, values 0..255), got dtype {image.dtype}; "
            "convert with np.asarray(PIL.Image.open(path).convert('RGB'))"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{name} must be HxWx3 RGB, got shape {image.shape}; grey or RGBA images: "
            "PIL.Image.open(path).convert('RGB')"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {image.shape}")
    return image


def resize_image(image: np.ndarray, long_side: int) -> np.ndarray:
    """uint8 `HxWx3` -> uint8 resized so that its longest side is `long_side`."""
    h, w = preprocess_shape(image.shape[0], image.shape[1], long_side)
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def pad_image(image: np.ndarray, size: int) -> np.ndarray:
    """Zero-pads `HxWx3` bottom/right to `size x size`."""
    h, w = image.shape[:2]
    return np.pad(image, ((0, size - h), (0, size - w), (0, 0)))


def normalize_and_pad(images_u8: jax.Array, image_size: jax.Array) -> jax.Array:
    """`u8[B, S, S, 3]` (resized, padded) and `i32[B, 2]` (h, w) -> normalised `f32[B, S, S, 3]`.

    SAM normalises then pads with zeros, so the padding is 0 after normalisation.
    """
    x = (images_u8.astype(jnp.float32) - jnp.asarray(PIXEL_MEAN)) / jnp.asarray(PIXEL_STD)
    s = images_u8.shape[1]
    rows = jnp.arange(s)[None, :, None] < image_size[:, 0, None, None]
    cols = jnp.arange(s)[None, None, :] < image_size[:, 1, None, None]
    return jnp.where((rows & cols)[..., None], x, 0.0)


def preprocess(image: np.ndarray, img_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Host-side convenience: uint8 `HxWx3` -> (normalised padded `f32[S, S, 3]`, (h, w))."""
    resized = resize_image(check_image(image), img_size)
    h, w = resized.shape[:2]
    x = (resized.astype(np.float32) - np.asarray(PIXEL_MEAN, np.float32)) / np.asarray(
        PIXEL_STD, np.float32
    )
    return pad_image(x, img_size), (h, w)


def apply_coords(coords, original_size: tuple[int, int], long_side: int):
    """(x, y) coordinates in the original image -> in the resized image (`[..., 2]`)."""
    old_h, old_w = original_size
    new_h, new_w = preprocess_shape(old_h, old_w, long_side)
    scale = np.asarray([new_w / old_w, new_h / old_h])
    if isinstance(coords, jax.Array):
        return coords.astype(jnp.float32) * jnp.asarray(scale, jnp.float32)
    return np.asarray(coords, np.float64) * scale


def apply_boxes(boxes, original_size: tuple[int, int], long_side: int):
    """(x0, y0, x1, y1) boxes `[..., 4]` in the original image -> in the resized image."""
    shape = boxes.shape
    return apply_coords(boxes.reshape(shape[:-1] + (2, 2)), original_size, long_side).reshape(shape)


class Taps(NamedTuple):
    """One axis of a bilinear resize as two taps per output index: `out[i] = w0[i] *
    x[i0[i]] + w1[i] * x[i1[i]]` (int32 / float32 `[out]`; zero weights give 0)."""

    i0: np.ndarray | jax.Array
    i1: np.ndarray | jax.Array
    w0: np.ndarray | jax.Array
    w1: np.ndarray | jax.Array


def bilinear_taps(in_size: int, out_size: int) -> Taps:
    """PyTorch's `F.interpolate(mode="bilinear", align_corners=False)` (no antialias, size
    given) along one axis, with ATen's float32 CPU arithmetic (`compute_source_index_and_lambda`
    in `UpSampleKernel.cpp`): `scale = in / out`; source `scale * (i + 0.5) - 0.5` as one
    fused multiply-add (one rounding: the float32 product is exact in float64), clamped at 0;
    index `floor`, the second tap one further except at the last input. The weights equal
    PyTorch's bit for bit (checked in `tests/ops/test_transforms.py`)."""
    if in_size == out_size:
        i = np.arange(out_size, dtype=np.int32)
        return Taps(i, i, np.ones(out_size, np.float32), np.zeros(out_size, np.float32))
    scale = np.float64(np.float32(in_size) / np.float32(out_size))
    half = np.arange(out_size, dtype=np.float32) + np.float32(0.5)
    src = (scale * half.astype(np.float64) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    i1 = i0 + (i0 < in_size - 1).astype(np.int32)
    return Taps(i0, i1, np.float32(1.0) - w1, w1)


def apply_taps(x: jax.Array, taps: Taps, axis: int) -> jax.Array:
    """Resizes `axis` of `x` with two-tap weights (a gather and a weighted sum: O(output))."""
    shape = [1] * x.ndim
    shape[axis] = -1
    w0 = jnp.asarray(taps.w0, x.dtype).reshape(shape)
    w1 = jnp.asarray(taps.w1, x.dtype).reshape(shape)
    i0, i1 = jnp.asarray(taps.i0), jnp.asarray(taps.i1)
    return w0 * jnp.take(x, i0, axis=axis) + w1 * jnp.take(x, i1, axis=axis)


def resize_bilinear(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """Bilinear resize of the last two axes, as PyTorch's `align_corners=False` without
    antialias: along W, then along H (PyTorch's order of the four products)."""
    x = apply_taps(x, bilinear_taps(x.shape[-1], hw[1]), axis=-1)
    return apply_taps(x, bilinear_taps(x.shape[-2], hw[0]), axis=-2)


class PostprocessTaps(NamedTuple):
    """`postprocess_masks` for one image size as taps: `up` (low-res -> `img_size`, both
    axes), `y` / `x` (the crop to the resized image, then -> the original size, padded with
    zero weights up to a size bucket)."""

    up: Taps
    y: Taps
    x: Taps


def pad_taps(taps: Taps, size: int) -> Taps:
    """Extends `taps` to `size` outputs with zero weights (0 in the padding)."""
    n = size - len(taps.i0)
    return Taps(*(np.pad(np.asarray(t), (0, n)) for t in taps))


def postprocess_taps(
    original_size: tuple[int, int], img_size: int, low_res: int, padded: tuple[int, int] | None
) -> PostprocessTaps:
    """Host-side taps of `postprocess_masks` for an image of `original_size`, outputs padded
    to `padded` (H, W) with zeros (None: no padding)."""
    h, w = original_size
    rh, rw = preprocess_shape(h, w, img_size)
    padded = padded or (h, w)
    return PostprocessTaps(
        bilinear_taps(low_res, img_size),
        pad_taps(bilinear_taps(rh, h), padded[0]),
        pad_taps(bilinear_taps(rw, w), padded[1]),
    )


def apply_postprocess(low_res: jax.Array, taps: PostprocessTaps) -> jax.Array:
    """Low-res logits `[..., l, l]` -> `[..., Hb, Wb]` (traceable; taps may be traced arrays).

    The first resize computes all `img_size` outputs of each axis (static shapes; the second
    resize only reads the first `rh` / `rw`, which is the crop).
    """
    x = low_res.astype(jnp.float32)
    x = apply_taps(apply_taps(x, taps.up, axis=-1), taps.up, axis=-2)
    return apply_taps(apply_taps(x, taps.x, axis=-1), taps.y, axis=-2)


def postprocess_masks(
    low_res: jax.Array,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    img_size: int,
) -> jax.Array:
    """Low-res logits `[..., 4h, 4w]` -> logits at the original size `[..., H, W]`.

    `input_size` is the (h, w) of the resized image inside the padded square; both sizes are
    static (they set output shapes). Two-tap bilinear resizes, in PyTorch's order: to
    `img_size` (W, then H), crop, to the original size (W, then H).
    """
    x = resize_bilinear(low_res.astype(jnp.float32), (img_size, img_size))
    x = x[..., : input_size[0], : input_size[1]]
    return resize_bilinear(x, original_size)
