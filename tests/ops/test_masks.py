"""`sum_jax.ops.masks` against the official `segment_anything.utils.amg` (the reference)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
amg = pytest.importorskip("segment_anything.utils.amg")

from sum_jax.ops import masks


def test_stability_score_hand_computed():
    logits = np.full((1, 4, 4), -5.0, np.float32)
    logits[0, :2, :2] = 2.0  # 4 pixels above +1
    logits[0, 2, :2] = 0.5  # 2 pixels between -1 and +1
    logits[0, 3, 0] = -0.5  # 1 more above -1
    np.testing.assert_allclose(masks.stability_score(logits, 1.0), [4 / 7])
    np.testing.assert_allclose(masks.stability_score(np.full((1, 3, 3), -9.0), 1.0), [0.0])
    ref = amg.calculate_stability_score(torch.from_numpy(logits), 0.0, 1.0).numpy()
    np.testing.assert_allclose(masks.stability_score(logits, 1.0), ref)


def test_mask_to_box_matches_official_including_empty():
    rng = np.random.default_rng(0)
    m = rng.random((6, 20, 30)) > 0.97
    m[0] = False
    m[1] = False
    m[1, 19, 29] = True
    ref = amg.batched_mask_to_box(torch.from_numpy(m)).numpy()
    boxes, valid = masks.mask_to_box(m)
    np.testing.assert_array_equal(boxes, ref)
    np.testing.assert_array_equal(boxes[0], [0, 0, 0, 0])
    np.testing.assert_array_equal(valid, m.any(axis=(1, 2)))
