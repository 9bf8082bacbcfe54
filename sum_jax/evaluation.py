"""Interactive-segmentation evaluation (§4.1, App. B.3, F.2): rounds on device, reports on host.

`evaluate(config, model, examples, workdir)` runs every ground-truth mask of every example
through `R` interactive rounds and writes per-object records, per-dataset / per-task / overall
means, NoC@85/90, plots and example images (`sum_jax.reports`).

Protocol (one trajectory per mask, per *first-prompt protocol* and per *mode*):
- Protocols: `point` (first click at the ground truth's deepest pixel), `box` (the GT's tight
  box first, kept in every later round, clicks from round 2), `boundary` (first click at the
  row-major median of the GT's 10 px boundary band, App. F.2). Later clicks always follow
  `sum_jax.clicker`: deepest pixel of the deeper error region, clicked pixels excluded.
- Round 1 decodes three outputs. Mode `oracle` keeps the one with the highest IoU against the
  GT; mode `single` keeps a token fixed in advance (`single_output_token`: 0 is SAM's
  single-mask token, 1..3 the multimask outputs; the paper's "fourth output token" is 3).
- Rounds 2..R: the single-mask token, all clicks so far, the previous round's low-res logits
  as mask prompt (and the box for `box`). The task prompt (the example's task id) is given
  in round 1 only, or in every round with `continuous_task_prompt`.
- A mask with nothing left to click (perfect prediction) gets no new click that round.
  Empty ground-truth masks are skipped (and counted) since no prompt can be derived.

On device. The image is encoded once; then one jitted function runs all rounds for a chunk
of `masks_per_batch` masks and both modes (`2 x masks_per_batch` decoder queries) with
`jax.lax.scan`: decode, upscale to the GT's original resolution, threshold at 0, count IoU and
boundary-IoU pixels, click (`sum_jax.clicker_jax`). Shapes are static: the GT sits in a frame
padded up to a size bucket (`bucket_sizes`), so one compilation serves many image sizes, and
the postprocessing (bilinear to `S x S`, crop to the resized image, bilinear to `H x W`, as
`sum_jax.transforms.postprocess_masks` and the official `Sam.postprocess_masks`) is the
separable linear map `A_y @ logits @ A_x^T` whose matrices are built on host for each image
size (zero rows in the padding). Only pixel counts and clicks come back to the host; the
ratios are formed in float64 there.

The decoder is abstract (`Decoder`), so tests can run the protocol with a stand-in predictor
whose output is known in closed form.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import time
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sum_jax import clicker_jax, metrics, transforms
from sum_jax.checkpointing import load_model
from sum_jax.models.prompt_encoder import LABEL_ABSENT
from sum_jax.transforms import preprocess_shape

Array = jax.Array
MODES = ("oracle", "single")
PROTOCOLS = ("point", "box", "boundary")
TASK_NAMES = {0: "unspecified", 1: "salient_object", 2: "entity", 3: "part"}

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------
# The protocol on device.


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Static settings of one evaluation run (hashable: part of the jit cache key)."""

    first_prompt: str = "point"  # one of PROTOCOLS
    num_rounds: int = 6  # rounds simulated (>= the NoC budget when NoC is reported)
    single_output_token: int = 3  # 0: single-mask token; 1..3: multimask outputs
    use_task_prompt: bool = False
    continuous_task_prompt: bool = False
    boundary_band: float = 10.0

    def __post_init__(self):
        if self.first_prompt not in PROTOCOLS:
            raise ValueError(f"first_prompt {self.first_prompt!r} not in {PROTOCOLS}")
        if not 0 <= self.single_output_token <= 3:
            raise ValueError("single_output_token must be 0 (single-mask token) or 1..3")
        if self.num_rounds < 1:
            raise ValueError("num_rounds must be >= 1")


class Prompts(NamedTuple):
    """Decoder prompts for `Q` queries, in original-image pixel coordinates."""

    points_yx: Array  # i32[Q, P, 2]
    labels: Array  # i32[Q, P]: 1 positive, 0 negative, -2 absent
    boxes: Array | None  # i32[Q, 4] (x0, y0, x1, y1), max inclusive, or None
    box_valid: Array | None  # bool[Q]
    mask_inputs: Array | None  # f32[Q, l, l] previous low-res logits, or None
    task_ids: Array | None  # i32[Q], negative for none


class Decoder(NamedTuple):
    """What the protocol needs from a model; both functions are traced inside `jax.jit`.

    decode(params, context, prompts, multimask) -> low-res logits `f32[Q, M, l, l]`
      (`M = 3` if multimask else 1); `context` is the per-image pytree (image embedding,
      resize matrices, ...), `params` the model state.
    upscale(context, logits f32[..., l, l]) -> logits `f32[..., Hb, Wb]` at the GT's original
      resolution in the padded frame, <= 0 in the padding.
    """

    decode: Callable[..., Array]
    upscale: Callable[[Any, Array], Array]


class RoundOutputs(NamedTuple):
    """Per round `r`, mode `m` (oracle, single), query `q`; `[R, 2, Q]` unless noted."""

    inter: Array  # IoU intersection (pixels)
    union: Array
    b_inter: Array  # boundary-IoU intersection
    b_union: Array
    click_yx: Array  # i32[R, 2, Q, 2]: the click added in round r (original pixels)
    click_label: Array  # i32: 1 / 0, or -2 when no click was added that round
    oracle_index: Array  # i32[Q]: round-1 output chosen by the oracle (0..2)
    first_ious: Array  # f32[Q, 3]: round-1 IoU of the three outputs
    boxes: Array  # i32[Q, 4]: the first-round box (box protocol), else zeros
    logits: Array | None  # f32[R, 2, Q, l, l] when asked for (examples), else None


def _first_prompt(gt: Array, protocol: Protocol) -> tuple[Array, Array, Array, Array]:
    """Round-1 click `yx [Q, 2]`, `label [Q]`, box `[Q, 4]`, `box_valid [Q]`."""
    q = gt.shape[0]
    no_box = jnp.zeros((q, 4), jnp.int32), jnp.zeros((q,), bool)
    if protocol.first_prompt == "box":
        box, valid = clicker_jax.mask_box(gt)
        return jnp.zeros((q, 2), jnp.int32), jnp.full((q,), LABEL_ABSENT, jnp.int32), box, valid
    if protocol.first_prompt == "boundary":
        yx, valid = clicker_jax.boundary_click(gt, protocol.boundary_band)
        return yx, jnp.where(valid, 1, LABEL_ABSENT).astype(jnp.int32), *no_box
    # next_click(gt, zeros, ones): the deepest GT pixel. Written out so that XLA does not
    # constant-fold the distance transform of the all-False false-positive region.
    depth, yx = clicker_jax.deepest(gt)
    label = jnp.where(depth > 0, 1, LABEL_ABSENT).astype(jnp.int32)
    return yx, label, *no_box


def _unclick(not_clicked: Array, yx: Array, label: Array) -> Array:
    """Marks the clicked pixels `yx [Q, 2]` (where `label` is not absent) as clicked."""
    h, w = not_clicked.shape[-2:]
    hit = (jnp.arange(h)[:, None] == yx[:, 0, None, None]) & (
        jnp.arange(w)[None, :] == yx[:, 1, None, None]
    )
    return not_clicked & ~(hit & (label != LABEL_ABSENT)[:, None, None])


def interactive_rounds(
    decoder: Decoder,
    params: Any,
    context: Any,
    gt: Array,
    dilation: Array,
    task_id: Array,
    *,
    protocol: Protocol,
    keep_logits: bool = False,
) -> RoundOutputs:
    """All rounds for `Q` masks of one image, both modes. Traceable (jit it).

    Args:
      decoder: the model interface (see `Decoder`).
      params: model state handed to `decoder.decode`.
      context: per-image pytree handed to the decoder (embedding, resize matrices).
      gt: bool `[Q, Hb, Wb]`: GT masks in the padded frame (False in the padding; all-False
        masks are padding and produce no prompts).
      dilation: i32 scalar, the boundary-IoU band width of the original image size.
      task_id: i32 scalar, the task prompt (used when `protocol.use_task_prompt`).
      protocol: static settings.
      keep_logits: also return every round's chosen low-res logits (for example images).
    """
    q = gt.shape[0]
    r_total, p_slots = protocol.num_rounds, protocol.num_rounds
    tasks = jnp.full((q,), task_id if protocol.use_task_prompt else -1, jnp.int32)
    gt2 = jnp.concatenate([gt, gt])  # both modes as one batch of 2Q queries

    gt_band2 = gt2 & ~clicker_jax.erode(gt2, dilation)  # the GT's boundary, once

    def counts(pred: Array) -> tuple[Array, ...]:
        """IoU and boundary-IoU pixel counts of `pred [2Q, Hb, Wb]` against the GT."""
        inter, union = clicker_jax.iou_counts(pred, gt2)
        pred_band = pred & ~clicker_jax.erode(pred, dilation)
        b_inter, b_union = clicker_jax.iou_counts(pred_band, gt_band2)
        return inter, union, b_inter, b_union

    # Round 1: the first prompt, three outputs (and token 0 when that is the fixed output).
    yx0, label0, box, box_valid = _first_prompt(gt, protocol)
    points = jnp.zeros((q, p_slots, 2), jnp.int32).at[:, 0].set(yx0)
    labels = jnp.full((q, p_slots), LABEL_ABSENT, jnp.int32).at[:, 0].set(label0)
    use_box = protocol.first_prompt == "box"
    prompts = Prompts(
        points, labels, box if use_box else None, box_valid if use_box else None, None, tasks
    )
    multi = decoder.decode(params, context, prompts, True)  # [Q, 3, l, l]
    multi_pred = decoder.upscale(context, multi) > 0  # [Q, 3, Hb, Wb]
    inter, union = clicker_jax.iou_counts(multi_pred, gt[:, None])
    first_ious = clicker_jax.ratio(inter, union)
    oracle = jnp.argmax(first_ious, axis=-1)  # ties: the first output
    oracle_logits = jnp.take_along_axis(multi, oracle[:, None, None, None], axis=1)[:, 0]
    if protocol.single_output_token == 0:
        single_logits = decoder.decode(params, context, prompts, False)[:, 0]
    else:
        single_logits = multi[:, protocol.single_output_token - 1]
    logits = jnp.concatenate([oracle_logits, single_logits])  # [2Q, l, l]
    pred = decoder.upscale(context, logits) > 0
    first = counts(pred)

    two = lambda x: jnp.concatenate([x, x])
    points, labels = two(points), two(labels)
    boxes2 = two(box) if use_box else None
    box_valid2 = two(box_valid) if use_box else None
    tasks2 = two(tasks) if protocol.continuous_task_prompt else two(jnp.full((q,), -1, jnp.int32))
    not_clicked = _unclick(jnp.ones_like(gt2), two(yx0), two(label0))

    def step(carry, r):
        points, labels, not_clicked, pred, logits = carry
        yx, positive, valid = clicker_jax.next_click(gt2, pred, not_clicked)
        label = jnp.where(valid, positive.astype(jnp.int32), LABEL_ABSENT)
        points = points.at[:, r].set(yx)
        labels = labels.at[:, r].set(label)
        not_clicked = _unclick(not_clicked, yx, label)
        prompts = Prompts(points, labels, boxes2, box_valid2, logits, tasks2)
        logits = decoder.decode(params, context, prompts, False)[:, 0]
        pred = decoder.upscale(context, logits) > 0
        out = counts(pred) + (yx, label) + ((logits,) if keep_logits else ())
        return (points, labels, not_clicked, pred, logits), out

    carry = (points, labels, not_clicked, pred, logits)
    _, rest = jax.lax.scan(step, carry, jnp.arange(1, r_total))

    def stack(first_value, later):  # [2Q, ...] and [R-1, 2Q, ...] -> [R, 2, Q, ...]
        x = jnp.concatenate([first_value[None], later])
        return x.reshape((r_total, 2, q) + x.shape[2:])

    first_click = (two(yx0), two(label0))
    return RoundOutputs(
        *(stack(a, b) for a, b in zip(first, rest[:4])),
        click_yx=stack(first_click[0], rest[4]),
        click_label=stack(first_click[1], rest[5]),
        oracle_index=oracle.astype(jnp.int32),
        first_ious=first_ious,
        boxes=box,
        logits=stack(logits, rest[6]) if keep_logits else None,
    )


# ----------------------------------------------------------------------------------------
# SAM on device: resize matrices and the decoder adapter.


def bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """float64 `[out, in]`: PyTorch's `F.interpolate(mode="bilinear", align_corners=False)`
    (no antialiasing) along one axis, as a matrix."""
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam = src - i0
    m = np.zeros((out_size, in_size))
    np.add.at(m, (np.arange(out_size), i0), 1.0 - lam)
    np.add.at(m, (np.arange(out_size), i1), lam)
    return m


@functools.lru_cache(maxsize=64)
def postprocess_matrices(
    height: int, width: int, img_size: int, low_res: int, padded: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """float32 `A_y [Hb, l]`, `A_x [Wb, l]` with `A_y @ logits @ A_x^T` = SAM's
    `postprocess_masks(logits, input_size, (height, width))`, zero rows beyond the image."""
    rh, rw = preprocess_shape(height, width, img_size)
    up = bilinear_matrix(img_size, low_res)
    ay = bilinear_matrix(height, rh) @ up[:rh]
    ax = bilinear_matrix(width, rw) @ up[:rw]
    ay = np.pad(ay, ((0, padded[0] - height), (0, 0)))
    ax = np.pad(ax, ((0, padded[1] - width), (0, 0)))
    return ay.astype(np.float32), ax.astype(np.float32)


def _sam_decode(graphdef, params, context, prompts: Prompts, multimask: bool) -> Array:
    model = nnx.merge(graphdef, params)
    sy, sx = context["scale"][0], context["scale"][1]  # resized / original, per axis
    pts = prompts.points_yx.astype(jnp.float32)
    points_xy = jnp.stack([pts[..., 1] * sx, pts[..., 0] * sy], axis=-1)
    boxes = None
    if prompts.boxes is not None:
        b = prompts.boxes.astype(jnp.float32)
        boxes = b * jnp.stack([sx, sy, sx, sy])
    mask_inputs = None if prompts.mask_inputs is None else prompts.mask_inputs[None]
    logits, _ = model.decode(
        context["embedding"],
        points_xy[None],
        prompts.labels[None],
        None if boxes is None else boxes[None],
        None if prompts.box_valid is None else prompts.box_valid[None],
        mask_inputs,
        None,
        multimask_output=multimask,
        task_ids=None if prompts.task_ids is None else prompts.task_ids[None],
    )
    return logits[0]


def _matrix_upscale(context, logits: Array) -> Array:
    hp = jax.lax.Precision.HIGHEST  # TF32 would move logits across 0 on GPUs
    x = jnp.einsum("hl,...lm->...hm", context["ay"], logits, precision=hp)
    return jnp.einsum("...hm,wm->...hw", x, context["ax"], precision=hp)


@functools.lru_cache(maxsize=16)
def sam_decoder(graphdef) -> Decoder:
    """The `Decoder` of an NNX `Sam` split into `(graphdef, params)`; one object per graph
    structure, so that compiled rounds are shared by models of the same architecture."""
    return Decoder(functools.partial(_sam_decode, graphdef), _matrix_upscale)


@functools.lru_cache(maxsize=16)
def sam_encoder(graphdef) -> Callable[[Any, Array], Array]:
    """Jitted `(params, image f32[S, S, 3]) -> embedding [1, h, w, C]`, one per structure."""

    @jax.jit
    def encode(params, image):
        return nnx.merge(graphdef, params).encode_image(image[None])

    return encode


@functools.lru_cache(maxsize=64)
def compiled_rounds(decoder: Decoder, protocol: Protocol, keep_logits: bool) -> Callable:
    """`interactive_rounds` jitted for one decoder and protocol (XLA then caches per shape)."""
    return jax.jit(
        functools.partial(interactive_rounds, decoder, protocol=protocol, keep_logits=keep_logits)
    )


# ----------------------------------------------------------------------------------------
# Host side: examples in, records out.


def bucket(size: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket >= size (beyond the largest: the next multiple of it)."""
    for b in sorted(buckets):
        if size <= b:
            return b
    top = max(buckets)
    return int(math.ceil(size / top) * top)


@dataclasses.dataclass
class EvalSettings:
    """Host-side settings read from the config (see `configs/eval.py`)."""

    protocols: tuple[str, ...] = ("point",)
    num_rounds: int = 6
    noc_max_clicks: int = 20
    noc_thresholds: tuple[float, ...] = (0.85, 0.90)
    single_output_token: int = 3
    use_task_prompt: bool = True
    continuous_task_prompt: bool = False
    boundary_band: float = 10.0
    dilation_ratio: float = 0.02
    masks_per_batch: int = 8
    bucket_sizes: tuple[int, ...] = (256, 512, 768, 1024, 1536, 2048, 3072, 4096)
    num_examples: int = 4
    max_images: int = -1

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EvalSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: config[k] for k in known if k in config}
        if isinstance(values.get("protocols"), str):
            values["protocols"] = tuple(p.strip() for p in values["protocols"].split(",") if p)
        for k in ("protocols", "noc_thresholds", "bucket_sizes"):
            if k in values:
                values[k] = tuple(values[k])
        unknown = set(values.get("protocols", ())) - set(PROTOCOLS)
        if unknown:
            raise ValueError(f"unknown protocols {sorted(unknown)}; choose from {PROTOCOLS}")
        return cls(**values)

    @property
    def simulated_rounds(self) -> int:
        return max(self.num_rounds, self.noc_max_clicks if self.noc_thresholds else 0)

    def protocol(self, first_prompt: str) -> Protocol:
        return Protocol(
            first_prompt=first_prompt,
            num_rounds=self.simulated_rounds,
            single_output_token=self.single_output_token,
            use_task_prompt=self.use_task_prompt,
            continuous_task_prompt=self.continuous_task_prompt,
            boundary_band=self.boundary_band,
        )


class ImageRunner(typing.Protocol):
    """A model as the host loop sees it: `decoder` + `params` for `interactive_rounds`, and
    `prepare(example, padded (Hb, Wb)) -> context`, called once per image (SAM encodes the
    image there; a stand-in predictor may read the example's masks)."""

    decoder: Decoder
    params: Any

    def prepare(self, example: Mapping[str, Any], padded: tuple[int, int]) -> Any: ...


class SamRunner:
    """Runs an NNX `Sam`: the image encoded once per image with a jitted encoder."""

    def __init__(self, model):
        self.config = model.config
        graphdef, self.params = nnx.split(model)
        self.decoder = sam_decoder(graphdef)
        self._encode = sam_encoder(graphdef)

    def prepare(self, example: Mapping[str, Any], padded: tuple[int, int]) -> dict[str, Array]:
        image = np.asarray(example["image"])
        h, w = image.shape[:2]
        s = self.config.img_size
        pre, _ = transforms.preprocess(image, s)
        embedding = self._encode(self.params, jnp.asarray(pre))
        ay, ax = postprocess_matrices(h, w, s, self.config.low_res_size, padded)
        rh, rw = preprocess_shape(h, w, s)
        return {
            "embedding": embedding,
            "ay": jnp.asarray(ay),
            "ax": jnp.asarray(ax),
            "scale": jnp.asarray([rh / h, rw / w], jnp.float32),
        }


def _ratio(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    inter, union = inter.astype(np.float64), union.astype(np.float64)
    return np.where(union > 0, inter / np.maximum(union, 1.0), 1.0)


def evaluate_examples(
    runner: ImageRunner,
    examples: Iterable[Mapping[str, Any]],
    settings: EvalSettings,
    *,
    progress: bool = False,
    on_example_images: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Runs every protocol on every mask; returns `{protocol: [record, ...]}`.

    A record is one (object, mode): `dataset, task, image_id, mask_index, mode, height,
    width, area, iou [R], biou [R], clicks [[y, x, label], ...], noc {"85": n, ...},
    failed {"85": bool, ...}`, plus `oracle_index` / `first_ious` in round 1.
    `on_example_images` receives the chosen masks of the first `settings.num_examples`
    images (for the example PNGs).
    """
    records: dict[str, list[dict[str, Any]]] = {p: [] for p in settings.protocols}
    n_images = 0
    skipped = 0
    it = examples
    if progress:
        from tqdm import tqdm

        it = tqdm(examples, desc="evaluate", unit="img")
    for ex in it:
        if 0 <= settings.max_images <= n_images:
            break
        image = np.asarray(ex["image"])
        masks = np.asarray(ex["masks"]).astype(bool)
        h, w = image.shape[:2]
        if masks.shape[1:] != (h, w):
            raise ValueError(f"{ex['image_id']}: masks {masks.shape} vs image {image.shape}")
        keep = np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1))
        skipped += len(masks) - len(keep)
        if keep.size == 0:
            continue
        padded = (bucket(h, settings.bucket_sizes), bucket(w, settings.bucket_sizes))
        context = runner.prepare(ex, padded)
        dilation = metrics.boundary_dilation(h, w, settings.dilation_ratio)
        task = int(ex.get("task", 0))
        want_logits = n_images < settings.num_examples and on_example_images is not None
        for proto_name in settings.protocols:
            fn = compiled_rounds(runner.decoder, settings.protocol(proto_name), want_logits)
            chunk = settings.masks_per_batch
            shown: list[tuple[int, np.ndarray, np.ndarray]] = []
            for start in range(0, keep.size, chunk):
                idx = keep[start : start + chunk]
                gt = np.zeros((chunk,) + padded, bool)
                gt[: idx.size, :h, :w] = masks[idx]
                out = fn(
                    runner.params, context, jnp.asarray(gt), jnp.int32(dilation), jnp.int32(task)
                )
                out = jax.device_get(out)
                records[proto_name].extend(
                    _records(out, ex, idx, masks, task, settings, proto_name)
                )
                if want_logits:
                    shown.append((start, idx, out.logits[:, :, : idx.size]))
            if want_logits and shown:
                on_example_images(
                    {
                        "example": ex,
                        "protocol": proto_name,
                        "chunks": shown,
                        "context": context,
                        "records": records[proto_name],
                    }
                )
        n_images += 1
    if skipped:
        log.warning("skipped %d empty ground-truth masks", skipped)
    return records


def _records(out: RoundOutputs, ex, idx, masks, task, settings: EvalSettings, protocol: str):
    iou = _ratio(out.inter, out.union)  # [R, 2, Q]
    biou = _ratio(out.b_inter, out.b_union)
    h, w = masks.shape[1:]
    recs = []
    for j, k in enumerate(idx):
        for m, mode in enumerate(MODES):
            ious = iou[:, m, j]
            clicks = [
                [
                    int(out.click_yx[r, m, j, 0]),
                    int(out.click_yx[r, m, j, 1]),
                    int(out.click_label[r, m, j]),
                ]
                for r in range(iou.shape[0])
            ]
            rec = {
                "dataset": str(ex.get("dataset", "")),
                "task": task,
                "image_id": str(ex.get("image_id", "")),
                "mask_index": int(k),
                "protocol": protocol,
                "mode": mode,
                "height": int(h),
                "width": int(w),
                "area": int(masks[k].sum()),
                "iou": [float(v) for v in ious[: settings.num_rounds]],
                "biou": [float(v) for v in biou[: settings.num_rounds, m, j]],
                "clicks": clicks,
                "oracle_index": int(out.oracle_index[j]),
                "first_ious": [float(v) for v in out.first_ious[j]],
            }
            if protocol == "box":
                rec["box"] = [int(v) for v in out.boxes[j]]
            if settings.noc_thresholds:
                rec["noc"], rec["failed"] = {}, {}
                for t in settings.noc_thresholds:
                    n, failed = metrics.number_of_clicks(ious, t, settings.noc_max_clicks)
                    rec["noc"][threshold_key(t)] = n
                    rec["failed"][threshold_key(t)] = failed
            recs.append(rec)
    return recs


def threshold_key(t: float) -> str:
    """`0.85` -> `"85"` (the NoC@85 naming)."""
    return f"{round(t * 100):d}"


def evaluate(
    config: Mapping[str, Any],
    model_or_checkpoint: Any,
    examples: Iterable[Mapping[str, Any]],
    workdir: str | os.PathLike,
    *,
    name: str | None = None,
    runner: ImageRunner | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluates one model and writes its reports to `workdir`; returns the summary.

    Args:
      config: the evaluation config (`configs/eval.py`), or a plain mapping of its fields.
      model_or_checkpoint: an NNX `Sam` or a model directory (`sum_jax.checkpointing`).
      examples: dicts as yielded by `sum_jax.data.eval_sets.read_eval_set`.
      workdir: output directory (created); see `sum_jax.reports.write_reports`.
      name: the model's name in reports and plots (default: the checkpoint's basename).
      runner: overrides the model (tests pass a stand-in predictor here).
    """
    from sum_jax import reports

    os.makedirs(workdir, exist_ok=True)
    settings = EvalSettings.from_config(config)
    if runner is None:
        model = model_or_checkpoint
        if isinstance(model, (str, os.PathLike)):
            name = name or os.path.basename(os.path.normpath(os.fspath(model)))
            model = load_model(os.fspath(model))
        runner = SamRunner(model)
    name = name or "model"
    log_path = os.path.join(workdir, "evaluate.log")
    handler = logging.FileHandler(log_path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("sum_jax").addHandler(handler)
    logging.getLogger("sum_jax").setLevel(logging.INFO)
    try:
        log.info("evaluating %s: %s", name, json.dumps(dataclasses.asdict(settings)))
        example_dir = os.path.join(workdir, "examples")
        shown: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        records = evaluate_examples(
            runner, examples, settings, progress=progress, on_example_images=shown.append
        )
        seconds = time.perf_counter() - t0
        summary = reports.summarize(records, settings, name=name)
        summary["seconds"] = seconds
        reports.write_reports(records, summary, workdir)
        reports.plot_curves({name: summary}, workdir)
        for item in shown:
            reports.save_example_images(item, example_dir, settings)
        n_img = summary["num_images"]
        log.info("done: %d images, %d objects in %.1f s", n_img, summary["num_objects"], seconds)
    finally:
        logging.getLogger("sum_jax").removeHandler(handler)
        handler.close()
    return summary


# ----------------------------------------------------------------------------------------
# Configured runs (the CLI's library side).


def parse_eval_sets(spec: str) -> list[tuple[str, int | None]]:
    """`"coift:validation,mhp:validation@1000"` -> `[("coift:validation", None), ...]`."""
    out = []
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        ref, _, limit = item.partition("@")
        out.append((ref, int(limit) if limit else None))
    return out


def read_examples(config: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """Every example of the configured evaluation sets, set after set."""
    from sum_jax.data.eval_sets import read_eval_set

    if not config["data_dir"]:
        raise ValueError("set --config.data_dir to the root of the prepared evaluation sets")
    for ref, limit in parse_eval_sets(config["eval_sets"]):
        log.info("reading %s (first %s images)", ref, limit if limit else "all")
        yield from read_eval_set(ref, data_dir=config["data_dir"], max_images=limit)


def parse_checkpoint(spec: str) -> tuple[str, str]:
    """`"NAME=DIR"` or `"DIR"` -> `(name, dir)`; the name defaults to the directory's name."""
    name, sep, path = spec.partition("=")
    if not sep:
        path = spec
        name = os.path.basename(os.path.normpath(spec)).replace("random:", "random_")
    return name, path


def evaluate_checkpoints(
    config: Mapping[str, Any],
    checkpoints: list[str],
    workdir: str | os.PathLike,
    *,
    examples: Callable[[], Iterable[dict[str, Any]]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluates each `NAME=DIR` checkpoint; with several, into `workdir/NAME/` and with
    comparison plots in `workdir`. Returns `{name: summary}`.

    `examples` makes a fresh example iterator per model (default: `read_examples(config)`).
    """
    from sum_jax import reports

    if not checkpoints:
        raise ValueError("give at least one --checkpoint")
    specs = [parse_checkpoint(c) for c in checkpoints]
    names = [n for n, _ in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"checkpoint names must differ, got {names}; use NAME=DIR")
    make = examples or (lambda: read_examples(config))
    summaries = {}
    for name, path in specs:
        out = workdir if len(specs) == 1 else os.path.join(workdir, name)
        summaries[name] = evaluate(config, load_model(path), make(), out, name=name)
    if len(specs) > 1:
        reports.plot_curves(summaries, workdir)
    return summaries
