"""HQ-SAM's architecture (`SamConfig.hq`) against the official `segment_anything_hq` package
on the same random (perturbed) weights and real photos from scikit-image."""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import torch
from flax import nnx
from segment_anything_hq import SamPredictor as HQPredictor

from convert import key_map
from sum_jax.checkpointing import abstract_sam
from sum_jax.inference import decoding
from sum_jax.inference.predictor import SamPredictor
from sum_jax.models import hq
from sum_jax.models.sam import VARIANTS, Sam
from tests.hq_reference import torch_sam_hq
from tests.torch_reference import flax_from_torch, rel_err, torch_sam

# The tiny test model with four blocks, the global ones 1 and 3: HQ-SAM's early features
# (the first global block's output) are then not the encoder's last block.
CONFIG = dataclasses.replace(
    VARIANTS["tiny"], encoder_depth=4, encoder_global_attn_indexes=(1, 3), hq=True
)
TOL = 1e-5
AGREEMENT = 0.9999


@pytest.fixture(scope="module")
def reference():
    return torch_sam_hq(CONFIG, seed=11)


@pytest.fixture(scope="module")
def photos():
    return {"coffee": skimage.data.coffee(), "chelsea": skimage.data.chelsea()}


def test_early_and_fused_features_match(reference, photos):
    """The encoder's early features are the first global block's output, and the fused
    features are HQ-SAM's `embedding_encoder(embedding) + compress_vit_feat(early)`."""
    model = flax_from_torch(reference, CONFIG)
    ref_predictor = HQPredictor(reference)
    with torch.no_grad():
        ref_predictor.set_image(photos["chelsea"])
        emb = ref_predictor.features
        early = ref_predictor.interm_features[0]  # [1, h, w, D], as the decoder reads it
        dec = reference.mask_decoder
        fused = dec.embedding_encoder(emb) + dec.compress_vit_feat(early.permute(0, 3, 1, 2))
    ours = SamPredictor(model)
    ours.set_image(photos["chelsea"])
    features = ours.get_image_embedding()
    assert features.shape == (1, 8, 8, 3 * 32)
    got_emb, got_fused = hq.unfold(features, 32)
    assert rel_err(got_emb, emb.permute(0, 2, 3, 1)) < TOL
    assert rel_err(got_fused, fused.permute(0, 2, 3, 1)) < TOL
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 128, 128, 3)), jnp.float32)
    _, got_early = model.image_encoder(x, early_features=True)
    with torch.no_grad():
        _, interm = reference.image_encoder(torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2))
    assert rel_err(got_early, interm[0]) < TOL


def _prompts(photo: np.ndarray) -> list[dict]:
    h, w = photo.shape[:2]
    return [
        {"point_coords": np.array([[0.5 * w, 0.5 * h]]), "point_labels": np.array([1])},
        {"box": np.array([0.2 * w, 0.15 * h, 0.8 * w, 0.9 * h])},
        {
            "point_coords": np.array([[0.3 * w, 0.4 * h], [0.7 * w, 0.6 * h]]),
            "point_labels": np.array([1, 0]),
            "box": np.array([0.1 * w, 0.1 * h, 0.9 * w, 0.9 * h]),
        },
    ]


@pytest.mark.parametrize(
    "hq_token_only,scan_blocks,photo",
    [(True, False, "coffee"), (False, False, "coffee"), (True, True, "chelsea")],
)
def test_predictor_matches_official(reference, photos, hq_token_only, scan_blocks, photo):
    """Every output selection of HQ-SAM (`multimask_output` x `hq_token_only`), prompts
    with points, boxes and a previous round's logits; the block scan too."""
    model = flax_from_torch(reference, CONFIG, hq_token_only=hq_token_only, scan_blocks=scan_blocks)
    ours, ref = SamPredictor(model), HQPredictor(reference)
    image = photos[photo]
    ours.set_image(image)
    with torch.no_grad():
        ref.set_image(image)
    agreements = []
    for prompt in _prompts(image):
        for multimask in (True, False):
            kw = dict(prompt, multimask_output=multimask)
            m, s, low = ours.predict(**kw)
            with torch.no_grad():
                rm, rs, rlow = ref.predict(hq_token_only=hq_token_only, **kw)
            assert m.shape == rm.shape == (1,) + image.shape[:2]
            assert rel_err(low, rlow) < TOL
            np.testing.assert_allclose(s, rs, rtol=1e-4, atol=1e-6)
            agreements.append(np.mean(m == rm))
            # The HQ output fed back as the mask prompt, as in interactive use.
            kw2 = dict(kw, mask_input=low)
            m2, s2, low2 = ours.predict(**kw2)
            with torch.no_grad():
                rm2, rs2, rlow2 = ref.predict(hq_token_only=hq_token_only, **kw2)
            assert rel_err(low2, rlow2) < TOL
            np.testing.assert_allclose(s2, rs2, rtol=1e-4, atol=1e-6)
            agreements.append(np.mean(m2 == rm2))
    assert min(agreements) >= AGREEMENT, agreements


def test_hq_token_only_changes_the_output(reference, photos):
    """The two selections differ (SAM's mask is added or not), so the parity test above
    distinguishes them."""
    outs = []
    for only in (True, False):
        p = SamPredictor(flax_from_torch(reference, CONFIG, hq_token_only=only))
        p.set_image(photos["coffee"])
        outs.append(p.predict(**_prompts(photos["coffee"])[1], multimask_output=False)[2])
    assert rel_err(outs[0], outs[1]) > 0.01


def test_all_outputs_are_both_selections(reference):
    """`multimask_output=None` (the evaluator's round 1) gives the official decoder's
    single-mask selection, then its multimask one."""
    model = flax_from_torch(reference, CONFIG)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 128, 128, 3)).astype(np.float32)
    q, p, p_pad = 3, 2, 4
    points = rng.uniform(0, 128, (q, p, 2)).astype(np.float32)
    labels = rng.integers(0, 2, (q, p)).astype(np.int32)
    fpoints = np.zeros((1, q, p_pad, 2), np.float32)
    flabels = np.full((1, q, p_pad), -2, np.int32)
    fpoints[0, :, :p], flabels[0, :, :p] = points, labels
    graphdef, state = nnx.split(model)
    features = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode_image(x))(state, x)
    prompts = decoding.Prompts(jnp.asarray(fpoints), jnp.asarray(flabels))
    both, both_iou = decoding.decode(graphdef, state, features, prompts, multimask_output=None)
    assert both.shape == (1, q, 2, 32, 32)
    with torch.no_grad():
        emb, interm = reference.image_encoder(torch.from_numpy(x).permute(0, 3, 1, 2))
        sparse, dense = reference.prompt_encoder(
            points=(torch.from_numpy(points), torch.from_numpy(labels)), boxes=None, masks=None
        )
        for i, multimask in enumerate((False, True)):
            ref, ref_iou = reference.mask_decoder(
                image_embeddings=emb,
                image_pe=reference.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
                hq_token_only=True,
                interm_embeddings=interm,
            )
            assert rel_err(both[0, :, i], ref[:, 0]) < TOL
            assert rel_err(both_iou[0, :, i], ref_iou[:, 0]) < TOL


def test_hq_parameters_are_the_official_additions(reference):
    """An HQ model has exactly SAM's variables plus those the official HQ state dict adds
    (by PyTorch key); a plain SAM has none of them and its features are the embedding."""

    def keys(model):
        flat = nnx.to_flat_state(nnx.state(model))
        return {key_map.torch_key(".".join(map(str, p))) for p, _ in flat} - {None}

    sam_config = dataclasses.replace(CONFIG, hq=False)
    official_added = set(reference.state_dict()) - set(torch_sam(sam_config).state_dict())
    assert keys(abstract_sam(CONFIG)) - keys(abstract_sam(sam_config)) == official_added
    assert all(re.fullmatch(hq.TRAINABLE, k.replace(".weight", ".kernel")) for k in official_added)
    x = jax.ShapeDtypeStruct((1, 128, 128, 3), jnp.float32)
    for config, channels in ((sam_config, 32), (CONFIG, 96)):
        shape = jax.eval_shape(lambda x, c=config: Sam(c, rngs=nnx.Rngs(0)).encode_image(x), x)
        assert shape.shape == (1, 8, 8, channels)
