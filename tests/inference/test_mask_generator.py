"""Automatic mask generation against the official `SamAutomaticMaskGenerator`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import skimage.data
import torch
import torchvision
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.utils import amg

from sum_jax.inference import mask_generator as mg
from sum_jax.inference.predictor import SamPredictor
from sum_jax.models.sam import VARIANTS
from tests.torch_reference import flax_from_torch, torch_sam


@pytest.fixture(scope="module")
def models():
    config = VARIANTS["tiny"]
    tmodel = torch_sam(config, seed=3)
    return tmodel, SamPredictor(flax_from_torch(tmodel, config))


def _both(models, image, **kwargs):
    tmodel, predictor = models
    ours_cfg = {k: v for k, v in kwargs.items() if k != "min_mask_region_area"}
    ours = mg.MaskGenerator(predictor, mg.GeneratorSettings(max_area_fraction=1.0, **ours_cfg))
    ref = SamAutomaticMaskGenerator(tmodel, output_mode="binary_mask", **kwargs)
    with torch.no_grad():
        return ours.generate(image), ref.generate(image)


def _assert_same(ours, ref):
    assert len(ours) == len(ref)
    # Both are ordered by NMS (decreasing predicted IoU); match on the generating point.
    key = lambda r: (
        round(r["point_coords"][0][0], 3),
        round(r["point_coords"][0][1], 3),
        round(r["predicted_iou"], 4),
    )
    ours, ref = sorted(ours, key=key), sorted(ref, key=key)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a["point_coords"], b["point_coords"], atol=1e-6)
        np.testing.assert_allclose(a["predicted_iou"], b["predicted_iou"], rtol=1e-4, atol=1e-5)
        assert abs(a["stability_score"] - b["stability_score"]) < 2e-3
        assert np.mean(a["segmentation"] == b["segmentation"]) >= 0.999
        assert np.abs(np.subtract(a["bbox"], b["bbox"])).max() <= 1
        assert a["crop_box"] == b["crop_box"]
        assert abs(a["area"] - b["area"]) <= 0.001 * a["segmentation"].size


def test_keep_everything_matches_official(models):
    ours, ref = _both(
        models,
        skimage.data.coffee(),
        points_per_side=6,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        stability_score_offset=0.05,
        box_nms_thresh=1.0,
    )
    assert len(ours) == 3 * 36
    assert any(r["stability_score"] > 0.1 for r in ours)  # the scores compared are not all 0
    _assert_same(ours, ref)
    assert ours[0]["low_res_logits"].shape == (32, 32)


def test_filters_and_nms_match_official(models):
    image = skimage.data.chelsea()
    probe, _ = _both(
        models,
        image,
        points_per_side=6,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        stability_score_offset=0.05,
        box_nms_thresh=1.0,
    )
    ious = np.array([r["predicted_iou"] for r in probe])
    stab = np.array([r["stability_score"] for r in probe])
    # Thresholds at the medians: each filter removes about half; NMS then merges duplicates.
    ours, ref = _both(
        models,
        image,
        points_per_side=6,
        pred_iou_thresh=float(np.median(ious)),
        stability_score_thresh=float(np.median(stab)),
        stability_score_offset=0.05,
        box_nms_thresh=0.7,
    )
    assert 0 < len(ref) < len(probe) // 2
    _assert_same(ours, ref)


def test_crop_layers_match_official(models):
    ours, ref = _both(
        models,
        skimage.data.coffee(),
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=0.7,
        crop_n_layers=1,
        crop_n_points_downscale_factor=2,
    )
    assert {tuple(r["crop_box"]) for r in ours} == {tuple(r["crop_box"]) for r in ref}
    _assert_same(ours, ref)


def test_point_grid_and_crop_boxes():
    np.testing.assert_allclose(mg.point_grid(5), amg.build_point_grid(5))
    for size, layers in [((400, 600), 1), ((1500, 2250), 2), ((77, 31), 2)]:
        assert mg.crop_boxes(size, layers, 512 / 1500) == amg.generate_crop_boxes(
            size, layers, 512 / 1500
        )


def test_nms_matches_torchvision():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (200, 2))
    wh = rng.uniform(5, 40, (200, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.permutation(200).astype(np.float64)  # distinct: no ties
    for thr in (0.3, 0.7):
        ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).numpy()
        np.testing.assert_array_equal(mg.nms(boxes, scores, thr), ref)


def test_area_filter(models):
    _, predictor = models
    image = skimage.data.coffee()
    everything = mg.GeneratorSettings(
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
        max_area_fraction=1.0,
    )
    all_masks = mg.MaskGenerator(predictor, everything).generate(image)
    areas = np.array([r["area"] for r in all_masks])
    limit = float(np.median(areas)) / image[..., 0].size

    kept = mg.MaskGenerator(
        predictor, dataclasses.replace(everything, max_area_fraction=limit)
    ).generate(image)
    assert len(kept) == int(np.sum(areas < limit * image[..., 0].size))
    assert all(r["area"] < limit * image[..., 0].size for r in kept)


def test_image_set_by_the_caller_gives_the_same_masks(models):
    """`image_is_set=True` (the pseudo-label loop encodes the next image ahead) uses the
    predictor's embedding: the same records as encoding inside `generate`; a predictor
    holding another image is refused."""
    _, predictor = models
    image, other = skimage.data.chelsea(), skimage.data.coffee()
    settings = mg.GeneratorSettings(
        points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    )
    generator = mg.MaskGenerator(predictor, settings)
    ref = generator.generate(image)
    predictor.set_image(other)
    predictor.set_image(image)
    got = generator.generate(image, image_is_set=True)
    assert len(got) == len(ref) > 10
    for a, b in zip(got, ref):
        for k in a:
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    predictor.set_image(other)
    with pytest.raises(ValueError, match="image_is_set"):
        generator.generate(image, image_is_set=True)
