"""The paper's baselines and ablations as small variants of an FT config (§4, App. F).

    python -m sum_jax.train --config=configs/ablations.py:VARIANT[,DATA] --workdir=runs/VARIANT \
        --config.model.checkpoint=ckpt/sam_vit_h --config.data.data_dir=/data/prepared \
        --config.data.pseudo_label_dir=/data/pseudo_labels/sa1b

DATA is `ft_small`, `ft_medium` (default: the paper runs its ablations on FT-Medium) or
`ft_large`. VARIANT is one of:

- `sum`: SUM itself (the DATA config unchanged; full fine-tuning).
- `human_only`: "Human-Annotation-Only": the human-labelled sets alone.
- `vanilla`: pseudo-labels used as if they were human labels (plain losses, uniform
  point sampling).
- `no_task_prompt`: "SUM w/o task prompt".
- `refined_labels`: the mask-refinement module's outputs used as labels, with the plain
  losses; point `data.pseudo_label_dir` at the files `python -m sum_jax.uncertainty
  --config.refined_labels_dir=DIR` writes.
- `continuous_tp`: "SUM Continuous TP": the task prompt in every round.
- `theta_<x>`: the uncertainty-aware Dice threshold theta = x (Fig. 16: 0.3 .. 0.9),
  e.g. `theta_0.5` (the authors' released code).
- `decoder_only`: image encoder frozen; prompt encoder, mask decoder and task table train
  (the lightweight HQ-SAM-style scheme).
- `full`: full fine-tuning, every parameter trains (the default of `sum`, named for tables).

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
        if variant == "refined_labels":
            config.data.pseudo_label_dir = "data/pseudo_labels/sa1b_refined"
    elif variant == "no_task_prompt":
        config.interactive.use_task_prompt = False
    elif variant == "continuous_tp":
        config.interactive.continuous_task_prompt = True
    elif variant.startswith("theta_"):
        theta = float(variant.split("_", 1)[1])
        if not 0.0 <= theta < 1.0:
            raise ValueError(f"theta must be in [0, 1), got {theta} from {variant!r}")
        config.loss.theta = theta
    elif variant == "decoder_only":
        config.optimizer.param_groups = base.decoder_only_groups()
    else:
        raise ValueError(f"unknown ablation {variant!r}; known: {', '.join(VARIANTS)}, theta_<x>")


VARIANTS = (
    "sum",
    "human_only",
    "vanilla",
    "no_task_prompt",
    "refined_labels",
    "continuous_tp",
    "theta_0.6",
    "decoder_only",
    "full",
)


def get_config(arg: str = "sum"):
    variant, _, data = arg.partition(",")
    data = data or "ft_medium"
    if data not in _DATA:
        raise ValueError(f"unknown data config {data!r}; known: {sorted(_DATA)}")
    config = _DATA[data].get_config()
    _apply(config, variant.strip())
    return config
