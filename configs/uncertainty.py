"""Uncertainty maps for SA-1B pseudo-labels with a trained mask-refinement module.

    python -m sum_jax.uncertainty --config=configs/uncertainty.py \
        --config.refiner=ckpt/refiner --config.data_dir=/data/prepared \
        --config.pseudo_labels=/data/pseudo_labels/sa1b

Adds `u = |sigmoid(sam) - sigmoid(refined)|` (uint8, 256 x 256 per mask) to every file.
With `--config.refined_labels_dir=DIR` it also writes the refinement module's masks as
pseudo-label files in DIR (the "refinement outputs as labels" baseline,
`configs/ablations.py:refined_labels`).

`--config.source=confidence` makes the "SUM Confidence-Uncer" maps of §4.3 instead:
`u = 1 - |2 sigmoid(s) - 1|` from SAM's stored logits `s` (no refiner, no model); with
`--config.output_dir=/data/pseudo_labels/sa1b_confidence` they go into a copy of the files
there (`configs/ablations.py:confidence_uncer` trains on that folder).

Sized for: one GPU per process (`--shard=INDEX/COUNT`); the encoder runs once per image and
all of an image's masks are refined in one padded batch. Run time: a few seconds per image
for the tiny model on a 2-core CPU (the demo); ViT-H on a GPU is not measured yet.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # "refiner" (SUM) or "confidence" (SAM's own logits: u = 1 - |2 sigmoid(s) - 1|).
    c.source = "refiner"
    c.refiner = ""  # Model directory of the mask-refinement module (train_refiner's output).
    c.data_dir = ""  # Root of prepared datasets.
    c.dataset = "sa1b:train"  # The prepared unlabelled split the pseudo-labels were made from.
    c.pseudo_labels = ""  # Directory of pseudo-label files; maps are added in place.
    c.max_images = placeholder(int)
    c.pictures = 4  # PNGs (pseudo-label | refined | uncertainty) for this many images.
    # Optional: also write the refinement module's masks as pseudo-label files here (the
    # "mask-refinement outputs as labels" baseline, configs/ablations.py:refined_labels).
    c.refined_labels_dir = ""
    # Optional: write the completed files here (a copy) instead of into `pseudo_labels`.
    c.output_dir = ""
    return c
