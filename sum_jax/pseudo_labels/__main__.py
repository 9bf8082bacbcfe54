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

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from sum_jax.data import sources
from sum_jax.pseudo_labels.generation import generate_pseudo_labels

_CONFIG = config_flags.DEFINE_config_file("config", None, "Pseudo-label config file.")
flags.mark_flags_as_required(["config"])
_SHARD = flags.DEFINE_string(
    "shard", None, "INDEX/COUNT: this worker's share, e.g. one process per GPU (default: JAX's)."
)


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.INFO)
    try:
        index, count = sources.parse_shard(_SHARD.value)
        summary = generate_pseudo_labels(_CONFIG.value, process_index=index, process_count=count)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    app.run(main)
