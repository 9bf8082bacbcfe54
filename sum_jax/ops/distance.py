"""Exact Euclidean distance transform in `jax.numpy`, with static shapes for `jit`/`scan`.

The squared depth of a pixel (distance to the nearest pixel outside the region, zero padded)
is computed in two separable passes:

1. `g(y, x)`, the distance to the nearest outside pixel in the same column (`line_distance`:
   run lengths counted by a scan over rows, or running max/min of outside-pixel indices
   along the last axis; O(HW)).
2. `D(y, x) = min_k g(y, k)^2 + (x - k)^2` along each row: the lower envelope of one parabola
   per pixel, built by Meijster, Roerdink & Hesselink's algorithm ("A general algorithm for
   computing distance transforms in linear time", 2000), the integer form of Felzenszwalb &
   Huttenlocher's. A forward scan pushes each column's parabola on a per-row stack (popping
   the parabolas it hides), a backward scan reads the envelope off the stack. Both scans run
   along the shorter image axis (the first pass along the longer one), all rows of the
   batch at once; each step is O(rows), so the
   cost is O(HW) whatever the depth of the region (the loop over offsets it replaces ran one
   pass per pixel of the largest depth). The stack is a linked list (`parent`, `start`
   arrays written at the step's own column), so every write is a contiguous row.

   Shallower regions (no pixel more than `OFFSET_LIMIT` = 128 from the outside along its row
   or its column, which bounds the depth; error regions mostly) take the exact path that is
   cheaper there (`lax.cond`): `D = min_k g(y, x -+ k)^2 + k^2` over the offsets `k` up to
   the largest depth found so far, one whole-array pass per offset. So the cost is at most
   about 140 such passes whatever the depth.

All in int32 (the largest intermediate is `x^2 + g^2 < 2^31` for sides up to 30,000 pixels),
so depths, and the comparisons of depths that pick clicks, are exact.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def line_distance(mask: Array, axis: int) -> Array:
    """int32: distance along `axis` from each pixel to the nearest False pixel, with the
    array zero padded by one at both ends of that axis; 0 where `mask` is False.

    XLA:CPU lowers `lax.cummax` to a windowed reduction that cost ~30 ms at 2 x 512 x 1024.
    Along an outer axis the distances are run lengths counted by a `lax.scan` over whole
    contiguous rows (forward and backward in the same loop, ~1 ms); along the last axis,
    where a scan would step through strided columns, running max / min of the False
    pixels' indices by `lax.associative_scan` (~10 ms).
    """
    axis = axis % mask.ndim
    mask = mask.astype(bool)
    if axis == mask.ndim - 1:
        n = mask.shape[axis]
        idx = jnp.arange(n, dtype=jnp.int32)
        last_zero = lax.associative_scan(lax.max, jnp.where(mask, -1, idx), axis=axis)
        next_zero = lax.associative_scan(lax.min, jnp.where(mask, n, idx), axis=axis, reverse=True)
        return jnp.minimum(idx - last_zero, next_zero - idx)
    rows = jnp.moveaxis(mask, axis, 0)

    def step(carry, row):
        before, after = carry  # run lengths ending at this row, from the front and the back
        forward, backward = row
        before = jnp.where(forward, before + 1, 0)
        after = jnp.where(backward, after + 1, 0)
        return (before, after), (before, after)

    zero = jnp.zeros(rows.shape[1:], jnp.int32)
    _, (before, after) = lax.scan(step, (zero, zero), (rows, rows[::-1]))
    return jnp.moveaxis(jnp.minimum(before, after[::-1]), 0, axis)


def _pick(table: Array, index: Array) -> Array:
    """`table[index[r], r]` for each row `r`: `table [m, R]`, `index [R]`."""
    return jnp.take_along_axis(table, index[None], axis=0, mode="clip")[0]


def lower_envelope(f: Array) -> Array:
    """`D[u, r] = min_k f[k, r] + (u - k)^2` for int32 `f [m, R]` (>= 0), exactly.

    Meijster et al.'s second phase, vectorised over the rows `r`. Parabola `u` beats the
    stack's top `i` strictly from column `1 + floor(sep(i, u))` on, with
    `sep(i, u) = (u^2 - i^2 + f[u] - f[i]) / (2 (u - i))`; the top is popped when `u` beats
    it already at the start of its segment.
    """
    m, rows = f.shape

    def value(x, site):  # the parabola of `site` at column `x`, per row
        return (x - site) ** 2 + _pick(f, site)

    def push(carry, u):
        top, parent, start = carry
        fu = f[u]

        def hidden(top):
            safe = jnp.maximum(top, 0)
            s = _pick(start, safe)
            return (top >= 0) & (value(s, safe) > (s - u) ** 2 + fu)

        def pop(top):
            return jnp.where(hidden(top), _pick(parent, jnp.maximum(top, 0)), top)

        top = lax.while_loop(lambda t: jnp.any(hidden(t)), pop, top)
        empty = top < 0
        safe = jnp.maximum(top, 0)
        num = u * u - safe * safe + fu - _pick(f, safe)
        first = 1 + jnp.floor_divide(num, 2 * (u - safe))  # u beats top from here on
        first = jnp.where(empty, 0, first)
        pushed = empty | (first < m)
        parent = parent.at[u].set(jnp.where(pushed, top, parent[u]))
        start = start.at[u].set(jnp.where(pushed, first, start[u]))
        return (jnp.where(pushed, u, top), parent, start), None

    init = (
        jnp.zeros((rows,), jnp.int32),
        jnp.full((m, rows), -1, jnp.int32),
        jnp.zeros((m, rows), jnp.int32),
    )
    (top, parent, start), _ = lax.scan(push, init, jnp.arange(1, m, dtype=jnp.int32))

    def read(top, u):
        d = value(u, top)
        done = _pick(start, top) == u  # the top's segment starts here: go down the stack
        return jnp.where(done, _pick(parent, top), top), d

    _, d = lax.scan(read, top, jnp.arange(m - 1, -1, -1, dtype=jnp.int32))
    return d[::-1]


# Depth bounds up to this take the offset loop: on CPU the envelope's two scans cost about as
# much as 140 offset passes (measured at 2 x 512 x 1024).
OFFSET_LIMIT = 128


def _by_offsets(g2: Array, depth: Array, axis: int) -> Array:
    """`min(depth, min_k g2[x -+ k] + k^2)` along `axis` over offsets `k >= 1` while `k^2` is
    below the largest depth (larger offsets cannot lower any pixel): exact, one pass per
    offset."""
    w = g2.shape[axis]
    unroll = 4
    p = w + unroll
    pad = [(0, 0)] * g2.ndim
    pad[axis] = (p, p)
    g2p = jnp.pad(g2, pad, constant_values=jnp.int32(2**30))  # never wins

    def cond(state):
        k, depth = state
        return (k < w) & (k * k < jnp.max(depth))

    def body(state):
        k, depth = state
        for j in range(unroll):  # a few offsets per convergence check (a full reduction)
            kj = k + j
            left = lax.dynamic_slice_in_dim(g2p, p - kj, w, axis=axis)  # g2[x - kj]
            right = lax.dynamic_slice_in_dim(g2p, p + kj, w, axis=axis)  # g2[x + kj]
            depth = jnp.minimum(depth, jnp.minimum(left, right) + kj * kj)
        return k + unroll, depth

    return lax.while_loop(cond, body, (jnp.int32(1), depth))[1]


def _by_envelope(g2: Array, depth: Array, axis: int) -> Array:
    # Rows of the scans: every line along `axis`; the scan axis first, so that each step
    # reads one contiguous row when `axis` is an outer axis.
    moved = jnp.moveaxis(g2, axis, 0)
    d = lower_envelope(moved.reshape((moved.shape[0], -1))).reshape(moved.shape)
    return jnp.minimum(depth, jnp.moveaxis(d, 0, axis))


def squared_depth(region: Array) -> Array:
    """int32 `[..., H, W]`: exact squared Euclidean distance of each region pixel to the
    nearest pixel outside the region (zero padded); 0 outside the region."""
    region = region.astype(bool)
    h, w = region.shape[-2:]
    # The second pass (offsets or envelope) runs along the shorter axis, the first along the
    # other: `region.ndim - 2` (rows, the outer axis) when W > H.
    across = region.ndim - 2 if w > h else region.ndim - 1
    along = region.ndim - 1 if w > h else region.ndim - 2
    g = line_distance(region, axis=along)  # distance along the longer axis
    g2 = g * g
    n = region.shape[across]
    shape = [1] * region.ndim
    shape[across] = n
    x = jnp.arange(n, dtype=jnp.int32).reshape(shape)
    border = jnp.minimum((x + 1) ** 2, (n - x) ** 2)  # the zero padding at both ends
    depth = jnp.where(region, jnp.minimum(g2, border), 0)  # offset 0 and the padding
    # A pixel's depth is at most its row and its column distance: shallow regions (thin
    # error bands, however long) take the offsets.
    bound = jnp.max(jnp.minimum(g, line_distance(region, axis=across)))
    depth = lax.cond(
        bound <= OFFSET_LIMIT,
        functools.partial(_by_offsets, axis=across),
        functools.partial(_by_envelope, axis=across),
        g2,
        depth,
    )
    return jnp.where(region, depth, 0)


def deepest(region: Array) -> tuple[Array, Array]:
    """Max squared depth `[...]` and the first row-major pixel `(y, x)` `[..., 2]` reaching it
    (pixel (0, 0) with depth 0 for an empty region)."""
    h, w = region.shape[-2:]
    depth = squared_depth(region).reshape(region.shape[:-2] + (h * w,))
    idx = jnp.argmax(depth, axis=-1)  # first occurrence, like np.argmax
    best = jnp.take_along_axis(depth, idx[..., None], axis=-1)[..., 0]
    yx = jnp.stack([idx // w, idx % w], axis=-1).astype(jnp.int32)
    return best, yx
