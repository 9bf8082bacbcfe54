"""Pre/post-processing against the official `ResizeLongestSide` and `Sam.postprocess_masks`."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from sum_jax.ops import transforms
from tests.torch_reference import rel_err


@pytest.mark.parametrize("photo", ["coffee", "chelsea", "astronaut"])
@pytest.mark.parametrize("size", [1024, 128])
def test_resize_matches_official(photo, size):
    image = getattr(skimage.data, photo)()
    ref = ResizeLongestSide(size).apply_image(image)
    out = transforms.resize_image(image, size)
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("hw", [(300, 451), (451, 300), (1, 7), (1000, 999), (17, 17)])
def test_preprocess_shape_and_coords(hw):
    size = 1024
    t = ResizeLongestSide(size)
    assert transforms.preprocess_shape(*hw, size) == t.get_preprocess_shape(*hw, size)
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, max(hw), (5, 2))
    np.testing.assert_allclose(
        transforms.apply_coords(coords, hw, size), t.apply_coords(coords, hw)
    )
    boxes = rng.uniform(0, max(hw), (3, 4))
    np.testing.assert_allclose(transforms.apply_boxes(boxes, hw, size), t.apply_boxes(boxes, hw))


def test_normalize_and_pad_matches_official_preprocess():
    from segment_anything.modeling import Sam

    image = transforms.resize_image(skimage.data.coffee(), 128)
    h, w = image.shape[:2]
    mean = torch.tensor(transforms.PIXEL_MEAN).view(-1, 1, 1)
    std = torch.tensor(transforms.PIXEL_STD).view(-1, 1, 1)
    fake = type(
        "S",
        (),
        {"pixel_mean": mean, "pixel_std": std, "image_encoder": type("E", (), {"img_size": 128})()},
    )()
    ref = Sam.preprocess(fake, torch.from_numpy(image).permute(2, 0, 1).float())
    padded = transforms.pad_image(image, 128)[None]
    out = transforms.normalize_and_pad(jnp.asarray(padded), jnp.asarray([[h, w]]))
    np.testing.assert_allclose(out[0], ref.permute(1, 2, 0).numpy(), rtol=1e-6, atol=1e-6)
    host, size = transforms.preprocess(skimage.data.coffee(), 128)
    assert size == (h, w)
    np.testing.assert_allclose(host, out[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "original", [(400, 600), (600, 400), (1200, 1800), (50, 70), (480, 854), (2000, 3000)]
)
def test_postprocess_matches_official(original):
    from segment_anything.modeling import Sam

    size = 1024
    input_size = transforms.preprocess_shape(*original, size)
    low = np.random.default_rng(1).standard_normal((2, 3, 256, 256)).astype(np.float32)
    fake = type("S", (), {"image_encoder": type("E", (), {"img_size": size})()})()
    ref = Sam.postprocess_masks(fake, torch.from_numpy(low), input_size, original).numpy()
    out = transforms.postprocess_masks(jnp.asarray(low), input_size, original, size)
    assert out.shape == ref.shape
    assert rel_err(out, ref) < 1e-5
    # Same weights and order of products as ATen: at most a few float32 roundings apart.
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-6)
    agree = np.mean((np.asarray(out) > 0) == (ref > 0))
    assert agree > 0.99999


@pytest.mark.parametrize(
    "in_out", [(683, 480), (1024, 854), (256, 1024), (7, 3), (2000, 1333), (1024, 3000), (5, 5)]
)
def test_bilinear_taps_equal_pytorch_weights(in_out):
    n_in, n_out = in_out
    # PyTorch's weights: the resize of each unit impulse.
    eye = torch.eye(n_in, dtype=torch.float32).reshape(n_in, 1, n_in, 1)
    ref = torch.nn.functional.interpolate(eye, (n_out, 1), mode="bilinear", align_corners=False)
    ref = ref[:, 0, :, 0].numpy().T  # [out, in]
    taps = transforms.bilinear_taps(n_in, n_out)
    dense = np.zeros((n_out, n_in), np.float32)
    np.add.at(dense, (np.arange(n_out), taps.i0), taps.w0)
    np.add.at(dense, (np.arange(n_out), taps.i1), taps.w1)
    np.testing.assert_array_equal(dense, ref)  # bit for bit


def test_padded_postprocess_taps_equal_postprocess_masks():
    import jax

    rng = np.random.default_rng(2)
    apply = jax.jit(transforms.apply_postprocess)
    for h, w, s in [(37, 53, 64), (130, 90, 64), (64, 64, 64), (480, 854, 1024)]:
        low = rng.normal(size=(3, s // 4, s // 4)).astype(np.float32)
        rh, rw = transforms.preprocess_shape(h, w, s)
        ref = np.asarray(transforms.postprocess_masks(jnp.asarray(low), (rh, rw), (h, w), s))
        taps = transforms.postprocess_taps((h, w), s, s // 4, (h + 5, w + 3))
        got = np.asarray(apply(jnp.asarray(low), jax.tree.map(jnp.asarray, taps)))
        # Same arithmetic; XLA may contract products into FMAs differently in the two graphs.
        np.testing.assert_allclose(got[:, :h, :w], ref, rtol=0, atol=1e-6)
        assert not got[:, h:].any() and not got[:, :, w:].any()


def test_check_image_errors():
    with pytest.raises(ValueError, match="uint8"):
        transforms.check_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="HxWx3"):
        transforms.check_image(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="HxWx3"):
        transforms.check_image(np.zeros((4, 4, 4), np.uint8))
