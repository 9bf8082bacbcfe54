"""The numbers of every command's config, checked when the command starts.

    from sum_jax import config_checks

    def main(argv):
        config = _CONFIG.value
        config_checks.check(config, "pseudo_labels")  # before anything is read or written

One table per command (`SCHEMAS`): each numeric field's path, type, range and what it means,
so that a value out of range is one message naming the field, what it holds and the range,
e.g. `config.generator.points_per_side=0: the grid points per image side must be at least
1`, before any model loads or any file is written. A field a config does not have is not
checked (configs differ: FT-Small has no `demo`); an unset field is refused unless the
table says unset has a meaning. `RULES` relate fields (`train.microbatches` divides
`train.batch_size`; `name:split@N` has N >= 1); the stage configs the demo embeds
(`NESTED`: `demo.refiner`, ...) are checked with their own command's table.

`max_images` means the same in every command: unset (the default) is every image, `N >= 1`
the first N images; 0 and negative numbers are refused (docs/troubleshooting.md).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

from sum_jax.cli import InputError

# The one meaning of `max_images`, quoted in every message about it.
MAX_IMAGES = "leave it unset for every image, or give N >= 1 for the first N images"


@dataclasses.dataclass(frozen=True)
class Field:
    """One numeric config field: `kind` "int" or "float" (or "ints"/"floats": a sequence of
    them), the range `[low, high]` (`open_low`/`open_high`: the end itself excluded; None:
    no bound), `meaning` for the message, `optional`: unset (None) is allowed and means
    what `hint` says."""

    path: str
    kind: str
    meaning: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    optional: bool = False
    hint: str = ""

    def range_text(self) -> str:
        lo, hi = _num(self.low), _num(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.open_low else '['}{lo}, {hi}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f"above {lo}" if self.open_low else f"at least {lo}"
        if self.high is not None:
            return f"below {hi}" if self.open_high else f"at most {hi}"
        return "a finite number"

    def problem(self, value: Any) -> str | None:
        """Why `value` does not fit this field, or None."""
        if value is None:
            return None if self.optional else "is not set"
        items = value if self.kind in ("ints", "floats") else (value,)
        if self.kind in ("ints", "floats") and isinstance(value, (str, bytes, Mapping)):
            return f"must be a list of numbers, {self.range_text()}"
        integer = self.kind in ("int", "ints")
        for item in items:
            if isinstance(item, bool) or not isinstance(item, numbers.Real):
                return f"must be {'a whole number' if integer else 'a number'}, not {item!r}"
            if integer and not float(item).is_integer():
                return f"must be a whole number, not {item!r}"
            if not math.isfinite(float(item)):
                return f"must be a finite number {self.range_text()}"
            if not self._within(float(item)):
                return f"must be {self.range_text()}"
        return None

    def _within(self, x: float) -> bool:
        if self.low is not None and (x <= self.low if self.open_low else x < self.low):
            return False
        return self.high is None or not (x >= self.high if self.open_high else x > self.high)


def _num(x: float | None) -> str:
    return "" if x is None else (str(int(x)) if float(x).is_integer() else str(x))


# Constructors for the tables below.
def count(path: str, meaning: str) -> Field:
    return Field(path, "int", meaning, low=1)


def natural(path: str, meaning: str) -> Field:
    return Field(path, "int", meaning, low=0)


def fraction(path: str, meaning: str, **ends: bool) -> Field:
    return Field(path, "float", meaning, low=0, high=1, **ends)


def positive(path: str, meaning: str) -> Field:
    return Field(path, "float", meaning, low=0, open_low=True)


def nonnegative(path: str, meaning: str) -> Field:
    return Field(path, "float", meaning, low=0)


def image_limit(path: str = "max_images") -> Field:
    return Field(path, "int", "image limit", low=1, optional=True, hint=MAX_IMAGES)


def under(prefix: str, fields: tuple[Field, ...]) -> tuple[Field, ...]:
    """`fields` of a config nested at `prefix` (e.g. the eval config in `eval.`)."""
    return tuple(dataclasses.replace(f, path=f"{prefix}.{f.path}") for f in fields)


PREPARE = (
    Field("task_id", "int", "task id (0 unlabelled, 1 salient object, 2 entity, 3 part)",
          low=0, high=3, optional=True, hint="unset: the registry's task id"),
    image_limit(),
)  # fmt: skip

GENERATOR = (
    count("points_per_side", "grid points per image side"),
    count("points_per_batch", "points decoded together"),
    fraction("pred_iou_thresh", "predicted-IoU filter (0: off)"),
    fraction("stability_score_thresh", "stability filter (0: off)"),
    nonnegative("stability_score_offset", "stability score's logit offset"),
    fraction("max_area_fraction", "largest mask area, as a fraction of the image"),
    fraction("box_nms_thresh", "box NMS IoU threshold"),
    natural("crop_n_layers", "crop layers"),
    fraction("crop_nms_thresh", "crop NMS IoU threshold"),
    fraction("crop_overlap_ratio", "crop overlap", open_high=True),
    count("crop_n_points_downscale_factor", "per-layer point downscale factor"),
)

PSEUDO_LABELS = (image_limit(), *under("generator", GENERATOR))

UNCERTAINTY = (image_limit(), natural("pictures", "images drawn as PNGs"))

EVAL = (
    count("num_rounds", "interactive rounds reported"),
    natural("noc_max_clicks", "largest click count of NoC (0: no NoC)"),
    Field("noc_thresholds", "floats", "NoC IoU thresholds", low=0, high=1, open_low=True),
    Field("single_output_token", "int", "round-1 output of the single mode", low=0, high=3),
    nonnegative("boundary_band", "band of the boundary-sampling first click, px"),
    fraction("dilation_ratio", "boundary-IoU band (fraction of the diagonal)", open_low=True,
             open_high=True),
    count("masks_per_batch", "GT masks decoded together"),
    Field("bucket_sizes", "ints", "padded frame sizes", low=1),
    natural("num_examples", "images with example PNGs"),
    image_limit(),
)  # fmt: skip

OPTIMIZER = (
    positive("optimizer.lr", "learning rate"),
    fraction("optimizer.b1", "Adam's b1", open_high=True),
    fraction("optimizer.b2", "Adam's b2", open_high=True),
    positive("optimizer.eps", "Adam's eps"),
    nonnegative("optimizer.weight_decay", "weight decay"),
    fraction("optimizer.layer_decay", "layer-wise lr decay", open_low=True),
    natural("optimizer.warmup_steps", "warm-up steps"),
    fraction("optimizer.drop_at", "fraction of the steps before the lr drop"),
    nonnegative("optimizer.drop_factor", "lr drop factor"),
)

LOSS = (
    nonnegative("loss.focal_weight", "focal loss weight"),
    nonnegative("loss.dice_weight", "Dice loss weight"),
    nonnegative("loss.iou_weight", "IoU loss weight"),
    fraction("loss.alpha", "focal alpha"),
    nonnegative("loss.gamma", "focal gamma"),
    fraction("loss.theta", "uncertainty-aware Dice threshold theta"),
    nonnegative("loss.contrastive_weight", "contrastive loss weight (0: off)"),
    positive("loss.contrastive_temperature", "contrastive temperature"),
    count("loss.contrastive_queries", "contrastive anchors per class"),
    count("loss.contrastive_negatives", "contrastive negatives per anchor"),
    count("loss.num_points", "loss points per mask"),
    Field("loss.oversample_ratio", "float", "point oversampling ratio", low=1),
    fraction("loss.importance_sample_ratio", "share of importance-sampled points"),
)

TRAIN_COUNTS = (
    count("train.num_steps", "optimiser steps"),
    count("train.batch_size", "images per step"),
    count("train.log_every", "steps between log lines"),
    count("train.checkpoint_every", "steps between checkpoints"),
    count("train.keep_checkpoints", "checkpoints kept (0 would delete every one, the last too)"),
)

TRAIN = (
    Field("seed", "int", "random seed", low=0),
    count("model.mask_chunks", "mask chunks per image"),
    *LOSS,
    count("interactive.num_rounds", "interactive rounds"),
    fraction("interactive.box_prob", "probability of a box first"),
    nonnegative("interactive.box_noise_frac", "box jitter (fraction of the side)"),
    nonnegative("interactive.box_noise_max", "largest box jitter, px"),
    *OPTIMIZER,
    count("lora.rank", "LoRA rank"),
    positive("lora.alpha", "LoRA alpha"),
    fraction("lora.dropout", "LoRA dropout", open_high=True),
    positive("adapter.ratio", "encoder adapter's bottleneck ratio"),
    nonnegative("adapter.scale", "encoder adapter's output scale"),
    Field("sharding.mesh_shape", "ints", "mesh axis sizes (-1: the remaining devices)",
          low=-1),  # and not 0: RULES
    natural("sharding.min_shard_size", "smallest sharded parameter"),
    *TRAIN_COUNTS,
    count("train.masks_per_image", "masks per image"),
    Field("train.microbatches", "int", "micro-batches per step (-1: one image per device)",
          low=-1),  # and not 0: RULES
    fraction("semi.ema_momentum", "EMA teacher's momentum"),
    nonnegative("semi.aux_decoder_weight", "second decoder's loss weight"),
    natural("semi.num_augs", "AugSeg's augmentations"),
    fraction("semi.cutmix_prob", "AugSeg's CutMix probability"),
    Field("data.mix", "floats", "labelled : unlabelled mixing ratio", low=0),
    count("data.read_threads", "reading threads"),
    count("data.prefetch_buffer_size", "elements read ahead"),
    natural("data.worker_count", "Grain worker processes"),
    count("data.worker_buffer_size", "batches buffered per worker"),
    natural("data.scene_ramp", "scenes before every scene is full (0: no curriculum)"),
    count("pretrain.heldout_clicks", "clicks of the held-out mIoU"),
    *under("eval", EVAL),
)  # fmt: skip

REFINER = (
    Field("seed", "int", "random seed", low=0),
    image_limit(),
    fraction("holdout_fraction", "share of images held out for the report", open_high=True),
    fraction("pairs.min_iou", "smallest IoU of SAM's mask with the GT (0: off)"),
    fraction("pairs.pred_iou_thresh", "predicted-IoU filter (0: off)"),
    fraction("pairs.stability_score_thresh", "stability filter (0: off)"),
    nonnegative("pairs.stability_score_offset", "stability score's logit offset"),
    fraction("pairs.max_area_frac", "largest mask area, as a fraction of the image (0: off)"),
    count("pairs.masks_per_call", "GT masks per SAM call"),
    *TRAIN_COUNTS,
    count("eval_batch_size", "pairs per evaluation batch"),
    *OPTIMIZER,
    *LOSS,
)


def _divides(what: str, part: str, whole: str, *, auto: bool = False) -> Callable:
    """A rule: config field `part` divides `whole` (`auto`: -1 is allowed too)."""

    def rule(config, prefix: str) -> str | None:
        k, n = _get(config, part), _get(config, whole)
        if k is None or n is None or (auto and k == -1) or (k >= 1 and n % k == 0):
            return None
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        return (
            f"config.{prefix}{part}={k} does not divide config.{prefix}{whole}={n} into "
            f"{what}; use one of {divisors}"
            + (" or -1 (one image per device at a time)" if auto else "")
        )

    return rule


def _crop_grid(config, prefix: str) -> str | None:
    side = _get(config, "generator.points_per_side")
    layers = _get(config, "generator.crop_n_layers")
    factor = _get(config, "generator.crop_n_points_downscale_factor")
    if None in (side, layers, factor) or side // factor**layers >= 1:
        return None
    return (
        f"config.{prefix}generator.points_per_side={side} leaves no grid point in crop layer "
        f"{layers} (divided by config.{prefix}generator.crop_n_points_downscale_factor="
        f"{factor} per layer): raise points_per_side to at least {factor**layers} or use "
        "fewer crop layers"
    )


def _mix(config, prefix: str) -> str | None:
    mix = _get(config, "data.mix")
    if mix is None or not _get(config, "data.unlabelled") or sum(mix[:2]) > 0:
        return None
    return f"config.{prefix}data.mix={tuple(mix)}: at least one side of the mix must be above 0"


def _mesh(config, prefix: str) -> str | None:
    shape = _get(config, "sharding.mesh_shape")
    if shape is None or (0 not in shape and list(shape).count(-1) <= 1):
        return None
    return (
        f"config.{prefix}sharding.mesh_shape={tuple(shape)}: each axis size must be at least 1, "
        "or -1 (the remaining devices) for one axis at most"
    )


def _eval_limits(config, prefix: str, path: str = "eval_sets") -> str | None:
    """`name:split@N` in the evaluation sets: N is a whole number of at least 1."""
    sets = _get(config, path)
    for item in str(sets or "").split(","):
        _, at, limit = item.strip().partition("@")
        if at and not (limit.isdigit() and int(limit) >= 1):
            return (
                f"config.{prefix}{path}: {item.strip()!r}: after '@' give the number of "
                "images, at least 1 (name:split@N: the first N images of the set)"
            )
    return None


def _task_ids(config, prefix: str) -> str | None:
    """`data.task_ids` (per-dataset task override): each a task id 0-3."""
    for name, task in dict(_get(config, "data.task_ids") or {}).items():
        if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task <= 3:
            return (
                f"config.{prefix}data.task_ids.{name}={task!r}: a task id is 0 (unlabelled), "
                "1 (salient object), 2 (entity) or 3 (part)"
            )
    return None


def _baseline(config, prefix: str) -> str | None:
    """The demo's baseline recipe (`demo.baseline`) names ablations that exist."""
    recipe = _get(config, "demo.baseline")
    if not recipe:
        return None
    from configs import ablations

    try:
        ablations.apply(config.copy_and_resolve_references(), recipe)
    except ValueError as e:
        return f"config.{prefix}demo.baseline={recipe!r}: {e}"
    return None


SCHEMAS: dict[str, tuple[Field, ...]] = {
    "prepare_data": PREPARE,
    "pseudo_labels": PSEUDO_LABELS,
    "uncertainty": UNCERTAINTY,
    "train": TRAIN,
    "pretrain": TRAIN,
    "train_refiner": REFINER,
    "evaluate": EVAL,
    "run_table": EVAL,
}
# Rules between fields: `rule(config, prefix) -> message or None`.
_TRAIN_RULES = (
    _divides("micro-batches", "train.microbatches", "train.batch_size", auto=True),
    _divides("mask chunks", "model.mask_chunks", "train.masks_per_image"),
    _mix,
    _mesh,
    _task_ids,
    _baseline,
    lambda config, prefix: _eval_limits(config, prefix, "eval.eval_sets"),
)
RULES: dict[str, tuple[Callable, ...]] = {
    "pseudo_labels": (_crop_grid,),
    "evaluate": (_eval_limits,),
    "run_table": (_eval_limits,),
    "train": _TRAIN_RULES,
    "pretrain": _TRAIN_RULES,
}
# Configs a training config embeds (the demo's stages), checked with their own command's table.
NESTED = {
    "demo.pseudo_labels": "pseudo_labels",
    "demo.refiner": "train_refiner",
    "demo.uncertainty": "uncertainty",
}
_MISSING = object()


def _get(config, path: str, default: Any = None) -> Any:
    node = config
    for part in path.split("."):
        if not hasattr(node, "get") or part not in node:
            return default
        node = node.get(part)
    return node


def check(config, command: str, *, prefix: str = "") -> None:
    """Raises an InputError naming the first field of `config` that does not fit
    `SCHEMAS[command]` (type, range, unset) or a rule between fields (`RULES`); `prefix`:
    where `config` sits in the command's config (for the message)."""
    for field in SCHEMAS[command]:
        value = _get(config, field.path, _MISSING)
        if value is _MISSING:
            continue
        why = field.problem(value)
        if why:
            shown = tuple(value) if isinstance(value, (list, tuple)) else value
            hint = f"; {field.hint}" if field.hint and value is not None else ""
            raise InputError(
                f"config.{prefix}{field.path}={shown!r}: the {field.meaning} {why}{hint}"
            )
    for rule in RULES.get(command, ()):
        why = rule(config, prefix)
        if why:
            raise InputError(why)
    if command in ("train", "pretrain"):
        for path, stage in NESTED.items():
            nested = _get(config, path)
            if nested is not None:
                check(nested, stage, prefix=f"{prefix}{path}.")
