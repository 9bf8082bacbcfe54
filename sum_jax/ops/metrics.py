"""Segmentation metrics for interactive evaluation (§4.1, App. B.3): IoU, boundary IoU, NoC.

Everything here is NumPy/SciPy on host arrays at the ground truth's original resolution; it is
the reference that the on-device versions in `sum_jax.ops.clicks` are tested against.

Conventions:
- Masks are boolean `[H, W]` arrays (anything else is compared with `!= 0`).
- When the union is empty (prediction and ground truth both empty), IoU and boundary IoU are
  defined as 1.0: the prediction agrees with the ground truth perfectly. For boundary IoU the
  boundary union is empty exactly when both masks are empty (a non-empty mask always has a
  non-empty boundary), so the two conventions coincide.
- Boundary IoU follows Cheng et al. 2021 (the reference `boundary_iou` code): the boundary of a
  mask is the mask minus its erosion by a 3x3 square repeated `d` times on a zero-padded mask,
  `d = max(1, round(dilation_ratio * sqrt(H^2 + W^2)))` with Python's round (half to even).
  `d` repeated 3x3 erosions equal one erosion by a `(2d+1) x (2d+1)` square, computed here with
  two separable 1-D minimum filters.
- NoC@t (number of clicks, Xu et al. / RITM): the first round whose IoU reaches `t`; when no
  round does, the maximum number of clicks, and the object counts as a failure (NoF).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def _as_bool(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a [H, W] mask, got shape {mask.shape}")
    return mask if mask.dtype == bool else mask != 0


def _check_same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two boolean `[H, W]` masks; 1.0 when both are empty."""
    pred, gt = _as_bool(pred), _as_bool(gt)
    _check_same_shape(pred, gt)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & gt) / union)


def boundary_dilation(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """The boundary width `d` in pixels for an image of `height x width` (at least 1)."""
    # Python's round (half to even) and float64, as the reference implementation.
    return max(1, round(dilation_ratio * float(np.sqrt(height**2 + width**2))))


def erode(mask: np.ndarray, d: int) -> np.ndarray:
    """The mask eroded `d` times by a 3x3 square, pixels outside the image counting as 0."""
    mask = _as_bool(mask)
    size = 2 * d + 1
    out = ndimage.minimum_filter1d(mask.astype(np.uint8), size, axis=0, mode="constant", cval=0)
    out = ndimage.minimum_filter1d(out, size, axis=1, mode="constant", cval=0)
    return out.astype(bool)


def mask_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """The inner boundary band of a mask: the mask minus its erosion (Cheng et al. 2021)."""
    mask = _as_bool(mask)
    d = boundary_dilation(*mask.shape, dilation_ratio=dilation_ratio)
    return mask & ~erode(mask, d)


def boundary_iou(pred: np.ndarray, gt: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU (Cheng et al. 2021) of two boolean `[H, W]` masks; 1.0 when both are empty.

    The band width is `dilation_ratio` of the image diagonal (the shared `[H, W]` frame, so
    call it at the ground truth's original resolution).
    """
    pred, gt = _as_bool(pred), _as_bool(gt)
    _check_same_shape(pred, gt)
    return iou(mask_boundary(pred, dilation_ratio), mask_boundary(gt, dilation_ratio))


def number_of_clicks(ious: Sequence[float] | np.ndarray, threshold: float, max_clicks: int = 20):
    """NoC@threshold for one object: `(clicks, failed)`.

    Args:
      ious: IoU after click 1, 2, ... (at least `max_clicks` values are looked at; fewer
        rounds mean the object could not reach the threshold within them).
      threshold: e.g. 0.85 or 0.90; reached when `iou >= threshold`.
      max_clicks: the click budget (20 in the literature).

    Returns:
      `(noc, failed)`: the 1-based first round reaching the threshold, or `max_clicks` with
      `failed=True` when none of the first `max_clicks` rounds does.
    """
    arr = np.asarray(ious, dtype=np.float64)[:max_clicks]
    hit = np.flatnonzero(arr >= threshold)
    if hit.size == 0:
        return max_clicks, True
    return int(hit[0]) + 1, False
