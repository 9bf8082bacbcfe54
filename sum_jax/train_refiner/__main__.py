"""Trains SUM's mask-refinement module (App. D) on a human-labelled split.

    python -m sum_jax.train_refiner --config=configs/refine.py --workdir=runs/refiner \
        --config.checkpoint=ckpt/sam_vit_h --config.data_dir=/data/prepared

Writes, under `--workdir`: `cache/` (image embeddings and prompt-target pairs), `checkpoints/`
(Orbax, resumable: run the same command again after an interruption), `refiner/` (the model
directory that `python -m sum_jax.uncertainty --config.refiner=...` reads), `report.json`
(held-out IoU and boundary IoU, SAM vs refined) and `loss.png`. See configs/refine.py.
"""

from __future__ import annotations

import json
import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from sum_jax.train_refiner.training import train_refiner

_CONFIG = config_flags.DEFINE_config_file("config", None, "Refinement-module config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the cache, checkpoints, outputs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Our progress lines at INFO; Orbax's and TFDS's (one per array saved) only as warnings.
    logging.set_verbosity(logging.WARNING)
    std_logging.getLogger("sum_jax").setLevel(std_logging.INFO)
    try:
        report = train_refiner(_CONFIG.value, _WORKDIR.value)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    app.run(main)
