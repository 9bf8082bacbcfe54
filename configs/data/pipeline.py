"""The Grain training pipeline's settings: what a trainer config embeds as `config.data`.

Not a command of its own: `configs/base.py` (and through it every training config) sets
`config.data = pipeline.get_config()` and overrides fields. See `sum_jax/data/pipeline.py`
for what each element holds and docs/data.md for the formats.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data_dir = ""  # Root of prepared datasets (sum_jax.prepare_data --config.data_dir).
    c.labelled = ["dis5k:train"]  # "name:split" refs of human-labelled sets, concatenated.
    c.task_ids = ml_collections.ConfigDict()  # Per-dataset task override, e.g. {"dis5k": 1}.
    c.unlabelled = ""  # "sa1b:train", or "" for human labels only.
    # Dataset families trained on here that the paper's run of this config did not train on
    # (FT-Large's public stand-ins for its internal set): evaluations of the exported model
    # on these families' sets are marked "not comparable with the paper".
    c.not_in_paper = ()
    c.pseudo_label_dir = ""  # Where the pseudo-label stage wrote <image_id>.npz files.
    c.mix = (1, 1)  # Labelled : unlabelled images (1:1 FT-Small/Medium, 2:1 FT-Large).
    c.missing_pseudo_labels = "error"  # "error", or "empty" (an image with no valid mask).
    # Every pseudo-label file read must hold uncertainty maps (set by the trainer for SUM's
    # uncertainty-aware losses or sampling): a file without them is an error naming it,
    # never a silent u = 0 (c = 1).
    c.require_uncertainty = False
    c.batch_size = 8  # Images per batch on this process.
    c.image_size = 1024  # S.
    c.mask_size = 256  # L, the loss resolution (SAM's low-res logits).
    c.max_masks = 30  # N.
    c.full_res_masks = False  # Also emit masks_full u8[B, N, S, S].
    c.sam_logits = False  # Also emit sam_logits f32[B, N, L, L].
    c.seed = 0
    c.read_threads = 4  # Threads per process (or worker) decoding elements.
    c.prefetch_buffer_size = 16  # Elements (not batches) read ahead by those threads.
    c.worker_count = 0  # Grain worker processes (0: decode in this process's threads).
    c.worker_buffer_size = 2  # Batches buffered per worker.
    return c
