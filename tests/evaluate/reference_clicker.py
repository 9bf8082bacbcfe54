"""Deterministic clicks for interactive-segmentation evaluation (App. B.3), NumPy/SciPy.

This is the reference semantics; `sum_jax.ops.clicks` is the same protocol in `jax.numpy`
for the on-device rounds, and the tests check that both agree exactly.

The protocol (Xu et al. 2016, as implemented by RITM and used by SAM):
- The *depth* of a pixel in a region is its Euclidean distance to the nearest pixel outside
  the region, the image being zero padded by one pixel (so a region touching the image border
  is one pixel deep there). Depths are compared as exact integer squared distances.
- The first click is the deepest pixel of the ground truth: `next_click(gt, zeros, ones)`.
- Each next click looks at the false negatives `gt & ~pred` and false positives `pred & ~gt`:
  the depth is computed in the whole region, then the already clicked pixels
  (`not_clicked` False) are set to depth 0 (RITM's `fn_mask_dt * self.not_clicked_map`,
  after the distance transform, not before), and the click goes to the deepest pixel of the
  region that reaches deeper: a positive click in the false negatives, a negative one in the
  false positives. When both reach equally deep, the click is negative (RITM's
  `is_positive = fn_max_dist > fp_max_dist`).
- Ties between pixels of equal depth go to the first one in row-major order (`np.argmax`).
- When no error pixel is left (perfect prediction, or an empty ground truth at the first
  click), there is no click: `next_click` returns None.

Boundary sampling (App. F.2): the first click is instead taken near the ground truth's edge.
`boundary_click` takes the pixels of the ground truth at most `band` pixels deep (the mask
minus its erosion by a disk of radius `band`; 10 px in the paper) and returns their row-major
median, i.e. element `n // 2` of the `n` band pixels in row-major order: a point inside the
mask yet away from its centre.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

Click = tuple[tuple[int, int], bool]


def _as_bool(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a [H, W] mask, got shape {mask.shape}")
    return mask if mask.dtype == bool else mask != 0


def squared_depth(region: np.ndarray) -> np.ndarray:
    """int64 `[H, W]`: squared Euclidean distance of each region pixel to the nearest pixel
    outside the region, with the image zero padded by one pixel; 0 outside the region."""
    region = _as_bool(region)
    if not region.any():
        return np.zeros(region.shape, np.int64)
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    # Squared distances are integers; rint undoes the float sqrt exactly at these magnitudes.
    return np.rint(dist * dist).astype(np.int64)


def _deepest(region: np.ndarray, not_clicked: np.ndarray) -> tuple[int, tuple[int, int]]:
    """(max squared depth in `region` over the pixels not clicked, first row-major pixel
    reaching it)."""
    depth = squared_depth(region) * not_clicked
    idx = int(np.argmax(depth))
    y, x = divmod(idx, region.shape[1])
    return int(depth.flat[idx]), (y, x)


def next_click(gt: np.ndarray, pred: np.ndarray, not_clicked: np.ndarray) -> Click | None:
    """The next evaluation click for boolean `[H, W]` ground truth and prediction.

    Args:
      gt: the ground-truth mask.
      pred: the current prediction (all False before the first click).
      not_clicked: False at pixels already clicked (all True before the first click).

    Returns:
      `((y, x), is_positive)`, or None when there is no error pixel left to click.
    """
    gt, pred, not_clicked = _as_bool(gt), _as_bool(pred), _as_bool(not_clicked)
    if not (gt.shape == pred.shape == not_clicked.shape):
        raise ValueError(f"shapes differ: {gt.shape}, {pred.shape}, {not_clicked.shape}")
    fn_depth, fn_yx = _deepest(gt & ~pred, not_clicked)
    fp_depth, fp_yx = _deepest(pred & ~gt, not_clicked)
    if fn_depth == 0 and fp_depth == 0:
        return None
    if fn_depth > fp_depth:
        return fn_yx, True
    return fp_yx, False


def boundary_click(gt: np.ndarray, band: float = 10.0) -> Click | None:
    """First click of the boundary-sampling variant (App. F.2), positive; None if `gt` is empty.

    The band is the ground-truth pixels with depth at most `band` (Euclidean, zero padded);
    the click is its row-major median (element `n // 2` of its `n` pixels).
    """
    gt = _as_bool(gt)
    depth = squared_depth(gt)
    in_band = gt & (depth <= band * band)
    flat = np.flatnonzero(in_band)
    if flat.size == 0:
        return None
    y, x = divmod(int(flat[flat.size // 2]), gt.shape[1])
    return (y, x), True


def mask_box(gt: np.ndarray) -> tuple[int, int, int, int] | None:
    """The tight box `(x0, y0, x1, y1)` of a mask in pixel indices, max inclusive (SAM's
    `batched_mask_to_box` convention); None for an empty mask."""
    gt = _as_bool(gt)
    rows, cols = np.flatnonzero(gt.any(axis=1)), np.flatnonzero(gt.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])
