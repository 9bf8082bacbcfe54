"""The Segment Anything Model (SAM) in Flax NNX, with the SUM task prompt.

`build_sam("vit_b" | "vit_l" | "vit_h" | "tiny")` builds a randomly initialised model with the
architecture of the official checkpoints (`tiny` is a small variant for tests). Load weights
with `sum_jax.checkpointing.load_sam` or convert a PyTorch checkpoint with
`python -m convert.sam_checkpoint`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sum_jax.models import hq
from sum_jax.models.image_encoder import ImageEncoderViT
from sum_jax.models.mask_decoder import MaskDecoder
from sum_jax.models.prompt_encoder import PromptEncoder


@dataclasses.dataclass(frozen=True)
class SamConfig:
    """Architecture of a SAM model. Defaults are ViT-B."""

    img_size: int = 1024
    patch_size: int = 16
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    mlp_ratio: float = 4.0
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    # SUM: 0 unlabelled/unspecified, 1 salient object, 2 entity, 3 part.
    num_tasks: int = 4
    # AIM's adapters in every encoder block (`encoder_adapter.py`): bottleneck width
    # `ratio * dim` (0: none, SAM) and the MLP adapter's scale.
    encoder_adapter_ratio: float = 0.0
    encoder_adapter_scale: float = 0.5
    # HQ-SAM's architecture (`hq.py`): HQ output token, its MLP and the global-local fusion;
    # `hq_token_only`: the HQ token's mask is the output (HQ-SAM's training), else SAM's
    # mask plus the HQ mask (`segment_anything_hq.SamPredictor`'s default).
    hq: bool = False
    hq_token_only: bool = True
    dtype: str = "float32"
    param_dtype: str = "float32"
    # Execution options (see EXECUTION_FIELDS): no effect on parameters, nor in float32 on
    # results beyond rounding. remat: "none" | "block" | "dots" (encoder blocks);
    # attention: "auto" | "matmul" | "fused"; scan_blocks: scan over the encoder's groups.
    remat: str = "none"
    attention: str = "auto"
    scan_blocks: bool = False

    @property
    def embedding_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        return 4 * self.embedding_size

    @property
    def variant(self) -> str:
        """The `VARIANTS` name with this architecture (compute dtypes, the task table's size
        and encoder adapters aside), or "custom"."""
        for name, v in VARIANTS.items():
            kept = {
                f: getattr(v, f)
                for f in EXECUTION_FIELDS + ("num_tasks",) + ADAPTER_FIELDS + HQ_FIELDS
            }
            same = dataclasses.replace(self, **kept)
            if same == v:
                return name
        return "custom"

    def architecture(self) -> SamConfig:
        """This config with the run-time choices (compute dtype, remat, attention kernel,
        block scan) at their float32 defaults: what a model directory records."""
        return dataclasses.replace(
            self, dtype="float32", remat="none", attention="auto", scan_blocks=False
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["encoder_global_attn_indexes"] = list(self.encoder_global_attn_indexes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SamConfig fields {unknown}; known: {sorted(known)}")
        d = dict(d)
        if "encoder_global_attn_indexes" in d:
            d["encoder_global_attn_indexes"] = tuple(d["encoder_global_attn_indexes"])
        return cls(**d)


# Fields of the encoder adapters added to a base architecture (`encoder_adapter.py`).
ADAPTER_FIELDS = ("encoder_adapter_ratio", "encoder_adapter_scale")
# HQ-SAM's parts added to a base architecture (`hq.py`): an HQ vit_h is still a "vit_h".
HQ_FIELDS = ("hq", "hq_token_only")
# Fields that say how the model runs, not what it computes: a checkpoint's architecture
# ignores them, and `execution_overrides` sets them from a training config.
EXECUTION_FIELDS = ("dtype", "param_dtype", "remat", "attention", "scan_blocks")


def execution_overrides(model_config) -> dict[str, Any]:
    """`SamConfig` execution fields from a training config's `model` section
    (`compute_dtype`, `remat`, `attention`, `scan_blocks`; absent fields keep the defaults)."""
    fields = {"compute_dtype": "dtype", "remat": "remat", "attention": "attention"}
    out = {ours: str(model_config[k]) for k, ours in fields.items() if k in model_config}
    if "scan_blocks" in model_config:
        out["scan_blocks"] = bool(model_config.scan_blocks)
    return out


VARIANTS: dict[str, SamConfig] = {
    "vit_b": SamConfig(),
    "vit_l": SamConfig(
        encoder_embed_dim=1024,
        encoder_depth=24,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(5, 11, 17, 23),
    ),
    "vit_h": SamConfig(
        encoder_embed_dim=1280,
        encoder_depth=32,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(7, 15, 23, 31),
    ),
    # Small enough for a 2-core CPU test suite, yet every code path of the real model runs:
    # windowed attention with padding (8x8 grid, window 3), global attention, the neck, a
    # mask-downscaling stack and a decoder whose attention downsamples.
    "tiny": SamConfig(
        img_size=128,
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1,),
        window_size=3,
        prompt_embed_dim=32,
        mask_in_chans=8,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_hidden_dim=32,
    ),
    # The model pretrained here (`pretrained:small`, sum_jax/pretrain, docs/pretraining.md),
    # sized for 30 minutes of training on a 2-core CPU: 128 px input, 8x8 tokens and 32x32
    # low-res masks; 1.54M parameters, 6 MB in float32. The decoder's seven rounds, not the
    # encoder, dominate a training step at this size: at 256 px (16x16 tokens) the step
    # moved 3x fewer masks per second.
    "small": SamConfig(
        img_size=128,
        encoder_embed_dim=128,
        encoder_depth=6,
        encoder_num_heads=4,
        encoder_global_attn_indexes=(2, 5),
        window_size=4,
        prompt_embed_dim=64,
        mask_in_chans=16,
        decoder_mlp_dim=256,
        decoder_num_heads=4,
        iou_head_hidden_dim=64,
    ),
}


class Sam(nnx.Module):
    """Image encoder + prompt encoder + mask decoder. See `encode_image` and `decode`."""

    def __init__(self, config: SamConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype, param_dtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        grid = config.embedding_size
        self.image_encoder = ImageEncoderViT(
            img_size=config.img_size,
            patch_size=config.patch_size,
            embed_dim=config.encoder_embed_dim,
            depth=config.encoder_depth,
            num_heads=config.encoder_num_heads,
            mlp_ratio=config.mlp_ratio,
            out_chans=config.prompt_embed_dim,
            window_size=config.window_size,
            global_attn_indexes=config.encoder_global_attn_indexes,
            remat=config.remat,
            attention=config.attention,
            scan_blocks=config.scan_blocks,
            adapter_ratio=config.encoder_adapter_ratio,
            adapter_scale=config.encoder_adapter_scale,
            **kw,
        )
        self.prompt_encoder = PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.img_size, config.img_size),
            mask_in_chans=config.mask_in_chans,
            num_tasks=config.num_tasks,
            **kw,
        )
        self.mask_decoder = MaskDecoder(
            transformer_dim=config.prompt_embed_dim,
            transformer_depth=config.decoder_depth,
            transformer_mlp_dim=config.decoder_mlp_dim,
            transformer_num_heads=config.decoder_num_heads,
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
            hq=config.hq,
            vit_dim=config.encoder_embed_dim,
            attention=config.attention,
            **kw,
        )

    def encode_image(self, images: jax.Array) -> jax.Array:
        """`images f32[B, S, S, 3]` (normalised, zero padded) -> `f32[B, S/16, S/16, C]`;
        for an HQ model `[B, S/16, S/16, 3C]`: the embedding and HQ-SAM's fused features
        (`hq.fold`; `image_embedding` takes the embedding back out)."""
        s = self.config.img_size
        if images.shape[1:] != (s, s, 3):
            raise ValueError(f"images must be [B, {s}, {s}, 3], got {images.shape}")
        if not self.config.hq:
            return self.image_encoder(images).astype(jnp.float32)
        embedding, early = self.image_encoder(images, early_features=True)
        fused = self.mask_decoder.hq_features(embedding, early)
        return hq.fold(embedding.astype(jnp.float32), fused.astype(jnp.float32))

    def image_embedding(self, features: jax.Array) -> jax.Array:
        """SAM's image embedding `[B, h, w, C]` out of `encode_image`'s features."""
        if not self.config.hq:
            return features
        return features[..., : self.config.prompt_embed_dim]

    def decode(
        self,
        image_embeddings: jax.Array,
        points: jax.Array,
        labels: jax.Array,
        boxes: jax.Array | None = None,
        box_valid: jax.Array | None = None,
        mask_inputs: jax.Array | None = None,
        mask_valid: jax.Array | None = None,
        *,
        multimask_output: bool | None,
        task_ids: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Decodes `Q` prompts for each of `B` images.

        Args:
          image_embeddings: `[B, h, w, C]` from `encode_image` (`[B, h, w, 3C]` for HQ).
          points: `[B, Q, P, 2]` (x, y) in the input frame (resized and padded image).
          labels: `[B, Q, P]` int: 1 positive, 0 negative, -1 SAM's "not a point",
            -2 absent (a padding slot that does not take part).
          boxes: `[B, Q, 4]` (x0, y0, x1, y1) in the input frame, or None.
          box_valid: `[B, Q]` bool, or None (all boxes present when `boxes` is given).
          mask_inputs: `[B, Q, 4h, 4w]` low-res logits (e.g. the previous round's), or None.
          mask_valid: `[B, Q]` bool, or None (all present when `mask_inputs` is given).
          multimask_output: three masks (True), one (False) or all four (None: the
            single-mask token's first) per prompt; static. An HQ model gives HQ-SAM's one
            output for True and for False (`mask_decoder.select_hq_outputs`; per
            `config.hq_token_only`) and both, False's first, for None.
          task_ids: `[B, Q]` int SUM task ids, negative for none; or None.

        Returns:
          `low_res_logits [B, Q, M, 4h, 4w]` and `iou_predictions [B, Q, M]`.
        """
        b, q = labels.shape[:2]
        pe = self.prompt_encoder
        sparse, sparse_valid = pe.embed_sparse(points, labels, boxes, box_valid)
        dense = pe.embed_dense(mask_inputs, mask_valid, task_ids, (b, q))
        per_prompt = lambda x: jnp.broadcast_to(x[:, None], (b, q) + x.shape[1:]).reshape(
            (b * q,) + x.shape[1:]
        )
        hq_kw = {}
        if self.config.hq:
            image_embeddings, fused = hq.unfold(image_embeddings, self.config.prompt_embed_dim)
            hq_kw = {"hq_features": per_prompt(fused), "hq_token_only": self.config.hq_token_only}
        h, w, c = image_embeddings.shape[1:]
        masks, iou = self.mask_decoder(
            per_prompt(image_embeddings),
            pe.dense_pe(),
            sparse.reshape((b * q,) + sparse.shape[2:]),
            sparse_valid.reshape(b * q, -1),
            dense.reshape(b * q, h, w, c),
            multimask_output=multimask_output,
            **hq_kw,
        )
        return masks.reshape((b, q) + masks.shape[1:]), iou.reshape(b, q, -1)


def build_sam(variant: str = "vit_b", *, rngs: nnx.Rngs | None = None, **overrides: Any) -> Sam:
    """A randomly initialised SAM of `variant`, with `SamConfig` fields overridden."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown SAM variant {variant!r}; choose one of {sorted(VARIANTS)}")
    config = dataclasses.replace(VARIANTS[variant], **overrides)
    return Sam(config, rngs=rngs if rngs is not None else nnx.Rngs(0))


def num_params(model: nnx.Module) -> int:
    """Number of trainable parameters."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
