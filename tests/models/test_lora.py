"""LoRA adapters (sum_jax/models/lora.py): the merge formula against NumPy float64, the
merged plain SAM's outputs against the adapter model's (tiny, and vit_b under -m slow),
where adapters go, dropout, and the execution options (bf16, remat, block scan)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import base
from sum_jax.models import lora
from sum_jax.models.sam import build_sam
from tests.models.test_execution import forward as eager_forward
from tests.models.test_execution import photo, randomised

forward = nnx.jit(eager_forward)  # one compile instead of hundreds of eager ops

TARGETS = (base.ENCODER_LORA, base.DECODER_LORA)
RANK, ALPHA = 4, 6.0


def adapted(variant: str = "tiny", seed: int = 1, dropout: float = 0.0, **options):
    """A randomised model with adapters on encoder and decoder, `B` drawn non-zero so the
    adapters change every output."""
    model = randomised(build_sam(variant, rngs=nnx.Rngs(0), attention="matmul", **options), seed)
    lora.add_adapters(model, TARGETS, rank=RANK, alpha=ALPHA, dropout=dropout, rngs=nnx.Rngs(7))
    for i, (_, node) in enumerate(nnx.iter_graph(model)):
        if isinstance(node, lora.LoRALinear):
            b = node.lora.lora_b
            b[...] = 0.2 * jax.random.normal(jax.random.key(100 + i), b.shape, b.dtype)
    return model


def plain_from(state: dict, variant: str = "tiny", **options) -> nnx.Module:
    """A plain (adapter-free) SAM holding the pure `state`."""
    model = build_sam(variant, rngs=nnx.Rngs(5), attention="matmul", **options)
    graphdef, target = nnx.split(model)
    nnx.replace_by_pure_dict(target, state)
    return nnx.merge(graphdef, target)


def test_merge_formula_matches_numpy_float64():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(48, 80)).astype(np.float32)
    a = rng.normal(size=(48, 5)).astype(np.float32)
    b = rng.normal(size=(5, 80)).astype(np.float32)
    bias = rng.normal(size=(80,)).astype(np.float32)
    state = {"layer": {"kernel": kernel, "bias": bias, "lora": {"lora_a": a, "lora_b": b}},
             "other": {"kernel": kernel}}  # fmt: skip
    merged = lora.merge_state(state, 0.75)
    want = kernel.astype(np.float64) + 0.75 * (a.astype(np.float64) @ b.astype(np.float64))
    assert set(merged["layer"]) == {"kernel", "bias"}  # the adapter is gone
    assert merged["layer"]["kernel"].dtype == np.float32
    np.testing.assert_allclose(np.asarray(merged["layer"]["kernel"], np.float64), want, rtol=1e-6,
                               atol=1e-5)  # fmt: skip
    np.testing.assert_array_equal(merged["layer"]["bias"], bias)
    np.testing.assert_array_equal(merged["other"]["kernel"], kernel)


def test_layer_output_is_base_plus_scaled_low_rank_update():
    """One adapted layer against the formula in float64: x W + b + (alpha / r) x A B."""
    layer = nnx.Linear(12, 20, rngs=nnx.Rngs(0))
    adapted_layer = lora.LoRALinear(layer, rank=3, alpha=9.0, rngs=nnx.Rngs(1))
    b = adapted_layer.lora.lora_b
    b[...] = jax.random.normal(jax.random.key(2), b.shape)
    x = np.random.default_rng(1).normal(size=(7, 12))
    f64 = lambda v: np.asarray(v[...], np.float64)
    want = x @ f64(layer.kernel) + f64(layer.bias)
    want += 3.0 * (x @ f64(adapted_layer.lora.lora_a)) @ f64(b)
    got = adapted_layer(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-5)


def test_qv_parts_are_samed_separate_query_and_value_adapters():
    """SAMed's fused-qkv LoRA in float64: `q += s x A_q B_q`, `v += s x A_v B_v`, keys
    untouched; the gradient of `B` outside the two blocks is zero (so AdamW keeps it zero
    and the merge `W + s A B` is the per-part sum)."""
    c, r = 8, 2
    layer = nnx.Linear(c, 3 * c, rngs=nnx.Rngs(0))
    qkv = lora.LoRALinear(layer, rank=r, alpha=2.0 * r, parts="qv", rngs=nnx.Rngs(1))
    assert qkv.lora.lora_a.shape == (c, 2 * r) and qkv.lora.lora_b.shape == (2 * r, 3 * c)
    rng = np.random.default_rng(3)
    b_full = rng.normal(size=(2 * r, 3 * c))
    qkv.lora.lora_b[...] = jnp.asarray(b_full, jnp.float32)  # non-zero everywhere
    x = rng.normal(size=(5, c))
    f64 = lambda v: np.asarray(v[...], np.float64)
    a = f64(qkv.lora.lora_a)
    want = x @ f64(layer.kernel) + f64(layer.bias)
    want[:, :c] += 2.0 * (x @ a[:, :r]) @ b_full[:r, :c]  # query
    want[:, 2 * c :] += 2.0 * (x @ a[:, r:]) @ b_full[r:, 2 * c :]  # value
    got = qkv(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-5)
    loss = lambda m: jnp.sum(m(jnp.asarray(x, jnp.float32)) ** 2)
    grads = nnx.grad(loss, argnums=nnx.DiffState(0, nnx.LoRAParam))(qkv)
    grad = grads["lora"]["lora_b"][...]
    block = np.zeros((2 * r, 3 * c), bool)
    block[:r, :c] = block[r:, 2 * c :] = True
    assert (np.asarray(grad)[~block] == 0).all() and (np.asarray(grad)[block] != 0).any()
    with pytest.raises(ValueError, match="fused qkv"):
        lora.LoRALinear(nnx.Linear(c, 10, rngs=nnx.Rngs(0)), rank=r, alpha=1.0, parts="qv",
                        rngs=nnx.Rngs(1))  # fmt: skip


def test_adapters_go_where_the_regexes_say_and_start_at_the_base():
    model = randomised(build_sam("tiny", rngs=nnx.Rngs(0), attention="matmul"), seed=1)
    images = photo(128)
    before = forward(model, images)
    lora.add_adapters(model, TARGETS, rank=RANK, alpha=ALPHA, rngs=nnx.Rngs(7))
    paths = {".".join(map(str, p)) for p, n in nnx.iter_graph(model)
             if isinstance(n, lora.LoRALinear)}  # fmt: skip
    depth = model.config.encoder_depth
    encoder = {f"image_encoder.blocks.{i}.{m}" for i in range(depth)
               for m in ("attn.qkv", "attn.proj", "mlp.lin1", "mlp.lin2")}  # fmt: skip
    assert encoder <= paths
    decoder = paths - encoder
    # 2 layers x 3 attentions + the final attention, 4 projections each.
    assert len(decoder) == (2 * 3 + 1) * 4
    assert all(p.startswith("mask_decoder.transformer.") for p in decoder)
    assert all(p.rsplit(".", 1)[1] in ("q_proj", "k_proj", "v_proj", "out_proj") for p in decoder)
    # B = 0: the base's outputs, up to float32 rounding (XLA may order the sums differently
    # once the adapter's matmuls join the graph).
    for got, want in zip(forward(model, images), before, strict=True):
        scale = float(jnp.abs(want).max())
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6 * scale)
    with pytest.raises(ValueError, match="match no linear layer"):
        lora.add_adapters(model, (r"image_encoder\.blocks\.\d+\.attn\.qkvv\.kernel",), rank=2,
                          alpha=2.0, rngs=nnx.Rngs(0))  # fmt: skip


def check_merged_equals_adapted(variant: str, size: int, tol: float) -> None:
    model = adapted(variant)
    images = photo(size)
    want = forward(model, images)
    state = nnx.to_pure_dict(nnx.state(model))
    plain = plain_from(lora.merge_state(state, ALPHA / RANK), variant)
    assert not lora.has_adapters(plain)
    got = forward(plain, images)
    base = forward(plain_from(lora.merge_state(state, 0.0), variant), images)
    for g, w, b in zip(got, want, base, strict=True):
        scale = float(jnp.abs(w).max())
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol * scale)
        assert float(jnp.abs(w - b).max()) > 100 * tol * scale  # the adapters matter


def test_merged_model_equals_adapter_model_tiny():
    check_merged_equals_adapted("tiny", 128, 1e-5)


@pytest.mark.slow
def test_merged_model_equals_adapter_model_vit_b():
    """Full-size vit_b (12 blocks, 1024 px): merging reassociates `x W + x A B` as
    `x (W + A B)`, float32 rounding only."""
    check_merged_equals_adapted("vit_b", 1024, 1e-4)


def test_dropout_draws_from_its_key_and_eval_turns_it_off():
    model = adapted(dropout=0.5)
    images = photo(128)
    emb = lambda m: np.asarray(m.encode_image(images))
    state = nnx.to_pure_dict(nnx.state(model))
    first = emb(model)
    graphdef, target = nnx.split(model)
    nnx.replace_by_pure_dict(target, lora.reseed_dropout(state, jax.random.key(3)))
    reseeded = nnx.merge(graphdef, target)
    second = emb(reseeded)
    assert not np.allclose(first, second)  # new masks
    np.testing.assert_array_equal(emb(reseeded), second)  # same key, same masks
    keys = [np.asarray(x) for kp, x in jax.tree.leaves_with_path(lora.reseed_dropout(
        state, jax.random.key(3))) if str(kp[-1].key) == lora.DROPOUT_KEY]  # fmt: skip
    assert len({k.tobytes() for k in keys}) == len(keys) > 1  # one key per layer
    reseeded.eval()
    no_dropout = emb(reseeded)
    model_off = plain_from(lora.merge_state(state, ALPHA / RANK))
    np.testing.assert_allclose(no_dropout, emb(model_off), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [{"remat": "block"}, {"scan_blocks": True, "remat": "dots"}],
    ids=["remat", "scan+remat"],
)
def test_adapters_keep_outputs_and_gradients_under_remat_and_scan(options):
    """float32: the adapter model's embedding and adapter gradients with remat / the block
    scan equal the plain path's (dropout on, same keys)."""
    images = photo(128)
    target = jax.random.normal(jax.random.key(2), (1, 8, 8, 32))

    def grads(model):
        graphdef, params, rest = nnx.split(model, nnx.LoRAParam, ...)

        def loss(p):
            emb = nnx.merge(graphdef, p, rest).encode_image(images)
            return jnp.sum((emb - target) ** 2), emb

        return jax.jit(jax.grad(loss, has_aux=True))(params)

    ref_grads, ref_emb = grads(adapted(dropout=0.3))
    got_grads, got_emb = grads(adapted(dropout=0.3, **options))
    np.testing.assert_allclose(np.asarray(got_emb), np.asarray(ref_emb), rtol=1e-5, atol=1e-5)
    ref_grads, got_grads = ref_grads["image_encoder"], got_grads["image_encoder"]
    for a, b in zip(jax.tree.leaves(ref_grads), jax.tree.leaves(got_grads), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert np.abs(a).max() > 0
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.abs(a).max())


def test_bfloat16_adapter_model_keeps_float32_adapters_and_tracks_float32():
    images = photo(128)
    f32, bf16 = adapted(), adapted(dtype="bfloat16")
    adapters = jax.tree.leaves(nnx.state(bf16, nnx.LoRAParam))
    assert adapters and {x.dtype for x in adapters} == {jnp.dtype(jnp.float32)}
    e32, e16 = f32.encode_image(images), bf16.encode_image(images)
    assert float(jnp.linalg.norm(e16 - e32) / jnp.linalg.norm(e32)) < 0.02
