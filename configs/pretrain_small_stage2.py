"""Pretraining the small SAM, stage 2: 4000 more steps from stage 1's model.

    # stage 1 (configs/pretrain_small.py, 30 minutes), then stage 2 from its model (55):
    python -m sum_jax.pretrain --config=configs/pretrain_small.py --workdir=out/pretrain_small
    python -m sum_jax.pretrain --config=configs/pretrain_small_stage2.py \
        --workdir=out/pretrain_small_stage2

Stage 1's recipe (configs/pretrain_small.py) continued: the same interactive training, but
30% of the objects are composites of parts that look different (`scenes.composite`: a
click on one part must give the whole object, as on a real subject), every scene full from
the start (stage 1's curriculum is over), scenes stage 1 never saw (seed 1), and a second
warm-up and cosine decay from a lower peak (5e-4; stage 1's schedule had decayed to zero). It ships its model as `pretrained:small`
(`sum_jax/pretrained/small/`); the manifest holds both stages' seconds. docs/pretraining.md has what each stage measured.
"""

import ml_collections

from configs import pretrain_small


def get_config() -> ml_collections.ConfigDict:
    config = pretrain_small.get_config()
    config.model.checkpoint = "out/pretrain_small/model"  # stage 1's model
    config.seed = 1  # scenes stage 1 never saw (scene i is a function of (seed, i))
    config.data.scene_ramp = 1  # every scene full
    # 30% of the objects are composites of parts that look different (scenes.composite).
    config.data.composites = 0.3
    config.optimizer.lr = 5e-4
    config.train.num_steps = 4000  # 55 minutes of training steps on the 2-core CPU
    config.pretrain.previous_seconds_training = 1782.8  # stage 1's, for the manifest
    config.pretrain.ship = True  # as pretrained:small
    return config
