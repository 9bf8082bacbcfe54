"""FT-Small (§4.1, App. B.1): SUM fine-tuning of SAM ViT-H on SA-250K + HQSeg-44K.

    python -m sum_jax.train --config=configs/ft_small.py --workdir=runs/ft_small \
        --config.model.checkpoint=ckpt/sam_vit_h --config.data.data_dir=/data/prepared \
        --config.data.pseudo_label_dir=/data/pseudo_labels/sa1b

Needs: SAM ViT-H converted with `python -m convert.sam_checkpoint`; HQSeg-44K's six parts
and SA-250K prepared with `python -m sum_jax.prepare_data`; pseudo-labels
(`python -m sum_jax.pseudo_labels`) with uncertainty maps (`python -m sum_jax.uncertainty`).

Trains 6000 steps of 40 images (one image and up to 30 masks per device, human-labelled and
unlabelled images 1:1), AdamW at 1e-5 with layer decay 0.8, 7 interactive rounds, the
uncertainty-aware losses (theta 0.6) and sampling, the task prompt in round 1. Writes
checkpoints, logs, TensorBoard files and the final model to the workdir
(sum_jax/train/loop.py lists them). Run the same command again to resume.

Sized for: the paper's 40 A100 80GB GPUs, one image per GPU (App. B.1); see docs/training.md
for the measured memory per device and layouts with fewer devices. Run time: not measured
here (no GPU); the paper gives none for this run. One step is about 18 TFLOP per image at
ViT-H size (XLA's cost analysis).
What the paper reports (Table 14, one point, round 1, all 14 sets): mIoU 72.8 vs SAM's 69.0,
mBIoU 65.7 vs 61.6; salient objects 86.4 vs 78.7 mIoU.
"""

from configs import base

# HQSeg-44K (HQ-SAM's training set): six salient-object datasets.
HQSEG_44K = [
    "dis5k:train",
    "thinobject5k:train",
    "fss1000:train",
    "ecssd:train",
    "msra10k:train",
    "dut_omron:train",
]


def get_config():
    config = base.get_config()
    config.data.labelled = list(HQSEG_44K)
    config.data.unlabelled = "sa1b:train"
    config.data.pseudo_label_dir = "data/pseudo_labels/sa1b"
    config.data.mix = (1, 1)
    config.train.num_steps = 6000
    config.train.batch_size = 40
    # Fits ViT-H on one 80 GB GPU or 95 GB TPU chip per image (docs/training.md, "Memory"):
    # bfloat16 compute, block remat inside scans over the encoder's block groups and blocks
    # (the backward pass recomputes one block at a time), one image per device at a time.
    config.model.compute_dtype = "bfloat16"
    config.model.remat = "block"
    config.model.scan_blocks = True
    # The rounds decode each image's 30 masks in 3 chunks of 10 (each rematerialised): the
    # backward pass of a round then holds one chunk's decoder activations (-4.4 GiB).
    config.model.mask_chunks = 3
    config.train.microbatches = -1
    # Mask losses over every pixel of the 1024 input frame: eq. 1-2 are means over all m
    # pixels of the image, with the 20:1 focal:Dice weights set for that mean (the 256
    # grid's targets lose 11-14 boundary-IoU points of real masks; HQ-SAM's importance-
    # sampled points change the balance and concentrate samples where u is high: the
    # `loss_points` ablation). docs/training.md, "Loss resolution", has the memory.
    config.loss.resolution = "full"
    return config
