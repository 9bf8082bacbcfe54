"""Grain training pipeline: human-labelled + pseudo-labelled images -> fixed-shape batches.

Batch layout (docs/contracts.md), leading axis B = `batch_size` images of this process:

    image        u8[B, S, S, 3]   longest side resized to S (SAM's rounding), zero padded
    image_size   i32[B, 2]        (h, w) of the resized image inside the S x S square
    masks        u8[B, N, L, L]   0/1 targets in the padded frame at the loss resolution L
    mask_valid   bool[B, N]       False for padding slots
    uncertainty  u8[B, N, L, L]   round(255 u); 0 for human labels (and before u exists)
    is_pseudo    bool[B]          image comes from the unlabelled (pseudo-labelled) set
    task_id      i32[B]           0 unlabelled, 1 salient object, 2 entity, 3 part
  optional (config):
    masks_full   u8[B, N, S, S]   `full_res_masks`: the same targets at full resolution
    sam_logits   f32[B, N, L, L]  `sam_logits`: stored SAM logits of pseudo-labels (0 else)

Up to N masks per image are drawn without replacement (all of them when fewer), in random
order. Masks are resized by area averaging then thresholding at 0.5 (`image_ops`).

Order of operations, and why:

    source.shuffle(seed).repeat()      global order, reshuffled every epoch (grain folds the
                                       epoch into the seed)
    .random_map(element, seed)         per-element RNG from (seed, global index): the same
                                       element gets the same masks however it is sharded
    [process_index::process_count]     disjoint shards, together covering every epoch
    mix([labelled, unlabelled], r:1)   grain's deterministic proportional interleave, per
                                       process, so every process batch holds the ratio
    to_iter_dataset(threads) -> .batch(B) -> mp_prefetch(workers)

Everything is a pure function of (seed, step), so a restored iterator state (`get_state`, or
Orbax via `grain.checkpoint.CheckpointSave/Restore`) continues with exactly the next batches.
"""

from __future__ import annotations

import functools
from typing import Any

import grain
import ml_collections
import numpy as np
from PIL import Image

from sum_jax.data import image_ops, pseudo_label_format, sources


def _pick(num: int, max_masks: int, rng: np.random.Generator) -> np.ndarray:
    if num == 0:
        return np.zeros((0,), np.int64)
    return rng.choice(num, size=min(num, max_masks), replace=False)


def empty_element(cfg: Any) -> dict[str, np.ndarray]:
    n, l, s = cfg.max_masks, cfg.mask_size, cfg.image_size
    out = {
        "image": np.zeros((s, s, 3), np.uint8),
        "image_size": np.zeros((2,), np.int32),
        "masks": np.zeros((n, l, l), np.uint8),
        "mask_valid": np.zeros((n,), bool),
        "uncertainty": np.zeros((n, l, l), np.uint8),
        "is_pseudo": np.zeros((), bool),
        "task_id": np.zeros((), np.int32),
    }
    if cfg.full_res_masks:
        out["masks_full"] = np.zeros((n, s, s), np.uint8)
    if cfg.sam_logits:
        out["sam_logits"] = np.zeros((n, l, l), np.float32)
    return out


def _fill_image_and_masks(
    out: dict, image_bytes: bytes, counts: list[bytes], height: int, width: int, cfg: Any
) -> None:
    image = image_ops.decode_image(image_bytes)
    if image.shape[:2] != (height, width):
        raise ValueError(f"image is {image.shape[:2]}, record says {(height, width)}")
    out["image"], out["image_size"] = image_ops.resize_longest_side_and_pad(image, cfg.image_size)
    frames = (cfg.mask_size, cfg.image_size) if cfg.full_res_masks else (cfg.mask_size,)
    for j, c in enumerate(counts):
        resized = image_ops.rle_to_frame(c, height, width, cfg.image_size, frames)
        out["masks"][j] = resized[0]
        if cfg.full_res_masks:
            out["masks_full"][j] = resized[1]
    out["mask_valid"][: len(counts)] = True


def labelled_element(record: dict, rng: np.random.Generator, cfg: Any) -> dict[str, np.ndarray]:
    """One human-labelled record -> one batch element."""
    out = empty_element(cfg)
    idx = _pick(len(record["masks"]), cfg.max_masks, rng)
    counts = [record["masks"][k] for k in idx]
    _fill_image_and_masks(out, record["image"], counts, record["height"], record["width"], cfg)
    out["task_id"] = np.int32(record["task_id"])
    return out


def _resize_float_map(values: np.ndarray, frame: int) -> np.ndarray:
    if values.shape == (frame, frame):
        return values
    return np.asarray(
        Image.fromarray(values.astype(np.float32)).resize((frame, frame), Image.Resampling.BILINEAR)
    )


def unlabelled_element(record: dict, rng: np.random.Generator, cfg: Any) -> dict[str, np.ndarray]:
    """One unlabelled record + its pseudo-label file -> one batch element."""
    out = empty_element(cfg)
    out["is_pseudo"] = np.bool_(True)
    out["task_id"] = np.int32(record["task_id"])
    try:
        labels = pseudo_label_format.read(cfg.pseudo_label_dir, record["image_id"])
    except FileNotFoundError:
        if cfg.missing_pseudo_labels != "empty":
            raise
        image = image_ops.decode_image(record["image"])
        out["image"], out["image_size"] = image_ops.resize_longest_side_and_pad(
            image, cfg.image_size
        )
        return out
    if cfg.get("require_uncertainty", False) and not labels.has_uncertainty:
        raise FileNotFoundError(
            f"{pseudo_label_format.path_for(cfg.pseudo_label_dir, record['image_id'])}: "
            f"pseudo-labels without uncertainty maps, which SUM's uncertainty-aware losses "
            f"and sampling need (every file of the set must have them). Add them with "
            f"`python -m sum_jax.uncertainty --config=configs/uncertainty.py "
            f"--config.refiner=REFINER_DIR --config.pseudo_labels={cfg.pseudo_label_dir} ...`, "
            f"or train without them: configs/ablations.py:vanilla"
        )
    if (labels.height, labels.width) != (record["height"], record["width"]):
        raise ValueError(
            f"{pseudo_label_format.path_for(cfg.pseudo_label_dir, record['image_id'])}: "
            f"pseudo-labels are for a {labels.height}x{labels.width} image, "
            f"the image is {record['height']}x{record['width']}"
        )
    idx = _pick(labels.num_masks, cfg.max_masks, rng)
    counts = [labels.masks[k] for k in idx]
    _fill_image_and_masks(out, record["image"], counts, labels.height, labels.width, cfg)
    n = len(idx)
    if n and labels.has_uncertainty:
        for j, u in enumerate(labels.uncertainty(idx)):
            out["uncertainty"][j] = image_ops.resize_map_to_frame(u, cfg.mask_size)
    if n and cfg.sam_logits:
        for j, x in enumerate(labels.logits(idx)):
            out["sam_logits"][j] = _resize_float_map(x, cfg.mask_size)
    return out


def process_index_and_count(process_index: int | None, process_count: int | None):
    if process_index is None or process_count is None:
        import jax  # Only when not given: tests and tools pass them explicitly.

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    return process_index, process_count


def _stream(source, element_fn, cfg, seed: int, process_index: int, process_count: int):
    ds = grain.MapDataset.source(source).shuffle(seed=seed % 2**32).repeat()
    ds = ds.random_map(functools.partial(element_fn, cfg=cfg), seed=(seed + 1) % 2**32)
    return ds[process_index::process_count]


def training_task_ids(cfg: ml_collections.ConfigDict | Any) -> list[int]:
    """The task ids the training data of `make_train_dataset(cfg)` carries, sorted (what
    the trainer records in the exported model, `sum_jax.checkpointing.TaskRecord`)."""
    task_ids = dict(cfg.task_ids) if cfg.task_ids else {}
    out: set[int] = set()
    if cfg.labelled:
        out |= sources.open_sources(cfg.data_dir, list(cfg.labelled), task_ids).task_ids()
    if cfg.unlabelled:
        out |= sources.open_sources(cfg.data_dir, [cfg.unlabelled], task_ids).task_ids()
    return sorted(out)


def make_train_dataset(
    cfg: ml_collections.ConfigDict | Any,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.IterDataset:
    """The infinite, batched training stream of this process (see module docstring).

    `process_index` / `process_count` default to JAX's; tests pass them to simulate hosts.
    Iterate with `it = iter(ds)`; `it.get_state()` / `it.set_state()` checkpoint it.
    """
    cfg = ml_collections.ConfigDict(cfg) if isinstance(cfg, dict) else cfg
    pi, pc = process_index_and_count(process_index, process_count)
    if cfg.missing_pseudo_labels not in ("error", "empty"):
        raise ValueError(
            f"missing_pseudo_labels must be 'error' or 'empty', got {cfg.missing_pseudo_labels!r}"
        )
    task_ids = dict(cfg.task_ids) if cfg.task_ids else {}
    streams, weights = [], []
    if cfg.labelled:
        labelled = sources.open_sources(cfg.data_dir, list(cfg.labelled), task_ids)
        streams.append(_stream(labelled, labelled_element, cfg, cfg.seed, pi, pc))
        weights.append(float(cfg.mix[0]))
    if cfg.unlabelled:
        if not cfg.pseudo_label_dir:
            raise ValueError("unlabelled data needs pseudo_label_dir")
        unlabelled = sources.open_sources(cfg.data_dir, [cfg.unlabelled], task_ids)
        # Distinct seeds: the two sets must not shuffle in lockstep.
        streams.append(_stream(unlabelled, unlabelled_element, cfg, cfg.seed + 1000, pi, pc))
        weights.append(float(cfg.mix[1]))
    if not streams:
        raise ValueError("no training data: set labelled and/or unlabelled")
    ds = streams[0] if len(streams) == 1 else grain.MapDataset.mix(streams, weights=weights)
    return batched(ds, cfg)


def batched(ds: grain.MapDataset, cfg: Any) -> grain.IterDataset:
    """`ds` read ahead by `cfg.read_threads` threads (element by element: the decode is the
    cost), batched to `cfg.batch_size`, and with `cfg.worker_count` worker processes."""
    it = ds.to_iter_dataset(
        grain.ReadOptions(
            num_threads=cfg.read_threads, prefetch_buffer_size=cfg.prefetch_buffer_size
        )
    ).batch(cfg.batch_size, drop_remainder=True)
    if cfg.worker_count > 0:
        it = it.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=cfg.worker_count, per_worker_buffer_size=cfg.worker_buffer_size
            )
        )
    return it
