"""The paper's baselines and ablations as small variants of an FT config (§4, App. F).

    python -m sum_jax.train --config=configs/ablations.py:VARIANT[+VARIANT...][,DATA] \
        --workdir=runs/VARIANT \
        --config.model.checkpoint=ckpt/sam_vit_h --config.data.data_dir=/data/prepared \
        --config.data.pseudo_label_dir=/data/pseudo_labels/sa1b

DATA is `ft_small`, `ft_medium` (default: the paper runs its ablations on FT-Medium) or
`ft_large`. VARIANT is one of:

- `sum`: SUM itself (the DATA config unchanged; full fine-tuning).
- `human_only`: "Human-Annotation-Only": the human-labelled sets alone, without task prompt
  (a baseline: only SUM and its ablations that keep the task prompt use one; Fig. 5 and
  Fig. 17 measure the forgetting of exactly such models).
- `vanilla`: pseudo-labels used as if they were human labels (plain losses, uniform
  point sampling), no task prompt: the standard SAM training protocol (§4.1).
- `no_task_prompt`: "SUM w/o task prompt".
- `refined_labels`: the "Mask Refinement" baseline (§4.3): the mask-refinement module's
  outputs used as labels, with the plain losses and uniform sampling, no task prompt (the
  standard SAM training protocol); point `data.pseudo_label_dir` at the files
  `python -m sum_jax.uncertainty --config.refined_labels_dir=DIR` writes.
- `continuous_tp`: "SUM Continuous TP": the task prompt in every round.
- `no_uncertainty_sampling`: "SUM w/o uncertainty-aware sampling" (App. F.2, Table 5):
  pseudo-label prompts drawn uniformly from the region, everything else as SUM.
- `theta_<x>`: the uncertainty-aware Dice threshold theta = x; Fig. 16 sweeps
  0.2, 0.5, 0.6 and 0.8 (`THETAS`); 0.5 is the authors' released code's value.
- `decoder_prompt_encoder`: "Decoder+Prompt-Encoder FT" (§4.2, Fig. 5 left: "fine-tuning
  only the decoder and prompt encoder", one of the "strategies applied to fine-tune SAM on
  the human-annotated HQSeg-44k dataset"): `human_only` (human-labelled sets alone, no task
  prompt) with the image encoder frozen. `decoder_only` is only the parameterisation
  (image encoder frozen; prompt encoder, mask decoder and task table train), to compose
  with other variants: `sum+decoder_only` is SUM with a frozen encoder.
- `loss_points`: focal and Dice at HQ-SAM's importance-sampled points of the 1024 frame
  (`loss.resolution = "points"`, 112 x 112 points, 3x oversampling, 75% most uncertain)
  instead of the FT configs' dense loss over every pixel (`"full"`, eq. 1-2's means over
  all m pixels). An ablation of our own: the paper does not sample points.
- `full`: full fine-tuning, every parameter trains (the default of `sum`, named for tables).
- `confidence_uncer`: "SUM Confidence-Uncer" (§4.3, App. E): SUM's losses and sampling
  unchanged, on uncertainty maps from SAM's own confidence, `u = 1 - |2 sigmoid(s) - 1|`;
  point `data.pseudo_label_dir` at the folder `python -m sum_jax.uncertainty
  --config.source=confidence --config.output_dir=DIR` writes.
- `u2pl`: "U2PL" as the paper improved it (App. E.1): SAM's plain losses and uniform prompt
  sampling on human and pseudo-labels alike ("our training loss incorporates both pseudo
  and human labels, with an added contrastive loss as specified in the original paper"),
  U2PL's pixel contrastive loss on the image embeddings of pseudo-labelled images (weight
  1: "setting the contrastive loss weight to be 1 gets the best performance";
  sum_jax/train/contrastive.py) with its reliable / unreliable split from SUM's
  uncertainty maps ("we adopt the same uncertainty map as used in SUM for the U2PL"), and
  SUM's task prompts ("we incorporate task prompts into the U2PL framework"). It is weaker
  than SUM because it "continu[es] to train the prediction space with noisy pseudo
  labels".
- `lora_encoder`: LoRA (rank 8, alpha 8) on the image encoder's attention qkv / proj and MLP
  linears; base weights frozen, task table trained, lr 1e-4 (LoRA's usual 10x the
  full fine-tuning rate; not a paper setting). `lora_encoder_decoder`: the same, plus the
  mask decoder's attention linears. See docs/training.md, "LoRA". Both only set the
  parameterisation (alone: SUM with LoRA; `human_only+lora_encoder`: a human-only LoRA
  baseline, without task prompt).
- `lora_samed`: "LoRA FT" (§4.2, Fig. 5 left: "fine-tuning SAM with LoRA [73] in the same
  way as SAMed [35]"): SAMed's adapters (rank 4, scale 1, on the query and value thirds of
  every encoder block's fused qkv only, `lora.parts = "qv"`), the prompt encoder and mask
  decoder fully trained (SAMed freezes only the image encoder), no layer decay (the
  adapters are new parameters, trained at one rate), lr 1e-4; on the human-labelled sets
  alone without task prompt, as the other Fig. 5 baselines.

- `adapter`: "Adapter FT" (§4.2, Fig. 5 left): AIM's adapters [72] in every image-encoder
  block (`config.adapter`, sum_jax/models/encoder_adapter.py) and only they train (the
  rest of SAM frozen, layer decay off, adapters at 10x `optimizer.lr`), on the DATA
  config's human-labelled sets alone ("applied to fine-tune SAM on the human-annotated
  HQSeg-44k dataset") without task prompt, as the other Fig. 5 baselines.
  `sum_adapter`: "SUM (Encoder Adapter arch.)" (App. F.1, Fig. 12): SUM's data, losses and
  task prompts; the adapters, prompt encoder, mask decoder and task table train, the rest
  of the encoder is frozen. See docs/training.md, "Encoder Adapter".

- `hq_sam`: "HQ-SAM" as Fig. 4 trains it ("fine-tuned following the Human-Annotation-Only
  baseline approach"): HQ-SAM's architecture (`config.model.hq`, sum_jax/models/hq.py) with
  only its HQ token, token MLP and fusion convs training (`base.hq_groups`), on the DATA
  config's human-labelled sets alone, without task prompt; HQ-SAM's optimiser (its
  train/train.py: Adam, lr 1e-3, no weight decay, StepLR 10x down after 10 of 12 epochs)
  and no IoU loss (its IoU head is frozen and untrained).
  `sum_hq`: "SUM (HQ-SAM arch.)" (§4.2 Fig. 4, App. F.1 Fig. 12): SUM's data, uncertainty
  maps, losses and task prompts on HQ-SAM's architecture; the HQ parts and the task table
  train (a prompt that is given must train), at HQ-SAM's rate. See docs/training.md,
  "HQ-SAM's architecture".

Variants compose with `+`, applied left to right: `vanilla+lora_encoder` trains the Vanilla
baseline with encoder LoRA, `sum+lora_encoder_decoder,ft_small` SUM on FT-Small with LoRA on
encoder and decoder. The LoRA variants only touch `config.lora` and the learning rate, so
they combine with every data / uncertainty variant.
- `discrepancy_uncer`: "SUM Discrepancy-Uncer" (App. E): SUM with the uncertainty computed
  in the step from the discrepancy between the student's and an EMA teacher's predictions
  of each pseudo-label, prompted by its box (sum_jax/train/semi_supervised.py);
  `discrepancy_dual_decoder` computes it from two mask decoders instead.
- `augseg_mixed_prompt`: "AugSeg Mixed-Prompt" (App. E.1): SUM's procedure on human labels;
  on pseudo-labelled images a consistency loss between the EMA teacher (image as it is) and
  the student (AugSeg's strong view), prompts from the pseudo-label (point or box), the
  output closest to the pseudo-label of each set. Table 4's options: `augseg_box_prompt`
  (boxes only), `augseg_multi_consistency` (the three output pairs),
  `augseg_uniform_point` (a grid of points, all three pairs). AugSeg's prompts and
  consistency use no uncertainty map.

Baselines that follow "the standard SAM training protocol" (§4.1, §4.3: `vanilla`,
`refined_labels`; App. E.1: the `augseg_*` variants, "SAM's training procedure") train
without a task prompt, as `experiments/tables.py` evaluates them.

Each writes what the FT configs write (sum_jax/train/loop.py).
"""

from configs import base, ft_large, ft_medium, ft_small

_DATA = {"ft_small": ft_small, "ft_medium": ft_medium, "ft_large": ft_large}


def _apply(config, variant: str) -> None:
    if variant in ("sum", "full"):
        config.optimizer.param_groups = base.full_finetune_groups()
    elif variant == "human_only":
        config.data.unlabelled = ""
        config.interactive.use_task_prompt = False  # a baseline: no task prompt
    elif variant in ("vanilla", "refined_labels"):
        config.loss.uncertainty_aware = False
        config.interactive.uncertainty_sampling = False
        config.interactive.use_task_prompt = False  # the standard SAM training protocol
        if variant == "refined_labels":
            config.data.pseudo_label_dir = "data/pseudo_labels/sa1b_refined"
    elif variant == "loss_points":
        config.loss.resolution = "points"
    elif variant == "no_task_prompt":
        config.interactive.use_task_prompt = False
    elif variant == "continuous_tp":
        config.interactive.continuous_task_prompt = True
    elif variant == "no_uncertainty_sampling":
        config.interactive.uncertainty_sampling = False
    elif variant.startswith("theta_"):
        try:
            theta = float(variant.split("_", 1)[1])
        except ValueError:
            theta = float("nan")
        if not 0.0 <= theta < 1.0:
            raise ValueError(
                f"ablation {variant!r}: theta_<x> needs a number x in [0, 1), e.g. theta_0.6"
            )
        config.loss.theta = theta
    elif variant == "confidence_uncer":
        config.data.pseudo_label_dir = "data/pseudo_labels/sa1b_confidence"
    elif variant == "u2pl":
        # App. E.1: "our training loss incorporates both pseudo and human labels, with an
        # added contrastive loss": SAM's plain losses and prompt sampling on pseudo-labels
        # too; SUM's maps only split reliable / unreliable pixels for the contrastive loss,
        # and the task prompts are kept ("we incorporate task prompts into the U2PL
        # framework").
        config.loss.contrastive_weight = 1.0
        config.loss.uncertainty_aware = False
        config.interactive.uncertainty_sampling = False
    elif variant == "decoder_only":
        config.optimizer.param_groups = base.decoder_only_groups()
    elif variant == "decoder_prompt_encoder":  # Fig. 5's baseline
        _apply(config, "human_only")
        config.optimizer.param_groups = base.decoder_only_groups()
    elif variant == "lora_samed":  # Fig. 5's baseline, SAMed's setting
        _apply(config, "human_only")
        config.lora.targets = (base.ENCODER_QKV,)
        config.lora.parts = "qv"
        config.lora.rank = 4
        config.lora.alpha = 4.0  # SAMed adds B A x unscaled
        config.lora.trainable = (r"prompt_encoder\..*", r"mask_decoder\..*")
        config.optimizer.layer_decay = 1.0
        config.optimizer.lr = 1e-4
    elif variant in ("lora_encoder", "lora_encoder_decoder"):
        targets = (base.ENCODER_LORA,)
        if variant == "lora_encoder_decoder":
            targets += (base.DECODER_LORA,)
        config.lora.targets = targets
        config.optimizer.lr = 1e-4
    elif variant in ("adapter", "sum_adapter"):
        config.adapter.enabled = True
        config.optimizer.param_groups = base.encoder_adapter_groups(decoder=variant != "adapter")
        # Only the adapters train in the encoder; new parameters, trained at one rate in
        # every block as in AIM (SAM's decay would give block 0 of ViT-H 0.8^32 of the rate).
        config.optimizer.layer_decay = 1.0
        if variant == "adapter":  # Fig. 5's baseline: human labels, no task prompt
            _apply(config, "human_only")
    elif variant in ("hq_sam", "sum_hq"):
        config.model.hq = True
        config.model.hq_token_only = True  # HQ-SAM trains the HQ token's mask alone
        config.optimizer.param_groups = base.hq_groups(task_table=variant == "sum_hq")
        # HQ-SAM's train.py: Adam(lr=1e-3, weight_decay=0), StepLR down 10x after 10 of its
        # 12 epochs; only decoder parameters train, so layer decay does not apply.
        config.optimizer.lr = 1e-3
        config.optimizer.weight_decay = 0.0
        config.optimizer.schedule = "step"
        config.optimizer.drop_at = 10 / 12
        config.optimizer.drop_factor = 0.1
        config.optimizer.layer_decay = 1.0
        config.loss.iou_weight = 0.0  # the IoU head is frozen (sum_jax/train/rounds.py)
        if variant == "hq_sam":
            _apply(config, "human_only")
    elif variant in ("discrepancy_uncer", "discrepancy_dual_decoder"):
        config.semi.method = "discrepancy"
        config.semi.discrepancy = "teacher" if variant == "discrepancy_uncer" else "dual_decoder"
    elif variant in AUGSEG:
        config.semi.method = "augseg"
        config.semi.prompt = {
            "augseg_box_prompt": "box",
            "augseg_uniform_point": "uniform_point",
        }.get(variant, "mixed")
        config.semi.multi_consistency = variant == "augseg_multi_consistency"
        # Human labels train as in SAM; the pseudo-labels only give prompts. "SAM's training
        # procedure" (App. E.1) has no task prompt (U2PL is the one that adds them).
        config.loss.uncertainty_aware = False
        config.interactive.uncertainty_sampling = False
        config.interactive.use_task_prompt = False
    else:
        raise ValueError(f"unknown ablation {variant!r}; known: {', '.join(VARIANTS)}, theta_<x>")


# Fig. 16's sweep of the uncertainty-aware Dice threshold.
THETAS = (0.2, 0.5, 0.6, 0.8)

AUGSEG = (
    "augseg_mixed_prompt",
    "augseg_box_prompt",
    "augseg_multi_consistency",
    "augseg_uniform_point",
)

VARIANTS = (
    "sum",
    "human_only",
    "vanilla",
    "no_task_prompt",
    "refined_labels",
    "continuous_tp",
    "no_uncertainty_sampling",
    *(f"theta_{t}" for t in THETAS),
    "decoder_prompt_encoder",
    "decoder_only",
    "full",
    "loss_points",
    "confidence_uncer",
    "u2pl",
    "lora_encoder",
    "lora_encoder_decoder",
    "lora_samed",
    "adapter",
    "sum_adapter",
    "hq_sam",
    "sum_hq",
    "discrepancy_uncer",
    "discrepancy_dual_decoder",
    *AUGSEG,
)


def get_config(arg: str = "sum"):
    variant, _, data = arg.partition(",")
    data = data or "ft_medium"
    if data not in _DATA:
        raise ValueError(f"unknown data config {data!r}; known: {sorted(_DATA)}")
    config = _DATA[data].get_config()
    apply(config, variant)
    return config


def apply(config, variants: str) -> None:
    """Applies `VARIANT[+VARIANT...]` to `config` in place, left to right."""
    for part in variants.split("+"):
        _apply(config, part.strip())
