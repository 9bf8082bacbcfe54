"""Exact Euclidean distance transform in `jax.numpy`, with static shapes for `jit`/`scan`.

The squared depth of a pixel (distance to the nearest pixel outside the region, zero padded)
is computed in two separable passes (as Felzenszwalb & Huttenlocher): `g(y, x)`, the distance
to the nearest outside pixel in the same column, from running max/min of outside-pixel
indices (`lax.cummax` / `lax.cummin`, O(HW)); then `D(y, x) = min_k g(y, x -+ k)^2 + k^2`
along the shorter image axis, as a `lax.while_loop` over the offset `k` with whole-array min
operations (O(HW) memory). The loop stops as soon as `k^2` reaches the largest depth found so
far, since larger offsets cannot improve any pixel: it runs (largest depth + 1) steps, not W.
All in int32, so comparisons of depths are exact. (The lower-envelope scan of the original
algorithm is sequential per row and maps badly onto accelerators.)
"""

from __future__ import annotations

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
