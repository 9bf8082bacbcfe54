"""FT-Medium (§4.1): FT-Small's data plus EntitySeg, the paper's public ablation setting.

    python -m sum_jax.train --config=configs/ft_medium.py --workdir=runs/ft_medium \
        --config.model.checkpoint=ckpt/sam_vit_h --config.data.data_dir=/data/prepared \
        --config.data.pseudo_label_dir=/data/pseudo_labels/sa1b

Same schedule as FT-Small (6000 steps of 40 images, 1:1 human : unlabelled); EntitySeg
examples carry the entity task prompt (task id 2). Needs `entityseg` prepared besides
FT-Small's sets. Writes what FT-Small writes.

Sized for: as FT-Small (40 A100 80GB GPUs, one image each). Run time: not measured here.
What the paper reports (Table 14, one point, round 1): mIoU 73.4 vs SAM's 69.0, mBIoU 66.4
vs 61.6; entities 79.8 vs 77.4 mIoU.
"""

from configs import ft_small


def get_config():
    config = ft_small.get_config()
    config.data.labelled = list(ft_small.HQSEG_44K) + ["entityseg:train"]
    return config
