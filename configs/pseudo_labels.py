"""SAM pseudo-labels for the unlabelled set, with the paper's filters (App. B.1).

    python -m sum_jax.pseudo_labels --config=configs/pseudo_labels.py \
        --config.checkpoint=ckpt/sam_vit_h --config.data_dir=/data/prepared \
        --config.output_dir=/data/pseudo_labels/sa1b

Writes one pseudo-label file per SA-1B image (32x32 grid, 3 masks per point, predicted IoU >
0.88, stability >= 0.95, area < 95% of the image, box NMS 0.7) and a summary per process.

Sized for: one GPU per process (`--shard=INDEX/COUNT` splits one machine's images). Run
time: on this project's 2-core CPU a random tiny SAM takes seconds per image and vit_b about
two minutes per image (benchmarks/pseudo_label_speed.py); ViT-H on a GPU is not measured yet.
The paper keeps ~30 masks per SA-1B image after these filters.
"""

import dataclasses

import ml_collections
from ml_collections.config_dict import placeholder

from sum_jax.inference.mask_generator import GeneratorSettings


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.checkpoint = ""  # SAM model directory (convert.sam_checkpoint), or random:<variant>.
    c.data_dir = ""  # Root of prepared datasets.
    c.dataset = "sa1b:train"  # Prepared unlabelled split, "name:split".
    c.output_dir = ""  # One <image_id>.npz per image, plus summary_<process>.json.
    c.max_images = placeholder(int)  # Only the first N images of the split.
    c.generator = ml_collections.ConfigDict(dataclasses.asdict(GeneratorSettings()))
    return c
