"""On-device prompt sampling for interactive training (§3.2.2, App. B.1).

Everything here is pure `jax.numpy` with fixed shapes, batched over a leading mask axis
`[N, ...]` and reproducible from a PRNG key, so it runs inside the jitted, scanned training
step with no host round trip.

Frames. Sampling happens on the mask grid `L x L` (the low-res logits' / `batch['masks']`
frame); a grid pixel covers a `k x k` block of the model's `S x S` input frame, `k = S / L`
(4 for SAM's 1024 / 256). Prompts are given to the model as SAM's are: in input-frame pixel
*indices*, to which SAM's prompt encoder adds 0.5 (the pixel centre) itself, once.

- A point: grid pixel `(row, col)` is returned by `sample_points` as its continuous centre
  `(col + 0.5, row + 0.5)`; `to_input_frame` maps it to the input-frame coordinate
  `(col + 0.5) k - 0.5`, so that after the encoder's `+ 0.5` the point sits exactly at the
  centre of the grid pixel's block (not half a pixel below-right of it).
- A box: the inclusive box of the mask (`sum_jax.ops.masks.mask_to_box`, SAM's
  `batched_mask_to_box`), `(x0, y0, x1, y1)` grid indices, mapped by `box_to_input_frame`
  to `(x0 k, y0 k, (x1 + 1) k - 1, (y1 + 1) k - 1)`: the inclusive box, in the input frame,
  of the mask upsampled to it (what SAM computes from a mask at the input resolution, and
  what the evaluator's box protocol gives).
- Jittered boxes are clipped to the real image `[0, w - 1] x [0, h - 1]` (input-frame
  indices of the resized image), not to the padded square.

Sampling rule. A region `R` (bool) is sampled either uniformly (human labels) or with
`P_i = c_i / sum_{j in R} c_j` (pseudo-labels, `c = 1 - u`), by the Gumbel-max trick:
`argmax_i log(w_i) + g_i` with `w = R * c` (or `R`) and `log 0 = -inf`, so pixels outside
`R` or with `c = 0` are never drawn. When `w` has no positive entry the result is flagged
invalid (`valid = False`, coordinates meaningless) and callers leave the prompt absent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sum_jax.ops.masks import mask_to_box

Array = jax.Array


def sample_points(key: Array, region: Array, certainty: Array | None = None) -> tuple[Array, Array]:
    """Draw one pixel per mask from `region`, uniformly or proportionally to `certainty`.

    Args:
      key: PRNG key.
      region: bool `[N, H, W]`.
      certainty: `[N, H, W]` weights `c >= 0` (`c = 1 - u`), or None for uniform.

    Returns:
      `coords f32[N, 2]` the drawn pixel centre `(x, y) = (col + 0.5, row + 0.5)`, and
      `valid bool[N]`: false when the region (restricted to `c > 0`) is empty.
    """
    n, h, w = region.shape
    weights = region.astype(jnp.float32)
    if certainty is not None:
        weights = weights * jnp.clip(certainty.astype(jnp.float32), 0.0, None)
    weights = weights.reshape(n, h * w)
    log_w = jnp.where(weights > 0, jnp.log(jnp.where(weights > 0, weights, 1.0)), -jnp.inf)
    gumbel = jax.random.gumbel(key, log_w.shape, jnp.float32)
    idx = jnp.argmax(log_w + gumbel, axis=-1)
    row, col = idx // w, idx % w
    coords = jnp.stack([col, row], axis=-1).astype(jnp.float32) + 0.5
    valid = (weights > 0).any(axis=-1)
    return coords, valid


def to_input_frame(coords: Array, mask_size: int, img_size: int) -> Array:
    """Continuous point coordinates on the `mask_size` grid (a pixel's centre is `idx + 0.5`)
    -> the model's `img_size` input frame as a pixel-index coordinate, `c k - 0.5` with
    `k = img_size / mask_size`: the prompt encoder's `+ 0.5` then lands on `c k`."""
    return coords * (img_size / mask_size) - 0.5


def box_to_input_frame(boxes: Array, mask_size: int, img_size: int) -> Array:
    """Inclusive grid boxes `[N, 4]` `(x0, y0, x1, y1)` -> the inclusive box, in input-frame
    pixel indices, of the mask upsampled by `k = img_size / mask_size`:
    `(x0 k, y0 k, (x1 + 1) k - 1, (y1 + 1) k - 1)`."""
    k = img_size / mask_size
    return boxes * k + jnp.array([0.0, 0.0, k - 1.0, k - 1.0], jnp.float32)


def image_area(image_size: Array, mask_size: int, img_size: int) -> Array:
    """bool `[B, L, L]`: mask-grid pixels that overlap the real (unpadded) image.

    Args:
      image_size: i32 `[B, 2]` `(h, w)` of the resized image inside the padded `S x S` input.
      mask_size: `L`; img_size: `S`.
    """
    idx = jnp.arange(mask_size, dtype=jnp.float32) * (img_size / mask_size)
    h = image_size[:, 0].astype(jnp.float32)[:, None]
    w = image_size[:, 1].astype(jnp.float32)[:, None]
    rows = idx[None, :] < h  # pixel i starts at i*S/L in the input frame
    cols = idx[None, :] < w
    return rows[:, :, None] & cols[:, None, :]


def mask_boxes(targets: Array) -> tuple[Array, Array]:
    """Tight inclusive boxes `f32[N, 4]` `(x0, y0, x1, y1)` of 0/1 masks `[N, H, W]` on the
    mask grid (`sum_jax.ops.masks.mask_to_box`: a one-pixel mask at (x, y) gives
    (x, y, x, y)), and `valid [N]` (false for empty masks, whose box is all zero)."""
    boxes, valid = mask_to_box(targets)
    return jnp.where(valid[:, None], boxes.astype(jnp.float32), 0.0), valid


def jitter_boxes(
    key: Array,
    boxes: Array,
    image_size: Array,
    *,
    noise_frac: float = 0.1,
    noise_max: float = 20.0,
) -> Array:
    """SAM's box jitter: each coordinate moves by Gaussian noise whose std is `noise_frac` of
    the box side along that axis, capped at `noise_max` pixels (input frame); the result is
    clipped to the real image, `[0, w - 1] x [0, h - 1]`, and re-ordered so that
    `x0 <= x1`, `y0 <= y1`.

    Args:
      boxes: f32 `[N, 4]` inclusive `(x0, y0, x1, y1)` in the input frame.
      image_size: `[N, 2]` (or `[2]`) `(h, w)` of the resized image in the input frame.
    """
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = jnp.stack([width, height, width, height], axis=-1)
    std = jnp.minimum(noise_frac * side, noise_max)
    noisy = boxes + std * jax.random.normal(key, boxes.shape, jnp.float32)
    hw = jnp.broadcast_to(jnp.asarray(image_size, jnp.float32), (boxes.shape[0], 2))
    upper = jnp.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], axis=-1) - 1.0
    noisy = jnp.clip(noisy, 0.0, upper)
    x0, x1 = jnp.minimum(noisy[:, 0], noisy[:, 2]), jnp.maximum(noisy[:, 0], noisy[:, 2])
    y0, y1 = jnp.minimum(noisy[:, 1], noisy[:, 3]), jnp.maximum(noisy[:, 1], noisy[:, 3])
    return jnp.stack([x0, y0, x1, y1], axis=-1)


def sample_first_prompts(
    key: Array,
    targets: Array,
    certainty: Array | None,
    *,
    img_size: int,
    image_size: Array | None = None,
    box_prob: float = 0.5,
    box_noise_frac: float = 0.1,
    box_noise_max: float = 20.0,
) -> dict[str, Array]:
    """Round 1's prompt per mask: a jittered box with probability `box_prob`, else one
    positive point drawn from the target (uniformly, or proportionally to `certainty`).

    Args:
      key: PRNG key.
      targets: 0/1 `[N, L, L]`.
      certainty: `[N, L, L]` or None (uniform point sampling).
      img_size: `S`, the model's input frame size.
      image_size: `[N, 2]` `(h, w)` of the resized image in the input frame, which the
        jittered box is clipped to; None: the whole `S x S` frame.

    Returns:
      dict with `point f32[N, 2]` and `box f32[N, 4]` in the input frame, `point_valid
      bool[N]` (the point is used) and `box_valid bool[N]` (the box is used): exactly one is
      true for a non-empty target, neither for an empty one.
    """
    k_choice, k_point, k_box = jax.random.split(key, 3)
    n, size = targets.shape[0], targets.shape[-1]
    use_box = jax.random.uniform(k_choice, (n,)) < box_prob
    coords, point_ok = sample_points(k_point, targets > 0, certainty)
    boxes, box_ok = mask_boxes(targets)
    if image_size is None:
        image_size = jnp.array([img_size, img_size], jnp.float32)
    boxes = jitter_boxes(
        k_box,
        box_to_input_frame(boxes, size, img_size),
        image_size,
        noise_frac=box_noise_frac,
        noise_max=box_noise_max,
    )
    return {
        "point": to_input_frame(coords, size, img_size),
        "point_valid": point_ok & ~use_box,
        "box": boxes,
        "box_valid": box_ok & use_box,
    }


def sample_error_points(
    key: Array,
    targets: Array,
    prediction: Array,
    certainty: Array | None = None,
    area: Array | None = None,
    *,
    img_size: int,
) -> tuple[Array, Array, Array]:
    """Next interactive click per mask, drawn from the error region (SAM / App. B.1).

    The error region is `target XOR prediction` (within `area`, the real image, when given).
    A false-negative pixel gives a positive point (label 1), a false-positive pixel a
    negative point (label 0). The pixel is drawn uniformly over the region, or with
    probability proportional to `certainty` (pseudo-labels).

    Args:
      key: PRNG key.
      targets: 0/1 `[N, L, L]`.
      prediction: bool `[N, L, L]` (the previous round's `logits > 0`).
      certainty: `[N, L, L]` or None.
      area: bool `[N, L, L]` or None.
      img_size: `S`.

    Returns:
      `point f32[N, 2]` (input frame), `label i32[N]` (1 / 0), `valid bool[N]` (false when
      there is no error left to correct).
    """
    t = jnp.asarray(targets) > 0
    error = t ^ prediction
    if area is not None:
        error = error & area
    coords, valid = sample_points(key, error, certainty)
    n, h, w = t.shape
    col = jnp.clip(jnp.floor(coords[:, 0]).astype(jnp.int32), 0, w - 1)
    row = jnp.clip(jnp.floor(coords[:, 1]).astype(jnp.int32), 0, h - 1)
    label = t.reshape(n, h * w)[jnp.arange(n), row * w + col].astype(jnp.int32)
    return to_input_frame(coords, w, img_size), label, valid
