"""AugSeg's strong view (sum_jax.train.augment): each intensity operation against PIL (the
library AugSeg's augmentations call) on a real photo, determinism for a key, and CutMix
pasting whole grid cells of one other image inside the real image only."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from sum_jax.train import augment


@pytest.fixture(scope="module")
def photo():
    from skimage import data, transform

    return (transform.resize(data.coffee(), (48, 72), anti_aliasing=True) * 255).astype(np.uint8)


def diff(ours, ref) -> np.ndarray:
    return np.abs(np.asarray(ours, np.float64) - np.asarray(ref, np.float64))


@pytest.mark.parametrize("v", [0.1, 0.5, 0.9])
def test_enhancements_match_pil(photo, v):
    pil, x = Image.fromarray(photo), jnp.asarray(photo, jnp.float32)
    area = jnp.ones(photo.shape[:2], bool)
    assert diff(augment.contrast(x, area, v), ImageEnhance.Contrast(pil).enhance(v)).max() == 0
    assert diff(augment.brightness(x, v), ImageEnhance.Brightness(pil).enhance(v)).max() == 0
    assert diff(augment.sharpness(x, v), ImageEnhance.Sharpness(pil).enhance(v)).max() == 0
    # PIL's grey conversion rounds in fixed point: a level off on a few pixels.
    d = diff(augment.color(x, v), ImageEnhance.Color(pil).enhance(v))
    assert d.max() <= 1 and d.mean() < 0.01


def test_histogram_and_bit_operations_match_pil(photo):
    pil, x = Image.fromarray(photo), jnp.asarray(photo, jnp.float32)
    area = jnp.ones(photo.shape[:2], bool)
    assert diff(augment.equalize(x, area), ImageOps.equalize(pil)).max() == 0
    d = diff(augment.autocontrast(x, area), ImageOps.autocontrast(pil))
    assert d.max() <= 1 and d.mean() < 0.01
    for bits in (4, 6, 7):
        assert diff(augment.posterize(x, bits), ImageOps.posterize(pil, bits)).max() == 0
    for t in (1, 100, 255):
        assert diff(augment.solarize(x, t), ImageOps.solarize(pil, t)).max() == 0


def test_blur_and_hue_follow_pil(photo):
    """PIL blurs with repeated box filters and rounds HSV to 8 bits: close, not equal."""
    pil, x = Image.fromarray(photo), jnp.asarray(photo, jnp.float32)
    for sigma in (0.5, 1.5):
        ref = pil.filter(ImageFilter.GaussianBlur(radius=sigma))
        assert diff(augment.blur(x, sigma), ref).mean() < 1.0
    h, s, v = pil.convert("HSV").split()
    shifted = (np.array(h, np.int32) + int(0.2 * 255)) % 256
    ref = Image.merge("HSV", (Image.fromarray(shifted.astype(np.uint8), "L"), s, v))
    d = diff(augment.hue(x, 0.2), ref.convert("RGB"))
    assert d.mean() < 1.5 and np.mean(diff(augment.hue(x, 0.2), photo)) > 10


def test_statistics_ignore_the_padding(photo):
    """Autocontrast and equalize of a padded photo equal those of the photo alone."""
    padded = np.zeros((64, 72, 3), np.uint8)
    padded[:48] = photo
    area = jnp.zeros((64, 72), bool).at[:48].set(True)
    x = jnp.asarray(padded, jnp.float32)
    for op, ref in ((augment.autocontrast, ImageOps.autocontrast), (augment.equalize, ImageOps.equalize)):  # fmt: skip
        out = np.asarray(op(x, area))
        assert diff(out[:48], ref(Image.fromarray(photo))).max() <= 1


# One compile for every call below.
strong_view = jax.jit(augment.strong_view, static_argnames=("mask_size", "num_augs"))


def batch_of_flat_colours(b=4, s=64, low=16):
    """`b` images of one colour each (different) whose lower quarter is outside the real
    image (`area`); the colour fills it too, so that blurs stay flat up to the border."""
    colours = np.array([[200, 30, 90], [20, 180, 60], [90, 90, 250], [140, 220, 10]])[:b]
    images = np.broadcast_to(colours[:, None, None], (b, s, s, 3)).astype(np.uint8).copy()
    area = np.zeros((b, low, low), bool)
    area[:, : 3 * low // 4] = True
    return jnp.asarray(images), jnp.asarray(area)


def test_strong_view_is_deterministic_for_a_key():
    images, area = batch_of_flat_colours()
    a, pa, _ = strong_view(jax.random.key(3), images, area, mask_size=16)
    b, pb, _ = strong_view(jax.random.key(3), images, area, mask_size=16)
    c, pc, _ = strong_view(jax.random.key(4), images, area, mask_size=16)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pa, pb)
    assert (np.asarray(a) != np.asarray(c)).any() or (np.asarray(pa) != np.asarray(pc)).any()


def test_cutmix_pastes_whole_grid_cells_inside_the_image():
    """Every intensity operation keeps a flat image flat, so each view is one colour outside
    `pasted` and one other image's colour inside it: the pasted pixels are exactly the
    upsampled grid cells, inside the real image, and the view is zero outside it."""
    images, area = batch_of_flat_colours()
    k = 64 // 16
    mixed = 0
    for seed in range(4):
        view, pasted, _ = strong_view(jax.random.key(seed), images, area, mask_size=16)
        view, pasted = np.asarray(view), np.asarray(pasted)
        assert not (pasted & ~np.asarray(area)).any()
        assert (view[:, 3 * 64 // 4 :] == 0).all()
        up = pasted.repeat(k, 1).repeat(k, 2)
        for i in range(len(view)):
            real = np.asarray(area[i]).repeat(k, 0).repeat(k, 1)
            own = view[i][real & ~up[i]]
            assert (own == own[0]).all()
            if up[i].any():
                mixed += 1
                inside = view[i][up[i]]
                assert (inside == inside[0]).all()
    assert mixed > 0  # some images were mixed (cutmix_prob = 1, boxes may be empty)


def test_no_cutmix_without_probability():
    images, area = batch_of_flat_colours()
    _, pasted, _ = strong_view(jax.random.key(0), images, area, mask_size=16, cutmix_prob=0.0)
    assert not np.asarray(pasted).any()


def test_cycle_partners_is_a_derangement_of_the_eligible_images():
    cycle = jax.jit(augment.cycle_partners)
    for seed, eligible in enumerate(
        [[1, 1], [1, 0, 1, 0, 1], [1] * 8, [0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0], [1, 1, 1]]
    ):
        eligible = np.asarray(eligible, bool)
        partner, mixed = map(np.asarray, cycle(jax.random.key(seed), jnp.asarray(eligible)))
        idx = np.flatnonzero(eligible)
        if len(idx) < 2:
            assert not mixed.any() and (partner == np.arange(len(eligible))).all()
            continue
        np.testing.assert_array_equal(mixed, eligible)
        assert (partner[idx] != idx).all()  # never its own partner
        assert sorted(partner[idx]) == sorted(idx)  # a permutation of the eligible images
        # One cycle through all of them: following partners from one image visits every one.
        seen, i = [], idx[0]
        for _ in idx:
            seen.append(i)
            i = partner[i]
        assert sorted(seen) == sorted(idx) and i == idx[0]
        assert (partner[~eligible] == np.flatnonzero(~eligible)).all()


def test_cutmix_pastes_only_from_another_eligible_image():
    """The pasted pixels are the partner's augmented pixels (the same key without CutMix
    gives every image's augmented view), the partner is another pseudo-labelled image, and
    an image alone in its group is left as it is."""
    images, area = batch_of_flat_colours()
    eligible = jnp.asarray([True, False, True, False])
    for seed in range(3):
        key = jax.random.key(seed)
        plain, none, _ = strong_view(key, images, area, mask_size=16, cutmix_prob=0.0)
        view, pasted, partner = strong_view(key, images, area, mask_size=16, eligible=eligible)
        view, pasted, partner, plain = map(np.asarray, (view, pasted, partner, plain))
        assert not np.asarray(none).any()
        np.testing.assert_array_equal(partner[[0, 2]], [2, 0])
        assert not pasted[[1, 3]].any()
        up = pasted.repeat(4, 1).repeat(4, 2)
        for i in range(4):
            np.testing.assert_array_equal(view[i][up[i]], plain[partner[i]][up[i]])
            np.testing.assert_array_equal(view[i][~up[i]], plain[i][~up[i]])
    single = jnp.asarray([False, True, False, False])
    _, pasted, partner = strong_view(jax.random.key(0), images, area, mask_size=16, eligible=single)
    assert not np.asarray(pasted).any() and list(np.asarray(partner)) == [0, 1, 2, 3]
