"""Prepare a dataset from a folder on disk into ArrayRecord files (no network).

    python -m sum_jax.prepare_data --config=configs/data/prepare.py \
        --config.dataset=dis5k --config.source_dir=/data/DIS5K --config.data_dir=/data/prepared

See configs/data/prepare.py for every setting and docs/data.md for the formats.
"""

from __future__ import annotations

from absl import logging

from sum_jax import cli, config_checks, output_dir
from sum_jax.data import builder

_CONFIG = cli.config_flag("data/prepare.py", "Preparation config.", lock_config=True)


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # Keep TFDS's per-stage INFO lines out of the summary.
    config = _CONFIG.value
    config_checks.check(config, "prepare_data")
    if config.dry_run:
        print(builder.dry_run(config))
        return
    # One lock per dataset: runs preparing different datasets may share a data_dir.
    with output_dir.claim(config.data_dir, "prepare_data", "config.data_dir",
                          worker=str(config.dataset).lower()):  # fmt: skip
        print(builder.prepare(config))


if __name__ == "__main__":
    cli.run(main)
