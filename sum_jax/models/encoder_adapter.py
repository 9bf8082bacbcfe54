"""AIM's bottleneck adapters in SAM's image encoder (the paper's "Adapter [72]", §4.2, App. F).

AIM (Yang et al., ICLR 2023, "Adapting image models for efficient video action
recognition", ref. [72]) and the Medical SAM Adapter (Wu et al. 2023, which follows AIM for
SAM's ViT) plug two adapters into every transformer block of a frozen ViT:

    x' = x + S(attn(norm1(x)))                    spatial adapter, its own skip:
                                                  S(y) = y + A_s(y)
    out = x' + mlp(norm2(x')) + s * A_m(norm2(x'))  MLP adapter, in parallel with the MLP

where each adapter `A(y) = fc2(gelu(fc1(y)))` is a bottleneck MLP, `fc1: dim -> ratio * dim`
(AIM: `ratio` 0.25), exact GELU, `fc2: ratio * dim -> dim`, and `s` is AIM's `scale`
(0.5 in AIM's configs and MSA's `AdapterBlock`). We follow the placement of AIM's
`ResidualAttentionBlock` (spatial and joint adaptation; the temporal adapter has no image
counterpart) and MSA's `AdapterBlock` (the same placement in SAM's block, its spatial
adapter applied to the attention output, which is per token, so before or after window
un-partitioning alike), and AIM's initialisation: `fc1` normal with std 0.02, zero bias
(AIM's `_init_weights`: timm's `trunc_normal_(std=.02)`, whose bounds +-2 are absolute,
i.e. 100 standard deviations); `fc2` weight and bias zero, so an adapted model starts
exactly at its base SAM. (MSA's `Adapter` has no initialisation of its own, PyTorch's
default for both layers, so its adapted SAM does not start at SAM; we do not follow that.)

Parameters live at `image_encoder.blocks.{i}.space_adapter.{fc1,fc2}.{kernel,bias}` and
`image_encoder.blocks.{i}.mlp_adapter.{fc1,fc2}.{kernel,bias}` (AIM's `S_Adapter` and
`MLP_Adapter`), regular `nnx.Param`s (configs/base.py's `ENCODER_ADAPTERS` regex selects
them for the optimiser's parameter groups). Whether a model has them is part of its
architecture (`SamConfig.encoder_adapter_ratio > 0`), so a model directory of an adapted
model records them in `sam_config.json` and `checkpointing.load_sam` rebuilds them: no
merge step, no base model needed.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from sum_jax.models.common import dot_general, gelu

# AIM's defaults: bottleneck ratio and the MLP adapter's scale.
DEFAULT_RATIO = 0.25
DEFAULT_SCALE = 0.5
# AIM's `trunc_normal_(std=.02)` for the down projection (truncated at +-2, i.e. not at all).
FC1_STD = 0.02


class Adapter(nnx.Module):
    """`fc2(gelu(fc1(x)))`: `x [..., dim] -> [..., dim]` through `hidden` channels, in the
    compute dtype `dtype` (parameters `param_dtype`). `fc2` starts at zero."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "dot_general": dot_general, "rngs": rngs}
        self.fc1 = nnx.Linear(
            dim,
            hidden,
            kernel_init=nnx.initializers.normal(FC1_STD),
            bias_init=nnx.initializers.zeros_init(),
            **kw,
        )
        self.fc2 = nnx.Linear(
            hidden,
            dim,
            kernel_init=nnx.initializers.zeros_init(),
            bias_init=nnx.initializers.zeros_init(),
            **kw,
        )

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.fc2(gelu(self.fc1(x)))


def hidden_dim(dim: int, ratio: float) -> int:
    """The bottleneck width, `int(dim * ratio)` as AIM computes it (ViT-H: 320)."""
    hidden = int(dim * ratio)
    if hidden < 1:
        raise ValueError(f"encoder adapter ratio {ratio} gives no channels for dim {dim}")
    return hidden


def make_pair(
    dim: int, ratio: float, *, dtype, param_dtype, rngs: nnx.Rngs
) -> tuple[Adapter | None, Adapter | None]:
    """A block's `(space_adapter, mlp_adapter)`; `(None, None)` when `ratio` is 0 (off)."""
    if not ratio:
        return None, None
    hidden = hidden_dim(dim, ratio)
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    return Adapter(dim, hidden, **kw), Adapter(dim, hidden, **kw)


def add_adapters(model, *, ratio: float, scale: float, rngs: nnx.Rngs):
    """Puts fresh adapters (zero `fc2`) into every block of `model` (a `Sam`) in place and
    records them in `model.config`; returns `model`. Its other variables are untouched, so
    its outputs are unchanged until the adapters train. The result has the variables of
    `Sam(model.config)`, so it saves and loads as any model."""
    if not ratio > 0:
        raise ValueError(f"encoder adapter ratio must be > 0, got {ratio}")
    if model.config.encoder_adapter_ratio:
        raise ValueError("the model already has encoder adapters")
    dtype, param_dtype = jnp.dtype(model.config.dtype), jnp.dtype(model.config.param_dtype)
    for block in model.image_encoder.blocks:
        dim = block.norm1.num_features
        space, mlp = make_pair(dim, ratio, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        # The attributes were None (static) in a block built without adapters.
        block.space_adapter, block.mlp_adapter = nnx.data(space), nnx.data(mlp)
        block.adapter_scale = float(scale)
    model.config = dataclasses.replace(
        model.config, encoder_adapter_ratio=float(ratio), encoder_adapter_scale=float(scale)
    )
    return model


def has_adapters(model) -> bool:
    return bool(model.config.encoder_adapter_ratio)
