"""AugSeg's strong view of an unlabelled image, on device (App. E.1; Zhao et al., CVPR 2023).

AugSeg (github.com/ZhenZHAO/AugSeg, `augseg/dataset/augs_TIBA.py`, `augs_ALIA.py`) gives the
student a strongly augmented view and the teacher a weak one. Here the weak view is the image
itself and the strong view changes only intensities and pastes CutMix boxes, so the two views
stay geometrically identical: a prompt sampled from the pseudo-label means the same pixel in
both, and the teacher's prediction is a target for the student pixel by pixel.

- Random intensity augmentation ("TIBA"): per image, `k ~ U{1..num_augs}` operations drawn
  with replacement from AugSeg's eleven (identity, autocontrast, equalize, Gaussian blur,
  contrast, brightness, colour, sharpness, posterize, solarize, hue), each with a random
  magnitude in AugSeg's ranges, following PIL's definitions (`ImageOps`, `ImageEnhance`),
  each result rounded to 8 bits as PIL's are. Statistics (autocontrast's extremes, the
  histogram of equalize, contrast's mean grey) are taken over the real image only, and the
  zero padding stays zero.
- CutMix ("ALIA"'s copy-paste step): with probability `cutmix_prob`, an image gets a box
  from another image, of area ratio `1 - lam`, `lam ~ Beta(4, 4)`, centred uniformly
  (AugSeg's `rand_bbox`). The partner is always a different image: the eligible images
  (the pseudo-labelled ones of the whole step) are put in a random order and each takes its
  box from the next one, the last from the first (`cycle_partners`: a derangement of the
  eligible images whenever there are two or more); an image with no other eligible image
  in the step is not mixed. (A plain permutation maps images to themselves, and with one
  image per micro-batch it always does: the "pasted" box would then be the image's own
  pixels, trained as background.) The box lies on the `L x L`
  mask grid (upsampled to the input frame), so the loss can mask it exactly. (AugSeg's
  confidence-adaptive mixing with labelled images is left out: the pasted content is another
  object's, not a class map, whatever its source.)

Everything takes a PRNG key and has fixed shapes: the same key gives the same view.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

NUM_OPS = 11
OP_NAMES = (
    "identity",
    "autocontrast",
    "equalize",
    "blur",
    "contrast",
    "brightness",
    "color",
    "sharpness",
    "posterize",
    "solarize",
    "hue",
)


def _grey(x: Array) -> Array:
    """PIL's RGB -> L: `(299 R + 587 G + 114 B) / 1000`, rounded. `[..., 3] -> [...]`."""
    return jnp.floor((x[..., 0] * 299 + x[..., 1] * 587 + x[..., 2] * 114) / 1000 + 0.5)


def _u8(x: Array) -> Array:
    """Back to the 8-bit values PIL stores (its blends truncate towards zero after clipping)."""
    return jnp.floor(jnp.clip(x, 0.0, 255.0))


def autocontrast(x: Array, area: Array) -> Array:
    """`ImageOps.autocontrast` (cutoff 0): each channel stretched from its [min, max] over
    the real image to [0, 255] with PIL's lut `int(v * scale + offset)`. `x [H, W, 3]`."""
    big = jnp.float32(1e9)
    lo = jnp.min(jnp.where(area[..., None], x, big), axis=(0, 1))
    hi = jnp.max(jnp.where(area[..., None], x, -big), axis=(0, 1))
    scale = 255.0 / jnp.maximum(hi - lo, 1.0)
    out = _u8(jnp.floor(x * scale - lo * scale))
    return jnp.where(hi > lo, out, x)


def equalize(x: Array, area: Array) -> Array:
    """`ImageOps.equalize`: per channel, `lut[i] = (step // 2 + #pixels below i) // step`,
    `step = (n - count of the highest value) // 255`, over the real image's histogram."""
    w = area.reshape(-1).astype(jnp.float32)

    def channel(c):
        idx = c.reshape(-1).astype(jnp.int32)
        hist = jnp.zeros(256, jnp.float32).at[idx].add(w)
        last = jnp.max(jnp.where(hist > 0, jnp.arange(256), -1))
        step = jnp.floor((hist.sum() - hist[last]) / 255.0)
        below = jnp.cumsum(hist) - hist
        lut = jnp.floor((jnp.floor(step / 2) + below) / jnp.maximum(step, 1.0))
        out = jnp.clip(lut, 0, 255)[idx].reshape(c.shape)
        return jnp.where(step > 0, out, c)

    return jnp.stack([channel(x[..., i]) for i in range(3)], axis=-1)


def _shift_sum(x: Array, weights: Array, axis: int) -> Array:
    """1-D correlation along `axis` with edge padding, `weights [2r + 1]`."""
    r = (weights.shape[0] - 1) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    xp = jnp.pad(x, pad, mode="edge")
    n = x.shape[axis]
    return sum(weights[i] * jax.lax.slice_in_dim(xp, i, i + n, axis=axis) for i in range(2 * r + 1))


def blur(x: Array, sigma: Array, radius: int = 6) -> Array:
    """Gaussian blur of std `sigma` (PIL's `GaussianBlur(radius=sigma)`), a separable kernel
    of half-width `radius` (>= 3 sigma for AugSeg's sigma <= 2), edges extended."""
    d = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    k = jnp.exp(-0.5 * (d / sigma) ** 2)
    k = k / k.sum()
    return _u8(_shift_sum(_shift_sum(x, k, 0), k, 1) + 0.5)


def contrast(x: Array, area: Array, v: Array) -> Array:
    """`ImageEnhance.Contrast(v)`: blend with the mean grey level of the real image."""
    g = _grey(x)
    mean = jnp.floor(jnp.sum(g * area) / jnp.maximum(area.sum(), 1) + 0.5)
    return _u8(mean + v * (x - mean))


def brightness(x: Array, v: Array) -> Array:
    """`ImageEnhance.Brightness(v)`: blend with black."""
    return _u8(v * x)


def color(x: Array, v: Array) -> Array:
    """`ImageEnhance.Color(v)`: blend with the image's grey version."""
    g = _grey(x)[..., None]
    return _u8(g + v * (x - g))


def sharpness(x: Array, v: Array) -> Array:
    """`ImageEnhance.Sharpness(v)`: blend with PIL's SMOOTH filter (3x3, centre 5, others 1,
    /13), whose border pixels are the image's own."""
    k = jnp.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], jnp.float32) / 13.0
    h, w = x.shape[:2]
    xp = jnp.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    smooth = sum(k[i, j] * xp[i : i + h, j : j + w] for i in range(3) for j in range(3))
    smooth = jnp.floor(smooth + 0.5)
    border = jnp.zeros((h, w), bool).at[1:-1, 1:-1].set(True)
    smooth = jnp.where(border[..., None], smooth, x)
    return _u8(smooth + v * (x - smooth))


def posterize(x: Array, bits: Array) -> Array:
    """`ImageOps.posterize(bits)`: keep the top `bits` bits."""
    q = 2.0 ** (8 - bits)
    return jnp.floor(x / q) * q


def solarize(x: Array, threshold: Array) -> Array:
    """`ImageOps.solarize(threshold)`: invert values `>= threshold`."""
    return jnp.where(x >= threshold, 255.0 - x, x)


def hue(x: Array, shift: Array) -> Array:
    """AugSeg's hue shift: hue (as a fraction of the circle) moved by `shift` in HSV."""
    rgb = x / 255.0
    mx, mn = rgb.max(-1), rgb.min(-1)
    delta = mx - mn
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = jnp.where(delta > 0, delta, 1.0)
    h = jnp.where(
        mx == r, (g - b) / safe, jnp.where(mx == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)
    )
    h = jnp.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    s = jnp.where(mx > 0, delta / jnp.where(mx > 0, mx, 1.0), 0.0)
    h = (h + shift) % 1.0

    # HSV -> RGB: the standard piecewise form through k = (n + 6 h) mod 6.
    def f(n):
        k = (n + 6.0 * h) % 6.0
        return mx - mx * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)

    return _u8(jnp.stack([f(5.0), f(3.0), f(1.0)], axis=-1) * 255.0 + 0.5)


def apply_op(op: Array, x: Array, area: Array, u: Array, sign: Array) -> Array:
    """Operation `op` (index into `OP_NAMES`) of magnitude `u ~ U[0, 1)` on `x [H, W, 3]`
    (float, 8-bit values), with AugSeg's ranges: blur sigma in [0.1, 2]; contrast, brightness,
    colour and sharpness factor `0.95 - 0.9 u`; posterize to `8 - max(1, ceil(4 u))` bits;
    solarize above `256 - max(1, ceil(255 u))`; hue shift `+-0.5 u` (sign `sign`)."""
    factor = 0.95 - 0.9 * u
    branches = [
        lambda: x,
        lambda: autocontrast(x, area),
        lambda: equalize(x, area),
        lambda: blur(x, 0.1 + 1.9 * u),
        lambda: contrast(x, area, factor),
        lambda: brightness(x, factor),
        lambda: color(x, factor),
        lambda: sharpness(x, factor),
        lambda: posterize(x, 8.0 - jnp.maximum(1.0, jnp.ceil(4.0 * u))),
        lambda: solarize(x, 256.0 - jnp.maximum(1.0, jnp.ceil(255.0 * u))),
        lambda: hue(x, sign * 0.5 * u),
    ]
    return jax.lax.switch(op, branches)


def intensity_augment(key: Array, image: Array, area: Array, num_augs: int = 3) -> Array:
    """AugSeg's random intensity augmentation of one image: `k ~ U{1..num_augs}` random
    operations in sequence. `image [H, W, 3]` uint8, `area [H, W]` bool real pixels ->
    uint8 `[H, W, 3]`, zero outside `area`."""
    k_count, k_ops, k_mag, k_sign = jax.random.split(key, 4)
    count = jax.random.randint(k_count, (), 1, num_augs + 1)
    ops = jax.random.randint(k_ops, (num_augs,), 0, NUM_OPS)
    mags = jax.random.uniform(k_mag, (num_augs,))
    signs = jnp.where(jax.random.bernoulli(k_sign, 0.5, (num_augs,)), 1.0, -1.0)
    x = image.astype(jnp.float32)
    for t in range(num_augs):
        x = jnp.where(t < count, apply_op(ops[t], x, area, mags[t], signs[t]), x)
    return (x * area[..., None]).astype(jnp.uint8)


def cutmix_boxes(key: Array, batch: int, mask_size: int, prob: float = 1.0) -> Array:
    """bool `[B, L, L]`: each image's CutMix box on the mask grid (AugSeg's `rand_bbox`:
    side ratio `sqrt(1 - lam)`, `lam ~ Beta(4, 4)`, centre uniform, clipped), empty for the
    images that are not mixed (probability `1 - prob`)."""
    k_lam, k_cx, k_cy, k_use = jax.random.split(key, 4)
    lam = jax.random.beta(k_lam, 4.0, 4.0, (batch,))
    cut = jnp.floor(mask_size * jnp.sqrt(1.0 - lam))
    cx = jax.random.randint(k_cx, (batch,), 0, mask_size).astype(jnp.float32)
    cy = jax.random.randint(k_cy, (batch,), 0, mask_size).astype(jnp.float32)
    x0 = jnp.clip(cx - jnp.floor(cut / 2), 0, mask_size)
    x1 = jnp.clip(cx + jnp.floor(cut / 2), 0, mask_size)
    y0 = jnp.clip(cy - jnp.floor(cut / 2), 0, mask_size)
    y1 = jnp.clip(cy + jnp.floor(cut / 2), 0, mask_size)
    idx = jnp.arange(mask_size, dtype=jnp.float32)
    rows = (idx[None] >= y0[:, None]) & (idx[None] < y1[:, None])
    cols = (idx[None] >= x0[:, None]) & (idx[None] < x1[:, None])
    use = jax.random.uniform(k_use, (batch,)) < prob
    return rows[:, :, None] & cols[:, None, :] & use[:, None, None]


def cycle_partners(key: Array, eligible: Array) -> tuple[Array, Array]:
    """Each eligible image's CutMix partner: another eligible image.

    The eligible images are put in a uniformly random order; each is paired with the next
    one, the last with the first: one cycle through all of them, so no image is its own
    partner when two or more are eligible.

    Args:
      key: PRNG key.
      eligible: bool `[B]`.

    Returns:
      `(partner i32 [B], mixed bool [B])`: `mixed` is `eligible` where at least two images
      are eligible, else all false; `partner[i] = i` where not `mixed[i]`.
    """
    b = eligible.shape[0]
    # Eligible images first, in random order (ties have probability zero).
    order = jnp.argsort(jnp.where(eligible, jax.random.uniform(key, (b,)), 2.0))
    position = jnp.argsort(order)
    count = jnp.sum(eligible)
    following = order[jnp.where(position + 1 < count, position + 1, 0)]
    mixed = eligible & (count >= 2)
    return jnp.where(mixed, following, jnp.arange(b)), mixed


def strong_view(
    key: Array,
    images: Array,
    area: Array,
    *,
    mask_size: int,
    num_augs: int = 3,
    cutmix_prob: float = 1.0,
    eligible: Array | None = None,
) -> tuple[Array, Array, Array]:
    """The student's view of a batch: intensity augmentation, then CutMix between images.

    Args:
      key: PRNG key (the same key gives the same view).
      images: uint8 `[B, S, S, 3]` (resized and zero-padded, docs/contracts.md).
      area: bool `[B, L, L]` the real image on the mask grid (`prompts.image_area`).
      mask_size: `L`; `S` must be a multiple of it.
      eligible: bool `[B]`, the images that are mixed, and only with each other
        (`cycle_partners`); default all.

    Returns:
      `(view uint8 [B, S, S, 3], pasted bool [B, L, L], partner i32 [B])`: `pasted` marks
      the grid pixels whose content came from image `partner[i]` (inside the real image
      only; none for an image without a partner).
    """
    b, s = images.shape[0], images.shape[1]
    k = s // mask_size
    up = lambda m: jnp.repeat(jnp.repeat(m, k, axis=1), k, axis=2)
    k_aug, k_box, k_perm = jax.random.split(key, 3)
    pixel_area = up(area)
    view = jax.vmap(intensity_augment, in_axes=(0, 0, 0, None))(
        jax.random.split(k_aug, b), images, pixel_area, num_augs
    )
    if eligible is None:
        eligible = jnp.ones((b,), bool)
    partner, mixed = cycle_partners(k_perm, eligible.astype(bool))
    pasted = cutmix_boxes(k_box, b, mask_size, cutmix_prob) & area & mixed[:, None, None]
    view = jnp.where(up(pasted)[..., None], view[partner], view)
    return view, pasted, partner
