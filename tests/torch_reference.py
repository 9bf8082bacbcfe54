"""The official PyTorch SAM (the `segment-anything` package) as the tests' numerical reference.

`torch_sam(config)` builds the official model with the architecture of a `SamConfig` (the
official builders only know vit_b/l/h; this also covers `tiny`), perturbs every tensor (SAM's
init leaves `rel_pos` and `pos_embed` at zero, which would hide bugs), and `flax_from_torch`
loads the same weights into sum_jax through the converter's key map.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from segment_anything import modeling as sam_modeling

from convert import key_map
from sum_jax import checkpointing
from sum_jax.models.sam import Sam, SamConfig

torch.set_num_threads(2)


def torch_sam(
    config: SamConfig, seed: int = 0, perturb: float = 0.05, *, modeling=sam_modeling
) -> sam_modeling.Sam:
    """The official SAM with `config`'s architecture, every tensor perturbed. `modeling`:
    `segment_anything.modeling`, or `segment_anything_hq.modeling` for the official HQ-SAM
    (its `MaskDecoderHQ`, which also needs the encoder's width; tests/hq_reference.py)."""
    torch.manual_seed(seed)
    grid = config.embedding_size
    encoder = modeling.ImageEncoderViT(
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
    prompt_encoder = modeling.PromptEncoder(
        embed_dim=config.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(config.img_size, config.img_size),
        mask_in_chans=config.mask_in_chans,
    )
    hq = hasattr(modeling, "MaskDecoderHQ")
    decoder = (modeling.MaskDecoderHQ if hq else modeling.MaskDecoder)(
        num_multimask_outputs=config.num_multimask_outputs,
        transformer=modeling.TwoWayTransformer(
            depth=config.decoder_depth,
            embedding_dim=config.prompt_embed_dim,
            mlp_dim=config.decoder_mlp_dim,
            num_heads=config.decoder_num_heads,
        ),
        transformer_dim=config.prompt_embed_dim,
        iou_head_depth=config.iou_head_depth,
        iou_head_hidden_dim=config.iou_head_hidden_dim,
        **({"vit_dim": config.encoder_embed_dim} if hq else {}),
    )
    model = modeling.Sam(
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


def flax_from_torch(model: torch.nn.Module, config: SamConfig, **overrides) -> Sam:
    """The sum_jax model with `model`'s weights (task table zero), via the converter's key map."""
    tensors = model.state_dict()
    abstract = checkpointing.abstract_sam(config)
    like = nnx.to_pure_dict(nnx.state(abstract))
    shapes = {k: tuple(v.shape) for k, v in key_map.flatten(like).items()}
    problems = key_map.check_keys(shapes, {k: tuple(v.shape) for k, v in tensors.items()})
    assert not problems, problems
    flat = key_map.convert_torch_to_flax(tensors, shapes, lambda t: t.detach().numpy())
    if overrides:
        import dataclasses

        abstract = checkpointing.abstract_sam(dataclasses.replace(config, **overrides))
    graphdef, state = nnx.split(abstract)
    nnx.replace_by_pure_dict(state, jnp_tree(key_map.unflatten(flat, like)))
    return nnx.merge(graphdef, state)


def jnp_tree(tree):
    return {k: jnp_tree(v) if isinstance(v, dict) else jnp.asarray(v) for k, v in tree.items()}


def rel_err(a, b) -> float:
    """Norm-wise relative error ||a - b|| / ||b||."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
