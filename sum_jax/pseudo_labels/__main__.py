"""Writes SAM pseudo-labels for a prepared unlabelled set (SUM's first stage).

    python -m sum_jax.pseudo_labels --config=configs/pseudo_labels.py \
        --config.checkpoint=ckpt/sam_vit_h --config.data_dir=/data/prepared \
        --config.dataset=sa1b:train --config.output_dir=/data/pseudo_labels/sa1b

Produces `<output_dir>/<image_id>.npz` per image (format: `sum_jax/data/pseudo_label_format.py`)
and `summary_<process>.json` (images, masks kept after each filter, bytes per image). Run it
again after an interruption: finished images are skipped. On several hosts each process takes
every `process_count`-th image.
"""

from __future__ import annotations

from absl import logging

from sum_jax import cli, config_checks, output_dir, runtime
from sum_jax.data import sources
from sum_jax.pseudo_labels.generation import generate_pseudo_labels

_CONFIG = cli.config_flag(None, "Pseudo-label config file (configs/pseudo_labels.py).")
_SHARD = cli.shard_flag()


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.INFO)
    index, count = sources.parse_shard(_SHARD.value)
    config = _CONFIG.value
    config_checks.check(config, "pseudo_labels")
    # Everything that needs no model is checked before the model loads.
    cli.check_output_dir(config.output_dir, "config.output_dir")
    cli.check_prepared(config.data_dir, config.dataset, "config.dataset")
    cli.check_model_dir(config.checkpoint, "config.checkpoint")
    variant = runtime.model_variant(config.checkpoint)
    runtime.report("pseudo_labels", config_name=runtime.config_name(), variant=variant)
    with output_dir.claim(config.output_dir, "pseudo_labels", "config.output_dir", worker=index):
        summary = generate_pseudo_labels(config, process_index=index, process_count=count)
    cli.print_json(summary)


if __name__ == "__main__":
    cli.run(main)
