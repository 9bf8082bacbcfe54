"""Pretrain a small SAM from scratch: `python -m sum_jax.pretrain --config=CONFIG --workdir=DIR`.

    # The model behind pretrained:small, in two stages (30 + 55 minutes on a 2-core CPU);
    # stage 2 starts from stage 1's model and ships the result:
    python -m sum_jax.pretrain --config=configs/pretrain_small.py --workdir=out/pretrain_small
    python -m sum_jax.pretrain --config=configs/pretrain_small_stage2.py \
        --workdir=out/pretrain_small_stage2

    # A quick look, not shipped:
    python -m sum_jax.pretrain --config=configs/pretrain_small.py --workdir=out/quick \
        --config.train.num_steps=40

It writes to the workdir what `python -m sum_jax.train` writes (train.log, metrics.jsonl,
loss.png, checkpoints/, model/), plus `scenes.png` (a sample of the training scenes),
`heldout/` (the evaluator's reports on the held-out real photos, with pictures) and
`pretrain.json` (the manifest). With `pretrain.ship` (stage 2's config) the model is then copied
into the package, `sum_jax/pretrained/<name>/`, where `pretrained:<name>` finds it. Run the
same command again to resume; a finished run is not retrained.
"""

from __future__ import annotations

from absl import flags, logging

from sum_jax import cli, cloud, config_checks, output_dir

_CONFIG = cli.config_flag(None, "Pretraining config file (configs/pretrain_small.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs, the model, held-out reports.")


def main(argv: list[str]) -> None:
    del argv
    if not _WORKDIR.value:
        cli.fail("--workdir is required: the folder for checkpoints, logs and the model")
    config_checks.check(_CONFIG.value, "pretrain")
    cloud.require_local(
        _WORKDIR.value, "--workdir", "pretraining writes its held-out sets and pictures as "
        "local files; give a local --workdir and copy the model to gs:// afterwards",
    )  # fmt: skip
    cli.check_output_dir(_WORKDIR.value, "--workdir")
    logging.set_verbosity(logging.WARNING)
    from sum_jax.pretrain import training
    from sum_jax.train import loop

    try:
        with output_dir.claim(_WORKDIR.value, "pretrain", "--workdir"):
            training.pretrain(_CONFIG.value, _WORKDIR.value)
    except loop.NonFiniteLossError as e:
        cli.fail(str(e))


if __name__ == "__main__":
    cli.run(main)
