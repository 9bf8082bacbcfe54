"""The official HQ-SAM (`segment-anything-hq==0.3`, module `segment_anything_hq`) as the
tests' numerical reference for `SamConfig.hq`.

`torch_sam_hq(config)` builds the official HQ model (`MaskDecoderHQ`, the encoder that also
returns its global blocks' outputs) with the architecture of a `SamConfig` (the official
builders only know vit_b/l/h), perturbs every tensor, and `flax_from_torch` (tests/
torch_reference.py) loads the same weights into sum_jax through the converter's key map.
"""

from __future__ import annotations

import functools

import torch
from segment_anything_hq import modeling as hq_modeling

from sum_jax.models.sam import SamConfig


def torch_sam_hq(config: SamConfig, seed: int = 0, perturb: float = 0.05) -> hq_modeling.Sam:
    torch.manual_seed(seed)
    grid = config.embedding_size
    encoder = hq_modeling.ImageEncoderViT(
        depth=config.encoder_depth,
        embed_dim=config.encoder_embed_dim,
        img_size=config.img_size,
        mlp_ratio=config.mlp_ratio,
        norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=config.encoder_num_heads,
        patch_size=config.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=config.encoder_global_attn_indexes,
        window_size=config.window_size,
        out_chans=config.prompt_embed_dim,
    )
    prompt_encoder = hq_modeling.PromptEncoder(
        embed_dim=config.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(config.img_size, config.img_size),
        mask_in_chans=config.mask_in_chans,
    )
    decoder = hq_modeling.MaskDecoderHQ(
        num_multimask_outputs=config.num_multimask_outputs,
        transformer=hq_modeling.TwoWayTransformer(
            depth=config.decoder_depth,
            embedding_dim=config.prompt_embed_dim,
            mlp_dim=config.decoder_mlp_dim,
            num_heads=config.decoder_num_heads,
        ),
        transformer_dim=config.prompt_embed_dim,
        iou_head_depth=config.iou_head_depth,
        iou_head_hidden_dim=config.iou_head_hidden_dim,
        vit_dim=config.encoder_embed_dim,
    )
    model = hq_modeling.Sam(
        image_encoder=encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=decoder,
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    with torch.no_grad():
        for t in model.state_dict().values():
            t.add_(perturb * torch.randn_like(t))
    return model.eval()
