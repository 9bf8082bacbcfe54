"""Prepare a dataset from a folder on disk into ArrayRecord files (no network).

    python -m sum_jax.prepare_data --config=configs/data/prepare.py \
        --config.dataset=dis5k --config.source_dir=/data/DIS5K --config.data_dir=/data/prepared

See configs/data/prepare.py for every setting and docs/data.md for the formats.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, logging
from ml_collections import config_flags

from sum_jax.data import builder

_DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "data" / "prepare.py"
_CONFIG = config_flags.DEFINE_config_file(
    "config", str(_DEFAULT_CONFIG), "Preparation config.", lock_config=True
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # Keep TFDS's per-stage INFO lines out of the summary.
    config = _CONFIG.value
    if config.dry_run:
        print(builder.dry_run(config))
        return
    report = builder.prepare(config)
    print(report)


if __name__ == "__main__":
    app.run(main)
