"""Uncertainty maps for SA-1B pseudo-labels with a trained mask-refinement module.

    python -m sum_jax.uncertainty --config=configs/uncertainty.py \
        --config.refiner=ckpt/refiner --config.data_dir=/data/prepared \
        --config.pseudo_labels=/data/pseudo_labels/sa1b

Adds `u = |sigmoid(sam) - sigmoid(refined)|` (uint8, 256 x 256 per mask) to every file.
With `--config.refined_labels_dir=DIR` it also writes the refinement module's masks as
pseudo-label files in DIR (the "refinement outputs as labels" baseline,
`configs/ablations.py:refined_labels`).
"""

from sum_jax.uncertainty.maps import default_config


def get_config():
    return default_config()
