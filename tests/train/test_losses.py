"""sum_jax.losses against float64 NumPy implementations of the paper's formulas (§3.2.1)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sum_jax.train import losses

# float32 JAX vs float64 NumPy: relative error of a mean over ~1000 pixels.
RTOL, ATOL = 2e-5, 1e-6


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_focal(logits, y, c=None, alpha=0.25, gamma=2.0):
    """Eq. (1): (1/m) sum_i c_i * alpha_t (1 - p_t)^gamma * CE_i over all m pixels of
    `[N, H, W]` arrays, in float64."""
    x = logits.astype(np.float64)
    y = y.astype(np.float64)
    p = np_sigmoid(x)
    ce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    p_t = p * y + (1 - p) * (1 - y)
    a_t = alpha * y + (1 - alpha) * (1 - y)
    per_pixel = a_t * (1 - p_t) ** gamma * ce
    if c is not None:
        per_pixel = c.astype(np.float64) * per_pixel
    return per_pixel.reshape(len(x), -1).sum(-1) / (x.shape[1] * x.shape[2])


def np_dice(logits, y, c=None, theta=0.6, eps=1.0):
    """Eq. (2): 1 - (2 I + eps) / (S + eps) over the pixels with c > theta."""
    p = np_sigmoid(logits.astype(np.float64))
    y = y.astype(np.float64)
    keep = np.ones_like(p) if c is None else (c > theta).astype(np.float64)
    inter = (y * p * keep).reshape(len(p), -1).sum(-1)
    total = ((y + p) * keep).reshape(len(p), -1).sum(-1)
    return 1 - (2 * inter + eps) / (total + eps)


def np_iou(logits, y):
    pred = logits > 0
    y = y > 0
    inter = (pred & y).reshape(len(y), -1).sum(-1)
    union = (pred | y).reshape(len(y), -1).sum(-1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def photo_inputs(n=4, side=128, grid=32):
    """A 3:2 photo (scikit-image's coffee, 400 x 600) resized into the padded `side` frame as
    the data pipeline does, `n` masks on the `grid` (grey-level bands of the photo), smooth
    logits that roughly follow them and certainties, and `(h, w)`: the grid rows and
    columns that overlap the real image (the rest is zero padding)."""
    from skimage import color, data, filters

    from sum_jax.data import image_ops

    photo = data.coffee()
    grey = color.rgb2gray(photo)
    cuts = np.quantile(grey, np.linspace(0, 1, n + 1))
    masks = np.stack(
        [
            image_ops.mask_to_frame((grey >= lo) & (grey < hi), side, grid)
            for lo, hi in itertools.pairwise(cuts)
        ]
    )
    _, (hs, ws) = image_ops.resize_longest_side_and_pad(photo, side)
    h, w = int(np.ceil(hs * grid / side)), int(np.ceil(ws * grid / side))
    rng = np.random.default_rng(0)
    noise = np.stack([filters.gaussian(rng.standard_normal((grid, grid)), 2) for _ in range(n)])
    logits = (4 * (masks - 0.5) + 20 * noise).astype(np.float32)
    logits[:, h:] = 50 * rng.standard_normal((n, grid - h, grid))  # junk in the padding
    logits[:, :, w:] = 50 * rng.standard_normal((n, grid, grid - w))
    c = rng.random((n, grid, grid)).astype(np.float32)
    return logits, masks, c, (h, w)


def test_photo_inputs_have_padding():
    _, masks, _, (h, w) = photo_inputs()
    assert (h, w) == (22, 32)  # 85 x 128 of the 128 frame: 22 of 32 rows are real
    assert masks[:, h:].sum() == 0 and all(m[:h, :w].sum() > 20 for m in masks)


def test_only_real_pixels_count():
    """Eq. (1) averages over "the m pixels of an input image": with `area`, focal, Dice and
    the IoU target equal the float64 formulas on the real image alone (cropped), whatever
    the logits in the zero padding."""
    logits, masks, c, (h, w) = photo_inputs()
    area = np.zeros(masks.shape, bool)
    area[:, :h, :w] = True
    crop = lambda a: a[:, :h, :w]
    iou_pred = np.full(len(masks), 0.7, np.float32)
    terms = losses.combined_loss(logits, iou_pred, masks, c, theta=0.6, area=area)
    np.testing.assert_allclose(
        terms["focal"], np_focal(crop(logits), crop(masks), crop(c)), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        terms["dice"], np_dice(crop(logits), crop(masks), crop(c), 0.6), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(terms["iou"], np_iou(crop(logits), crop(masks)), rtol=1e-6)
    # Without `area` the padding counts, and the numbers differ (so the check can fail).
    plain = losses.combined_loss(logits, iou_pred, masks, c, theta=0.6)
    assert np.all(np.abs(np.asarray(plain["focal"]) - np.asarray(terms["focal"])) > 1e-3)
    assert np.all(np.abs(np.asarray(plain["iou"]) - np.asarray(terms["iou"])) > 1e-3)


def test_image_reduction_weighs_images_equally():
    """`image_means` then `mean_over_images`: one human image with 1 mask and one image with
    30 masks weigh the same, and an image with no valid mask does not count."""
    rng = np.random.default_rng(8)
    values = rng.random((3, 30))
    valid = np.zeros((3, 30), bool)
    valid[0, 0] = True  # 1 mask
    valid[1, :] = True  # 30 masks
    per_image, image_valid = losses.image_means(values, valid)
    np.testing.assert_array_equal(image_valid, [True, True, False])
    expected = (values[0, 0] + values[1].mean()) / 2
    np.testing.assert_allclose(losses.mean_over_images(per_image, image_valid), expected, 1e-6)
    # The per-mask mean gives the human mask 1/31 of the weight instead of 1/2.
    per_mask = (values[0, 0] + values[1].sum()) / 31
    assert abs(per_mask - expected) > 1e-3


def random_inputs(seed, n=5, size=32):
    rng = np.random.default_rng(seed)
    logits = (3 * rng.standard_normal((n, size, size))).astype(np.float32)
    targets = (rng.random((n, size, size)) < 0.3).astype(np.uint8)
    # Quantised like the data pipeline's u8 maps, with exact 0 and 1 certainties present.
    u = rng.integers(0, 256, (n, size, size)).astype(np.float32) / 255.0
    u[0, :4] = 0.0
    u[1, :4] = 1.0
    return logits, targets, (1.0 - u).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_focal_matches_numpy(seed):
    logits, targets, c = random_inputs(seed)
    np.testing.assert_allclose(
        losses.sigmoid_focal(logits, targets), np_focal(logits, targets), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        losses.sigmoid_focal(logits, targets, c), np_focal(logits, targets, c), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("theta", [0.6, 0.5])
def test_dice_matches_numpy(seed, theta):
    logits, targets, c = random_inputs(seed)
    np.testing.assert_allclose(
        losses.dice(logits, targets), np_dice(logits, targets), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        losses.dice(logits, targets, c, theta),
        np_dice(logits, targets, c, theta),
        rtol=RTOL,
        atol=ATOL,
    )


def test_iou_mse_matches_numpy():
    logits, targets, _ = random_inputs(2)
    iou_pred = np.random.default_rng(3).random(len(logits)).astype(np.float32)
    expected = (iou_pred - np_iou(logits, targets)) ** 2
    np.testing.assert_allclose(losses.iou_mse(iou_pred, logits, targets), expected, rtol=1e-5)
    # Both empty: IoU 1, not 0/0.
    empty = np.zeros((1, 8, 8), np.uint8)
    assert float(losses.mask_iou(-np.ones((1, 8, 8), np.float32), empty)[0]) == 1.0


def test_certainty_one_gives_plain_losses():
    """u = 0 (c = 1 everywhere): the uncertainty-aware losses equal the plain ones."""
    logits, targets, _ = random_inputs(4)
    c = np.ones_like(logits)
    np.testing.assert_allclose(
        losses.sigmoid_focal(logits, targets, c), losses.sigmoid_focal(logits, targets), rtol=1e-7
    )
    np.testing.assert_allclose(
        losses.dice(logits, targets, c, 0.6), losses.dice(logits, targets), rtol=1e-7
    )


def test_certainty_zero_contributes_nothing():
    """u = 1 (c = 0 everywhere): neither focal nor Dice term, and no gradient from them."""
    logits, targets, _ = random_inputs(5)
    c = np.zeros_like(logits)
    assert np.all(np.asarray(losses.sigmoid_focal(logits, targets, c)) == 0.0)
    assert np.all(np.asarray(losses.dice(logits, targets, c, 0.6)) == 0.0)
    grad = jax.grad(
        lambda x: (losses.sigmoid_focal(x, targets, c) + losses.dice(x, targets, c)).sum()
    )(jnp.asarray(logits))
    assert float(jnp.abs(grad).max()) == 0.0
    # The plain losses of the same inputs are not zero, so the check above can fail.
    assert float(losses.sigmoid_focal(logits, targets).min()) > 0
    assert float(losses.dice(logits, targets).min()) > 0


def test_combined_weights():
    logits, targets, c = random_inputs(6)
    iou_pred = np.full(len(logits), 0.5, np.float32)
    terms = losses.combined_loss(logits, iou_pred, targets, c, theta=0.6)
    expected = (
        20 * np_focal(logits, targets, c)
        + np_dice(logits, targets, c, 0.6)
        + (0.5 - np_iou(logits, targets)) ** 2
    )
    np.testing.assert_allclose(terms["loss"], expected, rtol=RTOL, atol=ATOL)


def multimask_inputs():
    """Three outputs per mask, where the IoU prediction of the output with the lowest mask
    loss is badly wrong, so that a choice by the full loss (IoU MSE included) differs."""
    rng = np.random.default_rng(7)
    n, m, size = 4, 3, 16
    logits = (2 * rng.standard_normal((n, m, size, size))).astype(np.float32)
    targets = (rng.random((n, size, size)) < 0.4).astype(np.uint8)
    logits[:, 1] += 3 * (targets - 0.5)  # output 1 follows the target: lowest mask loss
    iou_pred = rng.random((n, m)).astype(np.float32)
    iou_pred[:, 1] = 4.0
    return logits, iou_pred, targets


def test_multimask_chooses_by_mask_loss_and_supervises_every_iou():
    """SAM 2's rule (App. B.1 follows SAM; SAM 2's `supervise_all_iou`): back-propagate the
    mask of the output with the lowest `20 focal + dice`, train all three IoU predictions."""
    logits, iou_pred, targets = multimask_inputs()
    n, m = iou_pred.shape
    mask_loss = np.stack(
        [20 * np_focal(logits[:, j], targets) + np_dice(logits[:, j], targets) for j in range(m)],
        axis=1,
    )
    mse = np.stack([(iou_pred[:, j] - np_iou(logits[:, j], targets)) ** 2 for j in range(m)], 1)
    best = mask_loss.argmin(1)
    assert np.all(best == 1)
    chosen, got_best = losses.multimask_loss(logits, iou_pred, targets)
    np.testing.assert_array_equal(got_best, best)
    np.testing.assert_allclose(chosen["iou_mse"], mse.mean(1), rtol=RTOL)
    expected = mask_loss[np.arange(n), best] + mse.mean(1)
    np.testing.assert_allclose(chosen["loss"], expected, rtol=RTOL, atol=ATOL)
    grads = jax.grad(
        lambda x, q: losses.multimask_loss(x, q, targets)[0]["loss"].sum(), argnums=(0, 1)
    )(jnp.asarray(logits), jnp.asarray(iou_pred))
    logit_norm = np.abs(np.asarray(grads[0])).sum(axis=(2, 3))  # [n, m]
    for i in range(n):
        for j in range(m):
            assert (logit_norm[i, j] > 0) == (j == best[i])
    # Every IoU prediction gets d/dq (1/M) sum_j (q_j - IoU_j)^2 = 2 (q_j - IoU_j) / M.
    actual = np.stack([np_iou(logits[:, j], targets) for j in range(m)], axis=1)
    np.testing.assert_allclose(grads[1], 2 * (iou_pred - actual) / m, rtol=1e-5, atol=1e-7)


def test_multimask_earlier_rule_behind_the_switch():
    """`supervise_all_iou=False`: the lowest full loss (IoU MSE included) is kept, and only
    its IoU prediction trains; here the wrong IoU prediction moves the choice."""
    logits, iou_pred, targets = multimask_inputs()
    m = iou_pred.shape[1]
    per_output = np.stack(
        [
            20 * np_focal(logits[:, j], targets)
            + np_dice(logits[:, j], targets)
            + (iou_pred[:, j] - np_iou(logits[:, j], targets)) ** 2
            for j in range(m)
        ],
        axis=1,
    )
    chosen, best = losses.multimask_loss(logits, iou_pred, targets, supervise_all_iou=False)
    np.testing.assert_array_equal(best, per_output.argmin(1))
    assert np.all(np.asarray(best) != 1)  # unlike the default rule
    np.testing.assert_allclose(chosen["loss"], per_output.min(1), rtol=RTOL, atol=ATOL)
    grad = jax.grad(
        lambda q: losses.multimask_loss(logits, q, targets, supervise_all_iou=False)[0][
            "loss"
        ].sum()
    )(jnp.asarray(iou_pred))
    assert np.all((np.asarray(grad) != 0) == (np.arange(m)[None] == np.asarray(best)[:, None]))


def test_masked_mean_ignores_padding():
    values = jnp.array([1.0, 3.0, 100.0, -5.0])
    valid = jnp.array([True, True, False, False])
    assert float(losses.masked_mean(values, valid)) == 2.0
    assert float(losses.masked_mean(values, jnp.zeros(4, bool))) == 0.0
