"""Training the mask-refinement module (SUM §3.2.3, App. D).

The refinement module is SAM with a fine-tuned prompt encoder and mask decoder: given SAM's
low-res logits of a mask as mask prompt, a box around SAM's binarised mask and the point that
generated it, it predicts one refined mask. `sum_jax.uncertainty.maps.Refiner` applies it to
pseudo-labels; this module trains it on a human-labelled split, in three phases:

1. **Pairs** (App. D.2), once per image, cached in `<workdir>/cache`:
   - the frozen encoder embeds the image once (`embeddings/<index>.npy`, float32);
   - each ground-truth mask gets one positive point: by default a uniformly drawn GT pixel
     (`pairs.point = "random"`, from a generator seeded by `(seed, image index, mask
     index)`), as the pseudo-labels' points, which come from a regular grid and land
     anywhere in a mask (App. D.2: "mirroring the conditions under which SAM pseudo labels
     are produced"); or the GT pixel farthest from the GT's boundary (`"farthest"`, the
     evaluation protocol's first click); points are `(column, row)` pixel coordinates, as
     the evaluator's clicks;
   - frozen SAM answers the point with three masks; the one with the highest IoU with the GT
     **at the GT's original resolution** is the pseudo-label (App. D.2's "most aligned");
   - the pair is dropped when that IoU is below `pairs.min_iou` (0.7), or when SAM's own
     filters reject the chosen mask: predicted IoU `> pred_iou_thresh` (0.88, strict as in
     `segment_anything` and `sum_jax.inference.mask_generator`) and stability score
     `>= stability_score_thresh` (0.95 at offset 1.0, `mask_generator.stability_score` on the
     original-resolution logits, as the mask generator computes it) and area below
     `max_area_frac` (0.95) of the image (App. B.1's third filter);
   - a kept pair stores SAM's low-res logits quantised as pseudo-label files store them
     (`pseudo_label_format.quantize_logits`: the refiner trains on what it later reads), the
     point and the inclusive pixel box of SAM's original-resolution binarised mask
     (`sum_jax.ops.masks.mask_to_box`, what `Refiner` computes from a pseudo-label file), both
     in the model's input frame, and the GT at the loss resolution `L` in the padded frame
     (`image_ops.mask_to_frame`, the training pipeline's `masks`).
2. **Training**: AdamW (`sum_jax.train.optim`) on the prompt encoder and mask decoder only; the
   image encoder must be frozen by `config.optimizer.param_groups` (checked), and the task
   table is frozen too (the refiner is never given a task prompt). One jitted step on cached
   embeddings, batches of `train.batch_size` pairs (the last batch of an epoch padded, with a
   validity mask), loss `20 focal + dice + IoU MSE` (`sum_jax.train.losses`) over the grid
   pixels of the real image (not the input frame's zero padding, as SUM's trainer counts
   them), single-mask output.
   Batch `t` depends only on `(seed, t)`, and Orbax checkpoints (trainable parameters,
   optimiser state, loss history) every `train.checkpoint_every` steps in
   `<workdir>/checkpoints`, so a run started again in its workdir ends with the same
   parameters as an uninterrupted one.
3. **Export and report**: the full model (frozen encoder included, so
   `Refiner(load_model(dir))` works) to `<workdir>/refiner` with `checkpointing.save_sam`;
   mean IoU and boundary IoU of SAM's and the refined masks against the GT on the held-out
   images, at the GT's original resolution (and IoU at the low-res frame), in
   `<workdir>/report.json`; the loss curve in `<workdir>/loss.png`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
import zipfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from scipy import ndimage
from tqdm import tqdm

from sum_jax import cloud, fingerprint
from sum_jax.checkpointing import TrainingCheckpoints, load_model, model_fingerprint, save_sam
from sum_jax.data import builder, image_ops, sources
from sum_jax.data import pseudo_label_format as plf
from sum_jax.fileio import as_path, atomic_path, atomic_write
from sum_jax.inference.decoding import Prompts, decode
from sum_jax.inference.predictor import encode_images
from sum_jax.inference.refiner import refine
from sum_jax.models.prompt_encoder import LABEL_POSITIVE
from sum_jax.models.sam import Sam
from sum_jax.ops import metrics, transforms
from sum_jax.ops.masks import iou_counts, iou_from_counts, mask_to_box, stability_score
from sum_jax.train import losses, optim, prompts
from sum_jax.train.step import ModelDef, TrainState, gradient_step
from sum_jax.visualize import plot_curves

log = logging.getLogger(__name__)

# Masks left after each filter, in the order the filters apply.
FILTER_STAGES = ("gt_masks", "sam_mask_not_empty", "gt_iou", "predicted_iou", "stability", "area")
CACHE_FORMAT = 1


# Pair filters (pure, host side) ------------------------------------------------------------


def choose_best_output(gt_iou: np.ndarray) -> np.ndarray:
    """`[K, M]` IoUs of SAM's `M` outputs with the GT -> `[K]` index of the best aligned
    output (the first one on ties)."""
    return np.argmax(np.asarray(gt_iou), axis=-1)


def filter_pairs(
    gt_iou: np.ndarray,
    predicted_iou: np.ndarray,
    stability: np.ndarray,
    sam_area: np.ndarray,
    *,
    min_iou: float,
    pred_iou_thresh: float,
    stability_score_thresh: float,
    image_area: np.ndarray | float = 1.0,
    max_area_frac: float = 0.0,
) -> tuple[np.ndarray, Counter]:
    """Which pairs survive (App. D.2), from `[K]` values of each pair's chosen SAM output.

    A pair is kept when SAM's mask is not empty (it needs a box), its IoU with the GT is at
    least `min_iou`, SAM's predicted IoU is above `pred_iou_thresh` (strict, as SAM's
    generator), its stability score is at least `stability_score_thresh`, and its area is
    below `max_area_frac` of `image_area` (SAM's third filter, App. B.1: masks covering 95%
    or more of the image are dropped). App. D.2 applies "the same sample filtering
    technique as in SAM", so all of them apply, as the pseudo-labels are filtered. A
    threshold `<= 0` disables its filter, as in `sum_jax.inference.mask_generator`.

    Returns:
      `(keep bool[K], counts)` with `counts[stage]` the pairs left after each stage of
      `FILTER_STAGES`, cumulatively.
    """
    keep = np.ones(len(gt_iou), bool)
    counts = Counter({"gt_masks": int(keep.sum())})
    keep &= np.asarray(sam_area) > 0
    counts["sam_mask_not_empty"] = int(keep.sum())
    if min_iou > 0:
        keep &= np.asarray(gt_iou) >= min_iou
    counts["gt_iou"] = int(keep.sum())
    if pred_iou_thresh > 0:
        keep &= np.asarray(predicted_iou) > pred_iou_thresh
    counts["predicted_iou"] = int(keep.sum())
    if stability_score_thresh > 0:
        keep &= np.asarray(stability) >= stability_score_thresh
    counts["stability"] = int(keep.sum())
    if max_area_frac > 0:
        keep &= np.asarray(sam_area) < max_area_frac * np.asarray(image_area)
    counts["area"] = int(keep.sum())
    return keep, counts


def prompt_point(
    gt: np.ndarray, mode: str, rng: np.random.Generator | None = None
) -> tuple[float, float] | None:
    """The `(x, y)` = `(column, row)` point of a GT mask (None if it is empty): its pixel
    farthest from the boundary (`"farthest"`) or a uniformly drawn pixel (`"random"`)."""
    if mode == "farthest":
        if not gt.any():
            return None
        # Distance to the nearest pixel outside the mask, the image border counting as
        # outside (zero padding), as the evaluation clicker; the first deepest pixel wins.
        depth = ndimage.distance_transform_edt(np.pad(gt, 1))[1:-1, 1:-1]
        y, x = divmod(int(np.argmax(depth)), gt.shape[1])
        return float(x), float(y)
    if mode == "random":
        flat = np.flatnonzero(gt)
        if flat.size == 0:
            return None
        y, x = divmod(int(flat[rng.integers(flat.size)]), gt.shape[1])
        return float(x), float(y)
    raise ValueError(f"pairs.point must be 'farthest' or 'random', got {mode!r}")


def batch_ids(
    step: int, num_pairs: int, batch_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pair indices `[B]` and validity `[B]` of training batch `step`.

    Epoch `e` is a permutation drawn from `(seed, e)`, cut into `ceil(n / B)` batches, the
    last one padded (validity false), so each pair is seen once per epoch and the data order
    is a function of the step alone (what makes resuming exact).
    """
    per_epoch = math.ceil(num_pairs / batch_size)
    epoch, b = divmod(int(step), per_epoch)
    perm = np.random.default_rng([int(seed), epoch]).permutation(num_pairs)
    chunk = perm[b * batch_size : (b + 1) * batch_size]
    ids = np.zeros(batch_size, np.int64)
    ids[: len(chunk)] = chunk
    return ids, np.arange(batch_size) < len(chunk)


def holdout_split(num_images: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`(train, holdout)` sorted image indices from a permutation seeded by `seed`; the
    held-out set has `round(fraction * n)` images, at least one if `fraction > 0`, and at
    least one image is left for training."""
    perm = np.random.default_rng(int(seed)).permutation(num_images)
    n_hold = round(fraction * num_images)
    if fraction > 0:
        n_hold = max(n_hold, 1)
    n_hold = min(n_hold, num_images - 1)
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


# Device functions --------------------------------------------------------------------------


@functools.partial(
    jax.jit, static_argnames=("graphdef", "input_size", "original_size", "img_size", "offset")
)
def _sam_outputs(
    graphdef, state, embedding, points, gt, *, input_size, original_size, img_size, offset
):
    """Frozen SAM on `Q` single-point prompts of one image, scored against the GTs.

    Args: `embedding [1, h, w, C]`, `points [Q, 2]` (input frame), `gt bool[Q, H, W]`.
    Returns low-res logits `[Q, 3, L, L]`, predicted IoU, stability, IoU with the GT (all
    `[Q, 3]`) and the binarised masks `bool[Q, 3, H, W]` at the original resolution.
    """
    q = points.shape[0]
    prompts = Prompts(points[None, :, None, :], jnp.full((1, q, 1), LABEL_POSITIVE, jnp.int32))
    low, iou = decode(graphdef, state, embedding, prompts, multimask_output=True)
    low, iou = low[0], iou[0]
    logits = transforms.postprocess_masks(low, input_size, original_size, img_size)
    masks = logits > transforms.MASK_THRESHOLD
    gt_iou = iou_from_counts(*iou_counts(masks, gt[:, None]))
    return low, iou, stability_score(logits, offset), gt_iou, masks


def _refine(model: Sam, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """The refiner's answer for `B` pairs, each its own image (`Q = 1`), with the prompts
    `Refiner` gives -> `(logits [B, L, L], iou [B])`."""
    logits, iou = refine(
        model,
        batch["embedding"],
        batch["points"][:, None],
        batch["boxes"][:, None],
        batch["mask_inputs"][:, None],
        batch["valid"][:, None],
    )
    return logits[:, 0], iou[:, 0]


def refiner_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    *,
    model_def: ModelDef,
    tx: optax.GradientTransformation,
    plan: optim.ParamPlan,
    loss_kwargs: Mapping[str, float],
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One AdamW step of the refinement module on a batch of pairs (pure; jit it).

    Metrics: `loss` and its terms (means over valid pairs), `iou_refined` (IoU of the
    refined masks with the targets at `L`) and `iou_sam` (the same for SAM's input logits).
    """
    valid = batch["valid"]

    def loss_fn(model):
        logits, iou = _refine(model, batch)
        area = prompts.image_area(batch["image_size"], logits.shape[-1], model.config.img_size)
        terms = losses.combined_loss(logits, iou, batch["targets"], None, area=area, **loss_kwargs)
        return losses.masked_mean(terms["loss"], valid), (terms, area)

    state, _, (terms, area), out = gradient_step(
        state, loss_fn, model_def=model_def, tx=tx, plan=plan
    )
    for k in ("focal", "dice", "iou_mse"):
        out[k] = losses.masked_mean(terms[k], valid)
    out["iou_refined"] = losses.masked_mean(terms["iou"], valid)
    out["iou_sam"] = losses.masked_mean(
        losses.mask_iou(batch["mask_inputs"], batch["targets"], area), valid
    )
    return state, out


@functools.partial(jax.jit, static_argnames=("model_def",))
def _refine_jit(params, model_state, batch, *, model_def):
    return _refine(model_def.merge(params, model_state), batch)[0]


_postprocess = jax.jit(transforms.postprocess_masks, static_argnums=(1, 2, 3))


# Pair cache --------------------------------------------------------------------------------


@dataclasses.dataclass
class PairSet:
    """The cached pairs of a split: per-image files plus a flat index over them."""

    cache: Path
    image_index: np.ndarray  # i64[N]: image of each pair
    slot: np.ndarray  # i64[N]: the pair's row in its image's file
    images: list[int]  # every image of the split, in order
    counts: Counter  # masks left after each filter, summed over images

    def __len__(self) -> int:
        return len(self.image_index)

    def subset(self, image_indices: np.ndarray) -> PairSet:
        keep = np.isin(self.image_index, image_indices)
        return dataclasses.replace(self, image_index=self.image_index[keep], slot=self.slot[keep])


def _pairs_path(cache: Path, index: int) -> Path:
    return cache / "pairs" / f"{index:08d}.npz"


def _embedding_path(cache: Path, index: int) -> Path:
    return cache / "embeddings" / f"{index:08d}.npy"


def _load_image_pairs(path: Path) -> dict[str, np.ndarray]:
    """One image's pair file, memoised (a batch reads several pairs of the same file); the
    modification time is part of the key, so a rebuilt file is never served stale."""
    return _read_npz(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=512)
def _read_npz(path: str, mtime_ns: int) -> dict[str, np.ndarray]:
    del mtime_ns  # only a cache key
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def _cache_settings(config: Mapping[str, Any], model: Sam) -> dict[str, Any]:
    """What the cached embeddings and pairs depend on: the model and the prepared sets by
    content (`sum_jax.fingerprint`), and the settings that change a pair."""
    if config.get("checkpoint"):
        model_fp = model_fingerprint(config["checkpoint"])
    else:
        model_fp = fingerprint.arrays_hash(nnx.to_pure_dict(nnx.state(model)))
    refs = [r.strip() for r in str(config["dataset"]).split(",") if r.strip()]
    data_dir = config["data_dir"]
    return {
        "format": CACHE_FORMAT,
        "model": model_fp,
        "data": {r: builder.prepared_fingerprint(data_dir, sources.parse_ref(r)[0]) for r in refs},
        "dataset": str(config["dataset"]),
        "max_images": config.get("max_images"),
        "seed": int(config["seed"]),
        "img_size": model.config.img_size,
        "pairs": {k: config["pairs"][k] for k in sorted(config["pairs"]) if k != "masks_per_call"},
    }


def _check_cache(cache: Path, settings: dict[str, Any]) -> None:
    path = cache / "settings.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            changed = fingerprint.changes(old, settings)
            raise ValueError(
                f"{cache} holds pairs made from another model, data or settings "
                f"({'; '.join(changed)}): use a new --workdir, or delete that folder and the "
                "checkpoints to rebuild them"
            )
    else:
        atomic_write(path, json.dumps(settings, indent=2) + "\n")


def open_dataset(config: Mapping[str, Any]):
    """The labelled split(s) of `config.dataset` ("name:split", comma separated for several)."""
    if not config["data_dir"]:
        raise ValueError("config.data_dir is not set (the root of prepared datasets)")
    refs = [r for r in str(config["dataset"]).split(",") if r.strip()]
    if not refs:
        raise ValueError("config.dataset is empty: give e.g. 'dis5k:train'")
    return sources.open_sources(config["data_dir"], refs)


def _image_pairs(
    model: Sam, record: Mapping[str, Any], index: int, pair_cfg: Mapping[str, Any], seed: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Embedding `[1, h, w, C]` and the surviving pairs of one image."""
    s, low = model.config.img_size, model.config.low_res_size
    graphdef, state = nnx.split(model)
    image = image_ops.decode_image(record["image"])
    size = image.shape[:2]
    resized = transforms.resize_image(image, s)
    input_size = resized.shape[:2]
    embedding = encode_images(
        graphdef,
        state,
        jnp.asarray(transforms.pad_image(resized, s)[None]),
        jnp.asarray([input_size]),
    )
    gts = sources.decode_masks(record)
    rows: dict[str, list] = {k: [] for k in ("logits_q", "targets", "points", "boxes", "gt_index",
                                             "sam_iou")}  # fmt: skip
    counts = Counter()
    q = int(pair_cfg["masks_per_call"])
    for start in range(0, len(gts), q):
        chunk = gts[start : start + q]
        points = np.zeros((q, 2), np.float32)
        gt = np.zeros((q,) + size, bool)
        has_point = np.zeros(q, bool)
        for j, m in enumerate(chunk):
            k = start + j
            p = prompt_point(m, pair_cfg["point"], np.random.default_rng([seed, index, k]))
            if p is not None:
                points[j], gt[j], has_point[j] = p, m, True
        low_res, pred_iou, stab, gt_iou, masks = jax.device_get(
            _sam_outputs(
                graphdef,
                state,
                embedding,
                jnp.asarray(transforms.apply_coords(points, size, s), jnp.float32),
                jnp.asarray(gt),
                input_size=tuple(input_size),
                original_size=tuple(size),
                img_size=s,
                offset=float(pair_cfg["stability_score_offset"]),
            )
        )
        n = len(chunk)
        best = choose_best_output(gt_iou[:n])
        chosen = masks[np.arange(n), best]  # [n, H, W]
        # An empty GT has no point: it counts as an empty SAM mask, dropped by the first filter.
        area = np.where(has_point[:n], chosen.sum(axis=(-2, -1)), 0)
        rows_n = np.arange(n)
        keep, c = filter_pairs(
            gt_iou[rows_n, best],
            pred_iou[rows_n, best],
            stab[rows_n, best],
            area,
            min_iou=float(pair_cfg["min_iou"]),
            pred_iou_thresh=float(pair_cfg["pred_iou_thresh"]),
            stability_score_thresh=float(pair_cfg["stability_score_thresh"]),
            image_area=float(chosen.shape[-2] * chosen.shape[-1]),
            max_area_frac=float(pair_cfg.get("max_area_frac", 0.0)),
        )
        counts.update(c)
        for j in np.flatnonzero(keep):
            rows["logits_q"].append(plf.quantize_logits(low_res[j, best[j]]))
            rows["targets"].append(image_ops.mask_to_frame(gt[j], s, low))
            rows["points"].append(transforms.apply_coords(points[j], size, s))
            rows["boxes"].append(
                transforms.apply_boxes(np.asarray(mask_to_box(chosen[j])[0]), size, s)
            )
            rows["gt_index"].append(start + j)
            rows["sam_iou"].append(gt_iou[j, best[j]])
    shapes = {"logits_q": (0, low, low), "targets": (0, low, low), "points": (0, 2),
              "boxes": (0, 4), "gt_index": (0,), "sam_iou": (0,)}  # fmt: skip
    dtypes = {"logits_q": np.uint8, "targets": np.uint8, "points": np.float32,
              "boxes": np.float32, "gt_index": np.int64, "sam_iou": np.float32}  # fmt: skip
    out = {
        k: np.asarray(v, dtypes[k]) if v else np.zeros(shapes[k], dtypes[k])
        for k, v in rows.items()
    }
    out["counts"] = np.array([counts[k] for k in FILTER_STAGES], np.int64)
    out["sizes"] = np.array([size, input_size], np.int64)
    return np.asarray(embedding), out


_PAIR_KEYS = frozenset(("logits_q", "targets", "points", "boxes", "gt_index", "sam_iou",
                        "counts", "sizes"))  # fmt: skip


def _cached_image_ok(path: Path, emb_path: Path) -> bool:
    """Whether an image's cached pair and embedding files are complete and readable. A file
    that is there but damaged (a full disk, a copy cut short) is reported and rebuilt, so a
    resumed run never trains on what it cannot read."""
    if not (path.exists() and emb_path.exists()):
        return False
    try:
        data = _load_image_pairs(path)
        embedding = np.load(emb_path, mmap_mode="r")
        ok = _PAIR_KEYS <= data.keys() and embedding.ndim == 3 and embedding.size > 0
        ok = ok and all(len(data[k]) == len(data["gt_index"]) for k in ("logits_q", "targets"))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        log.warning("cached refiner pairs %s are unreadable (%s); rebuilding them", path, e)
        return False
    if not ok:
        log.warning("cached refiner pairs %s are incomplete; rebuilding them", path)
    return ok


def build_pairs(
    config: Mapping[str, Any], model: Sam, cache: Path, *, progress: bool = True
) -> PairSet:
    """Embeds every image of the split once and builds its pairs, reusing cached files."""
    source = open_dataset(config)
    n = len(source) if config.get("max_images") is None else min(len(source), config["max_images"])
    if n == 0:
        raise ValueError(f"dataset {config['dataset']!r} has no images")
    _check_cache(cache, _cache_settings(config, model))
    image_index, slot, counts = [], [], Counter()
    for index in tqdm(range(n), desc="refiner pairs", disable=not progress, unit="img"):
        path, emb_path = _pairs_path(cache, index), _embedding_path(cache, index)
        if not _cached_image_ok(path, emb_path):
            record = sources.normalize_record(source[index])
            try:
                embedding, pairs = _image_pairs(
                    model, record, index, config["pairs"], int(config["seed"])
                )
            except ValueError as e:
                raise ValueError(f"{config['dataset']} image {record['image_id']!r}: {e}") from e
            _save_npy(emb_path, embedding[0])
            _save_npz(path, **pairs)  # last: its presence marks the image done
        data = _load_image_pairs(path)
        counts.update(dict(zip(FILTER_STAGES, data["counts"].tolist())))
        k = len(data["gt_index"])
        image_index += [index] * k
        slot += range(k)
    pairs = PairSet(cache, np.asarray(image_index, np.int64), np.asarray(slot, np.int64),
                    list(range(n)), counts)  # fmt: skip
    if not len(pairs):
        left = ", ".join(f"{k}: {counts[k]}" for k in FILTER_STAGES)
        raise ValueError(
            f"no pair survived the filters on {n} images (masks left after each filter: {left}). "
            "Lower the threshold of the filter that removed them (config.pairs.min_iou, "
            "pred_iou_thresh, stability_score_thresh; 0 disables one), or check the checkpoint"
        )
    return pairs


def make_batch(pairs: PairSet, ids: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """The host arrays of pairs `ids` (rows with `valid` false are zeroed padding)."""
    rows = []
    for i, ok in zip(ids, valid):
        index = int(pairs.image_index[i])
        data = _load_image_pairs(_pairs_path(pairs.cache, index))
        j = int(pairs.slot[i])
        emb = np.load(_embedding_path(pairs.cache, index), mmap_mode="r")
        rows.append((data, j, emb, ok))
    first_data, _, first_emb, _ = rows[0]
    low = first_data["targets"].shape[-1]
    b = len(rows)
    batch = {
        "embedding": np.zeros((b,) + first_emb.shape, np.float32),
        "mask_inputs": np.zeros((b, low, low), np.float32),
        "targets": np.zeros((b, low, low), np.uint8),
        "points": np.zeros((b, 2), np.float32),
        "boxes": np.zeros((b, 4), np.float32),
        # (h, w) of the resized image inside the padded input frame: the losses count only
        # the grid pixels over it (eq. 1's "m pixels of an input image").
        "image_size": np.zeros((b, 2), np.int32),
        "valid": np.asarray(valid, bool),
    }
    for r, (data, j, emb, ok) in enumerate(rows):
        if not ok:
            continue
        batch["embedding"][r] = emb
        batch["mask_inputs"][r] = plf.dequantize_logits(data["logits_q"][j])
        batch["targets"][r] = data["targets"][j]
        batch["points"][r] = data["points"][j]
        batch["boxes"][r] = data["boxes"][j]
        batch["image_size"][r] = data["sizes"][1]
    return batch


# Training ----------------------------------------------------------------------------------


def _trainable_only(tree: Any, plan: optim.ParamPlan) -> Any:
    """Frozen leaves replaced by None: checkpoints need not hold the (large) frozen encoder."""
    return optim.map_with_paths(lambda p, x: None if plan.frozen[p] else x, tree)


def _check_plan(plan: optim.ParamPlan) -> None:
    moving = sorted(p for p, f in plan.frozen.items() if not f and p.startswith("image_encoder."))
    if moving:
        raise ValueError(
            f"the refinement module trains only the prompt encoder and mask decoder (App. D), "
            f"but config.optimizer.param_groups leaves {moving[:3]}... trainable: start from "
            "configs/refine.py's groups (image_encoder frozen)"
        )


def evaluate_holdout(
    pairs: PairSet,
    params: Any,
    model_state: Any,
    model_def: ModelDef,
    config: Mapping[str, Any],
    img_size: int,
) -> dict[str, Any]:
    """Mean IoU / boundary IoU of SAM's and the refined masks against the GT, per pair, at
    the GT's original resolution (and IoU at the low-res frame `L`)."""
    if not len(pairs):
        return {"pairs": 0}
    b = int(config["eval_batch_size"])
    refined = []
    for start in range(0, len(pairs), b):
        ids = np.arange(start, start + b)
        valid = ids < len(pairs)
        batch = make_batch(pairs, np.where(valid, ids, 0), valid)
        out = _refine_jit(params, model_state, jax.tree.map(jnp.asarray, batch),
                          model_def=model_def)  # fmt: skip
        refined.append(np.asarray(out)[valid])
    refined = np.concatenate(refined)
    source = open_dataset(config)
    scores: dict[str, list[float]] = {k: [] for k in ("sam_iou", "sam_biou", "sam_iou_low",
                                                      "ref_iou", "ref_biou", "ref_iou_low")}  # fmt: skip
    for i in range(len(pairs)):
        index, j = int(pairs.image_index[i]), int(pairs.slot[i])
        data = _load_image_pairs(_pairs_path(pairs.cache, index))
        (h, w), input_size = data["sizes"].tolist()
        record = sources.normalize_record(source[index])
        gt = sources.decode_masks(record, [int(data["gt_index"][j])])[0]
        sam_logits = plf.dequantize_logits(data["logits_q"][j])
        both = np.stack([sam_logits, refined[i]])
        full = np.asarray(_postprocess(jnp.asarray(both), tuple(input_size), (h, w), img_size)) > 0
        target = data["targets"][j]
        for name, m, lr in (("sam", full[0], sam_logits), ("ref", full[1], refined[i])):
            scores[f"{name}_iou"].append(metrics.iou(m, gt))
            scores[f"{name}_biou"].append(metrics.boundary_iou(m, gt))
            scores[f"{name}_iou_low"].append(metrics.iou(lr > 0, target))
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    return {
        "pairs": len(pairs),
        "images": len(np.unique(pairs.image_index)),
        "sam": {"iou": mean["sam_iou"], "boundary_iou": mean["sam_biou"],
                "iou_low_res": mean["sam_iou_low"]},
        "refined": {"iou": mean["ref_iou"], "boundary_iou": mean["ref_biou"],
                    "iou_low_res": mean["ref_iou_low"]},
    }  # fmt: skip


@functools.lru_cache(maxsize=4)
def _training_setup(
    model_def: ModelDef, params_def: Any, optimizer_json: str, num_steps: int, loss_items: tuple
) -> tuple[optax.GradientTransformation, optim.ParamPlan, Any]:
    """`(tx, plan, jitted step)`, memoised on the settings, so that several runs in one
    process (tests, notebooks) share one compilation of the step. `params_def` is the
    tree structure of the (pure dict) parameters."""
    paths_only = jax.tree.unflatten(params_def, [0] * params_def.num_leaves)
    opt_config = ml_collections.ConfigDict(json.loads(optimizer_json))
    tx, plan = optim.make_optimizer(paths_only, opt_config, num_steps)
    step = jax.jit(
        functools.partial(
            refiner_step, model_def=model_def, tx=tx, plan=plan, loss_kwargs=dict(loss_items)
        ),
        donate_argnums=0,
    )
    return tx, plan, step


def train_refiner(
    config: Mapping[str, Any],
    workdir: str | Path,
    *,
    model: Sam | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Builds the pairs, trains (or resumes), exports the module and writes the report.

    Args:
      config: `configs/refine.py`'s config.
      workdir: holds `cache/`, `checkpoints/`, `refiner/` (unless `config.output`),
        `report.json` and `loss.png`.
      model: the frozen SAM to start from (default: `load_model(config.checkpoint)`).
      stop_after: stop (with a checkpoint) after this many steps in total, as if killed;
        a later call resumes. Nothing is exported then.
      progress: show progress bars.

    Returns:
      The report (also written to `report.json`), or a short status when stopped early.
    """
    cloud.require_local(workdir, "workdir", "the refiner's cache is read as local files")
    workdir = Path(workdir).absolute()
    for key in ("optimizer", "loss"):
        if key not in config:
            raise ValueError(f"config.{key} is missing: start from configs/refine.py")
    if model is None:
        model = load_model(config["checkpoint"])
    tc = config["train"]
    num_steps, batch_size = int(tc["num_steps"]), int(tc["batch_size"])
    seed = int(config["seed"])

    model_def, params, model_state = ModelDef.split(model)
    tx, plan, step_fn = _training_setup(
        model_def,
        jax.tree.structure(params),
        json.dumps(config["optimizer"].to_dict(), sort_keys=True),
        num_steps,
        tuple(sorted(losses.loss_kwargs_from_config(config["loss"]).items())),
    )
    _check_plan(plan)  # before the (long) SAM pass over the data

    pairs = build_pairs(config, model, workdir / "cache", progress=progress)
    train_images, holdout_images = holdout_split(
        len(pairs.images), float(config["holdout_fraction"]), seed
    )
    train_pairs, holdout_pairs = pairs.subset(train_images), pairs.subset(holdout_images)
    if not len(train_pairs):
        raise ValueError(
            f"all {len(pairs)} pairs are on held-out images: lower config.holdout_fraction "
            f"({config['holdout_fraction']}) or use more images"
        )
    log.info("pairs: %d train (%d images), %d held out (%d images); masks left after "
             "each filter: %s", len(train_pairs), len(train_images), len(holdout_pairs),
             len(holdout_images), dict(pairs.counts))  # fmt: skip

    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=jax.tree.map(jnp.asarray, params),
        model_state=jax.tree.map(jnp.asarray, model_state),
        opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(seed)),
    )
    history = np.full(num_steps, np.nan, np.float32)

    checkpoints = TrainingCheckpoints(
        workdir / "checkpoints", tc["keep_checkpoints"], asynchronous=False
    )
    with checkpoints:
        latest = checkpoints.latest_step()
        if latest is not None:
            target = {
                "step": np.zeros((), np.int32),
                "params": _trainable_only(state.params, plan),
                "opt_state": state.opt_state,
                "loss": history,
            }
            restored, _ = checkpoints.restore(target)
            # Frozen parameters were not saved: they come from config.checkpoint again.
            trained = {optim.path_str(kp): v
                       for kp, v in jax.tree.leaves_with_path(restored["params"])}  # fmt: skip
            # Through host numpy: the restored state is then laid out exactly as a fresh one,
            # and the step's compilation is reused instead of redone for other placements.
            fresh = lambda x: jnp.asarray(np.asarray(x))
            state = state.replace(
                step=jnp.asarray(np.asarray(restored["step"]), jnp.int32),
                params=optim.map_with_paths(
                    lambda p, x: fresh(trained[p]) if p in trained else x, state.params
                ),
                opt_state=jax.tree.map(fresh, restored["opt_state"]),
            )
            history = np.asarray(restored["loss"], np.float32).copy()
            log.info("resumed from step %d in %s", latest, checkpoints.directory)
        start = int(state.step)
        end = num_steps if stop_after is None else min(num_steps, int(stop_after))

        def save(step: int) -> None:
            checkpoints.save(
                step,
                {
                    "step": np.asarray(step, np.int32),
                    "params": _trainable_only(state.params, plan),
                    "opt_state": state.opt_state,
                    "loss": history,
                },
            )

        t0, t_last, s_last = time.perf_counter(), time.perf_counter(), start
        bar = tqdm(range(start, end), desc="refiner", disable=not progress, unit="step",
                   initial=start, total=num_steps)  # fmt: skip
        for step in bar:
            ids, valid = batch_ids(step, len(train_pairs), batch_size, seed)
            batch = make_batch(train_pairs, ids, valid)
            state, m = step_fn(state, jax.tree.map(jnp.asarray, batch))
            m = jax.device_get(m)
            if not np.isfinite(m["loss"]):
                raise FloatingPointError(f"loss is {m['loss']} at step {step}: lower the lr")
            history[step] = m["loss"]
            done = step + 1
            bar.set_postfix(loss=f"{m['loss']:.4f}", iou=f"{m['iou_refined']:.3f}")
            if done % int(tc["log_every"]) == 0 or done == end:
                now = time.perf_counter()
                rate = (done - s_last) / max(now - t_last, 1e-9)
                log.info("step %d/%d loss %.4f (focal %.4f dice %.4f iou_mse %.4f) iou refined "
                         "%.3f vs sam %.3f, %.2f steps/s", done, num_steps, m["loss"], m["focal"],
                         m["dice"], m["iou_mse"], m["iou_refined"], m["iou_sam"], rate)  # fmt: skip
                t_last, s_last = now, done
            if done % int(tc["checkpoint_every"]) == 0 or done == end:
                save(done)
        seconds = time.perf_counter() - t0
    if end < num_steps:
        return {"stopped_at": end, "num_steps": num_steps}

    output = as_path(config["output"] or workdir / "refiner", "config.output")
    save_sam(model_def.merge(state.params, state.model_state), output)
    steps = np.arange(1, len(history) + 1)
    plot_curves(
        workdir / "loss.png", {"loss": (steps, history)}, ylabel="20 focal + dice + IoU MSE",
        title="mask-refinement module", smooth=True,
    )  # fmt: skip
    report = {
        "model_dir": str(output),
        "checkpoint": str(config["checkpoint"]),
        "dataset": str(config["dataset"]),
        "pairs": {
            "images": len(pairs.images),
            "train_images": len(train_images),
            "holdout_images": len(holdout_images),
            "train_pairs": len(train_pairs),
            "holdout_pairs": len(holdout_pairs),
            "masks_after_filter": {k: int(pairs.counts[k]) for k in FILTER_STAGES},
        },
        "train": {
            "num_steps": num_steps,
            "batch_size": batch_size,
            "steps_this_run": end - start,
            "seconds_this_run": seconds,
            "loss_first": float(history[0]),
            "loss_last": float(history[-1]),
        },
        "holdout": evaluate_holdout(
            holdout_pairs,
            state.params,
            state.model_state,
            model_def,
            config,
            model.config.img_size,
        ),
    }
    atomic_write(workdir / "report.json", json.dumps(report, indent=2) + "\n")
    h = report["holdout"]
    if h.get("pairs"):
        log.info("held out (%d pairs): IoU sam %.4f -> refined %.4f, boundary IoU %.4f -> %.4f",
                 h["pairs"], h["sam"]["iou"], h["refined"]["iou"], h["sam"]["boundary_iou"],
                 h["refined"]["boundary_iou"])  # fmt: skip
    return report
