"""Generated pretraining scenes: deterministic per (seed, index), masks that are the visible
parts of distinct objects, the training pipeline's element layout, a checkpointable stream,
and nothing from the held-out photos."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from configs.data import pipeline as data_pipeline
from sum_jax.data import image_ops, pipeline
from sum_jax.pretrain import assets, heldout, scenes, shapes


def _data_cfg(**kw) -> ml_collections.ConfigDict:
    cfg = data_pipeline.get_config()
    settings = {"image_size": 128, "mask_size": 32, "max_masks": 4, "seed": 3, "batch_size": 3,
                    "read_threads": 1, "prefetch_buffer_size": 4, "full_res_masks": True}  # fmt: skip
    cfg.update({**settings, **kw})
    return cfg


def test_a_scene_is_a_pure_function_of_seed_and_index():
    a_image, a_masks = scenes.make_scene(5, 17, 160)
    b_image, b_masks = scenes.make_scene(5, 17, 160)
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_masks, b_masks)
    c_image, _ = scenes.make_scene(5, 18, 160)
    d_image, _ = scenes.make_scene(6, 17, 160)
    assert not np.array_equal(a_image, c_image) and not np.array_equal(a_image, d_image)


def test_scene_masks_are_visible_disjoint_objects_of_the_stated_size():
    sizes, counts = set(), []
    for index in range(40):
        image, masks = scenes.make_scene(0, index, 128)
        assert image.dtype == np.uint8 and max(image.shape[:2]) == 128 and image.shape[2] == 3
        sizes.add(image.shape[:2])
        assert masks.shape[1:] == image.shape[:2] and masks.dtype == bool
        assert len(masks) >= 1
        assert (masks.reshape(len(masks), -1).sum(1) >= scenes.MIN_AREA_FRAC * masks[0].size).all()
        assert masks.sum(0).max(initial=0) <= 1  # occlusion: a pixel belongs to one object
        counts.append(len(masks))
    assert len(sizes) > 5  # square and non-square scenes, both orientations
    assert np.mean(counts) >= 2 and max(counts) >= 4


def test_pasted_objects_differ_from_their_background():
    """The masks mark pixels that changed: the mean colour inside an object differs from a
    ring of background around it in most cases (the objects are visible, not random)."""
    from scipy import ndimage

    contrast = []
    for index in range(30):
        image, masks = scenes.make_scene(1, index, 128)
        for mask in masks:
            ring = ndimage.binary_dilation(mask, iterations=3) & ~masks.any(0)
            if ring.sum() > 20:
                inside = image[mask].astype(float).mean(0)
                outside = image[ring].astype(float).mean(0)
                contrast.append(np.abs(inside - outside).max())
    assert len(contrast) > 30 and np.median(contrast) > 15


def test_every_procedural_shape_draws_a_nonempty_mask():
    rng = np.random.default_rng(0)
    for name, draw in shapes.SHAPES.items():
        for _ in range(5):
            mask = draw(rng, 96)
            assert mask.shape == (96, 96) and mask.any(), name
    thin = shapes.thin_curves(np.random.default_rng(1), 128)
    # A thin structure: most of its pixels are within 4 px of the outside.
    from scipy import ndimage

    assert (ndimage.distance_transform_edt(thin)[thin] <= 4).mean() > 0.9


def test_scene_element_has_the_pipeline_layout():
    cfg = _data_cfg()
    element = scenes.scene_element(7, cfg)
    empty = pipeline.empty_element(cfg)
    assert set(element) == set(empty)
    for key, value in empty.items():
        assert element[key].shape == value.shape and element[key].dtype == value.dtype, key
    image, masks = scenes.make_scene(cfg.seed, 7, cfg.image_size)
    expected_image, size = image_ops.resize_longest_side_and_pad(image, cfg.image_size)
    np.testing.assert_array_equal(element["image"], expected_image)
    np.testing.assert_array_equal(element["image_size"], size)
    n = int(element["mask_valid"].sum())
    assert n == min(len(masks), cfg.max_masks) and element["mask_valid"][:n].all()
    # Every emitted mask is one of the scene's masks in the low-res and full frames.
    lows = [image_ops.mask_to_frame(m, cfg.image_size, cfg.mask_size) for m in masks]
    for j in range(n):
        assert any(np.array_equal(element["masks"][j], low) for low in lows)
        assert element["masks_full"][j].sum() > 0
    assert not element["is_pseudo"] and element["uncertainty"].max() == 0


def test_the_scene_stream_batches_and_resumes_exactly():
    cfg = _data_cfg()
    it = iter(scenes.make_scene_dataset(cfg, process_index=0, process_count=1))
    next(it)
    state = it.get_state()
    expected = next(it)
    assert expected["image"].shape == (3, 128, 128, 3)
    resumed = iter(scenes.make_scene_dataset(cfg, process_index=0, process_count=1))
    resumed.set_state(state)
    got = next(resumed)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    # Two hosts read disjoint scenes, together the same ones as one host.
    one = scenes.make_scene_dataset(_data_cfg(batch_size=2), process_index=0, process_count=1)
    first = next(iter(one))["image"]
    host0 = next(iter(scenes.make_scene_dataset(_data_cfg(batch_size=1), process_index=0,
                                                process_count=2)))["image"]  # fmt: skip
    host1 = next(iter(scenes.make_scene_dataset(_data_cfg(batch_size=1), process_index=1,
                                                process_count=2)))["image"]  # fmt: skip
    np.testing.assert_array_equal(first[0], host0[0])
    np.testing.assert_array_equal(first[1], host1[0])


def test_pretraining_never_reads_the_held_out_photos():
    """No held-out photo is a background, and no cut-out comes from one."""
    held = [heldout.OBJECTS[photo]()[0] for photo in heldout.PHOTOS]
    assert not {"coins", "stereo_motorcycle"} & set(assets.BACKGROUNDS)
    for photo in assets.backgrounds():
        for h in held:
            assert photo.shape != h.shape or not np.array_equal(photo, h)
    for cut in assets.cutouts():
        for h in held:  # a cut-out is a crop: look for its pixels in the held-out photo
            assert not _contains(h, cut.rgb), cut.name
    assert set(heldout.PHOTOS) == {"hopper", "motorcycle", "flower", "voc", "coins"}
    assert _contains(held[0], held[0][40:90, 30:120])  # the check itself finds a crop


def _contains(photo: np.ndarray, crop: np.ndarray) -> bool:
    """Whether `crop` occurs in `photo` at some offset (checked at the crop's first row)."""
    h, w = crop.shape[:2]
    if h > photo.shape[0] or w > photo.shape[1]:
        return False
    rows = np.lib.stride_tricks.sliding_window_view(photo[..., 0], w, axis=1)  # [H, W-w+1, w]
    for y, x in zip(*np.nonzero((rows == crop[0, :, 0]).all(-1))):
        if y + h <= photo.shape[0] and np.array_equal(photo[y : y + h, x : x + w], crop):
            return True
    return False


# Pixels (x, y) that are plainly the object, and plainly not, read off each photo by eye:
# independent of the rules that made the masks.
SALIENT_PROBES = {
    "hopper": ([(260, 250), (250, 80), (250, 500), (100, 550)],
               [(50, 100), (450, 200), (20, 300), (480, 30)]),
    "motorcycle": ([(420, 205), (250, 190), (400, 320), (600, 400), (530, 150)],
                   [(600, 80), (400, 470), (100, 450), (200, 100), (700, 200)]),
    "flower": ([(310, 220), (200, 200), (420, 220), (300, 120)],
               [(50, 50), (600, 300), (100, 380), (550, 100)]),
}  # fmt: skip


@pytest.mark.parametrize("photo", ["hopper", "motorcycle", "flower", "voc", "coins"])
def test_held_out_objects_are_whole_objects(photo):
    from scipy import ndimage

    rgb, masks = heldout.OBJECTS[photo]()
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and masks.shape[1:] == rgb.shape[:2]
    assert len(masks) == {"voc": 8, "coins": 24}.get(photo, 1)
    for mask in masks:
        assert mask.sum() >= 0.01 * mask.size or photo == "coins"
        if photo == "coins":  # a coin is one solid disc: one component, no holes
            assert ndimage.label(mask)[1] == 1
            assert (ndimage.binary_fill_holes(mask) == mask).all()
    if photo in heldout.SALIENT:  # one large object, in one piece, where the eye puts it
        (mask,) = masks
        assert ndimage.label(mask)[1] == 1 and 0.15 <= mask.mean() <= 0.7
        inside, outside = SALIENT_PROBES[photo]
        assert all(mask[y, x] for x, y in inside)
        assert not any(mask[y, x] for x, y in outside)


def test_the_curriculum_starts_with_few_objects_and_ramps_to_all():
    """With `scene_ramp`, early scenes hold at most 2 objects (so at most 2 masks) and
    scenes past the ramp up to 7."""
    early = _data_cfg(scene_ramp=1000, max_masks=8)
    counts = [int(scenes.scene_element(i, early)["mask_valid"].sum()) for i in range(12)]
    assert max(counts) <= 2 and min(counts) >= 1
    late = [int(scenes.scene_element(2000 + i, early)["mask_valid"].sum()) for i in range(12)]
    assert max(late) > 2


def test_a_composite_object_is_parts_that_look_different_under_one_mask():
    """`scenes.composite`: the mask is the union of the parts (nothing painted outside it),
    and most composites hold two large regions of clearly different colour."""
    two_looks = 0
    for seed in range(12):
        rgb, mask = scenes.composite(np.random.default_rng(seed))
        again, _ = scenes.composite(np.random.default_rng(seed))
        np.testing.assert_array_equal(rgb, again)
        assert rgb.shape[:2] == mask.shape and mask.any()
        assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()
        assert not rgb[~mask].any()
        colours = (rgb[mask] // 64).astype(np.int32) @ np.array([16, 4, 1])
        shares = np.sort(np.bincount(colours, minlength=64))[::-1] / mask.sum()
        two_looks += shares[1] >= 0.05
    assert two_looks >= 8, two_looks
    # A part that vanishes when shrunk is skipped: this scene's draw stopped a pretraining
    # run (numpy's `integers(0)`) before it was.
    image, masks = scenes.make_scene(1, 4674, 128, composites=0.3)
    assert len(masks) and image.shape[2] == 3


def test_frame_filling_scenes_start_with_a_subject_that_spans_the_frame():
    """With `frame_filling=1` the first mask spans most of the frame (its bounding box's
    longer side over the frame's), far more than in plain scenes; with 0 (the default) no
    scene draws anything for it."""

    def first_span(frame_filling: float) -> float:
        spans = []
        for index in range(12):
            _, masks = scenes.make_scene(2, index, 128, composites=0.3, frame_filling=frame_filling)
            ys, xs = np.nonzero(masks[0])
            spans.append(max(np.ptp(ys) + 1, np.ptp(xs) + 1) / 128)
        return float(np.mean(spans))

    filling, plain = first_span(1.0), first_span(0.0)
    assert filling >= 0.75 and filling >= plain + 0.2, (filling, plain)  # 0.81, 0.49
    a = scenes.make_scene(2, 3, 128, composites=0.3)
    b = scenes.make_scene(2, 3, 128, composites=0.3, frame_filling=0.0)
    np.testing.assert_array_equal(a[0], b[0])
