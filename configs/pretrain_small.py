"""Pretraining the small SAM from scratch, stage 1 of the model behind `pretrained:small`.

    python -m sum_jax.pretrain --config=configs/pretrain_small.py --workdir=out/pretrain_small

Trains a randomly initialised `small` SAM (128 px input, 1.5M parameters) with SAM's own
interactive training (7 rounds: a box or a point first, then error clicks, a last round
without a new prompt; focal 20 : Dice 1 : IoU MSE 1) on scenes generated on the fly
(`sum_jax/pretrain/scenes.py`: real object cut-outs and procedural objects pasted onto real
photos). No task prompt, no pseudo-labels, no uncertainty: this is SAM's stage, which SUM
then fine-tunes. Then it measures the model on the held-out real photos
(`sum_jax/pretrain/heldout.py`). Sized for the 2-core CPU: 30 minutes of training steps
there (1783 s measured). Stage 2 (configs/pretrain_small_stage2.py) continues from its
model and ships the result to `sum_jax/pretrained/small/`; docs/pretraining.md has both.

A quick look (a few minutes): `--config.train.num_steps=40`.
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
    config = base.get_config()
    config.model.checkpoint = "random:small"
    config.model.variant = "small"
    config.data.labelled = []
    config.data.unlabelled = ""
    config.data.read_threads = 2
    config.data.prefetch_buffer_size = 32

    # SAM's stage: SAM's loss (focal 20 : Dice 1 : IoU MSE 1), no pseudo-labels, so none of
    # SUM's uncertainty machinery or task prompts.
    config.loss.uncertainty_aware = False
    config.interactive.uncertainty_sampling = False
    config.interactive.use_task_prompt = False

    # From scratch, not fine-tuning: a larger rate with warm-up and cosine decay, every
    # encoder block at the same rate.
    config.optimizer.lr = 1e-3
    config.optimizer.weight_decay = 0.05
    config.optimizer.layer_decay = 1.0
    config.optimizer.warmup_steps = 50
    config.optimizer.schedule = "cosine"

    config.sharding.min_shard_size = 2**30  # one CPU device: nothing to shard
    # Many small steps: from scratch, learning to follow the clicks takes a number of steps
    # (about 150-200 on a toy task), not of images.
    config.train.num_steps = 2700
    config.train.batch_size = 8
    config.train.masks_per_image = 4
    config.train.log_every = 50
    config.train.checkpoint_every = 200
    # Curriculum: scene i holds at most 2 + 5 * min(1, i / scene_ramp) objects (simple scenes
    # first, every scene full after the first `scene_ramp`; sum_jax/pretrain/scenes.py).
    config.data.scene_ramp = 6000
    # Shares of composite objects and of frame-filling first objects (scenes.make_scene);
    # stage 2 sets composites.
    config.data.composites = 0.0
    config.data.frame_filling = 0.0

    config.pretrain = ml_collections.ConfigDict()
    config.pretrain.name = "small"  # ships as pretrained:<name>
    # Copy the model into sum_jax/pretrained/<name>/: stage 2 does, stage 1 does not.
    config.pretrain.ship = False
    config.pretrain.heldout = True  # measure it on the held-out real photos
    config.pretrain.heldout_clicks = 5  # the reported mIoU@k of the RITM point protocol
    # Seconds in training steps of the stages before this one (configs/pretrain_small_stage2.py
    # starts from this config's model), added to this run's in the manifest.
    config.pretrain.previous_seconds_training = 0.0
    return config
