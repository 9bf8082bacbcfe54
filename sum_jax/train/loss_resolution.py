"""Where the mask losses are evaluated (`config.loss.resolution`, issue 11 item 3).

The decoder predicts low-res logits `[L, L]` (256 for SAM) of the padded `S x S` input frame
(1024). Thin structures vanish when the ground truth is area-averaged onto that grid, so the
references that train SAM-family decoders with released code compute the mask losses at
high resolution. Three settings:

- `"low"`: logits, targets, certainty and the real-image area on the `L x L` grid (SAM's
  low-res frame; the behaviour before this option existed).
- `"full"`: logits bilinearly upsampled to the `S x S` input frame, as the first step of SAM's
  post-processing (PyTorch's `align_corners=False`, `ops.transforms.resize_bilinear`), against
  targets at that frame (`batch['masks_full']`); certainty `c = 1 - u`, stored on the `L x L`
  grid, is upsampled the same way; only pixels of the real (unpadded) image count. This is
  SAM 2's choice (its losses run on masks upsampled to the input frame).
- `"points"`: HQ-SAM's / Mask2Former's importance sampling (`point_sample`,
  `get_uncertain_point_coords_with_randomness`): per mask and output,
  `oversample_ratio * num_points` candidate points drawn uniformly over the real image,
  the `importance_sample_ratio * num_points` most uncertain of them (logit nearest 0) kept,
  the rest drawn uniformly again. Logits are sampled bilinearly from the low-res grid,
  targets bilinearly from the `S x S` targets (soft at their edges, as in Mask2Former),
  certainty bilinearly from its grid; focal and Dice are means over the points. The IoU
  head's target stays on the low-res grid (the points measure no IoU).

Points are `(x, y)` normalised to `[0, 1]` over the padded square: `x = X / S` for an input-
frame position `X`; sampling follows `torch.nn.functional.grid_sample(align_corners=False,
padding_mode="zeros")` on `2 x - 1`, as `point_sample` does. Prompt sampling stays on the
low-res grid whatever the setting.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sum_jax.ops.transforms import resize_bilinear

Array = jax.Array

RESOLUTIONS = ("low", "full", "points")


def check_resolution(resolution: str) -> str:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"config.loss.resolution must be one of {RESOLUTIONS}, got {resolution!r}")
    return resolution


def upsample(x: Array, img_size: int) -> Array:
    """`[..., L, L]` -> float32 `[..., S, S]`: SAM's bilinear upsampling to the input frame."""
    return resize_bilinear(x.astype(jnp.float32), (img_size, img_size))


def point_sample(maps: Array, points: Array) -> Array:
    """Bilinear samples `[N, P]` of `maps [N, H, W]` at `points [N, P, 2]` `(x, y)` in `[0, 1]`.

    `grid_sample(align_corners=False, padding_mode="zeros")`: the map's pixel `j` covers
    `[j / W, (j + 1) / W)`, its value sits at the centre, and taps outside the map read 0.
    """
    n, h, w = maps.shape
    px = points[..., 0] * w - 0.5
    py = points[..., 1] * h - 0.5
    x0, y0 = jnp.floor(px), jnp.floor(py)
    fx, fy = px - x0, py - y0
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    # Gather in the maps' own dtype (uint8 targets stay small), convert the samples only.
    flat = maps.reshape(n, h * w)

    def tap(yi, xi):
        inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        idx = jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)
        values = jnp.take_along_axis(flat, idx, axis=1).astype(jnp.float32)
        return jnp.where(inside, values, 0.0)

    return (
        tap(y0, x0) * (1 - fx) * (1 - fy)
        + tap(y0, x0 + 1) * fx * (1 - fy)
        + tap(y0 + 1, x0) * (1 - fx) * fy
        + tap(y0 + 1, x0 + 1) * fx * fy
    )


def uniform_points(key: Array, extent: Array, count: int) -> Array:
    """`[N, count, 2]` points drawn uniformly over `[0, extent_x) x [0, extent_y)`, with
    `extent [N, 2]` `(w / S, h / S)`: the real image's share of the padded square."""
    u = jax.random.uniform(key, (extent.shape[0], count, 2))
    return u * extent[:, None, :]


def most_uncertain(candidates: Array, logits: Array, count: int) -> Array:
    """The `count` candidates `[N, count, 2]` (of `candidates [N, C, 2]`) whose bilinearly
    sampled logit of `logits [N, H, W]` is nearest 0 (Mask2Former's uncertainty `-|x|`)."""
    uncertainty = -jnp.abs(point_sample(jax.lax.stop_gradient(logits), candidates))
    _, idx = jax.lax.top_k(uncertainty, count)
    return jnp.take_along_axis(candidates, idx[..., None], axis=1)


def importance_points(
    key: Array,
    logits: Array,
    extent: Array,
    *,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
) -> Array:
    """HQ-SAM's training points `[N, num_points, 2]` for `logits [N, H, W]` (module docstring):
    the most uncertain of `oversample_ratio * num_points` uniform candidates, then uniform
    points, all inside the real image (`extent [N, 2]`, see `uniform_points`)."""
    key_candidates, key_random = jax.random.split(key)
    num_candidates = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    candidates = uniform_points(key_candidates, extent, num_candidates)
    chosen = most_uncertain(candidates, logits, num_uncertain)
    if num_points > num_uncertain:
        rest = uniform_points(key_random, extent, num_points - num_uncertain)
        chosen = jnp.concatenate([chosen, rest], axis=1)
    return chosen


def image_extent(image_size: Array, img_size: int) -> Array:
    """`f32[..., 2]` `(w / S, h / S)` from `image_size [..., 2]` `(h, w)`."""
    return image_size[..., ::-1].astype(jnp.float32) / img_size
