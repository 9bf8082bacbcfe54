"""SAM's mask decoder: a two-way transformer between prompt tokens and the image embedding.

Matches `segment_anything.modeling.{transformer.TwoWayTransformer, mask_decoder.MaskDecoder}`
in channels-last layout. Prompt tokens carry a validity mask; invalid tokens are removed from
every attention in which they are keys, so padding never changes a valid output.

With `hq=True` it is HQ-SAM's decoder (`segment_anything_hq.modeling.MaskDecoderHQ`, Ke et al.
2023): a fifth mask token (`hf_token`, the HQ output token) joins the output tokens in the
two-way transformer, its own hypernetwork MLP (`hf_mlp`) turns it into mask weights, and those
weights multiply HQ features: `embedding_maskfeature` (two 3x3 convs) of SAM's upscaled mask
features plus the per-image global-local fusion `hq_features` (`embedding_encoder` of the
final image embedding + `compress_vit_feat` of the early ViT features, both upscaled 4x). The
output is selected as HQ-SAM selects it (`select_hq_outputs`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sum_jax.models.common import (
    GELU,
    MLP,
    ConvTranspose2x2,
    MLPBlock,
    layer_norm,
    use_fused_attention,
)

DECODER_LN_EPS = 1e-5


class Attention(nnx.Module):
    """Multi-head attention with an optional reduction of the internal width.

    `attention` chooses plain matmuls or `jax.nn.dot_product_attention` (invalid keys as its
    boolean mask), as in the image encoder (`common.use_fused_attention`).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        *,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        attention: str = "auto",
        rngs: nnx.Rngs,
    ):
        internal_dim = embedding_dim // downsample_rate
        self.attention = attention
        if internal_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide {internal_dim}")
        self.num_heads = num_heads
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.q_proj = nnx.Linear(embedding_dim, internal_dim, **kw)
        self.k_proj = nnx.Linear(embedding_dim, internal_dim, **kw)
        self.v_proj = nnx.Linear(embedding_dim, internal_dim, **kw)
        self.out_proj = nnx.Linear(internal_dim, embedding_dim, **kw)

    def _heads(self, x: jax.Array) -> jax.Array:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(0, 2, 1, 3)

    def __call__(
        self, q: jax.Array, k: jax.Array, v: jax.Array, key_valid: jax.Array | None = None
    ) -> jax.Array:
        """`q [B, Nq, C]`, `k, v [B, Nk, C]`, `key_valid [B, Nk]` bool -> `[B, Nq, C]`."""
        if use_fused_attention(self.attention):
            b, nq, _ = q.shape
            split = lambda t: t.reshape(t.shape[:2] + (self.num_heads, -1))  # [B, N, h, d]
            mask = None if key_valid is None else key_valid[:, None, None, :]
            out = jax.nn.dot_product_attention(
                split(self.q_proj(q)), split(self.k_proj(k)), split(self.v_proj(v)), mask=mask
            )
            return self.out_proj(out.reshape(b, nq, -1))
        q = self._heads(self.q_proj(q))
        k = self._heads(self.k_proj(k))
        v = self._heads(self.v_proj(v))
        attn = (q @ k.swapaxes(-1, -2)) / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
        attn = attn.astype(jnp.float32)
        if key_valid is not None:
            attn = jnp.where(key_valid[:, None, None, :], attn, -jnp.inf)
        attn = jax.nn.softmax(attn, axis=-1).astype(v.dtype)
        out = attn @ v
        b, nh, n, d = out.shape
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(b, n, nh * d))


class TwoWayAttentionBlock(nnx.Module):
    """Token self-attention, token->image, MLP, image->token (SAM's four-layer block)."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int,
        skip_first_layer_pe: bool,
        *,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        attention: str = "auto",
        rngs: nnx.Rngs,
    ):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        akw = dict(kw, attention=attention)
        ln = {"param_dtype": param_dtype, "rngs": rngs}
        self.self_attn = Attention(embedding_dim, num_heads, **akw)
        self.norm1 = layer_norm(embedding_dim, DECODER_LN_EPS, **ln)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, attention_downsample_rate, **akw
        )
        self.norm2 = layer_norm(embedding_dim, DECODER_LN_EPS, **ln)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation="relu", **kw)
        self.norm3 = layer_norm(embedding_dim, DECODER_LN_EPS, **ln)
        self.norm4 = layer_norm(embedding_dim, DECODER_LN_EPS, **ln)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, attention_downsample_rate, **akw
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def __call__(self, queries, keys, query_pe, key_pe, token_valid):
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries, token_valid)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries, token_valid)
        queries = self.norm1(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))

        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries, token_valid))
        return queries, keys


class TwoWayTransformer(nnx.Module):
    """`depth` two-way blocks and a final token->image attention."""

    def __init__(
        self,
        *,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int = 2,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        attention: str = "auto",
        rngs: nnx.Rngs,
    ):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        akw = dict(kw, attention=attention)
        self.layers = nnx.List(
            [
                TwoWayAttentionBlock(
                    embedding_dim,
                    num_heads,
                    mlp_dim,
                    attention_downsample_rate,
                    skip_first_layer_pe=(i == 0),
                    **akw,
                )
                for i in range(depth)
            ]
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, attention_downsample_rate, **akw
        )
        self.norm_final_attn = layer_norm(
            embedding_dim, DECODER_LN_EPS, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, image_embedding, image_pe, point_embedding, token_valid):
        """`image_embedding, image_pe [B, HW, C]`, `point_embedding [B, T, C]`, `token_valid
        [B, T]` -> `(queries [B, T, C], keys [B, HW, C])`."""
        queries, keys = point_embedding, image_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, image_pe, token_valid)
        q, k = queries + point_embedding, keys + image_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys


class MaskDecoder(nnx.Module):
    """Predicts `num_multimask_outputs + 1` masks and their IoUs from prompt tokens."""

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer_depth: int = 2,
        transformer_mlp_dim: int = 2048,
        transformer_num_heads: int = 8,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        hq: bool = False,
        vit_dim: int = 0,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        attention: str = "auto",
        rngs: nnx.Rngs,
    ):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        akw = dict(kw, attention=attention)
        c = transformer_dim
        self.num_mask_tokens = num_multimask_outputs + 1
        self.dtype = dtype
        self.transformer = TwoWayTransformer(
            depth=transformer_depth,
            embedding_dim=c,
            num_heads=transformer_num_heads,
            mlp_dim=transformer_mlp_dim,
            **akw,
        )
        init = nnx.initializers.normal(1.0)
        self.iou_token = nnx.Embed(1, c, embedding_init=init, param_dtype=param_dtype, rngs=rngs)
        self.mask_tokens = nnx.Embed(
            self.num_mask_tokens, c, embedding_init=init, param_dtype=param_dtype, rngs=rngs
        )
        self.output_upscaling = nnx.List(
            [
                ConvTranspose2x2(c, c // 4, **kw),
                layer_norm(c // 4, 1e-6, param_dtype=param_dtype, rngs=rngs),
                GELU(),
                ConvTranspose2x2(c // 4, c // 8, **kw),
                GELU(),
            ]
        )
        self.output_hypernetworks_mlps = nnx.List(
            [MLP(c, c, c // 8, 3, **kw) for _ in range(self.num_mask_tokens)]
        )
        self.iou_prediction_head = MLP(
            c, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth, **kw
        )
        # HQ-SAM's parts (`add_hq_parts`); None, and no cost, for SAM.
        self.hq = False
        self.hf_token = self.hf_mlp = None
        self.compress_vit_feat = self.embedding_encoder = self.embedding_maskfeature = None
        if hq:
            self.add_hq_parts(vit_dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def add_hq_parts(
        self,
        vit_dim: int,
        *,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        """Creates HQ-SAM's output token, its MLP and the three fusion conv stacks (PyTorch
        names: `hf_token`, `hf_mlp`, `compress_vit_feat`, `embedding_encoder`,
        `embedding_maskfeature`), freshly initialised; `vit_dim` is the ViT's width."""
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        ln = {"param_dtype": param_dtype, "rngs": rngs}
        c = self.mask_tokens.embedding.shape[-1]
        self.hq = True
        # `nnx.data`: the attributes were None (static) until now.
        self.hf_token = nnx.data(
            nnx.Embed(
                1,
                c,
                embedding_init=nnx.initializers.normal(1.0),
                param_dtype=param_dtype,
                rngs=rngs,
            )
        )
        self.hf_mlp = nnx.data(MLP(c, c, c // 8, 3, **kw))
        self.compress_vit_feat = nnx.data(
            nnx.List(
                [
                    ConvTranspose2x2(vit_dim, c, **kw),
                    layer_norm(c, 1e-6, **ln),
                    GELU(),
                    ConvTranspose2x2(c, c // 8, **kw),
                ]
            )
        )
        self.embedding_encoder = nnx.data(
            nnx.List(
                [
                    ConvTranspose2x2(c, c // 4, **kw),
                    layer_norm(c // 4, 1e-6, **ln),
                    GELU(),
                    ConvTranspose2x2(c // 4, c // 8, **kw),
                ]
            )
        )
        conv3 = {"kernel_size": (3, 3), "padding": ((1, 1), (1, 1)), **kw}
        self.embedding_maskfeature = nnx.data(
            nnx.List(
                [
                    nnx.Conv(c // 8, c // 4, **conv3),
                    layer_norm(c // 4, 1e-6, **ln),
                    GELU(),
                    nnx.Conv(c // 4, c // 8, **conv3),
                ]
            )
        )

    def _stack(self, layers, x: jax.Array) -> jax.Array:
        for layer in layers:
            x = layer(x).astype(self.dtype)
        return x

    def hq_features(self, image_embeddings: jax.Array, vit_features: jax.Array) -> jax.Array:
        """HQ-SAM's global-local fusion of one image: `image_embeddings [B, h, w, C]` (the
        encoder's output) and `vit_features [B, h, w, D]` (the output of the ViT's first
        global-attention block) -> `[B, 4h, 4w, C/8]`."""
        dtype = self.dtype
        return self._stack(self.embedding_encoder, image_embeddings.astype(dtype)) + self._stack(
            self.compress_vit_feat, vit_features.astype(dtype)
        )

    def __call__(
        self,
        image_embeddings: jax.Array,
        image_pe: jax.Array,
        sparse_embeddings: jax.Array,
        sparse_valid: jax.Array,
        dense_embeddings: jax.Array,
        *,
        multimask_output: bool | None,
        hq_features: jax.Array | None = None,
        hq_token_only: bool = True,
    ) -> tuple[jax.Array, jax.Array]:
        """Decodes a flat batch of prompts.

        Args:
          image_embeddings: `[B, h, w, C]`, one per prompt (already repeated per prompt).
          image_pe: `[h, w, C]`.
          sparse_embeddings: `[B, T, C]` prompt tokens; `sparse_valid [B, T]` bool.
          dense_embeddings: `[B, h, w, C]`.
          multimask_output: return masks 1..3 (True), mask 0 (False) or all four (None:
            one decode for both, as the evaluator's first round needs). With `hq`, HQ-SAM's
            selection instead (`select_hq_outputs`): one mask for True and False, both
            (False's first) for None.
          hq_features: HQ only: `[B, 4h, 4w, C/8]` from `hq_features`, one per prompt.
          hq_token_only: HQ only: the HQ token's mask alone, or added to SAM's mask.

        Returns:
          `(masks [B, M, 4h, 4w], iou_pred [B, M])`.
        """
        b, h, w, c = image_embeddings.shape
        tokens_ = [self.iou_token.embedding[...], self.mask_tokens.embedding[...]]
        if self.hq:  # HQ-SAM: the HQ output token after SAM's mask tokens
            if hq_features is None:
                raise ValueError("an HQ mask decoder needs hq_features")
            tokens_.append(self.hf_token.embedding[...])
        output_tokens = jnp.concatenate(tokens_, axis=0)
        n_out = output_tokens.shape[0]
        tokens = jnp.concatenate(
            [jnp.broadcast_to(output_tokens, (b, n_out, c)), sparse_embeddings], axis=1
        ).astype(self.dtype)
        token_valid = jnp.concatenate([jnp.ones((b, n_out), bool), sparse_valid], axis=1)

        src = (image_embeddings + dense_embeddings).astype(self.dtype).reshape(b, h * w, c)
        pos = jnp.broadcast_to(image_pe.reshape(1, h * w, c), (b, h * w, c)).astype(self.dtype)
        hs, src = self.transformer(src, pos, tokens, token_valid)
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]

        x = src.reshape(b, h, w, c)
        for layer in self.output_upscaling:
            x = layer(x).astype(self.dtype)
        hyper_in = jnp.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            axis=1,
        )  # [B, M, C/8]
        # Logits accumulate in float32 whatever the compute dtype: they feed the losses.
        masks = jnp.einsum("bmc,bhwc->bmhw", hyper_in, x, preferred_element_type=jnp.float32)
        iou_pred = self.iou_prediction_head(iou_token_out)

        if self.hq:
            # The HQ token's weights on HQ features: SAM's upscaled mask features through
            # `embedding_maskfeature`, plus the image's global-local fusion.
            hq_in = self.hf_mlp(hs[:, 1 + self.num_mask_tokens])  # [B, C/8]
            x_hq = self._stack(self.embedding_maskfeature, x) + hq_features.astype(self.dtype)
            mask_hq = jnp.einsum("bc,bhwc->bhw", hq_in, x_hq, preferred_element_type=jnp.float32)
            return select_hq_outputs(
                masks,
                iou_pred.astype(jnp.float32),
                mask_hq,
                multimask_output=multimask_output,
                hq_token_only=hq_token_only,
            )

        sl = slice(1, None) if multimask_output else slice(0, 1)
        if multimask_output is None:
            sl = slice(None)
        return masks[:, sl].astype(jnp.float32), iou_pred[:, sl].astype(jnp.float32)


def select_hq_outputs(
    masks: jax.Array,
    iou_pred: jax.Array,
    mask_hq: jax.Array,
    *,
    multimask_output: bool | None,
    hq_token_only: bool,
) -> tuple[jax.Array, jax.Array]:
    """HQ-SAM's output (`MaskDecoderHQ.forward`): SAM's mask is token 0 (`multimask_output`
    False) or the multimask output with the highest predicted IoU (True), with that IoU
    prediction as the score; the output is the HQ mask alone (`hq_token_only`) or SAM's mask
    plus the HQ mask (the official predictor's default). `None` gives both selections, the
    single-mask one first.

    Args: `masks [B, 4, H, W]` (SAM's four tokens), `iou_pred [B, 4]`, `mask_hq [B, H, W]`.
    Returns: `(masks [B, M, H, W], iou [B, M])`, M = 1 (2 for None).
    """
    if multimask_output is None:
        outs = [
            select_hq_outputs(
                masks, iou_pred, mask_hq, multimask_output=m, hq_token_only=hq_token_only
            )
            for m in (False, True)
        ]
        return tuple(jnp.concatenate(parts, axis=1) for parts in zip(*outs))
    if multimask_output:
        best = jnp.argmax(iou_pred[:, 1:], axis=-1)  # ties: the first, as torch.max
        sam = jnp.take_along_axis(masks[:, 1:], best[:, None, None, None], axis=1)[:, 0]
        score = jnp.max(iou_pred[:, 1:], axis=-1)
    else:
        sam, score = masks[:, 0], iou_pred[:, 0]
    out = mask_hq if hq_token_only else sam + mask_hq
    return out[:, None].astype(jnp.float32), score[:, None].astype(jnp.float32)
