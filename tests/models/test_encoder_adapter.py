"""AIM's encoder adapters (sum_jax/models/encoder_adapter.py): one adapted ViT block against
a NumPy float64 forward pass written from AIM's equations (windowed with padding, and
global), and zero-initialised adapters leaving SAM's outputs bit-identical."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from configs import base
from sum_jax.models.image_encoder import Block
from sum_jax.models.sam import build_sam
from sum_jax.train import adapters
from tests.models.test_execution import forward as eager_forward
from tests.models.test_execution import photo, randomised

forward = nnx.jit(eager_forward)

DIM, HEADS, GRID = 32, 2, 8


# ---- NumPy float64 reference (SAM's block, AIM's adapters) ----


def np_layer_norm(x, scale, bias, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def np_gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def np_linear(x, p):
    return x @ p["kernel"] + p["bias"]


def np_adapter(x, p):
    """AIM's `Adapter` without skip: `D_fc2(GELU(D_fc1(x)))`."""
    return np_linear(np_gelu(np_linear(x, p["fc1"])), p["fc2"])


def np_attention(x, p, heads):
    """SAM's attention with decomposed relative positions on `[n, h, w, c]`."""
    n, h, w, c = x.shape
    hd = c // heads
    qkv = np_linear(x.reshape(n, h * w, c), p["qkv"]).reshape(n, h * w, 3, heads, hd)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # [n, heads, hw, hd]
    logits = (q * hd**-0.5) @ k.swapaxes(-1, -2)  # [n, heads, hw, hw]
    # Table rows for offsets q - k: index (q - k) + (size - 1).
    offsets_h = np.arange(h)[:, None] - np.arange(h)[None, :] + (h - 1)
    offsets_w = np.arange(w)[:, None] - np.arange(w)[None, :] + (w - 1)
    rh, rw = p["rel_pos_h"][offsets_h], p["rel_pos_w"][offsets_w]  # [h, h, hd], [w, w, hd]
    qg = q.reshape(n, heads, h, w, hd)
    bias_h = np.einsum("nmhwc,hkc->nmhwk", qg, rh)  # over key rows
    bias_w = np.einsum("nmhwc,wkc->nmhwk", qg, rw)  # over key columns
    logits = logits.reshape(n, heads, h, w, h, w)
    logits = logits + bias_h[..., :, None] + bias_w[..., None, :]
    logits = logits.reshape(n, heads, h * w, h * w)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = (probs @ v).transpose(0, 2, 1, 3).reshape(n, h, w, c)
    return np_linear(out, p["proj"])


def np_windowed(x, fn, window):
    """`fn` on zero-padded `window x window` windows of `[b, h, w, c]`, cropped back."""
    b, h, w, c = x.shape
    hp, wp = -(-h // window) * window, -(-w // window) * window
    xp = np.zeros((b, hp, wp, c))
    xp[:, :h, :w] = x
    win = xp.reshape(b, hp // window, window, wp // window, window, c).transpose(0, 1, 3, 2, 4, 5)
    out = fn(win.reshape(-1, window, window, c))
    out = out.reshape(b, hp // window, wp // window, window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return out.reshape(b, hp, wp, c)[:, :h, :w]


def np_adapted_block(x, p, *, heads, window, scale):
    """AIM's block: `x' = x + S_Adapter(attn(LN1(x)))` with `S_Adapter(y) = y + A_s(y)`,
    then `x' + mlp(LN2(x')) + scale * A_m(LN2(x'))`."""
    y = np_layer_norm(x, p["norm1"]["scale"], p["norm1"]["bias"])
    attend = lambda t: np_attention(t, p["attn"], heads)
    y = np_windowed(y, attend, window) if window else attend(y)
    x = x + (y + np_adapter(y, p["space_adapter"]))
    xn = np_layer_norm(x, p["norm2"]["scale"], p["norm2"]["bias"])
    mlp = np_linear(np_gelu(np_linear(xn, p["mlp"]["lin1"])), p["mlp"]["lin2"])
    return x + mlp + scale * np_adapter(xn, p["mlp_adapter"])


@pytest.mark.parametrize("window", [3, 0], ids=["windowed_padded", "global"])
def test_adapted_block_matches_numpy_float64(window):
    ratio, scale = 0.3, 0.7  # bottleneck int(32 * 0.3) = 9; a scale that is not AIM's
    block = Block(DIM, HEADS, 4.0, window, (GRID, GRID), attention="matmul",
                  adapter_ratio=ratio, adapter_scale=scale, rngs=nnx.Rngs(0))  # fmt: skip
    assert block.space_adapter.fc1.kernel.shape == (DIM, 9)
    # Every parameter redrawn (the zero fc2 and relative-position tables too).
    graphdef, params = nnx.split(block, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [x + 0.2 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    block = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), nnx.to_pure_dict(nnx.state(block)))
    x = np.random.default_rng(2).normal(size=(2, GRID, GRID, DIM)).astype(np.float32)

    got = np.asarray(nnx.jit(lambda m, t: m(t))(block, jnp.asarray(x)), np.float64)
    want = np_adapted_block(x.astype(np.float64), p, heads=HEADS, window=window, scale=scale)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)
    # The adapters carry signal: the block without them differs by far more than that.
    plain = np_adapted_block(
        x.astype(np.float64),
        {**p, "space_adapter": _zero(p["space_adapter"]), "mlp_adapter": _zero(p["mlp_adapter"])},
        heads=HEADS,
        window=window,
        scale=scale,
    )
    assert np.abs(plain - want).max() > 100 * 2e-5


def _zero(tree):
    return jax.tree.map(np.zeros_like, tree)


def adapter_config(**adapter):
    cfg = base.get_config()
    cfg.adapter.enabled = True
    for k, v in adapter.items():
        cfg.adapter[k] = v
    return cfg


@pytest.mark.parametrize("options", [{}, {"scan_blocks": True, "remat": "block"}],
                         ids=["default", "scan_remat"])  # fmt: skip
def test_zero_initialised_adapters_leave_sam_bit_identical(options):
    model = randomised(build_sam("tiny", rngs=nnx.Rngs(0), attention="matmul", **options), 1)
    images = photo(model.config.img_size)
    before = jax.device_get(forward(model, images))
    adapters.adapt(model, adapter_config())  # the trainer's path: adapters into the SAM
    assert model.config.encoder_adapter_ratio == 0.25
    assert model.config.encoder_adapter_scale == 0.5
    blocks = list(model.image_encoder.blocks)
    for block in blocks:
        for a in (block.space_adapter, block.mlp_adapter):
            assert a.fc1.kernel.shape == (32, 8)
            assert np.all(np.asarray(a.fc2.kernel[...]) == 0) and not np.any(a.fc2.bias[...])
            assert 0.005 < float(np.std(a.fc1.kernel[...])) < 0.04  # AIM's std 0.02
    after = jax.device_get(forward(model, images))
    for name, x, y in zip(("embeddings", "masks", "iou"), before, after, strict=True):
        np.testing.assert_array_equal(y, x, err_msg=name)
    # Non-zero up-projections change every output (so the comparison above could fail).
    for block in blocks:
        block.mlp_adapter.fc2.bias[...] = jnp.full_like(block.mlp_adapter.fc2.bias[...], 0.1)
    changed = jax.device_get(forward(model, images))
    assert not np.allclose(changed[0], before[0])


def test_adapter_settings_are_checked():
    model = build_sam("tiny", rngs=nnx.Rngs(0))
    adapters.adapt(model, adapter_config())
    adapters.adapt(model, adapter_config())  # the same settings again: kept as they are
    with pytest.raises(ValueError, match="already has encoder adapters"):
        adapters.adapt(model, adapter_config(ratio=0.5))
    with pytest.raises(ValueError, match="alternatives"):
        cfg = adapter_config()
        cfg.lora.targets = (base.ENCODER_LORA,)
        adapters.adapt(build_sam("tiny", rngs=nnx.Rngs(0)), cfg)
    # Off (the default): the model is returned untouched, without adapter variables.
    plain = build_sam("tiny", rngs=nnx.Rngs(0))
    assert adapters.adapt(plain, base.get_config()) is plain
    assert plain.image_encoder.blocks[0].space_adapter is None
    assert plain.config.encoder_adapter_ratio == 0.0
    paths = [".".join(map(str, kp)) for kp, _ in nnx.to_flat_state(nnx.state(plain))]
    assert paths and not any("adapter" in p for p in paths)
    adapted = [".".join(map(str, kp)) for kp, _ in nnx.to_flat_state(nnx.state(model))]
    assert len(adapted) == len(paths) + 2 * 2 * 4  # 2 blocks x 2 adapters x 4 arrays
