"""Interactive-segmentation evaluation of SAM / SUM checkpoints (§4.1, App. B.3, F.2, G).

Run, from the repository root, on evaluation sets prepared with `sum_jax.prepare_data`:

    python -m sum_jax.evaluate --config=configs/eval.py \
        --checkpoint=/ckpt/sum_vit_h --workdir=/results/sum_vit_h \
        --config.data_dir=/data/prepared

It reads every set in `eval_sets`, runs 6 interactive rounds (20 for NoC) per GT mask with the
paper's click protocol, and writes to the workdir: `summary.json` / `summary.csv` (mIoU and
mBIoU for rounds 1..6 per dataset, per task and overall; NoC@85/90 and failures),
`records.jsonl` / `records.csv` (every object), `curves_<protocol>_<mode>.png` (metric vs.
clicks per task), `examples/*.png` and `evaluate.log`. Give `--checkpoint` several times
(optionally `--checkpoint=SUM=/ckpt/sum`) to evaluate several models into
`<workdir>/<name>/` and plot them in one figure (`<workdir>/curves_*.png`).

Common overrides: `--config.protocols=point,box,boundary` (box-first and boundary-sampling
variants), `--config.noc_max_clicks=0` (no NoC: only `num_rounds` rounds are simulated),
`--config.use_task_prompt=False` (SAM or "SUM w/o task prompt"),
`--config.continuous_task_prompt=True` ("SUM Continuous TP"), `--config.max_images=10`
(a quick look). `--checkpoint=random:tiny` evaluates a randomly initialised model (smoke test).

Fields:
- `data_dir`: root of prepared datasets; `eval_sets`: comma-separated `name:split[@N]`
  (`@N`: only the first N images, as the paper does for MHP, EasyPortrait and PACO);
  default: the paper's 14 sets (`sum_jax.data.registry.PAPER_EVAL_SETS`), so that the
  per-task and overall means are over the same sets as the paper's (the summary's
  `paper_sets` says which of them a run lacks).
- `protocols`: comma-separated subset of `point`, `box`, `boundary`.
- `num_rounds`: rounds reported (6 in the paper's tables); `noc_max_clicks`, `noc_thresholds`.
- `single_output_token`: the fixed round-1 output of the `single` mode (0, the default: SAM's
  single-mask token, what `multimask_output=False` returns, which is the paper's "fourth
  output token, following HQ-SAM" (App. B.3); 1..3: the multimask outputs).
- `use_task_prompt`, `continuous_task_prompt`: the SUM task prompt (task id of each set).
- `boundary_band`: px band of the boundary-sampling first click (10 in App. F.2).
- `dilation_ratio`: boundary-IoU band, fraction of the image diagonal (0.02).
- `masks_per_batch`: GT masks decoded together (x2 modes); `bucket_sizes`: padded GT frame
  sizes (one compilation per bucket pair).
- `num_examples`: images with example PNGs; `max_images`: only the first N images of the run
  (unset, the default: every image; the same meaning in every command).

Sized for: one accelerator per process. Run time: dominated by the click rounds (20 for
NoC) per object; docs/evaluation.md gives measured throughput. The paper's numbers for SAM
and SUM on these sets are in its Tables 14-18 (experiments/ prints them beside ours).
"""

import ml_collections
from ml_collections.config_dict import placeholder

from sum_jax.data import registry
from sum_jax.evaluate.protocol import FRAME_BUCKETS

# The paper's 14 evaluation sets (§4.1, App. C.2, the rows of Tables 5 and 14-18): six
# salient-object sets, the three EntitySeg validation sets, and five part sets (MHP,
# EasyPortrait and PACO: their first 1,000 validation images; Fashionpedia's main set and
# its fine-grained subpart set), by `sum_jax.data.registry` names.
PAPER_EVAL_SETS = ",".join(registry.paper_eval_refs())


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data_dir = ""
    c.eval_sets = PAPER_EVAL_SETS
    c.protocols = "point"
    c.num_rounds = 6
    c.noc_max_clicks = 20
    c.noc_thresholds = (0.85, 0.90)
    c.single_output_token = 0
    c.use_task_prompt = True
    c.continuous_task_prompt = False
    c.boundary_band = 10.0
    c.dilation_ratio = 0.02
    c.masks_per_batch = 8
    c.bucket_sizes = FRAME_BUCKETS  # multiples of 128 up to 1024, then coarser
    c.num_examples = 4
    c.max_images = placeholder(int)  # unset: every image
    return c
