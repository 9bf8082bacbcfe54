"""The mask-refinement module (SUM §3.2.3, App. D): SAM's prompt encoder and mask decoder
fine-tuned to refine SAM's single-point masks, trained on human-labelled data.

    python -m sum_jax.train_refiner --config=configs/refine.py --workdir=runs/refiner \
        --config.checkpoint=ckpt/sam_vit_h --config.data_dir=data/prepared

Writes `runs/refiner/refiner/` (a model directory: `Refiner(load_model(...))`, and the
`--config.refiner` of `python -m sum_jax.uncertainty`), `report.json` (held-out mean IoU and
boundary IoU of SAM's vs the refined masks against the GT, at original resolution),
`loss.png`, `checkpoints/` (resumable) and `cache/` (embeddings and pairs, reused by reruns).

Fields:
- `checkpoint`: SAM model directory (`python -m convert.sam_checkpoint`; ViT-H in the paper),
  or `random:<variant>` for a pipeline check. Its image encoder stays frozen.
- `data_dir`, `dataset`: prepared human-labelled split(s), "name:split", comma separated;
  the paper uses HQSeg-44K (DIS5K, ThinObject-5K, FSS-1000, ECSSD, MSRA-10K, DUT-OMRON).
  `max_images`: only the first N images.
- `pairs.*` (App. D.2): `point` "random" (default: uniform inside the GT, seeded, as the
  pseudo-labels' grid points land anywhere in a mask) or "farthest" (the GT pixel
  farthest from its boundary); `min_iou` 0.7 (IoU of SAM's best-aligned output with the
  GT); SAM's filters (App. B.1) `pred_iou_thresh` 0.88, `stability_score_thresh` 0.95 at
  `stability_score_offset` 1.0 and `max_area_frac` 0.95 (area below 95% of the image);
  0 disables a filter; `masks_per_call` GT masks per SAM call (a fixed shape).
- `holdout_fraction`: images held out (seeded split) for the report; 0 by default (the
  paper trains on every human-labelled image); `seed` also sets the data order.
- `train.*`: `num_steps`, `batch_size` (pairs per step), `log_every`, `checkpoint_every`,
  `keep_checkpoints`. The paper gives no schedule for this module: 16000 steps of 32 pairs
  is about 12 epochs of HQSeg-44K (HQ-SAM's length on the same data).
- `optimizer.*`: AdamW of `configs/base.py` with a cosine schedule at lr 1e-4 (our choice;
  the paper is silent) and `param_groups` freezing the image encoder and the task table
  (the refiner never gets a task prompt); prompt encoder and mask decoder train.
- `loss.*`: `configs/base.py`'s (20 focal + 1 Dice + 1 IoU MSE); no uncertainty weighting.
- `output`: model directory to write (default `<workdir>/refiner`).
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import base


def param_groups() -> tuple:
    """`base.decoder_only_groups()` with the task table frozen as well."""
    return ((r"prompt_encoder\.task_embeddings\..*", {"frozen": True}),) + (
        base.decoder_only_groups()
    )


def defaults() -> ml_collections.ConfigDict:
    """Every field but `optimizer` and `loss` (from `configs/base.py`), with no paths set."""
    c = ml_collections.ConfigDict()
    c.checkpoint = ""
    c.data_dir = ""
    c.dataset = "dis5k:train"
    c.max_images = placeholder(int)
    c.output = ""
    c.seed = 0
    # App. D.2 trains on every human-labelled image; a held-out report is an option.
    c.holdout_fraction = 0.0
    c.pairs = ml_collections.ConfigDict()
    # Uniform inside the GT, as pseudo-label points (a grid) land anywhere in a mask.
    c.pairs.point = "random"
    c.pairs.min_iou = 0.7
    c.pairs.pred_iou_thresh = 0.88
    c.pairs.stability_score_thresh = 0.95
    c.pairs.stability_score_offset = 1.0
    c.pairs.max_area_frac = 0.95  # SAM's third filter: masks under 95% of the image
    c.pairs.masks_per_call = 16
    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 16000
    c.train.batch_size = 32
    c.train.log_every = 50
    c.train.checkpoint_every = 1000
    c.train.keep_checkpoints = 2
    c.eval_batch_size = 32
    return c


def get_config() -> ml_collections.ConfigDict:
    config = defaults()
    config.checkpoint = "ckpt/sam_vit_h"
    config.data_dir = "data/prepared"
    config.dataset = ",".join(
        f"{name}:train"
        for name in ("dis5k", "thinobject5k", "fss1000", "ecssd", "msra10k", "dut_omron")
    )
    shared = base.get_config()
    config.loss = shared.loss
    config.loss.uncertainty_aware = False
    config.optimizer = shared.optimizer
    config.optimizer.lr = 1e-4
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 500
    config.optimizer.param_groups = param_groups()
    return config
