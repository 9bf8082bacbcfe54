"""The interactive-evaluation click protocol in `jax.numpy`, for rounds that run on device.

RITM's clicker (the protocol SAM's evaluation follows), written with static shapes so that it
can live inside `jax.jit` / `jax.lax.scan`, batched over any leading axes `[..., H, W]`: the
next click is the deepest pixel (exact Euclidean distance to the nearest pixel outside the
region, zero padded) of the false-negative or the false-positive region, whichever is deeper;
positive for a false negative. As in RITM's `Clicker._get_next_click`, the distance transform
runs on the whole error region and the pixels clicked before are zeroed afterwards (they are
not removed from the region first, which would make the pixels next to an ignored click
shallow and move the next click away from it). The tests check exact agreement with a
NumPy/SciPy reference and RITM's algorithm written out.

Masks may sit in a larger padded frame: as long as the padding is False in every input mask,
results equal those on the unpadded `[H, W]` masks, because the click protocol treats pixels
outside the image as 0 (zero padding).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from sum_jax.ops.distance import squared_depth

Array = jax.Array


def _deepest_unclicked(region: Array, not_clicked: Array) -> tuple[Array, Array]:
    """Max squared depth `[...]` over the pixels not clicked, the depth taken in the whole
    `region`, and the first row-major pixel `(y, x)` `[..., 2]` reaching it ((0, 0) with
    depth 0 when none)."""
    h, w = region.shape[-2:]
    depth = jnp.where(not_clicked, squared_depth(region), 0)
    depth = depth.reshape(region.shape[:-2] + (h * w,))
    idx = jnp.argmax(depth, axis=-1)  # first occurrence, like np.argmax
    best = jnp.take_along_axis(depth, idx[..., None], axis=-1)[..., 0]
    yx = jnp.stack([idx // w, idx % w], axis=-1).astype(jnp.int32)
    return best, yx


def next_click(gt: Array, pred: Array, not_clicked: Array) -> tuple[Array, Array, Array]:
    """Batched RITM next click (the module docstring).

    Args:
      gt, pred, not_clicked: bool `[..., H, W]`.

    Returns:
      `yx i32[..., 2]`, `is_positive bool[...]` and `valid bool[...]` (False where the NumPy
      version returns None: no error pixel left; `yx` is then (0, 0)).
    """
    # Both error regions in one distance transform: one pass of its loops for the two.
    regions = jnp.stack([gt & ~pred, pred & ~gt])
    depth, yx = _deepest_unclicked(regions, not_clicked[None])
    (fn_depth, fp_depth), (fn_yx, fp_yx) = depth, yx
    positive = fn_depth > fp_depth
    yx = jnp.where(positive[..., None], fn_yx, fp_yx)
    valid = (fn_depth > 0) | (fp_depth > 0)
    return yx, positive & valid, valid


def boundary_click(gt: Array, band: float = 10.0) -> tuple[Array, Array]:
    """The first click of the boundary protocol (App. F.2): the row-major median pixel of the GT's `band`-pixel boundary band (squared depth <= band^2); `yx i32[..., 2]` and `valid bool[...]`."""
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
