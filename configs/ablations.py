"""The paper's baselines and ablations as small variants of an FT config (§4, App. F).

    python -m sum_jax.train --config=configs/ablations.py:VARIANT[+VARIANT...][,DATA] \
        --workdir=runs/VARIANT \
        --config.model.checkpoint=ckpt/sam_vit_h --config.data.data_dir=/data/prepared \
        --config.data.pseudo_label_dir=/data/pseudo_labels/sa1b

DATA is `ft_small`, `ft_medium` (default: the paper runs its ablations on FT-Medium) or
`ft_large`. VARIANT is one of:

- `sum`: SUM itself (the DATA config unchanged; full fine-tuning).
- `human_only`: "Human-Annotation-Only": the human-labelled sets alone.
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
- `decoder_prompt_encoder`: "decoder + prompt encoder fine-tuning": image encoder frozen;
  prompt encoder, mask decoder and task table train. (Not HQ-SAM: HQ-SAM's extra
  architecture is not implemented here.) `decoder_only` is the same, under its old name.
- `full`: full fine-tuning, every parameter trains (the default of `sum`, named for tables).
- `confidence_uncer`: "SUM Confidence-Uncer" (§4.3, App. E): SUM's losses and sampling
  unchanged, on uncertainty maps from SAM's own confidence, `u = 1 - |2 sigmoid(s) - 1|`;
  point `data.pseudo_label_dir` at the folder `python -m sum_jax.uncertainty
  --config.source=confidence --config.output_dir=DIR` writes.
- `u2pl`: "U2PL" as the paper improved it (App. E): SUM's losses, uncertainty maps and task
  prompts, plus U2PL's pixel contrastive loss on the image embeddings (weight 1,
  `loss.contrastive_weight`; sum_jax/train/contrastive.py).
- `lora_encoder`: LoRA (rank 8, alpha 8) on the image encoder's attention qkv / proj and MLP
  linears; base weights frozen, task table trained, lr 1e-4 (LoRA's usual 10x the
  full fine-tuning rate; not a paper setting). `lora_encoder_decoder`: the same, plus the
  mask decoder's attention linears. See docs/training.md, "LoRA".

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
    elif variant in ("vanilla", "refined_labels"):
        config.loss.uncertainty_aware = False
        config.interactive.uncertainty_sampling = False
        config.interactive.use_task_prompt = False  # the standard SAM training protocol
        if variant == "refined_labels":
            config.data.pseudo_label_dir = "data/pseudo_labels/sa1b_refined"
    elif variant == "no_task_prompt":
        config.interactive.use_task_prompt = False
    elif variant == "continuous_tp":
        config.interactive.continuous_task_prompt = True
    elif variant == "no_uncertainty_sampling":
        config.interactive.uncertainty_sampling = False
    elif variant.startswith("theta_"):
        theta = float(variant.split("_", 1)[1])
        if not 0.0 <= theta < 1.0:
            raise ValueError(f"theta must be in [0, 1), got {theta} from {variant!r}")
        config.loss.theta = theta
    elif variant == "confidence_uncer":
        config.data.pseudo_label_dir = "data/pseudo_labels/sa1b_confidence"
    elif variant == "u2pl":
        config.loss.contrastive_weight = 1.0
    elif variant in ("decoder_prompt_encoder", "decoder_only"):
        config.optimizer.param_groups = base.decoder_only_groups()
    elif variant in ("lora_encoder", "lora_encoder_decoder"):
        targets = (base.ENCODER_LORA,)
        if variant == "lora_encoder_decoder":
            targets += (base.DECODER_LORA,)
        config.lora.targets = targets
        config.optimizer.lr = 1e-4
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
    "full",
    "confidence_uncer",
    "u2pl",
    "lora_encoder",
    "lora_encoder_decoder",
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
