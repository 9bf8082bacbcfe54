"""HQ-SAM's architecture as an option of `Sam` (`SamConfig.hq`; Ke et al., NeurIPS 2023).

HQ-SAM (`segment_anything_hq`, PyPI `segment-anything-hq==0.3`) keeps SAM and adds, in the
mask decoder, an HQ output token with its own hypernetwork MLP and a global-local feature
fusion (sum_jax/models/mask_decoder.py). The fusion reads the output of the ViT's first
global-attention block, so an HQ model's `encode_image` returns more than SAM's embedding:

    features [B, h, w, 3C] = concat(embedding [B, h, w, C], fold(hq_features [B, 4h, 4w, C/8]))

where `hq_features` is HQ-SAM's per-image fusion (`embedding_encoder(embedding) +
compress_vit_feat(early ViT features)`, computed once per image as HQ-SAM's predictor does)
and `fold` moves each 4 x 4 patch into the channels (`C/8 * 16 = 2C`). Every stage that
caches or passes image embeddings (predictor, evaluator, trainer) carries them unchanged, and
`Sam.decode` unfolds them. A plain SAM's features are its embedding, as before.

`add_hq_parts` turns a loaded SAM into an HQ model in place (fresh HQ parts, SAM's weights
kept), as HQ-SAM's training starts from SAM.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

FOLD = 4  # HQ features are 4x the embedding grid per side


def fold(embedding: jax.Array, hq_features: jax.Array) -> jax.Array:
    """`embedding [B, h, w, C]` and `hq_features [B, 4h, 4w, C/8]` -> `[B, h, w, 3C]`."""
    b, h, w, _ = embedding.shape
    c8 = hq_features.shape[-1]
    x = hq_features.reshape(b, h, FOLD, w, FOLD, c8).transpose(0, 1, 3, 2, 4, 5)
    return jnp.concatenate([embedding, x.reshape(b, h, w, FOLD * FOLD * c8)], axis=-1)


def unfold(features: jax.Array, embed_dim: int) -> tuple[jax.Array, jax.Array]:
    """Inverse of `fold`: `[B, h, w, 3C]` -> `(embedding [B, h, w, C], [B, 4h, 4w, C/8])`."""
    b, h, w, total = features.shape
    if total != 3 * embed_dim:
        raise ValueError(
            f"an HQ model's image features have {3 * embed_dim} channels (embedding and HQ "
            f"features), got {total}: were they computed by a plain SAM?"
        )
    c8 = embed_dim // 8
    x = features[..., embed_dim:].reshape(b, h, w, FOLD, FOLD, c8).transpose(0, 1, 3, 2, 4, 5)
    return features[..., :embed_dim], x.reshape(b, FOLD * h, FOLD * w, c8)


def add_hq_parts(model, *, hq_token_only: bool = True, rngs: nnx.Rngs):
    """Puts fresh HQ-SAM parts into `model` (a plain `Sam`) in place and records them in
    `model.config`; returns `model`. SAM's variables are untouched. The result has the
    variables of `Sam(model.config)`, so it saves and loads as any model."""
    config = model.config
    if config.hq:
        raise ValueError("the model already has HQ-SAM's parts")
    model.mask_decoder.add_hq_parts(
        config.encoder_embed_dim,
        dtype=jnp.dtype(config.dtype),
        param_dtype=jnp.dtype(config.param_dtype),
        rngs=rngs,
    )
    model.config = dataclasses.replace(config, hq=True, hq_token_only=bool(hq_token_only))
    return model


# HQ-SAM's trainable parts (its `build_sam` freezes every parameter whose name contains none
# of these), as a regex over our '.'-joined parameter paths.
PARTS = r"mask_decoder\.(hf_token|hf_mlp|compress_vit_feat|embedding_encoder|embedding_maskfeature)"
TRAINABLE = PARTS + r"\..*"
