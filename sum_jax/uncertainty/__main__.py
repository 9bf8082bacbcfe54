"""Adds uncertainty maps to pseudo-labels with the mask-refinement module (SUM §3.2.3).

    python -m sum_jax.uncertainty --config=configs/uncertainty.py \
        --config.refiner=ckpt/refiner --config.data_dir=/data/prepared \
        --config.pseudo_labels=/data/pseudo_labels/sa1b

For each image's pseudo-label file, stores `u = |sigmoid(sam) - sigmoid(refined)|` per mask
(uint8, SAM's low-res frame) in the same file, and writes `uncertainty_summary_<process>.json`.
Rerun after an interruption: files that already have maps are skipped.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from sum_jax.data import sources
from sum_jax.uncertainty.maps import compute_uncertainty

_CONFIG = config_flags.DEFINE_config_file("config", None, "Uncertainty config file.")
flags.mark_flags_as_required(["config"])
_SHARD = flags.DEFINE_string(
    "shard", None, "INDEX/COUNT: this worker's share, e.g. one process per GPU (default: JAX's)."
)


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.INFO)
    try:
        index, count = sources.parse_shard(_SHARD.value)
        summary = compute_uncertainty(_CONFIG.value, process_index=index, process_count=count)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    app.run(main)
