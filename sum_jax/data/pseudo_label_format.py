"""On-disk format of pseudo-labels and uncertainty maps for unlabelled images (one file each).

Written by the pseudo-label stage (SAM's automatic mask generator, §3.2/App. B.1), completed by
the uncertainty stage (`u = |sigmoid(sam_logits) - sigmoid(refined_logits)|`, §3.2.3), read by
the training pipeline. One file per image, `<dir>/<image_id>.npz`, so hosts write their shard
of images independently and a stage can resume by skipping files that exist.

The file is an *uncompressed* `.npz` (a zip of `.npy` arrays, loadable with plain
`numpy.load(allow_pickle=False)`) whose large members are already compressed per mask, so the
loader inflates only the masks it samples. Members (K = number of kept masks):

| member                | dtype / shape     | content                                            |
|-----------------------|-------------------|----------------------------------------------------|
| `format_version`      | int32 []          | 1                                                  |
| `image_size`          | int32 [2]         | original (H, W)                                    |
| `rle`, `rle_offsets`  | uint8 [*], int64 [K+1] | COCO compressed RLE counts of each mask at (H, W), concatenated |
| `points`              | float32 [K, 2]    | generating point (x, y), original-image pixels     |
| `predicted_iou`       | float32 [K]       | SAM's IoU prediction                               |
| `stability_score`     | float32 [K]       | IoU of the masks at logit thresholds -1 and +1     |
| `logit_temperature`   | float32 []        | T of the logit quantisation below                  |
| `map_size`            | int32 []          | side L of the low-res maps (256 for SAM; absent means 256) |
| `logits`, `logits_offsets` | uint8 [*], int64 [K+1] | per mask: zlib(uint8 [L, L]) quantised logits |
| `uncertainty`, `uncertainty_offsets` | uint8 [*], int64 [K+1] | per mask: zlib(uint8 [L, L]) `round(255 u)`; absent until the uncertainty stage ran |

Maps are in SAM's low-res frame: the padded 1024 x 1024 input downsampled by 4 (what
`Sam.decode` returns as `low_res_logits`). Logits are stored as `q = round(255 *
sigmoid(x / T))`, T = 2: uniform precision in probability space, where `u` is computed
(|error| <= 0.004 in probability), logits clipped to |x| <= 12.5, and saturated regions become
constant runs that compress to almost nothing. A stage that trains on these logits (the mask-
refinement module) should pass its own SAM logits through `quantize_logits` /
`dequantize_logits` so that it trains on what it will later read.

Writes are atomic (temporary file in the same folder, fsync, `os.replace`): a reader sees the
old file or the new one, never a partial one. Size for 30 masks on SA-1B-sized images: see
docs/data.md (173 KB with uncertainty in a pessimistic synthetic case, 113 KB at
SAM-like boundary sharpness).
"""

from __future__ import annotations

import dataclasses
import io
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sum_jax.data import rle
from sum_jax.fileio import as_path, atomic_write, is_remote

FORMAT_VERSION = 1
LOW_RES = 256
DEFAULT_TEMPERATURE = 2.0
SUFFIX = ".npz"


def quantize_logits(logits: np.ndarray, temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """uint8 `round(255 * sigmoid(logits / T))`."""
    p = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64) / temperature))
    return np.round(255.0 * p).astype(np.uint8)


def dequantize_logits(q: np.ndarray, temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """float32 logits of quantised values (0 and 255 map to the finite ends, +-12.47 at T=2)."""
    p = (np.clip(np.asarray(q, np.float64), 0.5, 254.5)) / 255.0
    return (temperature * np.log(p / (1.0 - p))).astype(np.float32)


def quantize_uncertainty(u: np.ndarray) -> np.ndarray:
    """uint8 `round(255 * u)` of u in [0, 1]; uint8 input is taken as already quantised."""
    u = np.asarray(u)
    if u.dtype == np.uint8:
        return u
    return np.round(255.0 * np.clip(u, 0.0, 1.0)).astype(np.uint8)


def path_for(directory: str | os.PathLike, image_id: str) -> Path:
    return as_path(directory) / f"{image_id}{SUFFIX}"


def _pack(blobs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return np.frombuffer(b"".join(blobs), np.uint8), offsets


def _unpack(data: np.ndarray, offsets: np.ndarray, index: int) -> bytes:
    return data[offsets[index] : offsets[index + 1]].tobytes()


def _compress_maps(maps: np.ndarray) -> list[bytes]:
    # Level 6: within 3% of level 9's size at half the time (measured on 256x256 maps).
    return [zlib.compress(np.ascontiguousarray(m).tobytes(), 6) for m in maps]


@dataclasses.dataclass
class PseudoLabels:
    """One image's pseudo-labels; per-mask maps stay compressed until asked for."""

    image_id: str
    height: int
    width: int
    masks: list[bytes]
    points: np.ndarray
    predicted_iou: np.ndarray
    stability_score: np.ndarray
    logit_temperature: float
    logits_blobs: list[bytes]
    uncertainty_blobs: list[bytes] | None = None
    # Side of the square low-res maps: 256 for SAM; the model's `low_res_size` in general.
    map_size: int = LOW_RES

    @property
    def num_masks(self) -> int:
        return len(self.masks)

    @property
    def has_uncertainty(self) -> bool:
        return self.uncertainty_blobs is not None

    def _maps(self, blobs: Sequence[bytes], indices: Sequence[int] | None) -> np.ndarray:
        idx = range(self.num_masks) if indices is None else indices
        size = self.map_size
        out = np.empty((len(idx), size, size), np.uint8)
        for j, k in enumerate(idx):
            out[j] = np.frombuffer(zlib.decompress(blobs[k]), np.uint8).reshape(size, size)
        return out

    def logits_quantized(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """uint8 [n, L, L] quantised logits of the masks at `indices` (all if None)."""
        return self._maps(self.logits_blobs, indices)

    def logits(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """float32 [n, L, L] (dequantised) SAM low-res logits."""
        return dequantize_logits(self.logits_quantized(indices), self.logit_temperature)

    def uncertainty(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """uint8 [n, L, L] `round(255 u)`; zeros when no uncertainty was written yet."""
        if self.uncertainty_blobs is None:
            n = self.num_masks if indices is None else len(indices)
            return np.zeros((n, self.map_size, self.map_size), np.uint8)
        return self._maps(self.uncertainty_blobs, indices)

    def decode_masks(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """bool [n, H, W] masks at the original resolution."""
        idx = range(self.num_masks) if indices is None else indices
        return rle.decode_many([self.masks[k] for k in idx], self.height, self.width)


def _as_rle(masks, height: int, width: int) -> list[bytes]:
    out = []
    for m in masks:
        if isinstance(m, (bytes, str)):
            counts = m.encode() if isinstance(m, str) else m
            rle.validate(counts, height, width)
            out.append(counts)
        else:
            m = np.asarray(m)
            if m.shape != (height, width):
                raise ValueError(f"mask shape {m.shape} differs from image size {(height, width)}")
            out.append(rle.encode(m))
    return out


def _check_maps(name: str, maps: np.ndarray, k: int, size: int) -> None:
    if maps.shape != (k, size, size):
        raise ValueError(f"{name} must be [{k}, {size}, {size}], got {maps.shape}")


def write(
    directory: str | os.PathLike,
    image_id: str,
    *,
    height: int,
    width: int,
    masks: Sequence[bytes | np.ndarray],
    low_res_logits: np.ndarray,
    points: np.ndarray,
    predicted_iou: np.ndarray,
    stability_score: np.ndarray,
    uncertainty: np.ndarray | None = None,
    logit_temperature: float = DEFAULT_TEMPERATURE,
) -> Path:
    """Writes one image's pseudo-labels atomically; returns the file's path.

    Args:
      masks: K masks at (height, width): COCO RLE counts or boolean arrays.
      low_res_logits: float [K, L, L] SAM logits (L = 256 for SAM) (or uint8 already quantised at
        `logit_temperature`).
      points: [K, 2] generating points (x, y) in original-image pixels.
      predicted_iou, stability_score: [K].
      uncertainty: optional [K, L, L], float u in [0, 1] or uint8 `round(255 u)`.
    """
    rles = _as_rle(masks, height, width)
    k = len(rles)
    logits = np.asarray(low_res_logits)
    size = logits.shape[-1] if logits.ndim == 3 else LOW_RES
    _check_maps("low_res_logits", logits, k, size)
    q = logits if logits.dtype == np.uint8 else quantize_logits(logits, logit_temperature)
    labels = PseudoLabels(
        image_id=image_id,
        height=int(height),
        width=int(width),
        masks=rles,
        points=np.asarray(points, np.float32).reshape(k, 2),
        predicted_iou=np.asarray(predicted_iou, np.float32).reshape(k),
        stability_score=np.asarray(stability_score, np.float32).reshape(k),
        logit_temperature=float(logit_temperature),
        logits_blobs=_compress_maps(q),
        map_size=size,
    )
    if uncertainty is not None:
        u = quantize_uncertainty(uncertainty)
        _check_maps("uncertainty", u, k, size)
        labels.uncertainty_blobs = _compress_maps(u)
    return write_labels(directory, labels)


def write_labels(directory: str | os.PathLike, labels: PseudoLabels) -> Path:
    """Atomically writes a `PseudoLabels` (e.g. one read back and completed)."""
    arrays = {
        "format_version": np.int32(FORMAT_VERSION),
        "image_size": np.array([labels.height, labels.width], np.int32),
        "points": labels.points,
        "predicted_iou": labels.predicted_iou,
        "stability_score": labels.stability_score,
        "logit_temperature": np.float32(labels.logit_temperature),
        "map_size": np.int32(labels.map_size),
    }
    arrays["rle"], arrays["rle_offsets"] = _pack(labels.masks)
    arrays["logits"], arrays["logits_offsets"] = _pack(labels.logits_blobs)
    if labels.uncertainty_blobs is not None:
        arrays["uncertainty"], arrays["uncertainty_offsets"] = _pack(labels.uncertainty_blobs)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = path_for(directory, labels.image_id)
    atomic_write(path, buffer.getvalue())
    return path


def read(directory: str | os.PathLike, image_id: str) -> PseudoLabels:
    """Reads one image's pseudo-labels; a missing or unreadable file raises, naming it."""
    path = path_for(directory, image_id)
    try:
        # gs://: one read of the whole object (np.load seeks about in a zip).
        source = io.BytesIO(path.read_bytes()) if is_remote(path) else path
        with np.load(source, allow_pickle=False) as z:
            members = {name: z[name] for name in z.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no pseudo-labels for image {image_id!r}") from None
    except Exception as e:  # zipfile/numpy raise various types for damaged files.
        raise ValueError(f"{path}: unreadable pseudo-label file ({e})") from e
    version = int(members.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path}: pseudo-label format version {version}, expected {FORMAT_VERSION}"
        )
    k = len(members["rle_offsets"]) - 1
    height, width = (int(v) for v in members["image_size"])
    unc = None
    if "uncertainty" in members:
        unc = [_unpack(members["uncertainty"], members["uncertainty_offsets"], i) for i in range(k)]
    return PseudoLabels(
        image_id=image_id,
        height=height,
        width=width,
        masks=[_unpack(members["rle"], members["rle_offsets"], i) for i in range(k)],
        points=members["points"],
        predicted_iou=members["predicted_iou"],
        stability_score=members["stability_score"],
        logit_temperature=float(members["logit_temperature"]),
        logits_blobs=[_unpack(members["logits"], members["logits_offsets"], i) for i in range(k)],
        uncertainty_blobs=unc,
        map_size=int(members.get("map_size", LOW_RES)),
    )


def add_uncertainty(
    directory: str | os.PathLike,
    image_id: str,
    uncertainty: np.ndarray,
    *,
    output_directory: str | os.PathLike | None = None,
) -> Path:
    """Adds (or replaces) the uncertainty maps of an existing file, atomically; with
    `output_directory`, the completed file is written there and the original is kept."""
    labels = read(directory, image_id)
    u = quantize_uncertainty(uncertainty)
    _check_maps("uncertainty", u, labels.num_masks, labels.map_size)
    labels.uncertainty_blobs = _compress_maps(u)
    return write_labels(directory if output_directory is None else output_directory, labels)


def exists(directory: str | os.PathLike, image_id: str) -> bool:
    return path_for(directory, image_id).is_file()


def problem(
    directory: str | os.PathLike, image_id: str, *, uncertainty: bool = False
) -> str | None:
    """Why an existing file cannot be resumed from (None: it reads completely).

    Reads every member and inflates every map (and, with `uncertainty`, requires the maps of
    the uncertainty stage): what a later stage would read, checked before a rerun skips it.
    """
    try:
        labels = read(directory, image_id)
        k = labels.num_masks
        sizes = {len(labels.points), len(labels.predicted_iou), len(labels.stability_score)}
        if sizes != {k}:
            return f"{path_for(directory, image_id)}: {k} masks but per-mask arrays of {sizes}"
        labels.logits_quantized()
        if uncertainty:
            if not labels.has_uncertainty:
                return f"{path_for(directory, image_id)}: no uncertainty maps"
            labels.uncertainty()
    except (OSError, ValueError, KeyError, zlib.error) as e:
        return (
            str(e)
            if str(path_for(directory, image_id)) in str(e)
            else (f"{path_for(directory, image_id)}: {e}")
        )
    return None
