"""Inputs people actually have: every Pillow image mode and mask encoding is read as what it
shows, or refused with a message; never silently turned into something else. Expected values
are written out from the modes' definitions (NumPy), not taken from Pillow's conversions."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sum_jax.data import image_ops
from sum_jax.data.formats import common
from sum_jax.data.records import IssueLog


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def rgb(rng) -> np.ndarray:
    return rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)


def test_grey_bilevel_palette_and_alpha_images(rgb, rng):
    grey = rgb[..., 0]
    np.testing.assert_array_equal(
        image_ops.decode_image(encode(Image.fromarray(grey, "L"))),
        np.repeat(grey[..., None], 3, -1),
    )
    bits = grey > 127
    np.testing.assert_array_equal(
        image_ops.decode_image(encode(Image.fromarray(bits))),
        np.repeat(np.where(bits, 255, 0).astype(np.uint8)[..., None], 3, -1),
    )
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = rng.integers(0, 256, grey.shape, dtype=np.uint8)
    p = Image.fromarray(index, "P")
    p.putpalette(palette.ravel().tolist())
    np.testing.assert_array_equal(image_ops.decode_image(encode(p)), palette[index])
    rgba = np.concatenate([rgb, rng.integers(0, 256, grey.shape + (1,), dtype=np.uint8)], -1)
    np.testing.assert_array_equal(image_ops.decode_image(encode(Image.fromarray(rgba))), rgb)
    la = np.stack([grey, grey[::-1]], -1)
    np.testing.assert_array_equal(
        image_ops.decode_image(encode(Image.fromarray(la, "LA"))), np.repeat(grey[..., None], 3, -1)
    )


def test_cmyk_without_black_is_the_complement(rgb):
    cmyk = np.concatenate([255 - rgb, np.zeros(rgb.shape[:2] + (1,), np.uint8)], -1)
    decoded = image_ops.decode_image(encode(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=100))
    # JPEG is lossy: the complement within JPEG's error, not the raw CMYK channels.
    assert np.abs(decoded.astype(int) - rgb).mean() < 8
    tiff = image_ops.decode_image(encode(Image.fromarray(cmyk, "CMYK"), "TIFF"))
    np.testing.assert_array_equal(tiff, rgb)


def test_16_bit_grey_is_scaled_not_clipped(rng):
    values = rng.integers(0, 65536, (5, 7), dtype=np.uint16)
    decoded = image_ops.decode_image(encode(Image.fromarray(values)))
    expected = np.floor(values.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(decoded, np.repeat(expected[..., None], 3, -1))


def test_float_images_are_refused():
    data = encode(Image.fromarray(np.ones((4, 4), np.float32)), "TIFF")
    with pytest.raises(image_ops.ImageDecodeError, match="float"):
        image_ops.decode_image(data)


def test_exif_rotation_only_where_asked(rgb):
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # stored rotated: shown turned 90 degrees clockwise
    data = encode(img, "PNG", exif=exif)
    np.testing.assert_array_equal(image_ops.decode_image(data), rgb)  # datasets: stored grid
    shown = image_ops.decode_image(data, apply_exif=True)
    np.testing.assert_array_equal(shown, np.rot90(rgb, k=-1))


def _mask_file(tmp_path: Path, img: Image.Image, name: str) -> Path:
    path = tmp_path / name
    img.save(path)
    return path


@pytest.mark.parametrize(
    "encoding",
    ["0/1 grey", "0/255 grey", "16-bit 0/65535", "palette indices", "alpha channel", "RGB white",
     "LA alpha"],
)  # fmt: skip
def test_mask_encodings(tmp_path, rng, encoding):
    truth = rng.random((8, 10)) > 0.5
    u8 = truth.astype(np.uint8)
    if encoding == "0/1 grey":
        img = Image.fromarray(u8, "L")
    elif encoding == "0/255 grey":
        img = Image.fromarray(u8 * 255, "L")
    elif encoding == "16-bit 0/65535":
        img = Image.fromarray(truth.astype(np.uint16) * 65535)
    elif encoding == "palette indices":
        img = Image.fromarray(u8, "P")
        img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    elif encoding == "alpha channel":
        rgba = np.zeros((8, 10, 4), np.uint8)
        rgba[..., 3] = u8 * 255
        img = Image.fromarray(rgba, "RGBA")
    elif encoding == "RGB white":
        img = Image.fromarray(np.repeat(u8[..., None] * 255, 3, -1))
    else:
        img = Image.fromarray(np.stack([np.zeros_like(u8), u8 * 255], -1), "LA")
    log = IssueLog("skip")
    mask = common.read_binary_mask(_mask_file(tmp_path, img, "m.png"), 8, 10, "auto", log)
    assert not log.issues, log.issues
    np.testing.assert_array_equal(mask, truth)


def test_cmyk_mask_is_refused_by_name(tmp_path):
    img = Image.fromarray(np.zeros((8, 10, 4), np.uint8), "CMYK")
    path = _mask_file(tmp_path, img, "m.tif")
    log = IssueLog("skip")
    assert common.read_binary_mask(path, 8, 10, "auto", log) is None
    assert "m.tif" in str(log.issues[0]) and "CMYK" in str(log.issues[0])
