"""FT-Medium (§4.1): FT-Small's data plus EntitySeg, the paper's public ablation setting.

    python -m sum_jax.train --config=configs/ft_medium.py --workdir=runs/ft_medium \
        --config.model.checkpoint=ckpt/sam_vit_h --config.data.data_dir=/data/prepared \
        --config.data.pseudo_label_dir=/data/pseudo_labels/sa1b

Same schedule as FT-Small (6000 steps of 40 images, 1:1 human : unlabelled); EntitySeg
examples carry the entity task prompt (task id 2). Needs `entityseg` prepared besides
FT-Small's sets. Writes what FT-Small writes.
"""

from configs import ft_small


def get_config():
    config = ft_small.get_config()
    config.data.labelled = list(ft_small.HQSEG_44K) + ["entityseg:train"]
    return config
