"""How the model runs, not what it computes: the fused-attention path, rematerialisation and
the block-group scan give the float32 reference's outputs and gradients; bfloat16 compute
gives the same masks on a real photo.

The reference is the plain float32 path (`attention="matmul"`, `remat="none"`), itself
checked against the official PyTorch SAM in tests/models/test_parity.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import skimage.transform
from flax import nnx

from sum_jax.models.common import use_fused_attention
from sum_jax.models.image_encoder import block_period
from sum_jax.models.sam import VARIANTS, build_sam
from sum_jax.ops.transforms import normalize_and_pad


def photo(size: int) -> np.ndarray:
    """skimage's astronaut, resized to `size x size`: `f32[1, size, size, 3]` normalised."""
    img = skimage.transform.resize(skimage.data.astronaut(), (size, size), preserve_range=True)
    img = jnp.asarray(img.astype(np.uint8))[None]
    return normalize_and_pad(img, jnp.asarray([[size, size]], jnp.int32))


def prompts(size: int):
    """Two point prompts and one box, in the input frame."""
    points = jnp.asarray([[[[0.4 * size, 0.3 * size]], [[0.6 * size, 0.7 * size]]]], jnp.float32)
    labels = jnp.ones((1, 2, 1), jnp.int32)
    boxes = jnp.asarray([[[0.2 * size, 0.1 * size, 0.7 * size, 0.9 * size]] * 2], jnp.float32)
    return points, labels, boxes


def forward(model, images):
    emb = model.encode_image(images)
    points, labels, boxes = prompts(model.config.img_size)
    masks, iou = model.decode(emb, points, labels, boxes, multimask_output=True)
    return emb, masks, iou


def randomised(model: nnx.Module, seed: int) -> nnx.Module:
    """`model` with every parameter redrawn (the zero-initialised positional and
    relative-position tables and task table too), so every path carries signal."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [
        x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)
    ]
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves), rest)


def with_options(model: nnx.Module, **options) -> nnx.Module:
    """The same parameters in a model built with other execution options."""
    other = build_sam("tiny", rngs=nnx.Rngs(0), **options)
    nnx.update(other, nnx.state(model))
    return other


@pytest.fixture(scope="module")
def tiny():
    return randomised(build_sam("tiny", rngs=nnx.Rngs(0), attention="matmul"), seed=1)


def test_auto_attention_is_plain_matmul_on_cpu():
    assert jax.default_backend() == "cpu"
    assert not use_fused_attention("auto")
    assert use_fused_attention("fused") and not use_fused_attention("matmul")
    with pytest.raises(ValueError, match="choose one of"):
        use_fused_attention("flash")


def test_fused_attention_equals_matmul_path(tiny):
    """jax.nn.dot_product_attention (its XLA implementation on CPU) with the relative
    positions as a bias, and with the decoder's key mask, against the plain matmuls."""
    images = photo(128)
    ref = forward(tiny, images)
    fused = forward(with_options(tiny, attention="fused"), images)
    for a, b in zip(ref, fused, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)


def test_block_period():
    assert block_period(32, VARIANTS["vit_h"].encoder_global_attn_indexes) == 8
    assert block_period(12, VARIANTS["vit_b"].encoder_global_attn_indexes) == 3
    assert block_period(12, (2, 5, 9, 11)) == 0
    with pytest.raises(ValueError, match="evenly spaced"):
        build_sam("tiny", scan_blocks=True, encoder_global_attn_indexes=(0,))


@pytest.mark.parametrize(
    "options",
    [{"remat": "block"}, {"remat": "dots"}, {"scan_blocks": True, "remat": "block"}],
    ids=["block", "dots", "scan+block"],
)
def test_remat_and_scan_keep_outputs_and_gradients(tiny, options):
    """float32: the encoder's output and every parameter's gradient agree with the plain
    path to 1e-5 of the gradient's scale (recomputation is the same arithmetic; the scan
    only changes fusion)."""
    images = photo(128)
    target = jax.random.normal(jax.random.key(2), (1, 8, 8, 32))

    def grads(model):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(p):
            emb = nnx.merge(graphdef, p, rest).encode_image(images)
            return jnp.sum((emb - target) ** 2), emb

        return jax.jit(jax.grad(loss, has_aux=True))(params)

    ref_grads, ref_emb = grads(tiny)
    got_grads, got_emb = grads(with_options(tiny, **options))
    np.testing.assert_allclose(np.asarray(got_emb), np.asarray(ref_emb), rtol=1e-5, atol=1e-5)
    ref_leaves = jax.tree.leaves(ref_grads)
    got_leaves = jax.tree.leaves(got_grads)
    assert len(ref_leaves) == len(got_leaves)
    for a, b in zip(ref_leaves, got_leaves, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * max(np.abs(a).max(), 1e-3))


@pytest.mark.parametrize(
    "depth, global_blocks",
    [(6, (2, 5)), (2, (0, 1))],
    ids=["2 groups of 2 windowed + 1 global", "every block global"],
)
def test_block_scans_equal_unrolled_blocks(depth, global_blocks):
    """The scan over groups with a scan over each group's windowed blocks inside (and the
    case without windowed blocks), block remat, float32: the encoder's output and every
    parameter's gradient as the unrolled blocks without remat."""
    arch = {"encoder_depth": depth, "encoder_global_attn_indexes": global_blocks}
    plain = randomised(build_sam("tiny", rngs=nnx.Rngs(0), attention="matmul", **arch), seed=3)
    scanned = build_sam(
        "tiny", rngs=nnx.Rngs(0), attention="matmul", scan_blocks=True, remat="block", **arch
    )
    nnx.update(scanned, nnx.state(plain))
    images = photo(128)
    target = jax.random.normal(jax.random.key(4), (1, 8, 8, 32))

    def grads(model):
        graphdef, params, rest = nnx.split(model.image_encoder, nnx.Param, ...)

        def loss(p):
            emb = nnx.merge(graphdef, p, rest)(images)
            return jnp.sum((emb - target) ** 2), emb

        return jax.jit(jax.grad(loss, has_aux=True))(params)

    ref_grads, ref_emb = grads(plain)
    got_grads, got_emb = grads(scanned)
    np.testing.assert_allclose(np.asarray(got_emb), np.asarray(ref_emb), rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(ref_grads), jax.tree.leaves(got_grads), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * max(np.abs(a).max(), 1e-3))


def mask_agreement(model_f32, model_bf16, size: int) -> tuple[float, float]:
    """Fraction of low-res mask pixels with the same sign of logits in bf16 and float32, and
    the bf16 embedding's relative error."""
    images = photo(size)
    emb32, masks32, _ = forward(model_f32, images)
    emb16, masks16, _ = forward(model_bf16, images)
    assert emb16.dtype == jnp.float32 and masks16.dtype == jnp.float32
    agree = float(jnp.mean((masks32 > 0) == (masks16 > 0)))
    rel = float(jnp.linalg.norm(emb16 - emb32) / jnp.linalg.norm(emb32))
    return agree, rel


def test_bfloat16_tiny_masks_match_float32(tiny):
    """bfloat16 keeps 8 bits of mantissa (relative rounding 2^-9 = 0.2%): over a few layers
    the embedding stays within 2% of float32, and the masks, the sign of the logits, agree
    on >= 99% of pixels (only pixels whose logit is within rounding of 0 may flip)."""
    agree, rel = mask_agreement(tiny, with_options(tiny, dtype="bfloat16"), 128)
    assert rel < 0.02, rel
    assert agree >= 0.99, agree


def test_bfloat16_keeps_float32_parameters():
    model = build_sam("tiny", dtype="bfloat16")
    dtypes = {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))}
    assert dtypes == {jnp.dtype(jnp.float32)}


@pytest.mark.slow
def test_bfloat16_vit_b_masks_match_float32():
    """The full-size vit_b encoder (12 blocks, 1024 px; randomised weights, as no checkpoint
    is shipped) in bfloat16 against float32 on a real photo: embeddings within 5% (12
    blocks of 0.2% rounding, accumulated in the bf16 residual stream), masks agreeing on
    >= 99% of pixels."""
    f32 = randomised(build_sam("vit_b", rngs=nnx.Rngs(0), attention="matmul"), seed=3)
    bf16 = build_sam("vit_b", rngs=nnx.Rngs(0), dtype="bfloat16")
    nnx.update(bf16, nnx.state(f32))
    agree, rel = mask_agreement(f32, bf16, 1024)
    assert rel < 0.05, rel
    assert agree >= 0.99, agree
