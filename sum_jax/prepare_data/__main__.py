"""Prepare a dataset from a folder on disk into ArrayRecord files (no network).

    python -m sum_jax.prepare_data --config=configs/data/prepare.py \
        --config.dataset=dis5k --config.source_dir=/data/DIS5K --config.data_dir=/data/prepared

See configs/data/prepare.py for every setting and docs/data.md for the formats.
"""

from __future__ import annotations

from absl import logging

from sum_jax import cli
from sum_jax.data import builder

_CONFIG = cli.config_flag("data/prepare.py", "Preparation config.", lock_config=True)


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # Keep TFDS's per-stage INFO lines out of the summary.
    config = _CONFIG.value
    if config.dry_run:
        print(builder.dry_run(config))
        return
    print(builder.prepare(config))


if __name__ == "__main__":
    cli.run(main)
