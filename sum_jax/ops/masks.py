"""Small mask primitives shared by every stage: boxes, IoU from pixel counts, erosion, stability.

One box convention everywhere: `(x0, y0, x1, y1)` with inclusive pixel indices (the box of a
single pixel at (x, y) is (x, y, x, y)), as the official `batched_mask_to_box`; empty masks
give a zero box and `valid=False`. Functions take any leading axes `[..., H, W]`, run under
`jit`, and accept NumPy arrays on the host.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sum_jax.ops.distance import line_distance

Array = jax.Array


def mask_to_box(masks: Array) -> tuple[Array, Array]:
    """Tight boxes `i32[..., 4]` (inclusive, see the module docstring) of boolean masks
    `[..., H, W]` and `valid bool[...]` (False for empty masks, whose box is zeros)."""
    masks = jnp.asarray(masks) > 0
    h, w = masks.shape[-2:]
    rows, cols = masks.any(axis=-1), masks.any(axis=-2)
    ys, xs = jnp.arange(h, dtype=jnp.int32), jnp.arange(w, dtype=jnp.int32)
    y0 = jnp.min(jnp.where(rows, ys, h), axis=-1)
    y1 = jnp.max(jnp.where(rows, ys, -1), axis=-1)
    x0 = jnp.min(jnp.where(cols, xs, w), axis=-1)
    x1 = jnp.max(jnp.where(cols, xs, -1), axis=-1)
    valid = rows.any(axis=-1)
    box = jnp.stack([x0, y0, x1, y1], axis=-1)
    return jnp.where(valid[..., None], box, 0), valid


def iou_counts(pred: Array, gt: Array) -> tuple[Array, Array]:
    """Batched `(intersection, union)` pixel counts `i32[...]` over the last two axes."""
    # `where`, not a bool-to-int conversion: XLA:CPU (jax 0.10) miscompiles the sum of
    # `(logits > 0) | gt` when the logits come from the model in the same program (unions
    # off by -2|gt|, even negative; seen in the evaluator's rounds at 512 x 1024).
    count = lambda m: jnp.sum(jnp.where(m, 1, 0), axis=(-2, -1), dtype=jnp.int32)
    return count(pred & gt), count(pred | gt)


def iou_from_counts(inter, union, empty: float = 1.0):
    """`inter / union`, and `empty` where the union is 0 (1.0 for IoU: two empty masks agree).

    NumPy counts give float64 on the host (the evaluator's ratios); JAX counts give float32.
    """
    if isinstance(inter, np.ndarray) and isinstance(union, np.ndarray):
        inter, union = inter.astype(np.float64), union.astype(np.float64)
        return np.where(union > 0, inter / np.maximum(union, 1.0), empty)
    inter, union = jnp.asarray(inter, jnp.float32), jnp.asarray(union, jnp.float32)
    return jnp.where(union > 0, inter / jnp.maximum(union, 1.0), empty).astype(jnp.float32)


def erode(mask: Array, d: Array | int) -> Array:
    """`mask` eroded `d` times by a 3x3 square, zero padded; `d` may be traced (`[...]`)."""
    d = jnp.asarray(d, jnp.int32)[..., None, None]
    horizontal = line_distance(mask, axis=-1) > d
    return line_distance(horizontal, axis=-2) > d


def boundary_iou_counts(pred: Array, gt: Array, dilation: Array | int) -> tuple[Array, Array]:
    """Batched boundary `(intersection, union)` counts with band width `dilation` pixels (from
    `sum_jax.ops.metrics.boundary_dilation` of the original image size)."""
    return iou_counts(pred & ~erode(pred, dilation), gt & ~erode(gt, dilation))


def stability_score(logits: Array, offset: float, threshold: float = 0.0) -> Array:
    """SAM's stability: IoU of the masks at `threshold + offset` and `threshold - offset`
    (`[..., H, W]` logits; 0 when both are empty, as the official `calculate_stability_score`)."""
    inter = jnp.sum(logits > threshold + offset, axis=(-1, -2), dtype=jnp.int32)
    union = jnp.sum(logits > threshold - offset, axis=(-1, -2), dtype=jnp.int32)
    return iou_from_counts(inter, union, empty=0.0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU `[A, B]` of boxes `[A, 4]`, `[B, 4]` with areas `(x1 - x0) * (y1 - y0)`, as
    torchvision's `box_iou` (what the official generator's NMS uses)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    return iou_from_counts(inter, area_a[:, None] + area_b[None, :] - inter, empty=0.0)
