"""Trains SUM's mask-refinement module (App. D) on a human-labelled split.

    python -m sum_jax.train_refiner --config=configs/refine.py --workdir=runs/refiner \
        --config.checkpoint=ckpt/sam_vit_h --config.data_dir=/data/prepared

Writes, under `--workdir`: `cache/` (image embeddings and prompt-target pairs), `checkpoints/`
(Orbax, resumable: run the same command again after an interruption), `refiner/` (the model
directory that `python -m sum_jax.uncertainty --config.refiner=...` reads), `report.json`
(held-out IoU and boundary IoU, SAM vs refined) and `loss.png`. See configs/refine.py.
"""

from __future__ import annotations

import logging as std_logging

from absl import flags, logging

from sum_jax import cli, cloud, config_checks, output_dir, runtime
from sum_jax.train_refiner.training import train_refiner

_CONFIG = cli.config_flag(None, "Refinement-module config file (configs/refine.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the cache, checkpoints, outputs.")
flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> None:
    del argv
    # Our progress lines at INFO; Orbax's and TFDS's (one per array saved) only as warnings.
    logging.set_verbosity(logging.WARNING)
    std_logging.getLogger("sum_jax").setLevel(std_logging.INFO)
    config = _CONFIG.value
    config_checks.check(config, "train_refiner")
    # Everything that needs no model is checked before the model loads.
    cloud.require_local(
        _WORKDIR.value, "--workdir", "the refiner's cache of image embeddings and prompt-target "
        "pairs is read as local files; give a local --workdir (the trained module can go to "
        "gs:// with --config.output=gs://BUCKET/refiner)",
    )  # fmt: skip
    cli.check_output_dir(_WORKDIR.value, "--workdir")
    if config.output:
        cli.check_output_dir(config.output, "config.output")
    cli.check_prepared(config.data_dir, config.dataset, "config.dataset")
    cli.check_model_dir(config.checkpoint, "config.checkpoint")
    variant = runtime.model_variant(config.checkpoint)
    runtime.report("train_refiner", config_name=runtime.config_name(), variant=variant)
    with output_dir.claim(_WORKDIR.value, "train_refiner", "--workdir"):
        report = train_refiner(config, _WORKDIR.value)
    cli.print_json(report)


if __name__ == "__main__":
    cli.run(main)
