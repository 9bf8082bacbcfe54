"""File readers shared by the source formats: images, binary masks, label maps, globbing.

Each reader validates what it reads and reports problems through the `IssueLog`, naming the
file, so a dataset with a few bad files can be prepared (skipping them) or stopped at the first.
Files are found by a glob walk of our own (`_Walk`): folder names are literal, and symbolic
links are followed with loop detection, each folder and file read once.
"""

from __future__ import annotations

import bisect
import collections
import fnmatch
import glob
import io
import math
import os
import re
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
    `entity_01_11580`, whose suffix is an image count); none or several is an error.

    `*` in `sub` is the only wildcard: `root`, the split tag and the rest of `sub` are
    literal, so folders named `data[1]` or `v?` are found as they are."""
    path = Path(sub.replace("{split}", split_tag))
    path = path if path.is_absolute() else root / path
    if "*" not in sub:
        return path
    pattern = "*".join(glob.escape(part) for part in sub.split("*"))
    pattern = pattern.replace(glob.escape("{split}"), glob.escape(split_tag))
    base = root
    if os.path.isabs(pattern):
        base, pattern = Path(os.sep), pattern.lstrip(os.sep)
    matches = _Walk(base).match(pattern, files_only=False)
    if len(matches) != 1:
        raise FileNotFoundError(
            f"{path}: expected exactly one match, found {len(matches)}"
            + (f" ({', '.join(m.name for m in matches[:5])})" if matches else "")
        )
    return matches[0]


def find_files(
    base: Path,
    patterns: Sequence[str],
    log: IssueLog | None = None,
    listings: dict[str, list[str] | None] | None = None,
) -> list[Path]:
    """Sorted unique files under `base` matching any of the glob `patterns` (may hold `**`).

    `base` is literal (a folder named `data[1]` is that folder, not a character class); only
    the patterns are patterns. Symbolic links are followed, but each folder and each file is
    read once: a link back to a folder above it (a loop, which a plain recursive glob follows
    40 levels deep) or to a folder or file already found is skipped and reported to `log`.
    `listings` caches folder listings between calls (one per image, over one mask folder).
    """
    walk = _Walk(base, log, listings)
    return sorted({path for pattern in patterns for path in walk.match(pattern)})


_ESCAPED = re.compile(r"\[([*?[])\]")  # what glob.escape makes of *, ? and [
_MAGIC = re.compile(r"[*?[]")


_LITERAL_START = re.compile(r"(?:[^*?[]|\[[*?[]\])*")


def _literal(segment: str) -> str | None:
    """The name a pattern segment stands for when it has no wildcard, else None."""
    if _MAGIC.search(_ESCAPED.sub("", segment)):
        return None
    return _ESCAPED.sub(r"\1", segment)


def _literal_start(segment: str) -> str:
    """What every name matching `segment` starts with (`img_7_` for `img_7_*.png`)."""
    return _ESCAPED.sub(r"\1", _LITERAL_START.match(segment).group(0))


class _Walk:
    """Matches glob patterns under one literal `base`, following symbolic links with loop
    detection: each real folder is listed once per `**`, and each real file (same device
    and inode) is returned once, under the first name it was found by."""

    def __init__(
        self,
        base: Path,
        log: IssueLog | None = None,
        listings: dict[str, list[str] | None] | None = None,
    ):
        self.base = Path(base)
        self.log = log
        self.listings = {} if listings is None else listings
        self.files: dict[tuple[int, int], Path] = {}
        self.reported: set[str] = set()

    def match(self, pattern: str, files_only: bool = True) -> list[Path]:
        parts = [p for p in pattern.split("/") if p not in ("", ".")]
        out: list[Path] = []
        if parts:
            self._descend(self.base, parts, files_only, out)
        return sorted(out)

    def _descend(self, folder: Path, parts: list[str], files_only: bool, out: list[Path]):
        head, rest = parts[0], parts[1:]
        if head == "**":
            for sub in self._tree(folder):
                self._descend(sub, rest or ["*"], files_only, out)
            return
        name = _literal(head)
        if name is not None:
            children = [folder / name]
        else:
            children = [folder / n for n in self._matching(folder, head)]
        for child in children:
            if rest:
                if child.is_dir():
                    self._descend(child, rest, files_only, out)
            elif child.is_file():
                if self._first_name(child):
                    out.append(child)
            elif not files_only and child.is_dir():
                out.append(child)

    def _matching(self, folder: Path, segment: str) -> list[str]:
        """Names in `folder` that `segment` matches (hidden ones only if it starts with a
        dot, as glob does). The sorted listing is cached and cut to the names starting with
        the segment's literal start first, so one mask folder serves every image quickly."""
        key = str(folder)
        if key not in self.listings:
            try:
                self.listings[key] = sorted(e.name for e in os.scandir(folder))
            except OSError:  # not a folder, unreadable, or gone
                self.listings[key] = None
        names = self.listings[key] or []
        start = _literal_start(segment)
        match = re.compile(fnmatch.translate(segment)).match
        out = []
        for name in names[bisect.bisect_left(names, start) :]:
            if not name.startswith(start):
                break
            if match(name) and (segment.startswith(".") or not name.startswith(".")):
                out.append(name)
        return out

    def _first_name(self, path: Path) -> bool:
        """False (reported) when `path` is a second name of a file already found."""
        try:
            st = path.stat()
        except OSError:
            return False
        first = self.files.setdefault((st.st_dev, st.st_ino), path)
        if first != path:
            self._report(
                path, f"the same file as {first} (a link); read once, as {first.name}",
                "duplicate file",
            )  # fmt: skip
        return first == path

    def _tree(self, top: Path):
        """`top` and every folder below it (not hidden), breadth first, each real folder
        once: a link to a folder already listed (a loop leads back to a folder above it,
        which breadth first has always listed before) is reported and not entered."""
        seen: dict[tuple[int, int], Path] = {}
        queue = collections.deque([top])
        while queue:
            folder = queue.popleft()
            try:
                st = folder.stat()
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                first = seen[key]
                if folder.is_relative_to(first):
                    why = (
                        f"symbolic link loop: it leads back to {first}; each folder is read "
                        "once, so the link is not followed (remove it, or skip it with "
                        "--config.on_error=skip)"
                    )
                    self._report(folder, why, "symlink loop")
                else:
                    why = f"the same folder as {first} (a link); read once, from there"
                    self._report(folder, why, "duplicate folder")
                continue
            seen[key] = folder
            yield folder
            try:  # real folders before links, so a folder is read under its own name
                entries = sorted(os.scandir(folder), key=lambda e: (e.is_symlink(), e.name))
            except OSError:
                continue
            for entry in entries:
                try:
                    is_dir = entry.is_dir()  # follows links
                except OSError:
                    continue
                if is_dir and not entry.name.startswith("."):
                    queue.append(folder / entry.name)

    def _report(self, path: Path, message: str, kind: str) -> None:
        if self.log is not None and str(path) not in self.reported:
            self.reported.add(str(path))
            self.log.report(str(path), message, kind)


def stem_of(path: Path, base: Path, pattern: str) -> str:
    """The image id: path relative to `base`, minus the pattern's literal suffix.

    The suffix is what follows the pattern's last `*`, so `*_im.jpg` turns `a/b_im.jpg` into
    `a/b`, and `*.jpg` turns `x.jpg` into `x`.
    """
    rel = path.relative_to(base).as_posix()
    suffix = pattern.rsplit("*", 1)[-1]
    return rel[: len(rel) - len(suffix)] if suffix and rel.endswith(suffix) else rel


def expand_with_stem(
    base: Path,
    patterns: Sequence[str],
    stem: str,
    log: IssueLog | None = None,
    listings: dict[str, list[str] | None] | None = None,
) -> list[Path]:
    """Files matching `patterns` with `{stem}` replaced by the (glob-escaped) image stem."""
    escaped = glob.escape(stem)
    return find_files(base, [p.replace("{stem}", escaped) for p in patterns], log, listings)


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
    reported to `log` and left out, and so is a second image with the id of another.
    """
    for pattern in opts[globs_key]:
        if "{stem}" not in pattern:
            raise ValueError(
                f"options.{globs_key}: pattern {pattern!r} has no {{stem}}, so every image "
                f"would get every {what} it matches; write e.g. '{{stem}}.png' or "
                "'{stem}/*.png'"
            )
    image_dir = resolve(root, opts["image_dir"], split_tag)
    files_dir = resolve(root, opts[dir_key], split_tag)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: image folder does not exist")
    if not files_dir.is_dir():
        raise FileNotFoundError(
            f"{files_dir}: {what} folder does not exist (options.{dir_key}={opts[dir_key]!r})"
        )
    items: dict[str, tuple[str, Path, tuple[Path, ...]]] = {}
    taken: set[Path] = set()
    walk = _Walk(image_dir, log)  # one walk: an image reached by two patterns counts once
    listings: dict[str, list[str] | None] = {}
    for pattern in opts["image_globs"]:
        for path in walk.match(pattern):
            if path in taken:
                continue
            taken.add(path)
            stem = stem_of(path, image_dir, pattern)
            if stem in items:
                log.report(
                    str(path),
                    f"image id {stem!r} is taken by {items[stem][1]}, found first (ids are "
                    "paths minus the image_globs suffix); rename one of them",
                    "duplicate image id",
                )
                continue
            files = expand_with_stem(files_dir, opts[globs_key], stem, log, listings)
            files = [f for f in files if f != path]
            if not files:
                log.report(
                    str(path),
                    f"no {what} matches {opts[globs_key]} under {files_dir}",
                    "image without masks",
                )
                continue
            items[stem] = (stem, path, tuple(files))
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
    foreground where `value >= threshold`. An empty result is reported with the values the
    file holds and the rule that applied (`{0, 100}` under `auto` is no 8-bit mask).
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
    cut, rule = threshold_rule(values, threshold)
    mask = values >= cut
    if not mask.any():
        log.report(str(path), empty_mask_message(values, rule), "empty mask")
        return None
    return mask


def threshold_rule(values: np.ndarray, threshold: Any) -> tuple[float, str]:
    """(cut, rule): foreground is `values >= cut`; `rule` says why, for messages.

    `auto` reads a mask by its largest value: at most 1, a 0/1 mask (foreground nonzero);
    at most 255, an 8-bit mask cut at half (>= 128, so anti-aliased DIS/HRSOD edges split
    in the middle); above, a 16-bit mask (>= 32768)."""
    if threshold != "auto":
        cut = float(threshold)
        return cut, f"mask_threshold={threshold} keeps values >= {threshold}"
    top = int(values.max()) if values.size else 0
    if top <= 1:
        return 1, "mask_threshold='auto' keeps nonzero pixels of a 0/1 mask"
    kind, cut = ("an 8-bit", 128) if top <= 255 else ("a 16-bit", 32768)
    return cut, (
        f"mask_threshold='auto' takes a mask whose largest value is {top} as {kind} mask "
        f"and keeps values >= {cut}"
    )


def empty_mask_message(values: np.ndarray, rule: str) -> str:
    """Why a mask has no foreground: the values it holds and the rule that dropped them."""
    found = np.unique(values)
    if found.size == 1 and found[0] == 0:
        return "mask is empty (every pixel is 0)"
    shown = ", ".join(str(int(v)) for v in found[:8]) + (", ..." if found.size > 8 else "")
    return (
        f"mask has no foreground pixel: values found {{{shown}}}, and {rule}. If every "
        "nonzero pixel is foreground, set --config.options.mask_threshold=1; if the values "
        "are labels (one mask per value), use --config.format=label_map"
    )


def check_threshold(value: Any) -> None:
    """Raises ValueError unless `value` is 'auto' or a finite number (`mask_threshold`)."""
    if value == "auto":
        return
    try:
        ok = not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"options.mask_threshold={value!r}: must be 'auto' or a number (foreground is "
            "value >= threshold), e.g. --config.options.mask_threshold=1"
        )


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
