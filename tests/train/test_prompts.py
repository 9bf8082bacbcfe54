"""sum_jax.prompts: region and certainty-weighted sampling, boxes, error-region clicks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from sum_jax.train import prompts


def pixel(coords):
    """(x, y) pixel centres -> integer (row, col)."""
    c = np.asarray(coords)
    return np.floor(c[..., 1]).astype(int), np.floor(c[..., 0]).astype(int)


def test_pixel_centre_convention():
    """Grid pixel (row 2, col 5) of an 8 x 8 grid covers input pixels rows 8..11, cols
    20..23 of a 32 x 32 frame, centred at (x, y) = (22, 10) in continuous coordinates. SAM's
    prompt encoder adds 0.5 to the coordinates it gets (pixel index -> pixel centre), so the
    point given to the model is (21.5, 9.5): the +0.5 is applied once, by the encoder."""
    region = np.zeros((1, 8, 8), bool)
    region[0, 2, 5] = True
    coords, valid = prompts.sample_points(jax.random.key(0), region)
    np.testing.assert_array_equal(coords, [[5.5, 2.5]])
    assert bool(valid[0])
    point = np.asarray(prompts.to_input_frame(coords, 8, 32))
    np.testing.assert_allclose(point, [[21.5, 9.5]])
    block_rows, block_cols = np.arange(8, 12), np.arange(20, 24)
    np.testing.assert_allclose(point[0] + 0.5, [block_cols.mean() + 0.5, block_rows.mean() + 0.5])


def test_never_outside_region_or_zero_certainty():
    rng = np.random.default_rng(0)
    n, size = 256, 16
    region = rng.random((n, size, size)) < 0.3
    c = rng.random((n, size, size)).astype(np.float32)
    c[rng.random((n, size, size)) < 0.5] = 0.0  # half the pixels fully uncertain
    draw = jax.jit(prompts.sample_points)
    for seed in range(20):
        coords, valid = draw(jax.random.key(seed), region, c)
        rows, cols = pixel(coords)
        ok = np.asarray(valid)
        idx = np.arange(n)[ok]
        assert region[idx, rows[ok], cols[ok]].all()
        assert (c[idx, rows[ok], cols[ok]] > 0).all()
        np.testing.assert_array_equal(ok, (region & (c > 0)).reshape(n, -1).any(-1))


def test_empty_region_is_invalid():
    region = np.zeros((2, 4, 4), bool)
    region[1, 0, 0] = True
    c = np.ones((2, 4, 4), np.float32)
    c[1, 0, 0] = 0.0  # the only region pixel is fully uncertain
    _, valid = prompts.sample_points(jax.random.key(0), region)
    np.testing.assert_array_equal(valid, [False, True])
    _, valid = prompts.sample_points(jax.random.key(0), region, c)
    np.testing.assert_array_equal(valid, [False, False])


def _frequencies(region, certainty, num, seed):
    """Empirical frequencies of `num` independent draws (one per copy of the mask)."""
    reg = np.broadcast_to(region, (num,) + region.shape)
    cert = None if certainty is None else np.broadcast_to(certainty, (num,) + region.shape)
    coords, valid = jax.jit(prompts.sample_points)(jax.random.key(seed), reg, cert)
    assert np.asarray(valid).all()
    rows, cols = pixel(coords)
    counts = np.zeros(region.shape)
    np.add.at(counts, (rows, cols), 1)
    return counts


@pytest.mark.parametrize("uniform", [False, True])
def test_frequencies_match_certainty(uniform):
    """Draws follow P_i = c_i / sum_R c (or 1/|R|): chi-square goodness of fit at p > 0.001
    and every frequency within 0.012 of its probability (about 3.5 standard errors at
    20000 draws), fixed seed."""
    region = np.zeros((4, 4), bool)
    region[1:3, :] = True
    region[0, 0] = True
    certainty = np.zeros((4, 4), np.float32)
    certainty[region] = np.linspace(0.05, 1.0, region.sum())
    certainty[1, 1] = 0.0  # in the region but never drawable
    num = 20000
    counts = _frequencies(region, None if uniform else certainty, num, seed=123)
    weights = region.astype(np.float64) if uniform else certainty * region
    probs = weights / weights.sum()
    assert counts[probs == 0].sum() == 0
    observed, expected = counts[probs > 0], num * probs[probs > 0]
    chi2 = ((observed - expected) ** 2 / expected).sum()
    p_value = stats.chi2.sf(chi2, df=len(observed) - 1)
    assert p_value > 1e-3, (chi2, p_value)
    np.testing.assert_allclose(counts / num, probs, atol=0.012)


def test_reproducible_from_key():
    region = np.random.default_rng(1).random((8, 16, 16)) < 0.5
    a = prompts.sample_points(jax.random.key(3), region)[0]
    b = prompts.sample_points(jax.random.key(3), region)[0]
    c = prompts.sample_points(jax.random.key(4), region)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_mask_boxes_are_inclusive_as_sams():
    """Boxes on the grid, and in the input frame, equal the official `batched_mask_to_box`
    (inclusive maxima) of the mask, resp. of the mask upsampled to the input frame."""
    import torch
    from segment_anything.utils.amg import batched_mask_to_box

    t = np.zeros((3, 16, 16), np.uint8)
    t[0, 2:5, 3:10] = 1
    t[1, 7, 7] = 1
    boxes, valid = prompts.mask_boxes(t)
    np.testing.assert_array_equal(boxes, [[3, 2, 9, 4], [7, 7, 7, 7], [0, 0, 0, 0]])
    np.testing.assert_array_equal(valid, [True, True, False])
    official = batched_mask_to_box(torch.from_numpy(t[:2] > 0)).numpy()
    np.testing.assert_array_equal(boxes[:2], official)
    k = 4  # 16 -> 64
    upsampled = np.kron(t[:2], np.ones((k, k), np.uint8)) > 0
    np.testing.assert_array_equal(
        prompts.box_to_input_frame(boxes[:2], 16, 64),
        batched_mask_to_box(torch.from_numpy(upsampled)).numpy(),
    )


def test_jitter_std_is_ten_percent_capped_at_20px():
    n = 20000
    # Width 100 -> std 10; height 400 -> std capped at 20. Far from the image border.
    box = np.array([300.0, 300.0, 400.0, 700.0], np.float32)
    noisy = prompts.jitter_boxes(jax.random.key(0), np.tile(box, (n, 1)), np.array([1024, 1024]))
    noise = np.asarray(noisy) - box
    # Standard error of a std estimate is std / sqrt(2n) (<1% here); allow 3%.
    np.testing.assert_allclose(noise.std(0), [10, 20, 10, 20], rtol=0.03)
    np.testing.assert_allclose(noise.mean(0), [0, 0, 0, 0], atol=0.5)


def test_jittered_boxes_stay_in_the_real_image():
    """A 3:2 photo in a 64 x 64 frame is 43 x 64 (rows 0..42 real): the jittered box of a
    mask at its bottom edge never reaches the zero padding below."""
    n = 4000
    image_size = np.tile([43, 64], (n, 1))
    box = np.tile([10.0, 30.0, 60.0, 42.0], (n, 1))
    clipped = np.asarray(prompts.jitter_boxes(jax.random.key(1), box, image_size))
    assert clipped.min() >= 0
    assert clipped[:, [1, 3]].max() <= 42 and clipped[:, [0, 2]].max() <= 63
    assert (clipped[:, 3] == 42).mean() > 0.3  # the clip is active, so the test can fail
    assert np.all(clipped[:, 2] >= clipped[:, 0]) and np.all(clipped[:, 3] >= clipped[:, 1])


def test_first_prompts():
    n, size, img = 4000, 16, 64
    t = np.zeros((n, size, size), np.uint8)
    t[:, 4:8, 2:12] = 1
    t[0] = 0  # an empty target gets neither prompt
    first = prompts.sample_first_prompts(jax.random.key(0), t, None, img_size=img)
    box_valid, point_valid = np.asarray(first["box_valid"]), np.asarray(first["point_valid"])
    assert not box_valid[0] and not point_valid[0]
    assert np.all(box_valid[1:] ^ point_valid[1:])
    # Box or point with equal probability: 4000 draws, 3.2 standard errors.
    assert abs(box_valid.mean() - 0.5) < 0.025
    rows, cols = pixel((np.asarray(first["point"]) + 0.5) * size / img)
    assert t[np.arange(n)[point_valid], rows[point_valid], cols[point_valid]].all()
    exact = prompts.sample_first_prompts(
        jax.random.key(0), t[1:2], None, img_size=img, box_prob=1.0, box_noise_frac=0.0
    )
    # Mask rows 4..7, cols 2..11 of 16 -> input rows 16..31, cols 8..47 of 64 (inclusive).
    np.testing.assert_allclose(exact["box"], [[8, 16, 47, 31]])


def test_error_points_labels_and_area():
    rng = np.random.default_rng(2)
    n, size = 512, 16
    t = rng.random((n, size, size)) < 0.4
    pred = rng.random((n, size, size)) < 0.4
    pred[0] = t[0]  # no error left: no click
    area = np.zeros((n, size, size), bool)
    area[:, :12, :10] = True
    c = rng.random((n, size, size)).astype(np.float32)
    point, label, valid = prompts.sample_error_points(
        jax.random.key(0), t.astype(np.uint8), pred, c, area, img_size=size
    )
    valid = np.asarray(valid)
    assert not valid[0] and valid[1:].all()
    rows, cols = pixel(point)
    idx = np.arange(n)[valid]
    r, cc = rows[valid], cols[valid]
    assert (t[idx, r, cc] != pred[idx, r, cc]).all()  # in the error region
    assert area[idx, r, cc].all()
    # False negative -> positive click, false positive -> negative click.
    np.testing.assert_array_equal(np.asarray(label)[valid], t[idx, r, cc].astype(int))
    assert 0 < np.asarray(label)[valid].mean() < 1


def test_image_area():
    area = prompts.image_area(jnp.array([[64, 128], [128, 30]]), 32, 128)
    assert area.shape == (2, 32, 32)
    # 64 input rows = 16 mask rows; 30 input cols overlap ceil(30 / 4) = 8 mask cols.
    assert np.asarray(area[0]).sum() == 16 * 32
    assert np.asarray(area[1]).sum() == 32 * 8
