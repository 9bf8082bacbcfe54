"""Adds uncertainty maps to pseudo-labels with the mask-refinement module (SUM §3.2.3).

    python -m sum_jax.uncertainty --config=configs/uncertainty.py \
        --config.refiner=ckpt/refiner --config.data_dir=/data/prepared \
        --config.pseudo_labels=/data/pseudo_labels/sa1b

For each image's pseudo-label file, stores `u = |sigmoid(sam) - sigmoid(refined)|` per mask
(uint8, SAM's low-res frame) in the same file, and writes `uncertainty_summary_<process>.json`.
Rerun after an interruption: files that already have maps are skipped.

"SUM Confidence-Uncer" (§4.3): `u = 1 - |2 sigmoid(sam) - 1|` from the stored logits alone,
into a copy of the files (no refiner, no image encoder):

    python -m sum_jax.uncertainty --config=configs/uncertainty.py --config.source=confidence \
        --config.data_dir=/data/prepared --config.pseudo_labels=/data/pseudo_labels/sa1b \
        --config.output_dir=/data/pseudo_labels/sa1b_confidence
"""

from __future__ import annotations

import contextlib

from absl import logging

from sum_jax import cli, config_checks, output_dir
from sum_jax.data import sources
from sum_jax.fileio import as_path
from sum_jax.uncertainty.maps import SOURCES, compute_uncertainty

_CONFIG = cli.config_flag(None, "Uncertainty config file (configs/uncertainty.py).")
_SHARD = cli.shard_flag()


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.INFO)
    index, count = sources.parse_shard(_SHARD.value)
    config = _CONFIG.value
    config_checks.check(config, "uncertainty")
    # Everything that needs no model is checked before the refiner loads.
    cli.check_prepared(config.data_dir, config.dataset, "config.dataset")
    folder = as_path(config.pseudo_labels or "", "config.pseudo_labels")
    if not config.pseudo_labels or not folder.is_dir():
        raise cli.InputError(
            f"config.pseudo_labels={config.pseudo_labels or '(unset)'}: no pseudo-label folder; "
            "make one with python -m sum_jax.pseudo_labels --config=configs/pseudo_labels.py "
            f"--config.dataset={config.dataset} --config.output_dir=DIR and pass "
            "--config.pseudo_labels=DIR"
        )
    if config.source not in SOURCES:
        raise cli.InputError(f"config.source={config.source!r}: use one of {', '.join(SOURCES)}")
    if config.refined_labels_dir:
        cli.check_output_dir(config.refined_labels_dir, "config.refined_labels_dir")
    if config.output_dir:
        cli.check_output_dir(config.output_dir, "config.output_dir")
    if config.source == "refiner":
        cli.check_model_dir(config.refiner, "config.refiner", kind="refiner")
    # In place, the maps go into the pseudo_labels command's folder; else into a copy.
    if config.output_dir:
        outputs = [("output_dir", ())]
    else:
        outputs = [("pseudo_labels", ("pseudo_labels",))]
    if config.refined_labels_dir:
        outputs.append(("refined_labels_dir", ()))
    with contextlib.ExitStack() as claims:
        for name, shares in outputs:
            claim = output_dir.claim(
                config[name], "uncertainty", f"config.{name}", worker=index, shares=shares
            )
            claims.enter_context(claim)
        summary = compute_uncertainty(config, process_index=index, process_count=count)
    cli.print_json(summary)


if __name__ == "__main__":
    cli.run(main)
