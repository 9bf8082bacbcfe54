"""COCO run-length encoding (RLE) of binary masks: the one mask format stored on disk.

Every mask this package writes (prepared datasets, pseudo-labels) is a COCO *compressed* RLE
string at the image's original resolution: lossless, pixel exact, a few hundred bytes per mask,
and the format SA-1B, LVIS, PACO and EntitySeg already ship.

Encoding and polygon rasterisation go through `pycocotools.mask` (C code; its polygon
rasteriser is the reference every COCO-style benchmark uses, so masks built from LVIS, PACO or
Fashionpedia polygons here are identical, pixel for pixel, to theirs). Decoding is NumPy
(`parse_counts` + `np.repeat`): faster than pycocotools' decoder, and it *checks* the string,
which pycocotools does not (a truncated counts string decodes to uninitialised memory there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


class RLEError(ValueError):
    """An RLE or polygon annotation that does not describe a valid mask."""


def parse_counts(counts: bytes | str) -> np.ndarray:
    """Run lengths (int64) of a COCO compressed RLE string, validating its syntax.

    The string format (pycocotools `rleToString`): each count is a little-endian base-32 varint
    written as chars 48..111 (5 payload bits, bit 0x20 = "more chars follow", sign bit 0x10 in the
    last char); counts at index > 2 are stored as the difference to the count two places back.
    """
    if isinstance(counts, str):
        counts = counts.encode("ascii", errors="replace")
    chars = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        raise RLEError("empty RLE counts string")
    if chars.min() < 0 or chars.max() > 63:
        raise RLEError("RLE counts string has characters outside '0'..'o'")
    more = (chars & 0x20) != 0
    if more[-1]:
        raise RLEError("RLE counts string is truncated (last value is unterminated)")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    shift = 5 * (np.arange(chars.size) - starts[group])
    if shift.max() > 35:
        raise RLEError("RLE counts string has a value too large to be a run length")
    values = np.add.reduceat((chars & 0x1F) << shift, starts)
    # Sign extension: the last char of a value carries the sign in bit 0x10.
    negative = (chars[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * (ends - starts + 1)[negative])
    # Undo the delta coding of counts 3, 4, ...: separate running sums over odd and even slots.
    runs = values.copy()
    if runs.size > 3:
        runs[3::2] = np.cumsum(values[3::2]) + values[1]
    if runs.size > 4:
        runs[4::2] = np.cumsum(values[4::2]) + values[2]
    return runs


def validate(counts: bytes | str, height: int, width: int) -> None:
    """Raises RLEError unless `counts` decodes to exactly a `height x width` mask."""
    runs = parse_counts(counts)
    if (runs < 0).any():
        raise RLEError("RLE has a negative run length")
    total = int(runs.sum())
    if total != height * width:
        raise RLEError(
            f"RLE covers {total} pixels but the mask is {height}x{width}={height * width}"
        )


def encode(mask: np.ndarray) -> bytes:
    """Compressed RLE counts of a 2-D mask (any dtype; nonzero = foreground)."""
    if mask.ndim != 2:
        raise ValueError(f"encode expects a 2-D mask, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask != 0, dtype=np.uint8))
    return rle["counts"]


def decode_columns(counts: bytes | str, height: int, width: int, value: int = 1) -> np.ndarray:
    """uint8[width, height]: the mask *transposed* (0 / `value`), validated.

    RLE runs go down columns, so the column-major mask is a plain `np.repeat` of the runs and,
    read as C order, is the transpose. Callers that resize (separable filters) work on it
    directly and save a full-resolution transpose; NumPy's repeat is also ~2x faster here than
    pycocotools' decoder (4.2 vs 9.1 ms on a 1500x2250 mask) and, unlike it, rejects bad input.
    """
    runs = parse_counts(counts)
    if (runs < 0).any() or int(runs.sum()) != height * width:
        raise RLEError(f"RLE does not cover a {height}x{width} mask exactly")
    values = np.zeros(runs.size, np.uint8)
    values[1::2] = value
    return np.repeat(values, runs).reshape(width, height)


def decode(counts: bytes | str, height: int, width: int) -> np.ndarray:
    """bool[height, width] mask of one compressed RLE (raises RLEError on a bad string)."""
    return decode_columns(counts, height, width).T.astype(bool)


def decode_many(counts: Sequence[bytes], height: int, width: int) -> np.ndarray:
    """bool[K, height, width] for K compressed RLE strings of one image."""
    out = np.empty((len(counts), height, width), bool)
    for k, c in enumerate(counts):
        out[k] = decode_columns(c, height, width).T
    return out


def area(counts: bytes, height: int, width: int) -> int:
    """Number of foreground pixels, computed from the runs without decoding."""
    return int(mask_utils.area({"size": [height, width], "counts": counts}))


def from_coco_segmentation(segmentation: Any, height: int, width: int) -> bytes:
    """Compressed RLE of a COCO `segmentation` field: polygons, RLE dict or uncompressed RLE.

    Raises RLEError with a description when the field is malformed.
    """
    if isinstance(segmentation, list):
        if not segmentation:
            raise RLEError("polygon list is empty")
        polygons = []
        for poly in segmentation:
            if not isinstance(poly, (list, tuple)) or not all(
                isinstance(v, (int, float)) for v in poly
            ):
                raise RLEError("polygon is not a flat list of numbers")
            if len(poly) < 6 or len(poly) % 2:
                raise RLEError(f"polygon has {len(poly)} coordinates; needs an even number >= 6")
            polygons.append([float(v) for v in poly])
        rles = mask_utils.frPyObjects(polygons, height, width)
        return mask_utils.merge(rles)["counts"]
    if isinstance(segmentation, dict):
        if "counts" not in segmentation or "size" not in segmentation:
            raise RLEError("RLE segmentation needs 'counts' and 'size'")
        size = segmentation["size"]
        if list(size) != [height, width]:
            raise RLEError(f"RLE size {list(size)} differs from the image's {[height, width]}")
        counts = segmentation["counts"]
        if isinstance(counts, list):  # Uncompressed RLE (COCO iscrowd): validate, then compress.
            runs = np.asarray(counts)
            if runs.ndim != 1 or (runs < 0).any() or int(runs.sum()) != height * width:
                raise RLEError("uncompressed RLE does not cover the image exactly")
            rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
            return rle["counts"]
        if isinstance(counts, str):
            counts = counts.encode("ascii", errors="replace")
        if not isinstance(counts, bytes):
            raise RLEError(f"RLE counts has type {type(counts).__name__}")
        validate(counts, height, width)
        return counts
    raise RLEError(f"segmentation has type {type(segmentation).__name__}, not polygons or RLE")
