"""Host-side image and mask operations of the data pipelines (NumPy + Pillow).

The image path reproduces the official SAM preprocessing on the host: `ResizeLongestSide`
resizes a PIL image with bilinear filtering (antialiased) so the longest side is `S`, the short
side being `int(side * S / max(H, W) + 0.5)`; `Sam.preprocess` then zero-pads bottom/right to
`S x S`. Normalisation happens on device (`sum_jax.ops.transforms.normalize_and_pad`), so batches
carry uint8 pixels and 4x less host-to-device traffic.

Masks are brought into the same padded frame at any resolution `R` (the loss resolution
`L = S / 4`, or `S` itself) by *area averaging then thresholding at 0.5*: each target pixel is
foreground when at least half of the source pixels whose centres fall inside it are foreground
(Pillow's separable BOX filter, which rounds to 8 bits between its passes, so exact ties are
decided to within 1/255). Unlike nearest-neighbour sampling, this keeps thin structures that
straddle a sampling grid and never shifts the mask by half a pixel.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from sum_jax.data import rle


class ImageDecodeError(ValueError):
    """An encoded image that cannot be decoded completely."""


# Integer modes wider than 8 bits: Pillow's convert("RGB") would clip them at 255.
_WIDE_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb8(img: Image.Image) -> np.ndarray:
    """uint8[H, W, 3] of a decoded Pillow image of any mode, or ImageDecodeError.

    8-bit modes (grey "L", bilevel "1", palette "P", "RGBA"/"LA"/"PA" with the alpha dropped,
    "CMYK", "YCbCr", ...) go through Pillow's conversion; 16-bit grey is scaled by 255/65535
    (not clipped); float images ("F": depth maps, scientific TIFFs) and 32-bit integer images
    beyond 16 bits are refused, since no scaling of them is the photo a user means.
    """
    if img.mode == "RGB":
        return np.asarray(img)
    if img.mode in _WIDE_INT_MODES:
        values = np.asarray(img).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageDecodeError(
                f"32-bit integer image (values {values.min()}..{values.max()}): save it as 8- or "
                "16-bit RGB or grey first"
            )
        grey = np.round(values * (255.0 / 65535.0)).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if img.mode == "F":
        raise ImageDecodeError(
            "32-bit float image (a depth map or scientific TIFF?): save it as 8- or 16-bit RGB or "
            "grey first"
        )
    try:
        return np.asarray(img.convert("RGB"))
    except (ValueError, OSError) as e:
        raise ImageDecodeError(f"image mode {img.mode!r} cannot be converted to RGB: {e}") from e


def decode_image(data: bytes, *, apply_exif: bool = False) -> np.ndarray:
    """uint8[H, W, 3] RGB pixels of encoded image bytes (JPEG, PNG, ...), any mode (`to_rgb8`).

    EXIF orientation is *not* applied by default: dataset masks are drawn on the stored pixel
    grid. `apply_exif=True` (one user image, clicked where a viewer shows it) applies it.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # Forces a full decode, so truncated files fail here.
            if apply_exif:
                img = ImageOps.exif_transpose(img)
            return to_rgb8(img)
    except ImageDecodeError:
        raise
    except Image.UnidentifiedImageError as e:
        raise ImageDecodeError("not an image format Pillow reads (corrupt or not an image?)") from e
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError... for bad files.
        raise ImageDecodeError(f"cannot decode image: {e}") from e


def image_size(data: bytes) -> tuple[int, int]:
    """(H, W) from the image header only."""
    with Image.open(io.BytesIO(data)) as img:
        return img.height, img.width


def preprocess_shape(height: int, width: int, side: int) -> tuple[int, int]:
    """(h, w) after resizing the longest side to `side`, rounded as SAM's ResizeLongestSide."""
    scale = side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side_and_pad(image: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8[side, side, 3] zero padded bottom/right, int32[2] resized (h, w))."""
    h, w = preprocess_shape(image.shape[0], image.shape[1], side)
    if (h, w) != image.shape[:2]:
        resized = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))
    else:
        resized = image
    out = np.zeros((side, side, 3), np.uint8)
    out[:h, :w] = resized
    return out, np.array([h, w], np.int32)


def _frame_geometry(height: int, width: int, side: int, frame: int):
    """Target extent (out_h, out_w) and source box (box_h, box_w) of a mask in the frame."""
    h, w = preprocess_shape(height, width, side)
    f = frame / side
    # The image covers h*f x w*f target pixels (not always an integer): we resize onto the
    # rows/columns it touches, sampling a source box that runs past the image into zeros.
    out_h, out_w = min(frame, int(np.ceil(h * f))), min(frame, int(np.ceil(w * f)))
    return out_h, out_w, out_h * height / (h * f), out_w * width / (w * f)


def _area_resize_u8(src: np.ndarray, out_hw: tuple[int, int], box_hw: tuple[float, float]):
    """Area-resize a 0/255 uint8 image `src`, zero-extended to the (fractional) box."""
    pad_h, pad_w = (
        max(src.shape[0], int(np.ceil(box_hw[0]))),
        max(src.shape[1], int(np.ceil(box_hw[1]))),
    )
    if (pad_h, pad_w) != src.shape:
        padded = np.zeros((pad_h, pad_w), np.uint8)
        padded[: src.shape[0], : src.shape[1]] = src
        src = padded
    small = Image.fromarray(src).resize(
        (out_hw[1], out_hw[0]), Image.Resampling.BOX, box=(0.0, 0.0, box_hw[1], box_hw[0])
    )
    return np.asarray(small) >= 128


def mask_to_frame(mask: np.ndarray, side: int, frame: int) -> np.ndarray:
    """uint8[frame, frame] 0/1: a mask at original resolution in the padded, resized frame.

    Args:
      mask: [H, W] mask at the image's original resolution (nonzero = foreground).
      side: `S`, the longest side after resizing (1024 for SAM).
      frame: output resolution `R` of the padded `S x S` square (256: the low-res logits).
    """
    height, width = mask.shape
    # Work on the transpose, exactly as `rle_to_frame` does: Pillow's separable filter rounds
    # between its two passes, so the pass order must be the same for identical results.
    src_t = np.ascontiguousarray((mask != 0).T).view(np.uint8) * np.uint8(255)
    out = np.zeros((frame, frame), np.uint8)
    out_h, out_w, box_h, box_w = _frame_geometry(height, width, side, frame)
    out[:out_h, :out_w] = _area_resize_u8(src_t, (out_w, out_h), (box_w, box_h)).T
    return out


def rle_to_frame(counts: bytes, height: int, width: int, side: int, frames: tuple[int, ...]):
    """Decode one COCO RLE straight into the padded frames `frames` (uint8 0/1 each).

    Same result as `mask_to_frame(rle.decode(...))` for less work: the RLE decodes column-major,
    i.e. as the C-ordered transpose `[W, H]`, already scaled to 0/255; it is resized there (the
    BOX filter is separable) and transposed back once small.
    """
    src_t = rle.decode_columns(counts, height, width, value=255)  # [W, H]
    outs = []
    for frame in frames:
        out_h, out_w, box_h, box_w = _frame_geometry(height, width, side, frame)
        out = np.zeros((frame, frame), np.uint8)
        out[:out_h, :out_w] = _area_resize_u8(src_t, (out_w, out_h), (box_w, box_h)).T
        outs.append(out)
    return outs


def resize_map_to_frame(values: np.ndarray, frame: int) -> np.ndarray:
    """uint8[frame, frame]: a uint8 map already in the padded square frame, resized bilinearly."""
    if values.shape == (frame, frame):
        return values
    return np.asarray(Image.fromarray(values).resize((frame, frame), Image.Resampling.BILINEAR))
