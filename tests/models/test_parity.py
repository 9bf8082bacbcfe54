"""Numerical parity of the Flax SAM with the official PyTorch SAM on the same random weights."""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sum_jax.models.sam import VARIANTS
from tests.torch_reference import flax_from_torch, rel_err, torch_sam

# The issue asks for relative error < 1e-4. On the tiny model the measured error is ~1e-6, and
# a tanh-GELU bug only reaches ~6e-5 there, so tiny tests assert the tighter bound.
TOL = 1e-4
TOL_TINY = 1e-5


@pytest.fixture(scope="module")
def tiny_pair():
    config = VARIANTS["tiny"]
    tmodel = torch_sam(config, seed=1)
    return config, tmodel, flax_from_torch(tmodel, config)


def _torch_decode(tmodel, emb, points=None, labels=None, boxes=None, masks=None, multimask=True):
    with torch.no_grad():
        sparse, dense = tmodel.prompt_encoder(
            points=None if points is None else (torch.as_tensor(points), torch.as_tensor(labels)),
            boxes=None if boxes is None else torch.as_tensor(boxes),
            masks=None if masks is None else torch.as_tensor(masks)[:, None],
        )
        logits, iou = tmodel.mask_decoder(
            image_embeddings=emb,
            image_pe=tmodel.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
    return logits.numpy(), iou.numpy()


def _image(rng, s):
    return rng.standard_normal((1, s, s, 3)).astype(np.float32)


def test_image_embeddings_match(tiny_pair):
    config, tmodel, fmodel = tiny_pair
    x = _image(np.random.default_rng(0), config.img_size)
    with torch.no_grad():
        ref = tmodel.image_encoder(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    out = jax.jit(fmodel.encode_image)(jnp.asarray(x))
    assert out.shape == ref.shape
    assert rel_err(out, ref) < TOL_TINY


@pytest.mark.parametrize("multimask", [True, False, None])  # None: all four outputs
@pytest.mark.parametrize(
    "case", ["points", "box", "box_points", "points_mask", "box_points_mask", "mask_only"]
)
def test_decoder_matches(tiny_pair, case, multimask):
    config, tmodel, fmodel = tiny_pair
    # crc32, not hash(): str hashes change per process (PYTHONHASHSEED), inputs must not.
    rng = np.random.default_rng(zlib.crc32(f"{case}-{multimask}".encode()))
    s, q, p, p_pad = config.img_size, 3, 2, 5
    emb = rng.standard_normal((1, config.embedding_size, config.embedding_size, 32)).astype(
        np.float32
    )
    temb = torch.from_numpy(emb).permute(0, 3, 1, 2)
    use_points, use_box, use_mask = "points" in case, "box" in case, "mask" in case
    points = rng.uniform(0, s, (q, p, 2)).astype(np.float32)
    labels = rng.integers(0, 2, (q, p)).astype(np.int32)
    boxes = np.sort(rng.uniform(0, s, (q, 2, 2)), axis=1).reshape(q, 4).astype(np.float32)
    masks = 3 * rng.standard_normal((q, 4 * config.embedding_size, 4 * config.embedding_size))
    masks = masks.astype(np.float32)

    inputs = (
        points if use_points else None,
        labels if use_points else None,
        boxes if use_box else None,
        masks if use_mask else None,
    )
    if multimask is None:  # the single-mask token's output, then the three multimask ones
        refs = [_torch_decode(tmodel, temb, *inputs, m) for m in (False, True)]
        ref_logits, ref_iou = (np.concatenate(r, axis=1) for r in zip(*refs))
    else:
        ref_logits, ref_iou = _torch_decode(tmodel, temb, *inputs, multimask)
    # Flax: points padded to a fixed count with absent slots.
    fpoints = np.zeros((1, q, p_pad, 2), np.float32)
    flabels = np.full((1, q, p_pad), -2, np.int32)
    if use_points:
        fpoints[0, :, :p] = points
        flabels[0, :, :p] = labels
    logits, iou = fmodel.decode(
        jnp.asarray(emb),
        jnp.asarray(fpoints),
        jnp.asarray(flabels),
        boxes=jnp.asarray(boxes[None]) if use_box else None,
        mask_inputs=jnp.asarray(masks[None]) if use_mask else None,
        multimask_output=multimask,
    )
    assert logits.shape == (1,) + ref_logits.shape
    assert rel_err(logits[0], ref_logits) < TOL_TINY
    assert rel_err(iou[0], ref_iou) < TOL_TINY


def test_validity_flags_equal_absent_inputs(tiny_pair):
    """box_valid=False / mask_valid=False give exactly the no-box / no-mask result."""
    config, _, fmodel = tiny_pair
    rng = np.random.default_rng(5)
    g = config.embedding_size
    emb = jnp.asarray(rng.standard_normal((2, g, g, 32)), jnp.float32)
    points = jnp.asarray(rng.uniform(0, 128, (2, 2, 3, 2)), jnp.float32)
    labels = jnp.asarray([[[1, 0, -2], [1, -2, -2]]] * 2, jnp.int32)
    boxes = jnp.asarray(rng.uniform(0, 128, (2, 2, 4)), jnp.float32)
    masks = jnp.asarray(rng.standard_normal((2, 2, 4 * g, 4 * g)), jnp.float32)
    off = jnp.zeros((2, 2), bool)
    plain = fmodel.decode(emb, points, labels, multimask_output=True)
    flagged = fmodel.decode(emb, points, labels, boxes, off, masks, off, multimask_output=True)
    for a, b in zip(plain, flagged):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_task_prompt_zero_init_and_effect(tiny_pair):
    """The zero-initialised task table changes nothing; a non-zero entry changes only its task."""
    config, _, fmodel = tiny_pair
    rng = np.random.default_rng(6)
    g = config.embedding_size
    emb = jnp.asarray(rng.standard_normal((1, g, g, 32)), jnp.float32)
    points = jnp.asarray(rng.uniform(0, 128, (1, 2, 1, 2)), jnp.float32)
    labels = jnp.ones((1, 2, 1), jnp.int32)
    base = fmodel.decode(emb, points, labels, multimask_output=False)[0]
    with_task = fmodel.decode(
        emb, points, labels, multimask_output=False, task_ids=jnp.asarray([[1, 2]])
    )[0]
    np.testing.assert_array_equal(base, with_task)

    table = fmodel.prompt_encoder.task_embeddings.embedding
    old = table[...]
    table[...] = old.at[2].set(jnp.asarray(rng.standard_normal(32), jnp.float32))
    try:
        out = fmodel.decode(
            emb, points, labels, multimask_output=False, task_ids=jnp.asarray([[1, 2]])
        )[0]
        no_task = fmodel.decode(
            emb, points, labels, multimask_output=False, task_ids=jnp.asarray([[-1, -1]])
        )[0]
    finally:
        table[...] = old
    np.testing.assert_array_equal(out[:, 0], base[:, 0])  # task 1 is still zero
    assert float(jnp.abs(out[:, 1] - base[:, 1]).max()) > 1e-3
    np.testing.assert_array_equal(no_task, base)


@pytest.mark.slow
def test_vit_b_full_size_matches():
    config = VARIANTS["vit_b"]
    tmodel = torch_sam(config, seed=2, perturb=0.02)
    fmodel = flax_from_torch(tmodel, config)
    x = _image(np.random.default_rng(1), config.img_size)
    with torch.no_grad():
        ref = tmodel.image_encoder(torch.from_numpy(x).permute(0, 3, 1, 2))
    out = jax.jit(fmodel.encode_image)(jnp.asarray(x))
    assert rel_err(out, ref.permute(0, 2, 3, 1)) < TOL
    rng = np.random.default_rng(2)
    points = rng.uniform(0, 1024, (4, 2, 2)).astype(np.float32)
    labels = rng.integers(0, 2, (4, 2)).astype(np.int32)
    ref_logits, ref_iou = _torch_decode(tmodel, ref, points, labels)
    logits, iou = fmodel.decode(
        out, jnp.asarray(points[None]), jnp.asarray(labels[None]), multimask_output=True
    )
    assert rel_err(logits[0], ref_logits) < TOL
    assert rel_err(iou[0], ref_iou) < TOL
