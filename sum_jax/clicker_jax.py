"""The evaluation click protocol and metrics in `jax.numpy`, for rounds that run on device.

Same semantics as `sum_jax.clicker` and `sum_jax.metrics` (read their docstrings), written
with static shapes so that it can live inside `jax.jit` / `jax.lax.scan`, batched over any
leading axes `[..., H, W]`. The tests check exact agreement with the NumPy/SciPy versions.

Masks may sit in a larger padded frame: as long as the padding is False in every input mask,
results equal those on the unpadded `[H, W]` masks, because both the click protocol and the
boundary erosion treat pixels outside the image as 0 (zero padding).

Exact Euclidean distance transform. The squared depth of a pixel (distance to the nearest
pixel outside the region, zero padded) is computed in two separable passes (as Felzenszwalb
& Huttenlocher): `g(y, x)`, the distance to the nearest outside pixel in the same column, from
running max/min of outside-pixel indices (`lax.cummax` / `lax.cummin`, O(HW)); then
`D(y, x) = min_k g(y, x -+ k)^2 + k^2` along the shorter image axis, as a `lax.while_loop`
over the offset `k` with whole-array min operations (O(HW) memory). The loop stops as soon
as `k^2` reaches the largest depth found so far, since larger offsets cannot improve any
pixel: it runs (largest depth + 1) steps, not W. All in int32, so comparisons of depths are
exact. (The lower-envelope scan of the original algorithm is sequential per row and maps
badly onto accelerators.)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def line_distance(mask: Array, axis: int) -> Array:
    """int32: distance along `axis` from each pixel to the nearest False pixel, with the
    array zero padded by one at both ends of that axis; 0 where `mask` is False."""
    axis = axis % mask.ndim
    n = mask.shape[axis]
    shape = [1] * mask.ndim
    shape[axis] = n
    idx = jnp.arange(n, dtype=jnp.int32).reshape(shape)
    last_zero = lax.cummax(jnp.where(mask, -1, idx), axis=axis)
    next_zero = lax.cummin(jnp.where(mask, n, idx), axis=axis, reverse=True)
    return jnp.minimum(idx - last_zero, next_zero - idx)


def squared_depth(region: Array) -> Array:
    """int32 `[..., H, W]`: exact squared Euclidean distance of each region pixel to the
    nearest pixel outside the region (zero padded); 0 outside the region."""
    h, w = region.shape[-2:]
    if w > h:  # the offset loop runs along the shorter axis
        return jnp.swapaxes(squared_depth(jnp.swapaxes(region, -1, -2)), -1, -2)
    g = line_distance(region, axis=-2)  # vertical distance, [..., H, W]
    g2 = g * g
    x = jnp.arange(w, dtype=jnp.int32)
    # Offset 0 and the zero padding left of column 0 / right of column W - 1.
    border = jnp.minimum((x + 1) ** 2, (w - x) ** 2)
    depth = jnp.where(region, jnp.minimum(g2, border), 0)
    # Columns beyond the image are covered by `border`; pad with a value that never wins
    # (wide enough for the unrolled offsets below, so slices are never clamped).
    unroll = 4
    p = w + unroll
    pad = [(0, 0)] * (g2.ndim - 1) + [(p, p)]
    g2p = jnp.pad(g2, pad, constant_values=jnp.int32(2**30))

    def cond(state):
        k, depth = state
        # Offsets >= k add at least k^2: once that reaches the largest depth, we are done.
        return (k < w) & (k * k < jnp.max(depth))

    def body(state):
        k, depth = state
        for j in range(unroll):  # a few offsets per convergence check (a full reduction)
            kj = k + j
            left = lax.dynamic_slice_in_dim(g2p, p - kj, w, axis=-1)  # g2[..., x - kj]
            right = lax.dynamic_slice_in_dim(g2p, p + kj, w, axis=-1)  # g2[..., x + kj]
            depth = jnp.minimum(depth, jnp.minimum(left, right) + kj * kj)
        return k + unroll, depth

    _, depth = lax.while_loop(cond, body, (jnp.int32(1), depth))
    return depth


def deepest(region: Array) -> tuple[Array, Array]:
    """Max squared depth `[...]` and the first row-major pixel `(y, x)` `[..., 2]` reaching it
    (pixel (0, 0) with depth 0 for an empty region)."""
    h, w = region.shape[-2:]
    depth = squared_depth(region).reshape(region.shape[:-2] + (h * w,))
    idx = jnp.argmax(depth, axis=-1)  # first occurrence, like np.argmax
    best = jnp.take_along_axis(depth, idx[..., None], axis=-1)[..., 0]
    yx = jnp.stack([idx // w, idx % w], axis=-1).astype(jnp.int32)
    return best, yx


def next_click(gt: Array, pred: Array, not_clicked: Array) -> tuple[Array, Array, Array]:
    """Batched `sum_jax.clicker.next_click`.

    Args:
      gt, pred, not_clicked: bool `[..., H, W]`.

    Returns:
      `yx i32[..., 2]`, `is_positive bool[...]` and `valid bool[...]` (False where the NumPy
      version returns None: no error pixel left; `yx` is then (0, 0)).
    """
    fn_depth, fn_yx = deepest(gt & ~pred & not_clicked)
    fp_depth, fp_yx = deepest(pred & ~gt & not_clicked)
    positive = fn_depth > fp_depth
    yx = jnp.where(positive[..., None], fn_yx, fp_yx)
    valid = (fn_depth > 0) | (fp_depth > 0)
    return yx, positive & valid, valid


def boundary_click(gt: Array, band: float = 10.0) -> tuple[Array, Array]:
    """Batched `sum_jax.clicker.boundary_click`: `yx i32[..., 2]` and `valid bool[...]`."""
    h, w = gt.shape[-2:]
    # Squared depths are integers: D <= band^2 exactly when D <= floor(band^2).
    in_band = gt & (squared_depth(gt) <= math.floor(band * band))
    flat = in_band.reshape(gt.shape[:-2] + (h * w,))
    n = jnp.sum(flat, axis=-1, dtype=jnp.int32)
    # The pixel whose inclusive running count first reaches n // 2 + 1.
    rank = jnp.cumsum(flat, axis=-1, dtype=jnp.int32)
    idx = jnp.argmax(flat & (rank == (n // 2 + 1)[..., None]), axis=-1)
    yx = jnp.stack([idx // w, idx % w], axis=-1).astype(jnp.int32)
    return yx, n > 0


def mask_box(gt: Array) -> tuple[Array, Array]:
    """Batched tight boxes `(x0, y0, x1, y1)` `i32[..., 4]` (max inclusive, SAM's convention)
    and `valid bool[...]` (False for empty masks, whose box is zeros)."""
    h, w = gt.shape[-2:]
    rows, cols = gt.any(axis=-1), gt.any(axis=-2)
    ys, xs = jnp.arange(h, dtype=jnp.int32), jnp.arange(w, dtype=jnp.int32)
    y0 = jnp.min(jnp.where(rows, ys, h), axis=-1)
    y1 = jnp.max(jnp.where(rows, ys, -1), axis=-1)
    x0 = jnp.min(jnp.where(cols, xs, w), axis=-1)
    x1 = jnp.max(jnp.where(cols, xs, -1), axis=-1)
    valid = rows.any(axis=-1)
    box = jnp.stack([x0, y0, x1, y1], axis=-1)
    return jnp.where(valid[..., None], box, 0), valid


def erode(mask: Array, d: Array | int) -> Array:
    """`mask` eroded `d` times by a 3x3 square, zero padded; `d` may be traced (`[...]`)."""
    d = jnp.asarray(d, jnp.int32)[..., None, None]
    horizontal = line_distance(mask, axis=-1) > d
    return line_distance(horizontal, axis=-2) > d


def iou_counts(pred: Array, gt: Array) -> tuple[Array, Array]:
    """Batched `(intersection, union)` pixel counts `i32[...]` over the last two axes."""
    inter = jnp.sum(pred & gt, axis=(-2, -1), dtype=jnp.int32)
    union = jnp.sum(pred | gt, axis=(-2, -1), dtype=jnp.int32)
    return inter, union


def boundary_iou_counts(pred: Array, gt: Array, dilation: Array | int) -> tuple[Array, Array]:
    """Batched boundary `(intersection, union)` counts with band width `dilation` pixels (from
    `sum_jax.metrics.boundary_dilation` of the original image size)."""
    return iou_counts(pred & ~erode(pred, dilation), gt & ~erode(gt, dilation))


def ratio(inter: Array, union: Array) -> Array:
    """`inter / union` in float32, 1.0 where the union is empty (see `sum_jax.metrics`)."""
    return jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0).astype(jnp.float32)
