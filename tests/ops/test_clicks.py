"""The click protocol: NumPy version against independent references, JAX version against it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from sum_jax.ops import clicks, distance, masks
from tests.evaluate import reference_clicker as clicker
from tests.ops.test_metrics import random_blobs, voc_masks


def brute_squared_depth(region: np.ndarray) -> np.ndarray:
    """Squared distance to the nearest outside pixel of the one-pixel zero-padded frame."""
    p = np.pad(region, 1)
    oy, ox = np.nonzero(~p)
    out = np.zeros(region.shape, np.int64)
    for y, x in zip(*np.nonzero(region)):
        out[y, x] = np.min((oy - (y + 1)) ** 2 + (ox - (x + 1)) ** 2)
    return out


def ritm_click(gt, pred, not_clicked):
    """RITM's `Clicker._get_next_click` (isegm/inference/clicker.py), written out: the error
    regions (its `not_ignore_mask` is all True here), zero padded by one pixel, their exact
    distance transforms (cv2's DIST_L2 with DIST_MASK_PRECISE; SciPy's exact EDT here),
    unpadded, and only then multiplied by `not_clicked_map`; the deeper region's first
    row-major maximum (`np.where(...)[0]`), positive if the false negatives reach strictly
    deeper. None instead of RITM's degenerate click when no depth is left."""
    fn = np.logical_and(gt, np.logical_not(pred))
    fp = np.logical_and(np.logical_not(gt), pred)
    fn_dt = ndimage.distance_transform_edt(np.pad(fn, ((1, 1), (1, 1)), "constant"))[1:-1, 1:-1]
    fp_dt = ndimage.distance_transform_edt(np.pad(fp, ((1, 1), (1, 1)), "constant"))[1:-1, 1:-1]
    fn_dt = fn_dt * not_clicked
    fp_dt = fp_dt * not_clicked
    fn_max, fp_max = np.max(fn_dt), np.max(fp_dt)
    if fn_max == 0 and fp_max == 0:
        return None
    is_positive = fn_max > fp_max
    ys, xs = np.where(fn_dt == fn_max) if is_positive else np.where(fp_dt == fp_max)
    return (int(ys[0]), int(xs[0])), bool(is_positive)


def click_sequence(gt, preds):
    """NumPy clicks for a ground truth and a list of predictions, excluding clicked pixels."""
    nc = np.ones_like(gt)
    out = []
    for pred in preds:
        c = clicker.next_click(gt, pred, nc)
        ref = ritm_click(gt, pred, nc)
        assert c == ref
        out.append(c)
        if c is not None:
            nc[c[0]] = False
    return out


_jax_click = jax.jit(clicks.next_click)


def jax_clicks(gt, preds, nc):
    yx, pos, valid = jax.device_get(_jax_click(jnp.asarray(gt), jnp.asarray(preds), nc))
    return [((int(a), int(b)), bool(p)) if v else None for (a, b), p, v in zip(yx, pos, valid)]


def test_squared_depth_matches_brute_force():
    rng = np.random.default_rng(0)
    depth = jax.jit(distance.squared_depth)
    # Tall, wide (the quadratic pass runs along the other axis), square and one-pixel frames.
    for h, w in [(23, 9), (9, 30), (17, 17), (1, 12)]:
        ms = np.stack([random_blobs(rng, h, w) for _ in range(8)] + [np.ones((h, w), bool)])
        got = np.asarray(depth(jnp.asarray(ms)))
        for m, g in zip(ms, got):
            ref = brute_squared_depth(m)
            np.testing.assert_array_equal(clicker.squared_depth(m), ref)
            np.testing.assert_array_equal(g, ref)


def test_first_click_is_the_deepest_pixel_with_row_major_ties():
    gt = np.zeros((40, 80), bool)
    gt[10:30, 20:60] = True  # 20 x 40: depth 10 on rows 19..20, cols 29..50
    first = clicker.next_click(gt, np.zeros_like(gt), np.ones_like(gt))
    assert first == ((19, 29), True)
    assert jax_clicks(gt[None], np.zeros_like(gt)[None], np.ones_like(gt)[None]) == [first]


def test_empty_gt_and_perfect_prediction_give_no_click():
    z = np.zeros((16, 16), bool)
    assert clicker.next_click(z, z, ~z) is None
    m = z.copy()
    m[2:7, 3:9] = True
    assert clicker.next_click(m, m, ~z) is None
    assert jax_clicks(np.stack([z, m]), np.stack([z, m]), np.stack([~z, ~z])) == [None, None]


def test_empty_prediction_clicks_positive_and_false_positive_clicks_negative():
    gt = np.zeros((30, 30), bool)
    gt[5:15, 5:15] = True
    assert clicker.next_click(gt, np.zeros_like(gt), ~np.zeros_like(gt)) == ((9, 9), True)
    pred = gt.copy()
    pred[20:30, 0:30] = True  # a false positive touching the bottom border, 10 rows deep
    # Depth of the FP band is 5 (zero padding below row 29), the FN region is empty.
    assert clicker.next_click(gt, pred, np.ones_like(gt)) == ((24, 4), False)


def test_equal_depth_goes_negative():
    gt = np.zeros((20, 40), bool)
    gt[5:10, 5:10] = True  # 5x5 false negative, depth 3 at (7, 7)
    pred = np.zeros_like(gt)
    pred[5:10, 25:30] = True  # 5x5 false positive, depth 3 at (7, 27)
    c = clicker.next_click(gt, pred, np.ones_like(gt))
    assert c == ((7, 27), False) == ritm_click(gt, pred, np.ones_like(gt))
    assert jax_clicks(gt[None], pred[None], np.ones_like(gt)[None]) == [c]


def test_clicked_pixels_are_excluded():
    gt = np.zeros((9, 9), bool)
    gt[2:7, 2:7] = True
    nc = np.ones_like(gt)
    nc[4, 4] = False  # the centre was clicked; the prediction still misses everything
    c = clicker.next_click(gt, np.zeros_like(gt), nc)
    # Depths in the whole square: 3 at the centre, 2 on the ring around it; the centre is
    # zeroed, so the first ring pixel in row-major order wins.
    assert c == ((3, 3), True) == ritm_click(gt, np.zeros_like(gt), nc)
    assert jax_clicks(gt[None], np.zeros_like(gt)[None], nc[None]) == [c]


def test_click_after_an_ignored_click():
    """The model ignored the first click (its prediction is still empty): RITM clicks the
    next deepest pixel of the whole false-negative region, right beside the first click.
    Removing the clicked pixel before the distance transform instead would make its
    neighbours shallow and move the click 10 px away, to (19, 39)."""
    gt = np.zeros((40, 80), bool)
    gt[10:30, 20:60] = True  # 20 x 40: depth 10 on rows 19..20, cols 29..50
    empty = np.zeros_like(gt)
    first = clicker.next_click(gt, empty, np.ones_like(gt))
    assert first == ((19, 29), True)
    nc = np.ones_like(gt)
    nc[first[0]] = False
    second = clicker.next_click(gt, empty, nc)
    assert second == ((19, 30), True) == ritm_click(gt, empty, nc)
    assert jax_clicks(gt[None], empty[None], nc[None]) == [second]
    # The earlier reading (clicked pixels removed first) gives another click: the test can
    # tell them apart.
    assert ritm_click(gt & nc, empty, np.ones_like(gt)) == ((19, 39), True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_and_jax_clicks_agree_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(8, 64, size=2)
    n = 12
    gts = np.stack([random_blobs(rng, h, w) for _ in range(n)])
    preds = np.stack(
        [random_blobs(rng, h, w) if i % 3 else np.zeros((h, w), bool) for i in range(n)]
    )
    ncs = rng.random((n, h, w)) > 0.02
    ref = [ritm_click(g, p, c) for g, p, c in zip(gts, preds, ncs)]
    assert [clicker.next_click(g, p, c) for g, p, c in zip(gts, preds, ncs)] == ref
    assert jax_clicks(gts, preds, ncs) == ref


def test_numpy_and_jax_clicks_agree_on_real_masks():
    masks = voc_masks(step=2)
    n = len(masks)
    preds = np.stack(
        [
            masks[(i + 1) % n] | (masks[i] & (np.arange(masks.shape[1])[:, None] % 7 < 3))
            for i in range(n)
        ]
    )
    ncs = np.ones_like(masks)
    ref = [ritm_click(g, p, c) for g, p, c in zip(masks, preds, ncs)]
    assert [clicker.next_click(g, p, c) for g, p, c in zip(masks, preds, ncs)] == ref
    assert jax_clicks(masks, preds, ncs) == ref
    # Whole sequences: each click is excluded before the next, on an imperfect prediction.
    click_sequence(masks[0], [np.zeros_like(masks[0])] + [preds[0]] * 4)


def test_jax_clicks_in_a_padded_frame_equal_the_unpadded_ones():
    rng = np.random.default_rng(3)
    gts = np.stack([random_blobs(rng, 31, 45) for _ in range(6)])
    preds = np.stack([random_blobs(rng, 31, 45) for _ in range(6)])
    ncs = np.ones_like(gts)
    ref = jax_clicks(gts, preds, ncs)
    pad = lambda x, v: np.pad(x, ((0, 0), (0, 17), (0, 3)), constant_values=v)
    assert jax_clicks(pad(gts, False), pad(preds, False), pad(ncs, True)) == ref


def test_boundary_click():
    rng = np.random.default_rng(4)
    real = voc_masks(step=2)[:6]
    sets = [real, np.stack([random_blobs(rng, 50, 40) for _ in range(6)])]
    on_device = jax.jit(clicks.boundary_click, static_argnums=1)
    for band in (10.0, 3.0):
        for batch in sets:
            yx, valid = jax.device_get(on_device(jnp.asarray(batch), band))
            for m, yx_k, valid_k in zip(batch, yx, valid):
                c = clicker.boundary_click(m, band)
                depth = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
                ys, xs = np.nonzero(m & (depth <= band))
                assert c == ((int(ys[len(ys) // 2]), int(xs[len(xs) // 2])), True)
                assert m[c[0]] and depth[c[0]] <= band
                assert bool(valid_k) and tuple(int(v) for v in yx_k) == c[0]
    assert clicker.boundary_click(np.zeros((5, 5), bool)) is None
    assert not bool(on_device(jnp.zeros((5, 5), bool), 10.0)[1])


def test_mask_box():
    m = np.zeros((20, 30), bool)
    m[3:8, 10:12] = True
    m[15, 0] = True
    assert clicker.mask_box(m) == (0, 3, 11, 15)
    box, valid = jax.device_get(masks.mask_to_box(jnp.asarray(np.stack([m, m & False]))))
    assert tuple(box[0]) == (0, 3, 11, 15) and bool(valid[0])
    assert not bool(valid[1]) and clicker.mask_box(m & False) is None
