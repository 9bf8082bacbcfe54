"""SAM pseudo-labels for the unlabelled set, with the paper's filters (App. B.1).

    python -m sum_jax.pseudo_labels --config=configs/pseudo_labels.py \
        --config.checkpoint=ckpt/sam_vit_h --config.data_dir=/data/prepared \
        --config.output_dir=/data/pseudo_labels/sa1b

Writes one pseudo-label file per SA-1B image (32x32 grid, 3 masks per point, predicted IoU >
0.88, stability >= 0.95, area < 95% of the image, box NMS 0.7) and a summary per process.
"""

from sum_jax.pseudo_labels.generation import default_config


def get_config():
    return default_config()
