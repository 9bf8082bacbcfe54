"""Base config of SUM fine-tuning: the paper's training hyperparameters (§3.2, App. B.1).

Every training config (FT-Small, FT-Medium, FT-Large, the mask-refinement module, ablations)
starts from `get_config()` here and overrides a few fields. This file alone is not an
experiment: it fixes the schema that `sum_jax.train.losses`, `sum_jax.train.prompts`,
`sum_jax.train.rounds`, `sum_jax.train.optim`, `sum_jax.train.sharding` and `sum_jax.train.step` read.
Check it with:

    python -c "from configs import base; print(base.get_config())"

Fields:

- `model.checkpoint`: the SAM to start from, a model directory written by
  `python -m convert.sam_checkpoint` (or a trainer's export), or `random:<variant>` for a
  randomly initialised model (pipeline checks only). `model.variant`: the `build_sam`
  variant it must be (checked at load); SUM starts from ViT-H (App. B.1).
- `model.compute_dtype` ("float32" | "bfloat16"): dtype of matmuls and activations;
  parameters and optimiser state stay float32, softmax, LayerNorm, losses and metrics are
  computed in float32. `model.remat` ("none" | "block" | "dots"): rematerialise each encoder
  block (keeping nothing, or the linear layers' outputs) and each interactive round in the
  backward pass. `model.attention` ("auto" | "matmul" | "fused"): plain matmuls, or
  `jax.nn.dot_product_attention` (cuDNN's fused kernel on GPU); "auto" fuses on GPU/TPU.
  `model.scan_blocks`: one `lax.scan` over the encoder's repeating block groups (faster
  compiles). `model.mask_chunks`: the training rounds decode each image's masks in this
  many chunks one after the other (must divide `train.masks_per_image`; less memory in the
  backward pass, the same values). None of these changes the parameters or checkpoints.
  `model.hq`: HQ-SAM's architecture (sum_jax/models/hq.py; docs/training.md, "HQ-SAM's
  architecture"): a plain SAM checkpoint gets fresh HQ parts, which the model directory then
  records; `model.hq_token_only`: its output is the HQ token's mask (True, HQ-SAM's
  training) or SAM's mask plus it. What trains is `optimizer.param_groups`' business
  (`hq_groups` below).
- `data.*`: the Grain pipeline (`configs/data/pipeline.py`): `data_dir`,
  `labelled` / `unlabelled` refs, `pseudo_label_dir`, `mix`. Its `batch_size`, `image_size`,
  `mask_size`, `max_masks` and `seed` are set by the trainer from `train.*`, the model and
  `seed`, so they are not set here.
- `loss.*`: `focal_weight * focal + dice_weight * dice + iou_weight * iou_mse` per round
  (20 : 1 : 1), focal `alpha`/`gamma`, the uncertainty-aware Dice threshold `theta` (0.6 in
  App. B.1; 0.5 in the authors' released code), `uncertainty_aware` (False trains
  pseudo-labels with the plain losses: the "w/o uncertainty" ablation) and
  `supervise_all_iou` (round 1: choose the output by `20 focal + dice`, train every
  output's IoU prediction; False: the earlier rule, choice by the full loss),
  `resolution` ("low" | "full" | "points", with `num_points`, `oversample_ratio`,
  `importance_sample_ratio`): the frame of focal and Dice (sum_jax/train/loss_resolution.py).
  `contrastive_weight` (0: off) adds U2PL's pixel contrastive loss on the image embeddings
  of pseudo-labelled images (`sum_jax/train/contrastive.py`: anchors from reliable cells,
  `c > theta`, negatives from unreliable ones), with `contrastive_temperature` (0.5),
  `contrastive_queries` (256 anchors per class) and `contrastive_negatives` (50 per anchor).
- `interactive.*`: `num_rounds` (7: box/point, 5 error points, 1 without a new prompt),
  `box_prob` (0.5), box jitter (`box_noise_frac` of the side, capped at `box_noise_max`
  input-frame pixels), `uncertainty_sampling` (pseudo-label points drawn proportionally to
  `c = 1 - u`; False draws them uniformly), `continuous_task_prompt` (task prompt in every
  round instead of round 1 only), `use_task_prompt` (False: never, "SUM w/o task prompt"),
  `restrict_to_image` (error points only inside the real, unpadded image).
- `optimizer.*`: AdamW (`lr` 1e-5, `b1`, `b2`, `eps`, decoupled `weight_decay`, as in SAM's
  fine-tuning recipe), layer-wise lr decay `layer_decay` (0.8) over the encoder's blocks,
  an optional linear warm-up and cosine decay, and `param_groups`: an ordered list of
  `(regex over the '.'-joined parameter path, settings)`; the first regex that fully
  matches a path decides its group; settings keys are `frozen` (bool), `lr_mult` (float),
  `weight_decay` (bool). Every trainable parameter must match one entry.
- `lora.*`: LoRA fine-tuning (docs/training.md, "LoRA"). Empty `targets` (the default):
  full fine-tuning as above. Otherwise `targets` are regexes over kernel paths (the first
  full match adapts that `nnx.Linear`, e.g. `ENCODER_LORA`, `DECODER_LORA` below), `rank`
  and `alpha` give the update `(alpha / rank) * A @ B`, `dropout` drops the adapters'
  inputs; only the adapters and the base parameters matching a `trainable` regex train
  (default: the SUM task table, new in SUM) and are checkpointed, with the base model's
  directory and hash; `export` is `"merged"` (a plain SAM model directory) or `"separate"`
  (an adapter directory that loads as the merged SAM while its base is unchanged); `parts`
  ("qv": SAMed's setting) puts separate adapters on the query and value thirds of each
  fused qkv layer only (sum_jax/models/lora.py).
- `adapter.*`: AIM's encoder adapters (docs/training.md, "Encoder Adapter";
  sum_jax/models/encoder_adapter.py). `enabled` (default False: none, no cost) adds to
  every encoder block a spatial adapter after the attention and an MLP adapter beside the
  MLP, bottleneck MLPs of `ratio * dim` channels (AIM: 0.25) whose up-projection starts at
  zero, the MLP adapter's output scaled by `scale` (AIM: 0.5). They become part of the
  model's architecture (its `sam_config.json`); what trains is `optimizer.param_groups`'
  business (`encoder_adapter_groups` below). Not combinable with `lora.targets`.
- `sharding.*`: `mesh_shape` over the axes `('data', 'fsdp')` (-1: all remaining devices)
  and `logical_axis_rules`: `(regex over parameter path, spec)` pairs, first match wins;
  spec `"fsdp"` shards the largest dimension divisible by the `fsdp` axis size,
  `"replicated"` replicates, a tuple gives one mesh axis name (or None) per dimension.
  Parameters smaller than `min_shard_size` elements stay replicated.
- `train.*`: batch layout and length (FT-Small: 6000 steps of 40 images, 30 masks each;
  `batch_size` is global, over all hosts); `microbatches` splits the batch into that many
  micro-batches run in turn inside the step with gradients summed in float32 and one
  optimiser update (the same update as the whole batch at once; -1: `batch_size` / device
  count); `log_every` steps per progress line and
  TensorBoard point; an Orbax checkpoint (parameters, optimiser, step, data iterator) every
  `checkpoint_every` steps and at the end, keeping the last `keep_checkpoints`; `export`
  writes the final model directory `<workdir>/model` for the predictor, the evaluator and
  the converter.
- `semi.*`: the semi-supervised comparisons of App. E (sum_jax/train/semi_supervised.py):
  `method` ("none": SUM; "discrepancy": SUM Discrepancy-Uncer; "augseg": AugSeg),
  `ema_momentum` of the EMA teacher (kept in the state and checkpoints only when the
  method uses one), `discrepancy` ("teacher" or "dual_decoder": a second mask decoder,
  trained with weight `aux_decoder_weight`), and AugSeg's `prompt` ("mixed", "box",
  "uniform_point"), `multi_consistency`, `num_augs` and `cutmix_prob`.
- `eval.*`: `configs/eval.py`'s fields; with `eval.eval_sets` set, the exported model is
  evaluated into `<workdir>/eval` when training ends (single-process runs).
"""

import ml_collections

from configs import eval as eval_config
from configs.data import pipeline

# Parameters that conventionally get no weight decay: biases, norm scales, positional
# embeddings, relative-position tables and embedding tables (SAM's tokens, task prompts).
NO_WEIGHT_DECAY = r".*\.(bias|scale|embedding)|.*\.(pos_embed|rel_pos_h|rel_pos_w)"


def full_finetune_groups() -> tuple:
    """Every parameter trains; no weight decay on biases, norms and embeddings."""
    return (
        (NO_WEIGHT_DECAY, {"weight_decay": False}),
        (r".*", {}),
    )


def hq_groups(*, task_table: bool = False) -> tuple:
    """HQ-SAM's parameterisation: only its HQ output token, the token's MLP and the fusion
    convs train (its `build_sam` freezes every other parameter); with `task_table`, SUM's
    task table too (a SUM run on HQ-SAM's architecture keeps its task prompts)."""
    from sum_jax.models import hq

    trainable = ((r"prompt_encoder\.task_embeddings\..*", {"weight_decay": False}),)
    return (
        *(trainable if task_table else ()),
        (hq.PARTS + r"\.(.*\.)?(bias|scale|embedding)", {"weight_decay": False}),
        (hq.TRAINABLE, {}),
        (r".*", {"frozen": True}),
    )


def decoder_only_groups() -> tuple:
    """Frozen image encoder; prompt encoder, mask decoder and task table train. This is the
    mask-refinement module's setting (App. D) with `model` loaded from SAM."""
    return (
        (r"image_encoder\..*", {"frozen": True}),
        (NO_WEIGHT_DECAY, {"weight_decay": False}),
        (r".*", {}),
    )


# AIM's encoder adapters (sum_jax/models/encoder_adapter.py): every parameter of them.
ENCODER_ADAPTERS = r"image_encoder\.blocks\.\d+\.(space|mlp)_adapter\..*"


def encoder_adapter_groups(*, decoder: bool, lr_mult: float = 10.0) -> tuple:
    """The encoder adapters train, at `lr_mult` times `optimizer.lr` (new parameters trained
    from scratch; 10 x SUM's 1e-5 is MSA's 1e-4), the rest of the image encoder is frozen.
    `decoder`: the prompt encoder, mask decoder and task table train too (Fig. 12's "SUM
    (Encoder Adapter arch.)"); otherwise every other parameter is frozen (Fig. 5's "Adapter
    FT": "fine-tuning only the Adapter plugged into the image encoder")."""
    adapters = (
        (r"image_encoder\.blocks\.\d+\.(space|mlp)_adapter\..*\.bias",
         {"lr_mult": lr_mult, "weight_decay": False}),
        (ENCODER_ADAPTERS, {"lr_mult": lr_mult}),
    )  # fmt: skip
    if not decoder:
        return adapters + ((r".*", {"frozen": True}),)
    return adapters + decoder_only_groups()


# LoRA targets (kernel paths): the encoder's attention qkv / proj and MLP linears, and the
# mask decoder's attention linears (two-way transformer: self / cross / final attention).
ENCODER_LORA = r"image_encoder\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(lin1|lin2))\.kernel"
# SAMed's target: every encoder block's fused qkv projection (with `lora.parts = "qv"`).
ENCODER_QKV = r"image_encoder\.blocks\.\d+\.attn\.qkv\.kernel"
DECODER_LORA = r"mask_decoder\.transformer\..*attn.*\.(q_proj|k_proj|v_proj|out_proj)\.kernel"


def get_config() -> ml_collections.ConfigDict:
    """SUM's defaults: full fine-tuning of ViT-H with the paper's losses and schedule."""
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.variant = "vit_h"
    config.model.checkpoint = "ckpt/sam_vit_h"
    # How the model runs (docs/training.md, "Memory"): float32 and no remat is the parity
    # reference; the FT configs train in bfloat16 with block remat.
    config.model.compute_dtype = "float32"
    config.model.remat = "none"
    config.model.attention = "auto"
    config.model.scan_blocks = False
    config.model.mask_chunks = 1
    # HQ-SAM's architecture (sum_jax/models/hq.py, docs/training.md "HQ-SAM's
    # architecture"): a plain SAM checkpoint gets fresh HQ parts, an HQ one keeps its own.
    # `hq_token_only`: the model's output is the HQ token's mask (HQ-SAM's training), else
    # SAM's mask plus it (the official HQ predictor's default).
    config.model.hq = False
    config.model.hq_token_only = True

    config.data = pipeline.get_config()
    config.data.data_dir = "data/prepared"

    config.loss = ml_collections.ConfigDict()
    config.loss.focal_weight = 20.0
    config.loss.dice_weight = 1.0
    config.loss.iou_weight = 1.0
    config.loss.alpha = 0.25
    config.loss.gamma = 2.0
    config.loss.theta = 0.6
    config.loss.uncertainty_aware = True
    # Round 1 (three outputs): the mask loss of the output with the lowest 20 focal + dice,
    # and the IoU head of all three outputs trained (SAM 2). False: the lowest full loss,
    # IoU MSE included, trains only that output's IoU prediction.
    config.loss.supervise_all_iou = True
    # U2PL's pixel contrastive loss on pseudo-labelled images' embeddings (App. E; the `u2pl`
    # ablation sets the weight to 1): temperature, anchors per class, negatives per anchor.
    config.loss.contrastive_weight = 0.0
    config.loss.contrastive_temperature = 0.5
    config.loss.contrastive_queries = 256
    config.loss.contrastive_negatives = 50
    # Where focal and Dice are evaluated (sum_jax/train/loss_resolution.py, docs/training.md):
    # "low" (the 256 grid), "full" (logits upsampled to the 1024 input frame) or "points"
    # (HQ-SAM's importance sampling of `num_points` points on the input frame: the
    # `importance_sample_ratio` most uncertain of `oversample_ratio * num_points`
    # candidates, the rest uniform).
    config.loss.resolution = "low"
    config.loss.num_points = 112 * 112
    config.loss.oversample_ratio = 3.0
    config.loss.importance_sample_ratio = 0.75

    config.interactive = ml_collections.ConfigDict()
    config.interactive.num_rounds = 7
    config.interactive.box_prob = 0.5
    config.interactive.box_noise_frac = 0.1
    config.interactive.box_noise_max = 20.0
    config.interactive.uncertainty_sampling = True
    config.interactive.continuous_task_prompt = False
    config.interactive.use_task_prompt = True
    config.interactive.restrict_to_image = True

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.lr = 1e-5
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    config.optimizer.weight_decay = 0.1
    config.optimizer.layer_decay = 0.8
    config.optimizer.warmup_steps = 0
    # "constant", "cosine" (to 0 at `train.num_steps`) or "step" (times `drop_factor` from
    # `drop_at * train.num_steps` on: HQ-SAM's StepLR, 10x down after 10 of 12 epochs).
    config.optimizer.schedule = "constant"
    config.optimizer.drop_at = 10 / 12
    config.optimizer.drop_factor = 0.1
    config.optimizer.param_groups = full_finetune_groups()

    config.lora = ml_collections.ConfigDict()
    config.lora.targets = ()  # empty: no adapters, full fine-tuning / param_groups
    config.lora.rank = 8
    config.lora.alpha = 8.0
    config.lora.dropout = 0.0
    config.lora.trainable = (r"prompt_encoder\.task_embeddings\..*",)
    config.lora.export = "merged"
    # "qv": SAMed's adapters on the query and value thirds of fused qkv layers only.
    config.lora.parts = ""

    config.adapter = ml_collections.ConfigDict()
    config.adapter.enabled = False  # off: no adapters, SAM's encoder unchanged
    config.adapter.ratio = 0.25  # AIM's bottleneck: ratio * dim channels
    config.adapter.scale = 0.5  # AIM's scale of the MLP adapter's output

    config.sharding = ml_collections.ConfigDict()
    config.sharding.mesh_shape = (1, -1)
    config.sharding.logical_axis_rules = ((r".*", "fsdp"),)
    config.sharding.min_shard_size = 2**14

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 6000
    config.train.batch_size = 40
    config.train.masks_per_image = 30
    # Micro-batches per step, run one after the other with summed gradients (1: none;
    # -1: batch_size / device count, one image per device at a time).
    config.train.microbatches = 1
    config.train.log_every = 10
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 3
    config.train.export = True

    # The semi-supervised comparisons of App. E (sum_jax/train/semi_supervised.py; the
    # variants are in configs/ablations.py). "none" is SUM.
    config.semi = ml_collections.ConfigDict()
    config.semi.method = "none"  # "none" | "discrepancy" | "augseg"
    config.semi.ema_momentum = 0.999  # the EMA teacher's (AugSeg's ema_decay)
    config.semi.discrepancy = "teacher"  # "teacher" | "dual_decoder"
    config.semi.aux_decoder_weight = 1.0
    config.semi.prompt = "mixed"  # AugSeg: "mixed" | "box" | "uniform_point"
    config.semi.multi_consistency = False
    config.semi.num_augs = 3  # AugSeg: up to this many random intensity augmentations
    config.semi.cutmix_prob = 1.0  # AugSeg's use_cutmix_trigger_prob

    config.eval = eval_config.get_config()
    config.eval.eval_sets = ""
    return config
