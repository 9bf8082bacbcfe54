"""`SamPredictor` against the official `segment_anything.SamPredictor` on real photos."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import torch
from flax import nnx
from segment_anything import SamPredictor as TorchPredictor

from sum_jax.inference.predictor import SamPredictor
from sum_jax.models.sam import VARIANTS
from tests.torch_reference import flax_from_torch, rel_err, torch_sam


@pytest.fixture(scope="module")
def predictors():
    config = VARIANTS["tiny"]
    tmodel = torch_sam(config, seed=3)
    ours, ref = SamPredictor(flax_from_torch(tmodel, config)), TorchPredictor(tmodel)
    image = skimage.data.coffee()  # 400 x 600 real photo: the crop/resize path is exercised
    ours.set_image(image)
    with torch.no_grad():
        ref.set_image(image)
    return ours, ref


def _compare(ours, ref, tol=1e-5, **kwargs):
    m, s, l = ours.predict(**kwargs)
    with torch.no_grad():
        rm, rs, rl = ref.predict(**kwargs)
    assert m.shape == rm.shape and m.dtype == rm.dtype
    assert rel_err(l, rl) < tol
    assert rel_err(s, rs) < tol
    assert np.mean(m == rm) >= 0.999
    return m, s, l


def test_embedding_matches(predictors):
    ours, ref = predictors
    emb = np.asarray(ours.get_image_embedding())
    assert rel_err(emb, ref.get_image_embedding().permute(0, 2, 3, 1).numpy()) < 1e-5


def test_point_prompt(predictors):
    m, _s, l = _compare(
        *predictors,
        point_coords=np.array([[300.0, 200.0]]),
        point_labels=np.array([1]),
        multimask_output=True,
    )
    assert m.shape == (3, 400, 600) and l.shape == (3, 32, 32)


def test_box_prompt(predictors):
    _compare(*predictors, box=np.array([150.0, 60.0, 480.0, 350.0]), multimask_output=False)


def test_box_points_and_previous_logits(predictors):
    ours, ref = predictors
    _, _, low = ours.predict(point_coords=np.array([[300.0, 200.0]]), point_labels=np.array([1]))
    _compare(
        ours,
        ref,
        point_coords=np.array([[300.0, 200.0], [50.0, 380.0], [420.0, 120.0]]),
        point_labels=np.array([1, 0, 1]),
        box=np.array([150.0, 60.0, 480.0, 350.0]),
        mask_input=low[:1],
        multimask_output=False,
    )


def test_return_logits(predictors):
    ours, ref = predictors
    kwargs = {
        "point_coords": np.array([[100.0, 100.0]]),
        "point_labels": np.array([0]),
        "return_logits": True,
    }
    m, _, _ = ours.predict(**kwargs)
    with torch.no_grad():
        rm, _, _ = ref.predict(**kwargs)
    assert m.dtype == np.float32
    assert rel_err(m, rm) < 1e-5


def test_batch_equals_single_prompts(predictors):
    ours, _ = predictors
    coords = np.array([[[300.0, 200.0]], [[100.0, 50.0]], [[550.0, 390.0]]])
    labels = np.ones((3, 1), np.int64)
    masks, scores, low = ours.predict_batch(coords, labels, multimask_output=True)
    assert masks.shape == (3, 3, 400, 600)
    for i in range(3):
        m, s, l = ours.predict(coords[i], labels[i])
        # Different batch shapes round differently: compare logits, and masks up to pixels
        # whose logit is within rounding of the threshold.
        assert rel_err(l, low[i]) < 1e-5
        assert np.mean(m == masks[i]) >= 0.999
        np.testing.assert_allclose(s, scores[i], rtol=1e-5, atol=1e-6)


def test_bad_inputs(predictors):
    ours, _ = predictors
    with pytest.raises(ValueError, match="outside the image"):
        ours.predict(point_coords=np.array([[700.0, 10.0]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match="outside the image"):
        ours.predict(point_coords=np.array([[10.0, -3.0]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match="together"):
        ours.predict(point_coords=np.array([[10.0, 10.0]]))
    with pytest.raises(ValueError, match="point_labels"):
        ours.predict(point_coords=np.array([[10.0, 10.0]]), point_labels=np.array([3]))
    with pytest.raises(ValueError, match="x0 <= x1"):
        ours.predict(box=np.array([300.0, 10.0, 100.0, 50.0]))
    with pytest.raises(ValueError, match="mask_input"):
        ours.predict(mask_input=np.zeros((1, 64, 64), np.float32))
    with pytest.raises(ValueError, match="at least one"):
        ours.predict()
    with pytest.raises(ValueError, match="task"):
        ours.predict(point_coords=np.array([[10.0, 10.0]]), point_labels=np.array([1]), task=9)
    with pytest.raises(ValueError, match="uint8"):
        SamPredictor(ours.model).set_image(np.zeros((10, 10, 3), np.float64))
    with pytest.raises(RuntimeError, match="set_image"):
        SamPredictor(ours.model).predict(box=np.array([0.0, 0.0, 5.0, 5.0]))


@pytest.mark.slow
def test_vit_b_predictor_matches():
    config = VARIANTS["vit_b"]
    tmodel = torch_sam(config, seed=4, perturb=0.02)
    ours, ref = SamPredictor(flax_from_torch(tmodel, config)), TorchPredictor(tmodel)
    image = skimage.data.chelsea()
    ours.set_image(image)
    with torch.no_grad():
        ref.set_image(image)
    _compare(
        ours, ref, tol=1e-4, point_coords=np.array([[200.0, 150.0]]), point_labels=np.array([1])
    )
    _compare(ours, ref, tol=1e-4, box=np.array([50.0, 20.0, 400.0, 280.0]), multimask_output=False)


def test_images_of_one_size_bucket_share_the_decoder_compilation():
    """Clicks on images of different sizes in one bucket run one compiled program, and the
    masks still come out at each image's own size, equal to the unbucketed post-processing."""
    from sum_jax.inference import predictor as predictor_module
    from sum_jax.models.sam import build_sam
    from sum_jax.ops import transforms

    predictor = SamPredictor(build_sam("tiny", rngs=nnx.Rngs(3)))
    rng = np.random.default_rng(0)
    sizes = [(300, 400), (310, 390), (257, 500)]  # all inside the 512 x 512 bucket
    compiled = []
    for h, w in sizes:
        predictor.set_image(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        masks, _, low_res = predictor.predict(
            point_coords=np.array([[w // 3, h // 2]]), point_labels=np.array([1]),
            return_logits=True,
        )  # fmt: skip
        assert masks.shape == (3, h, w)
        expected = transforms.postprocess_masks(
            jnp.asarray(low_res), predictor.input_size, (h, w), predictor.config.img_size
        )
        np.testing.assert_allclose(masks, np.asarray(expected), atol=1e-5)
        compiled.append(predictor_module._decode._cache_size())
    assert compiled[0] == compiled[1] == compiled[2], compiled
