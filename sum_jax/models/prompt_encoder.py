"""SAM's prompt encoder, with fixed-size prompts and the SUM task prompt.

Matches `segment_anything.modeling.prompt_encoder.PromptEncoder` with one change that keeps
shapes static under `jit`: every prompt has the same number of point slots, and a slot whose
label is `LABEL_ABSENT` (-2) yields a token with `valid=False`. The mask decoder removes such
tokens from attention, so the result equals SAM's for the prompt without them. In the same
way SAM's extra "not a point" token (added when there are points and no box) and the two box
corner tokens are always present, with validity flags.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from sum_jax.models.common import GELU, Buffer, layer_norm

LABEL_ABSENT = -2
LABEL_NOT_A_POINT = -1
LABEL_NEGATIVE = 0
LABEL_POSITIVE = 1


class PositionEmbeddingRandom(nnx.Module):
    """Random-Fourier positional encoding with a fixed `[2, num_pos_feats]` Gaussian matrix."""

    def __init__(self, num_pos_feats: int, *, rngs: nnx.Rngs, scale: float = 1.0):
        self.positional_encoding_gaussian_matrix = Buffer(
            scale * jax.random.normal(rngs.params(), (2, num_pos_feats), jnp.float32)
        )

    def encode(self, coords01: jax.Array) -> jax.Array:
        """Coordinates normalised to [0, 1], `[..., 2]` as (x, y) -> `[..., 2 * num_pos_feats]`."""
        coords = 2.0 * coords01 - 1.0
        coords = coords @ self.positional_encoding_gaussian_matrix[...]
        coords = 2.0 * math.pi * coords
        return jnp.concatenate([jnp.sin(coords), jnp.cos(coords)], axis=-1)

    def dense(self, h: int, w: int) -> jax.Array:
        """Encoding of every cell centre of an `h x w` grid: `[h, w, C]`."""
        y = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
        x = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
        grid = jnp.stack(jnp.broadcast_arrays(x[None, :], y[:, None]), axis=-1)
        return self.encode(grid)

    def with_coords(self, coords_xy: jax.Array, image_size: tuple[int, int]) -> jax.Array:
        """Encoding of pixel coordinates in an image of `image_size = (h, w)`."""
        h, w = image_size
        return self.encode(coords_xy / jnp.asarray([w, h], jnp.float32))


class PromptEncoder(nnx.Module):
    """Embeds points, boxes, mask logits and task ids into sparse and dense embeddings."""

    def __init__(
        self,
        *,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        num_tasks: int,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.mask_input_size = tuple(4 * s for s in image_embedding_size)
        self.dtype = dtype
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2, rngs=rngs)
        embed = {"param_dtype": param_dtype, "rngs": rngs}
        init = nnx.initializers.normal(1.0)
        # pos/neg point, then the two box corners: indices match PyTorch's ModuleList.
        self.point_embeddings = nnx.List(
            [nnx.Embed(1, embed_dim, embedding_init=init, **embed) for _ in range(4)]
        )
        self.not_a_point_embed = nnx.Embed(1, embed_dim, embedding_init=init, **embed)
        conv = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        c4 = mask_in_chans // 4
        self.mask_downscaling = nnx.List(
            [
                nnx.Conv(1, c4, kernel_size=(2, 2), strides=(2, 2), padding="VALID", **conv),
                layer_norm(c4, 1e-6, param_dtype=param_dtype, rngs=rngs),
                GELU(),
                nnx.Conv(
                    c4, mask_in_chans, kernel_size=(2, 2), strides=(2, 2), padding="VALID", **conv
                ),
                layer_norm(mask_in_chans, 1e-6, param_dtype=param_dtype, rngs=rngs),
                GELU(),
                nnx.Conv(mask_in_chans, embed_dim, kernel_size=(1, 1), **conv),
            ]
        )
        self.no_mask_embed = nnx.Embed(1, embed_dim, embedding_init=init, **embed)
        # SUM task prompt (not in SAM checkpoints): zero-initialised so that a converted SAM
        # behaves exactly as SAM until fine-tuning moves it.
        self.task_embeddings = nnx.Embed(
            num_tasks, embed_dim, embedding_init=nnx.initializers.zeros, **embed
        )

    def dense_pe(self) -> jax.Array:
        """Positional encoding of the image-embedding grid: `[h, w, C]`."""
        return self.pe_layer.dense(*self.image_embedding_size)

    def embed_sparse(
        self,
        points: jax.Array,
        labels: jax.Array,
        boxes: jax.Array | None,
        box_valid: jax.Array | None,
    ) -> tuple[jax.Array, jax.Array]:
        """Point and box tokens.

        Args:
          points: `[..., P, 2]` (x, y) in the input frame.
          labels: `[..., P]` int, see the LABEL_* constants.
          boxes: `[..., 4]` (x0, y0, x1, y1) or None.
          box_valid: `[...]` bool, or None (every box is present when `boxes` is given).

        Returns:
          `tokens [..., P + 3, C]` (points, SAM's padding point, two box corners) and
          `valid [..., P + 3]` bool.
        """
        batch_shape = labels.shape[:-1]
        if boxes is None:
            boxes = jnp.zeros(batch_shape + (4,), jnp.float32)
            box_valid = jnp.zeros(batch_shape, bool)
        elif box_valid is None:
            box_valid = jnp.ones(batch_shape, bool)
        point_valid = labels != LABEL_ABSENT
        has_points = jnp.any(point_valid, axis=-1)
        # SAM appends a "not a point" token when points are given without a box.
        pad_valid = has_points & ~box_valid

        pad_point = jnp.zeros(batch_shape + (1, 2), jnp.float32)
        all_points = jnp.concatenate([points.astype(jnp.float32), pad_point], axis=-2) + 0.5
        all_labels = jnp.concatenate(
            [labels, jnp.full(batch_shape + (1,), LABEL_NOT_A_POINT, labels.dtype)], axis=-1
        )
        pe = self.pe_layer.with_coords(all_points, self.input_image_size)
        lbl = all_labels[..., None]
        emb = jnp.where(lbl == LABEL_NOT_A_POINT, self.not_a_point_embed.embedding[0], pe)
        emb = emb + jnp.where(lbl == LABEL_NEGATIVE, self.point_embeddings[0].embedding[0], 0.0)
        emb = emb + jnp.where(lbl == LABEL_POSITIVE, self.point_embeddings[1].embedding[0], 0.0)

        corners = (boxes.astype(jnp.float32) + 0.5).reshape(batch_shape + (2, 2))
        corner_emb = self.pe_layer.with_coords(corners, self.input_image_size)
        corner_emb = corner_emb + jnp.stack(
            [self.point_embeddings[2].embedding[0], self.point_embeddings[3].embedding[0]]
        )
        tokens = jnp.concatenate([emb, corner_emb], axis=-2)
        valid = jnp.concatenate(
            [point_valid, pad_valid[..., None], jnp.repeat(box_valid[..., None], 2, axis=-1)],
            axis=-1,
        )
        return tokens, valid

    def embed_dense(
        self,
        mask_inputs: jax.Array | None,
        mask_valid: jax.Array | None,
        task_ids: jax.Array | None,
        batch_shape: tuple[int, ...],
    ) -> jax.Array:
        """Dense embedding `[*batch_shape, h, w, C]` from mask logits and task ids.

        Args:
          mask_inputs: `[*batch_shape, 4h, 4w]` low-res logits, or None.
          mask_valid: `[*batch_shape]` bool (None: all masks present); where false, SAM's
            `no_mask_embed` is used as when no mask is given.
          task_ids: `[*batch_shape]` int, negative for no task prompt; or None.
        """
        h, w = self.image_embedding_size
        no_mask = jnp.broadcast_to(
            self.no_mask_embed.embedding[0], batch_shape + (h, w, self.embed_dim)
        )
        if mask_inputs is None:
            dense = no_mask
        else:
            x = mask_inputs.reshape((-1,) + mask_inputs.shape[-2:] + (1,)).astype(self.dtype)
            for layer in self.mask_downscaling:
                x = layer(x)
            dense = x.reshape(batch_shape + x.shape[1:]).astype(jnp.float32)
            if mask_valid is not None:
                dense = jnp.where(mask_valid[..., None, None, None], dense, no_mask)
        if task_ids is not None:
            table = self.task_embeddings.embedding[...]
            task = jnp.where(
                (task_ids >= 0)[..., None], table[jnp.clip(task_ids, 0, table.shape[0] - 1)], 0.0
            )
            dense = dense + task[..., None, None, :]
        return dense
