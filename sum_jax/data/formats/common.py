"""File readers shared by the source formats: images, binary masks, label maps, globbing.

Each reader validates what it reads and reports problems through the `IssueLog`, naming the
file, so a dataset with a few bad files can be prepared (skipping them) or stopped at the first.
"""

from __future__ import annotations

import glob
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sum_jax.data import image_ops, rle
from sum_jax.data.records import IssueLog

# Decompression-bomb guard off: HRSOD, BIG and SA-1B legitimately hold very large images.
Image.MAX_IMAGE_PIXELS = None


def resolve(root: Path, sub: str, split_tag: str) -> Path:
    """`root / sub` with `{split}` in `sub` replaced by the split's tag. A `sub` with a `*`
    names the one folder or file it matches (EntitySeg's `entity_01_*` for
    `entity_01_11580`, whose suffix is an image count); none or several is an error."""
    sub = sub.replace("{split}", split_tag)
    path = Path(sub) if os.path.isabs(sub) else root / sub
    if "*" not in sub:
        return path
    matches = sorted(glob.glob(str(path)))
    if len(matches) != 1:
        raise FileNotFoundError(
            f"{path}: expected exactly one match, found {len(matches)}"
            + (f" ({', '.join(Path(m).name for m in matches[:5])})" if matches else "")
        )
    return Path(matches[0])


def find_files(base: Path, patterns: Sequence[str]) -> list[Path]:
    """Sorted unique files under `base` matching any of the glob `patterns` (may hold `**`)."""
    found: set[Path] = set()
    for pattern in patterns:
        for p in glob.glob(str(base / pattern), recursive=True):
            if os.path.isfile(p):
                found.add(Path(p))
    return sorted(found)


def stem_of(path: Path, base: Path, pattern: str) -> str:
    """The image id: path relative to `base`, minus the pattern's literal suffix.

    The suffix is what follows the pattern's last `*`, so `*_im.jpg` turns `a/b_im.jpg` into
    `a/b`, and `*.jpg` turns `x.jpg` into `x`.
    """
    rel = path.relative_to(base).as_posix()
    suffix = pattern.rsplit("*", 1)[-1]
    return rel[: len(rel) - len(suffix)] if suffix and rel.endswith(suffix) else rel


def expand_with_stem(base: Path, patterns: Sequence[str], stem: str) -> list[Path]:
    """Files matching `patterns` with `{stem}` replaced by the (glob-escaped) image stem."""
    escaped = glob.escape(stem)
    return find_files(base, [p.replace("{stem}", escaped) for p in patterns])


def match_images(
    root: Path,
    split_tag: str,
    opts: dict,
    log: IssueLog,
    *,
    dir_key: str,
    globs_key: str,
    what: str,
) -> list[tuple[str, Path, tuple[Path, ...]]]:
    """Pairs each image with its annotation files: `[(stem, image, files)]`, sorted by stem.

    Images come from `opts["image_dir"]` by `opts["image_globs"]`; their files from
    `opts[dir_key]` by `opts[globs_key]` (patterns with `{stem}`). An image without any is
    reported to `log` and left out.
    """
    image_dir = resolve(root, opts["image_dir"], split_tag)
    files_dir = resolve(root, opts[dir_key], split_tag)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: image folder does not exist")
    items: dict[str, tuple[str, Path, tuple[Path, ...]]] = {}
    for pattern in opts["image_globs"]:
        for path in find_files(image_dir, [pattern]):
            stem = stem_of(path, image_dir, pattern)
            files = [f for f in expand_with_stem(files_dir, opts[globs_key], stem) if f != path]
            if not files:
                log.report(
                    str(path),
                    f"no {what} matches {opts[globs_key]} under {files_dir}",
                    "image without masks",
                )
                continue
            items.setdefault(stem, (stem, path, tuple(files)))
    return [items[k] for k in sorted(items)]


def load_image(path: Path, log: IssueLog) -> tuple[bytes, int, int] | None:
    """(encoded bytes, H, W) of an image file, fully decoded once to reject bad files."""
    try:
        data = path.read_bytes()
    except OSError as e:
        log.report(str(path), f"cannot read image: {e}", "unreadable image")
        return None
    try:
        pixels = image_ops.decode_image(data)
    except image_ops.ImageDecodeError as e:
        log.report(str(path), f"corrupt or truncated image ({e.__cause__ or e})", "corrupt image")
        return None
    return data, int(pixels.shape[0]), int(pixels.shape[1])


def _read_array(path: Path, log: IssueLog, what: str) -> np.ndarray | None:
    try:
        with Image.open(io.BytesIO(path.read_bytes())) as img:
            img.load()
            if img.mode == "P":
                return np.asarray(img)  # Palette indices are the labels, not the colours.
            if img.mode == "PA":
                img = img.convert("RGBA")
            if img.mode in ("CMYK", "F") or img.mode.startswith("YCbCr"):
                log.report(
                    str(path),
                    f"{img.mode} {what}: save {what}s as grey, palette, RGB or alpha images",
                    f"unsupported {what} mode",
                )
                return None
            if img.mode in ("RGBA", "LA"):
                values = np.asarray(img)
                colour, alpha = values[..., :-1], values[..., -1]
                if (colour == colour.flat[0]).all() and not (alpha == alpha.flat[0]).all():
                    return alpha  # One flat colour, the shape in the alpha channel.
                return colour[..., 0] if img.mode == "LA" else colour
            return np.asarray(img)
    except Exception as e:  # noqa: BLE001  (Pillow raises many types for corrupt files.)
        log.report(str(path), f"cannot decode {what}: {e}", f"corrupt {what}")
        return None


def _to_2d(values: np.ndarray) -> np.ndarray:
    """A single-channel view of a mask: grey as is, RGB with equal channels as one channel,
    other RGB as 24-bit colour codes (colour-coded label maps)."""
    if values.ndim == 2:
        return values
    if (values == values[..., :1]).all():
        return values[..., 0]
    v = values.astype(np.int64)
    return (v[..., 0] << 16) | (v[..., 1] << 8) | v[..., 2]


def read_binary_mask(
    path: Path, height: int, width: int, threshold: Any, log: IssueLog
) -> np.ndarray | None:
    """bool[H, W] mask from an image file, or None (reported) when unusable.

    `threshold="auto"`: 0/1 masks are foreground where nonzero, 8-bit masks where >= 128 (so
    anti-aliased DIS/HRSOD boundaries are cut at half), 16-bit where >= 32768. A number means
    foreground where `value >= threshold`.
    """
    values = _read_array(path, log, "mask")
    if values is None:
        return None
    if values.ndim == 3:  # A coloured binary mask: foreground is any channel lit.
        values = values.max(axis=-1)
    if values.shape != (height, width):
        log.report(
            str(path),
            f"mask is {values.shape[0]}x{values.shape[1]} but its image is {height}x{width}",
            "mask size differs from image",
        )
        return None
    if threshold == "auto":
        top = int(values.max()) if values.size else 0
        mask = values > 0 if top <= 1 else values >= (128 if top <= 255 else 32768)
    else:
        mask = values >= float(threshold)
    if not mask.any():
        log.report(str(path), "mask is empty (no foreground pixel)", "empty mask")
        return None
    return mask


def read_label_map(path: Path, height: int, width: int, log: IssueLog) -> np.ndarray | None:
    """int64[H, W] label map (palette index, grey value, or 24-bit RGB code), or None."""
    values = _read_array(path, log, "label map")
    if values is None:
        return None
    values = _to_2d(values).astype(np.int64)
    if values.shape != (height, width):
        log.report(
            str(path),
            f"label map is {values.shape[0]}x{values.shape[1]} but its image is {height}x{width}",
            "mask size differs from image",
        )
        return None
    return values


def encode_masks(masks: Sequence[np.ndarray]) -> list[bytes]:
    return [rle.encode(m) for m in masks]
