"""The interactive-evaluation protocol on device (§4.1, App. B.3, F.2).

`evaluation_rounds` runs every round of one protocol for a chunk of `Q` ground-truth masks of
one image and both modes inside one jitted function:

- Protocols: `point` (first click at the ground truth's deepest pixel), `box` (the GT's tight
  box first, kept in every later round, clicks from round 2), `boundary` (first click at the
  row-major median of the GT's 10 px boundary band, App. F.2). Later clicks follow RITM's
  clicker (`sum_jax.ops.clicks`): deepest pixel of the deeper error region (depth in the
  whole region, clicked pixels zeroed afterwards).
- Round 1 decodes three outputs. Mode `oracle` keeps the one with the highest IoU against the
  GT; mode `single` keeps a token fixed in advance (`single_output_token`: 0, the default,
  is SAM's single-mask token, what `multimask_output=False` returns; 1..3 the multimask
  outputs).
- Rounds 2..R: the single-mask token, all clicks so far, the previous round's low-res logits
  as mask prompt (and the box for `box`). The task prompt (the example's task id) is given
  in round 1 only, or in every round with `continuous_task_prompt`.
- A mask with nothing left to click (perfect prediction) gets no new click that round.

Rounds are a `jax.lax.scan`: decode, upscale to the GT's original resolution, threshold at 0,
count IoU and boundary-IoU pixels, click. Shapes are static: the GT sits in a frame padded up
to a size bucket, so one compilation serves many image sizes, and the postprocessing
(bilinear to `S x S`, crop to the resized image, bilinear to `H x W`, as
`sum_jax.ops.transforms.postprocess_masks` and the official `Sam.postprocess_masks`) runs as
two-tap bilinear gathers whose indices and weights are built on host for each image size
(`transforms.postprocess_taps`; zero weights in the padding) and passed as arrays, as a
computation of its own on CPU (`_separately`: XLA:CPU otherwise fused its gathers into their
consumers). Round 1 decodes SAM's four outputs once and upscales its three outputs once:
both modes read their round-1 masks from them. The
distance transform of the clicks costs O(pixels) whatever the objects' depth
(`sum_jax.ops.distance`). Only pixel counts and clicks come back to the host.

The decoder is abstract (`Decoder`), so tests can run the protocol with a stand-in predictor
whose output is known in closed form.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from sum_jax.inference import decoding
from sum_jax.models.prompt_encoder import LABEL_ABSENT
from sum_jax.ops import clicks, transforms
from sum_jax.ops.distance import deepest
from sum_jax.ops.masks import erode, iou_counts, iou_from_counts, mask_to_box

Array = jax.Array
PROTOCOLS = ("point", "box", "boundary")


@dataclasses.dataclass(frozen=True)
class ProtocolSettings:
    """Static settings of one evaluation run (hashable: part of the jit cache key)."""

    first_prompt: str = "point"  # one of PROTOCOLS
    num_rounds: int = 6  # rounds simulated (>= the NoC budget when NoC is reported)
    single_output_token: int = 0  # 0: single-mask token (App. B.3); 1..3: multimask outputs
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
      (`M = 3` if multimask else 1; with `all_outputs`, `multimask=None` gives the four
      outputs, the single-mask token first, from one decode); `context` is the per-image
      pytree (image embedding, resize taps, ...), `params` the model state.
    upscale(context, logits f32[..., l, l]) -> logits `f32[..., Hb, Wb]` at the GT's original
      resolution in the padded frame, <= 0 in the padding.
    """

    decode: Callable[..., Array]
    upscale: Callable[[Any, Array], Array]
    all_outputs: bool = False


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


def _first_prompt(gt: Array, protocol: ProtocolSettings) -> tuple[Array, Array, Array, Array]:
    """Round-1 click `yx [Q, 2]`, `label [Q]`, box `[Q, 4]`, `box_valid [Q]`."""
    q = gt.shape[0]
    no_box = jnp.zeros((q, 4), jnp.int32), jnp.zeros((q,), bool)
    if protocol.first_prompt == "box":
        box, valid = mask_to_box(gt)
        return jnp.zeros((q, 2), jnp.int32), jnp.full((q,), LABEL_ABSENT, jnp.int32), box, valid
    if protocol.first_prompt == "boundary":
        yx, valid = clicks.boundary_click(gt, protocol.boundary_band)
        return yx, jnp.where(valid, 1, LABEL_ABSENT).astype(jnp.int32), *no_box
    # next_click(gt, zeros, ones): the deepest GT pixel. Written out so that XLA does not
    # constant-fold the distance transform of the all-False false-positive region.
    depth, yx = deepest(gt)
    label = jnp.where(depth > 0, 1, LABEL_ABSENT).astype(jnp.int32)
    return yx, label, *no_box


def _separately(fn: Callable, *args):
    """`fn(*args)`, compiled by XLA:CPU as a computation of its own: a fusion boundary.

    Inside the rounds' loop, XLA:CPU fused the upscaling's gathers, with transposed layouts,
    into their consumers (counts, erosion, the next click) and ran them element by element:
    ~430 ms per round of 8 vit_b queries at 512 x 512, against ~15 ms for the same upscaling
    jitted alone. XLA does not fuse across the branches of a conditional, so `fn` runs as a
    `lax.cond` whose two branches are both `fn` (the predicate, any traced value, does not
    change the result). Other backends call `fn` directly.
    """
    if jax.default_backend() != "cpu":
        return fn(*args)
    pred = jax.tree.leaves(args)[-1].reshape(-1)[0] != 0
    return jax.lax.cond(pred, fn, fn, *args)


@jax.named_scope("upscale")
def _masks(decoder: Decoder, context: Any, logits: Array) -> Array:
    """Masks `bool [..., Hb, Wb]` of low-res `logits [..., l, l]` (upscaled, > 0)."""
    return _separately(lambda c, x: decoder.upscale(c, x) > 0, context, logits)


def _unclick(not_clicked: Array, yx: Array, label: Array) -> Array:
    """Marks the clicked pixels `yx [Q, 2]` (where `label` is not absent) as clicked."""
    h, w = not_clicked.shape[-2:]
    hit = (jnp.arange(h)[:, None] == yx[:, 0, None, None]) & (
        jnp.arange(w)[None, :] == yx[:, 1, None, None]
    )
    return not_clicked & ~(hit & (label != LABEL_ABSENT)[:, None, None])


def evaluation_rounds(
    decoder: Decoder,
    params: Any,
    context: Any,
    gt: Array,
    dilation: Array,
    task_id: Array,
    *,
    protocol: ProtocolSettings,
    keep_logits: bool = False,
) -> RoundOutputs:
    """All rounds for `Q` masks of one image, both modes. Traceable (jit it).

    Args:
      decoder: the model interface (see `Decoder`).
      params: model state handed to `decoder.decode`.
      context: per-image pytree handed to the decoder (embedding, resize taps).
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

    gt_band2 = gt2 & ~erode(gt2, dilation)  # the GT's boundary, once

    @jax.named_scope("counts")
    def counts(pred: Array) -> tuple[Array, ...]:
        """IoU and boundary-IoU pixel counts of `pred [2Q, Hb, Wb]` against the GT."""
        inter, union = iou_counts(pred, gt2)
        with jax.named_scope("erode"):
            pred_band = pred & ~erode(pred, dilation)
        b_inter, b_union = iou_counts(pred_band, gt_band2)
        return inter, union, b_inter, b_union

    # Round 1: the first prompt, three outputs (and token 0 when that is the fixed output).
    yx0, label0, box, box_valid = _first_prompt(gt, protocol)
    points = jnp.zeros((q, p_slots, 2), jnp.int32).at[:, 0].set(yx0)
    labels = jnp.full((q, p_slots), LABEL_ABSENT, jnp.int32).at[:, 0].set(label0)
    use_box = protocol.first_prompt == "box"
    prompts = Prompts(
        points, labels, box if use_box else None, box_valid if use_box else None, None, tasks
    )
    single_logits = None
    if protocol.single_output_token == 0 and decoder.all_outputs:
        # One decode for both modes: SAM computes all four mask tokens either way.
        four = decoder.decode(params, context, prompts, None)  # [Q, 4, l, l]
        single_logits, multi = four[:, 0], four[:, 1:]
    else:
        multi = decoder.decode(params, context, prompts, True)  # [Q, 3, l, l]
    multi_pred = _masks(decoder, context, multi)  # [Q, 3, Hb, Wb]
    inter, union = iou_counts(multi_pred, gt[:, None])
    first_ious = iou_from_counts(inter, union)
    oracle = jnp.argmax(first_ious, axis=-1)  # ties: the first output
    pick = lambda x, i: jnp.take_along_axis(x, i[:, None, None, None], axis=1)[:, 0]
    oracle_logits, oracle_pred = pick(multi, oracle), pick(multi_pred, oracle)
    if protocol.single_output_token == 0:
        if single_logits is None:
            single_logits = decoder.decode(params, context, prompts, False)[:, 0]
        single_pred = _masks(decoder, context, single_logits)
    else:
        single_logits = multi[:, protocol.single_output_token - 1]
        single_pred = multi_pred[:, protocol.single_output_token - 1]
    logits = jnp.concatenate([oracle_logits, single_logits])  # [2Q, l, l]
    pred = jnp.concatenate([oracle_pred, single_pred])
    first = counts(pred)

    two = lambda x: jnp.concatenate([x, x])
    points, labels = two(points), two(labels)
    boxes2 = two(box) if use_box else None
    box_valid2 = two(box_valid) if use_box else None
    tasks2 = two(tasks) if protocol.continuous_task_prompt else two(jnp.full((q,), -1, jnp.int32))
    not_clicked = _unclick(jnp.ones_like(gt2), two(yx0), two(label0))

    def step(carry, r):
        points, labels, not_clicked, pred, logits = carry
        with jax.named_scope("click"):
            yx, positive, valid = clicks.next_click(gt2, pred, not_clicked)
        label = jnp.where(valid, positive.astype(jnp.int32), LABEL_ABSENT)
        points = points.at[:, r].set(yx)
        labels = labels.at[:, r].set(label)
        with jax.named_scope("unclick"):
            not_clicked = _unclick(not_clicked, yx, label)
        prompts = Prompts(points, labels, boxes2, box_valid2, logits, tasks2)
        with jax.named_scope("decode"):
            logits = decoder.decode(params, context, prompts, False)[:, 0]
        pred = _masks(decoder, context, logits)
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
# SAM on device: the decoder adapter.


def _sam_decode(graphdef, params, context, prompts: Prompts, multimask: bool | None) -> Array:
    """The protocol's prompts (original-image pixels, `(y, x)` clicks) -> SAM's low-res
    logits `[Q, M, l, l]`, through the one decoding adapter."""
    sy, sx = context["scale"][0], context["scale"][1]  # resized / original, per axis
    pts = prompts.points_yx.astype(jnp.float32)
    points_xy = jnp.stack([pts[..., 1] * sx, pts[..., 0] * sy], axis=-1)
    boxes = box_valid = None
    if prompts.boxes is not None:
        boxes = (prompts.boxes.astype(jnp.float32) * jnp.stack([sx, sy, sx, sy]))[None]
        box_valid = prompts.box_valid[None]
    model_prompts = decoding.Prompts(
        points_xy[None],
        prompts.labels[None],
        boxes,
        box_valid,
        None if prompts.mask_inputs is None else prompts.mask_inputs[None],
        None,
        None if prompts.task_ids is None else prompts.task_ids[None],
    )
    logits, _ = decoding.decode(
        graphdef, params, context["embedding"], model_prompts, multimask_output=multimask
    )
    return logits[0]


def taps_upscale(context, logits: Array) -> Array:
    """SAM's postprocessing with the per-image taps in `context["taps"]`
    (`transforms.postprocess_taps`): `[..., l, l]` -> `[..., Hb, Wb]`, 0 in the padding."""
    return transforms.apply_postprocess(logits, context["taps"])


@functools.lru_cache(maxsize=16)
def sam_decoder(graphdef) -> Decoder:
    """The `Decoder` of an NNX `Sam` split into `(graphdef, params)`; one object per graph
    structure, so that compiled rounds are shared by models of the same architecture."""
    return Decoder(functools.partial(_sam_decode, graphdef), taps_upscale, all_outputs=True)


@functools.lru_cache(maxsize=16)
def sam_encoder(graphdef) -> Callable[[Any, Array], Array]:
    """Jitted `(params, image f32[S, S, 3]) -> embedding [1, h, w, C]`, one per structure."""

    @jax.jit
    def encode(params, image):
        return nnx.merge(graphdef, params).encode_image(image[None])

    return encode


@functools.lru_cache(maxsize=64)
def compiled_rounds(decoder: Decoder, protocol: ProtocolSettings, keep_logits: bool) -> Callable:
    """`evaluation_rounds` jitted for one decoder and protocol (XLA then caches per shape)."""
    return jax.jit(
        functools.partial(evaluation_rounds, decoder, protocol=protocol, keep_logits=keep_logits)
    )


# Frame sizes (per side) the GT is padded to: multiples of 128 up to 1024, then coarser.
# Padding costs every per-pixel step of the rounds, and each (height, width) bucket pair
# compiles once (kept in the compilation cache).
FRAME_BUCKETS = (*range(256, 1025, 128), *range(1280, 2049, 256), *range(2560, 4097, 512))


def bucket(size: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket >= size (beyond the largest: the next multiple of it)."""
    for b in sorted(buckets):
        if size <= b:
            return b
    top = max(buckets)
    return int(math.ceil(size / top) * top)


def slot_bucket(num_masks: int, max_slots: int) -> int:
    """Mask slots of one chunk: the smallest power of two >= `num_masks`, at most
    `max_slots` (an image with one object runs 1 slot, not `masks_per_batch`)."""
    return min(max_slots, 1 << max(num_masks - 1, 0).bit_length())
