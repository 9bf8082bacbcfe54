"""A tiny SUM training config over a prepared test dataset, for tests that launch
`python -m sum_jax.train` as real processes:

    python -m sum_jax.train --config=tests/tiny_train_config.py:DATA_DIR --workdir=W
"""

from configs import base


def get_config(data_dir: str = ""):
    c = base.get_config()
    c.model.checkpoint = "random:tiny"
    c.model.variant = "tiny"
    c.data.data_dir = data_dir
    c.data.labelled = ["toy_salient:train"]
    c.data.unlabelled = ""
    c.data.read_threads = 1
    c.optimizer.lr = 1e-3
    c.sharding.min_shard_size = 256
    c.train.num_steps = 4
    c.train.batch_size = 2
    c.train.masks_per_image = 3
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    return c
