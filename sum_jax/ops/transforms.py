"""SAM's pre- and post-processing, identical to the official package.

- Host side (`resize_image`, `preprocess`): resize the longest side to `img_size` with PIL's
  bilinear filter (what `ResizeLongestSide.apply_image` does through torchvision), sizes rounded
  as `int(x * scale + 0.5)`.
- Device side (`normalize_and_pad`, `postprocess_masks`): normalise with SAM's pixel mean/std
  and zero the padding (bottom/right); upscale low-res logits bilinearly to `img_size`, crop the
  padding away, and resize bilinearly to the original size (PyTorch's `align_corners=False`).
"""

from __future__ import annotations

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


def resize_bilinear(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """Bilinear resize of the last two axes, as PyTorch's `align_corners=False` without antialias."""
    return jax.image.resize(x, x.shape[:-2] + tuple(hw), "bilinear", antialias=False)


def postprocess_masks(
    low_res: jax.Array,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    img_size: int,
) -> jax.Array:
    """Low-res logits `[..., 4h, 4w]` -> logits at the original size `[..., H, W]`.

    `input_size` is the (h, w) of the resized image inside the padded square; both sizes are
    static (they set output shapes).
    """
    x = resize_bilinear(low_res.astype(jnp.float32), (img_size, img_size))
    x = x[..., : input_size[0], : input_size[1]]
    return resize_bilinear(x, original_size)
