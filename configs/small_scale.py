"""SUM's central effect at small scale: fine-tuning `pretrained:small` on an intricate set.

    python experiments/small_scale.py --workdir=out/small_scale

runs everything (docs/experiments.md, "The central effect at small scale"); one training of
it by hand, after the script has written and prepared the data:

    python -m sum_jax.train --config=configs/small_scale.py:sum --workdir=out/ss/sum_0 \
        --config.data.data_dir=out/small_scale/prepared \
        --config.data.pseudo_label_dir=out/small_scale/pseudo_labels --config.seed=0

`get_config("sum")`: SUM (human-labelled intricate scenes + uncertainty-weighted
pseudo-labels of generic unlabelled scenes, 1:1, task prompts); `get_config("vanilla")`:
the human-labelled intricate scenes only, with the standard SAM protocol (plain losses,
uniform prompt sampling, no task prompt: configs/ablations.py `human_only+vanilla`). Both
start from `pretrained:small` and train for the same steps with the same rate.
"""

import ml_collections

from configs import ablations, base

METHODS = ("vanilla", "sum")


def get_config(method: str = "sum") -> ml_collections.ConfigDict:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {METHODS}")
    config = base.get_config()
    config.model.checkpoint = "pretrained:small"
    config.model.variant = "small"
    config.data.data_dir = "out/small_scale/prepared"
    config.data.labelled = ["intricate:train"]
    config.data.unlabelled = "unlabelled:train"
    config.data.pseudo_label_dir = "out/small_scale/pseudo_labels"
    config.data.mix = (1, 1)
    config.data.read_threads = 1
    config.optimizer.lr = 2e-4
    config.optimizer.layer_decay = 1.0
    config.sharding.min_shard_size = 2**30
    config.train.num_steps = 150
    config.train.batch_size = 8
    config.train.masks_per_image = 8
    config.train.log_every = 10
    config.train.checkpoint_every = 50
    if method == "vanilla":
        ablations.apply(config, "human_only+vanilla")
    return config
