"""The paper's semi-supervised comparisons as losses of the one trainer (App. E, Table 1,
Table 4): SUM Discrepancy-Uncer and AugSeg, with the EMA teacher they share.

`config.semi.method` picks the loss `train_step` minimises (configs/base.py; the variants are
in configs/ablations.py):

- `"none"`: SUM's interactive loss with the refinement module's uncertainty maps.
- `"discrepancy"` (SUM Discrepancy-Uncer; Araslanov & Roth, CVPR 2021; Zheng & Yang, IJCV
  2021): SUM's losses and uncertainty-aware sampling unchanged, with the certainty of each
  pseudo-label pixel computed in the step from two predictions of the same mask, each
  prompted by the pseudo-label's tight box (one output):

      c = exp(-KL(Bern(sigmoid(s_a)) || Bern(sigmoid(s_b))))

  with `s_a` the student's logits and `s_b` the EMA teacher's (`discrepancy = "teacher"`,
  Araslanov & Roth's mean teacher, the paper's better variant) or a second mask decoder's on
  the student's image embedding (`"dual_decoder"`, Zheng & Yang's auxiliary classifier).
  Zheng & Yang weight their pseudo-label loss by exactly this `exp(-D_kl)` of the two
  predictions' KL divergence, so SUM's certainty-weighted focal loss and `c > theta` Dice
  mask reproduce their rectification; the map is an input (stop-gradient), as the refiner's
  is. Human-labelled images keep `c = 1`. The second decoder is trained with the same loss
  as the main one, on its box-prompted prediction (`aux_decoder_weight`), as Zheng & Yang
  train the auxiliary classifier; it is stored in the parameters under `AUX_DECODER` and
  left out of exports.
- `"augseg"` (App. E.1): human-labelled images get SUM's interactive procedure (plain
  losses, c = 1); each pseudo-labelled image is seen by the EMA teacher as it is and by the
  student as AugSeg's strong view (`augment.strong_view`: intensity augmentations and
  CutMix, geometrically identical to the teacher's view), made for the whole step before
  it is split into micro-batches (`augseg_views`), so CutMix always pastes from another
  pseudo-labelled image of the step and never from the image itself. Prompts come from
  the pseudo-label's visible part (not pasted over) and are the same for teacher and
  student (`prompt`: `"mixed"` a box or a point as SUM's round 1, `"box"` boxes only,
  `"uniform_point"` points of SAM's 32 x 32 automatic-mask grid, drawn uniformly, independent
  of the pseudo-labels). Round 1:
  teacher and student decode the prompt (three outputs); the target is the teacher's
  binarised prediction (0 where CutMix pasted another image), the loss
  `focal_weight * focal + dice_weight * dice` (20 : 1) of the student's prediction: by
  default between the output of each set closest (IoU) to the pseudo-label, with
  `multi_consistency` (and always for uniform points) the sum over the three pairs of
  outputs of the same token. Mixed prompts then run SAM's rounds 2..R on the pseudo-labelled
  images too (App. E.1: "For multi-prompt scenarios, we sample interactive prompts for both
  teacher and student networks based on SAM pseudo-labels"): each network's most confident
  round-1 output, then its single output, is its own mask prompt; rounds 2..R-1 add one
  click from the error region between the teacher's prediction and the pseudo-label (the
  same click for both, so their outputs stay comparable pixel by pixel); the consistency of
  the single outputs is the round's loss, and the image's loss is the mean over its rounds.
  Boxes and uniform points are single-prompt settings ("applicable solely in single prompt
  scenarios"): one round.

Every image weighs the same in the step's loss (rounds.py, "Reduction"): a pseudo-labelled
image's loss is its consistency (AugSeg) or its SUM loss (Discrepancy-Uncer), averaged over
its valid masks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from sum_jax.ops.masks import iou_counts, iou_from_counts
from sum_jax.ops.transforms import normalize_and_pad
from sum_jax.train import augment, losses, prompts
from sum_jax.train.rounds import InteractiveSettings, training_rounds

Array = jax.Array
PyTree = Any

AUX_DECODER = "aux_mask_decoder"
# Folded into the step key for AugSeg's strong views (independent of the prompts' stream).
VIEW_STREAM = 0x41756753
METHODS = ("none", "discrepancy", "augseg")


@dataclasses.dataclass(frozen=True)
class SemiSettings:
    """Static settings of the semi-supervised variants (`config.semi`, configs/base.py)."""

    method: str = "none"
    ema_momentum: float = 0.999
    discrepancy: str = "teacher"
    aux_decoder_weight: float = 1.0
    prompt: str = "mixed"
    multi_consistency: bool = False
    num_augs: int = 3
    cutmix_prob: float = 1.0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"semi.method={self.method!r}; known: {', '.join(METHODS)}")
        if self.discrepancy not in ("teacher", "dual_decoder"):
            raise ValueError(f"semi.discrepancy={self.discrepancy!r}: teacher or dual_decoder")
        if self.prompt not in ("mixed", "box", "uniform_point"):
            raise ValueError(f"semi.prompt={self.prompt!r}: mixed, box or uniform_point")
        if not 0.0 <= self.ema_momentum <= 1.0:
            raise ValueError(f"semi.ema_momentum={self.ema_momentum} is not in [0, 1]")

    @classmethod
    def from_config(cls, config) -> SemiSettings:
        semi = config.get("semi")
        if semi is None:
            return cls()
        return cls(
            method=str(semi.method),
            ema_momentum=float(semi.ema_momentum),
            discrepancy=str(semi.discrepancy),
            aux_decoder_weight=float(semi.aux_decoder_weight),
            prompt=str(semi.prompt),
            multi_consistency=bool(semi.multi_consistency),
            num_augs=int(semi.num_augs),
            cutmix_prob=float(semi.cutmix_prob),
        )

    @property
    def uses_teacher(self) -> bool:
        """Whether the state carries an EMA teacher."""
        return self.method == "augseg" or (
            self.method == "discrepancy" and self.discrepancy == "teacher"
        )

    @property
    def uses_aux_decoder(self) -> bool:
        return self.method == "discrepancy" and self.discrepancy == "dual_decoder"


def training_params(params: PyTree, semi: SemiSettings) -> PyTree:
    """The trained parameters: the SAM's, plus a copy of its mask decoder under
    `AUX_DECODER` for the dual-decoder variant (both decoders start as SAM's)."""
    if not semi.uses_aux_decoder:
        return params
    return {**params, AUX_DECODER: jax.tree.map(lambda x: x, params["mask_decoder"])}


def ema_update(teacher: PyTree, params: PyTree, momentum: float) -> PyTree:
    """The mean teacher's update after an optimiser step (Tarvainen & Valpola; AugSeg's
    `train_semi.py`): `teacher <- m * teacher + (1 - m) * params`, in the teacher's dtype."""
    return jax.tree.map(
        lambda t, p: (momentum * t + (1.0 - momentum) * p.astype(t.dtype)).astype(t.dtype),
        teacher,
        params,
    )


def bernoulli_kl(logits_a: Array, logits_b: Array) -> Array:
    """`KL(Bern(sigmoid(a)) || Bern(sigmoid(b)))` per pixel, from logits (float32, stable)."""
    a, b = logits_a.astype(jnp.float32), logits_b.astype(jnp.float32)
    la, lna = jax.nn.log_sigmoid(a), jax.nn.log_sigmoid(-a)
    lb, lnb = jax.nn.log_sigmoid(b), jax.nn.log_sigmoid(-b)
    kl = jnp.exp(la) * (la - lb) + jnp.exp(lna) * (lna - lnb)
    return jnp.maximum(kl, 0.0)


def discrepancy_certainty(logits_a: Array, logits_b: Array) -> Array:
    """`c = exp(-KL(a || b))` in (0, 1]: 1 where the two predictions agree (Zheng & Yang's
    rectification weight). The uncertainty is `u = 1 - c`."""
    return jnp.exp(-bernoulli_kl(logits_a, logits_b))


def pseudo_label_boxes(targets: Array, img_size: int) -> tuple[Array, Array]:
    """The tight boxes of the `[B, N, L, L]` masks in the input frame `[B, N, 4]` (no
    jitter: the box states which object is meant) and `valid [B, N]`."""
    b, n, size = targets.shape[0], targets.shape[1], targets.shape[-1]
    boxes, ok = prompts.mask_boxes(targets.reshape(b * n, size, size))
    boxes = prompts.box_to_input_frame(boxes, size, img_size)
    return boxes.reshape(b, n, 4), ok.reshape(b, n)


def _decode(model, embeddings, *, points=None, labels=None, boxes=None, box_valid=None,
            mask_inputs=None, mask_valid=None, task_ids=None, multimask: bool):  # fmt: skip
    """`model.decode` of one prompt set per mask: boxes (points absent), points (label -2:
    absent) and a mask prompt (previous low-res logits) where given."""
    if points is None:
        b, n = boxes.shape[:2]
        points = jnp.zeros((b, n, 1, 2), jnp.float32)
        labels = jnp.full((b, n, 1), -2, jnp.int32)
    return model.decode(
        embeddings,
        points,
        labels,
        boxes,
        box_valid,
        mask_inputs,
        mask_valid,
        multimask_output=multimask,
        task_ids=task_ids,
    )


def _task_ids(batch, settings: InteractiveSettings) -> Array:
    b, n = batch["masks"].shape[:2]
    task = jnp.broadcast_to(batch["task_id"].astype(jnp.int32)[:, None], (b, n))
    return task if settings.use_task_prompt else jnp.full_like(task, -1)


def semi_supervised_loss(
    params: PyTree,
    batch: dict[str, Array],
    key: Array,
    model_state: PyTree,
    *,
    teacher: PyTree,
    model_def,
    settings: InteractiveSettings,
    semi: SemiSettings,
) -> tuple[Array, dict[str, Any]]:
    """The loss of `semi.method` and `interactive_loss`'s aux entries (its per-round
    metrics are those of the interactive rounds; for AugSeg, `loss_pseudo` is the
    consistency loss, the same in every round)."""
    batch = jax.tree.map(jnp.asarray, batch)
    model = model_def.merge(params, model_state)
    images = normalize_and_pad(batch["image"], batch["image_size"])
    if semi.method == "discrepancy":
        return _discrepancy_loss(
            params, model, images, batch, key, model_state, teacher, model_def, settings, semi
        )
    return _augseg_loss(model, images, batch, key, model_state, teacher, model_def, settings, semi)


def _discrepancy_loss(params, model, images, batch, key, model_state, teacher, model_def,
                      settings, semi):  # fmt: skip
    embeddings = model.encode_image(images)
    boxes, box_ok = pseudo_label_boxes(batch["masks"], model.config.img_size)
    task_ids = _task_ids(batch, settings)
    decode = lambda m, e: _decode(
        m, e, boxes=boxes, box_valid=box_ok, task_ids=task_ids, multimask=False
    )
    student, _ = decode(model, embeddings)
    if semi.uses_aux_decoder:
        second_params = {k: v for k, v in params.items() if k != AUX_DECODER}
        second_params["mask_decoder"] = params[AUX_DECODER]
        second = model_def.merge(second_params, model_state)
        other, other_iou = decode(second, embeddings)
    else:
        teacher_model = model_def.merge(jax.lax.stop_gradient(teacher), model_state)
        other, _ = decode(teacher_model, teacher_model.encode_image(images))
    certainty = discrepancy_certainty(
        jax.lax.stop_gradient(student[:, :, 0]), jax.lax.stop_gradient(other[:, :, 0])
    )
    loss, aux = training_rounds(model, embeddings, {**batch, "certainty": certainty}, key, settings)
    if semi.uses_aux_decoder:
        b, n, size = batch["masks"].shape[0], batch["masks"].shape[1], batch["masks"].shape[-1]
        flat = lambda x: x.reshape((b * n,) + x.shape[2:])
        pseudo = batch["is_pseudo"].astype(bool)[:, None, None, None]
        c = jnp.where(pseudo & settings.uncertainty_aware_loss, certainty, 1.0)
        area = prompts.image_area(batch["image_size"], size, model.config.img_size)
        area = jnp.broadcast_to(area[:, None], (b, n, size, size))
        terms = losses.combined_loss(
            flat(other[:, :, 0]),
            flat(other_iou[:, :, 0]),
            flat(batch["masks"]),
            flat(c),
            area=flat(area),
            **settings.loss_kwargs(),
        )
        second_loss, _ = losses.image_means(
            terms["loss"].reshape(b, n), batch["mask_valid"].astype(bool)
        )
        aux["image_loss"] = aux["image_loss"] + semi.aux_decoder_weight * second_loss
        loss = losses.mean_over_images(aux["image_loss"], aux["image_valid"])
    return loss, aux


# SAM's automatic mask generator's grid (`points_per_side`, its default 32): AugSeg Uniform
# Point-Prompt's prompts are drawn from it (App. E.1: "akin to the automatic mask
# generation process utilized in SAM ... a regular grid of points as prompts"; the paper
# gives no count, so each step takes one point per mask slot).
GRID_SIDE = 32


def grid_points(key: Array, n: int, image_size: Array, side: int = GRID_SIDE) -> Array:
    """`[B, n, 2]` input-frame points: for each image, `n` distinct points of SAM's regular
    `side x side` grid of cell centres over the real image (`(i + 0.5) / side` of its width
    and height), drawn uniformly without replacement (a fresh subset per image and key),
    independent of any label."""
    if n > side * side:
        raise ValueError(f"{n} uniform points from a {side}x{side} grid")
    b = image_size.shape[0]
    centres = (jnp.arange(side, dtype=jnp.float32) + 0.5) / side
    ys, xs = jnp.meshgrid(centres, centres, indexing="ij")
    unit = jnp.stack([xs.reshape(-1), ys.reshape(-1)], axis=-1)  # (x, y) in [0, 1], row-major
    pick = jax.vmap(lambda k: jax.random.choice(k, side * side, (n,), replace=False))(
        jax.random.split(key, b)
    )
    hw = image_size.astype(jnp.float32)
    wh = jnp.stack([hw[:, 1], hw[:, 0]], axis=-1)
    return unit[pick] * wh[:, None] - 0.5


def consistency_loss(
    student_logits: Array,
    teacher_logits: Array,
    pseudo_labels: Array,
    pasted: Array,
    area: Array,
    *,
    select: bool,
    focal_weight: float = 20.0,
    dice_weight: float = 1.0,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> Array:
    """AugSeg's consistency between the student's and the teacher's `M` outputs per mask.

    Args:
      student_logits, teacher_logits: `[N, M, L, L]`.
      pseudo_labels: 0/1 `[N, L, L]`, the masks the prompts came from (used only to select).
      pasted: bool `[N, L, L]` pixels CutMix replaced in the student's view: target 0.
      area: bool `[N, L, L]` real-image pixels (the losses' pixels).
      select: True: one pair, the output of each set with the highest IoU with the
        pseudo-label; False: the sum over the `M` pairs of the same output token.

    Returns:
      `[N]` float32 `focal_weight * focal + dice_weight * dice` (plain losses, target
      `teacher > 0` and not pasted).
    """
    if select:
        pl = pseudo_labels[:, None]
        counts = lambda lg: iou_from_counts(
            *iou_counts((lg > 0) & area[:, None], (pl > 0) & area[:, None])
        )
        pick = lambda lg, idx: jnp.take_along_axis(lg, idx[:, None, None, None], axis=1)
        student_logits = pick(student_logits, jnp.argmax(counts(student_logits), axis=1))
        teacher_logits = pick(teacher_logits, jnp.argmax(counts(teacher_logits), axis=1))
    n, m = student_logits.shape[:2]
    target = (teacher_logits > 0) & ~pasted[:, None]
    rep = lambda x: jnp.broadcast_to(x[:, None], (n, m) + x.shape[1:]).reshape(
        (n * m,) + x.shape[1:]
    )
    flat = lambda x: x.reshape((n * m,) + x.shape[2:])
    s, t, a = flat(student_logits), flat(jax.lax.stop_gradient(target)), rep(area)
    focal = losses.sigmoid_focal(s, t, alpha=alpha, gamma=gamma, area=a)
    dc = losses.dice(s, t, area=a)
    return (focal_weight * focal + dice_weight * dc).reshape(n, m).sum(axis=1)


def augseg_views(key: Array, batch: dict[str, Array], img_size: int, semi: SemiSettings):
    """The students' strong views of the whole step's batch, before it is split into
    micro-batches, so that CutMix pairs each pseudo-labelled image with another one of the
    step (`augment.cycle_partners`), whichever micro-batch it is in: `batch` plus
    `strong_image` (uint8, the image itself for human-labelled images) and `pasted` (bool
    `[B, L, L]`)."""
    size = batch["masks"].shape[-1]
    pseudo = batch["is_pseudo"].astype(bool)
    strong, pasted, _ = augment.strong_view(
        key,
        batch["image"],
        prompts.image_area(batch["image_size"], size, img_size),
        mask_size=size,
        num_augs=semi.num_augs,
        cutmix_prob=semi.cutmix_prob,
        eligible=pseudo,
    )
    strong = jnp.where(pseudo[:, None, None, None], strong, batch["image"])
    return {**batch, "strong_image": strong, "pasted": pasted}


def pseudo_label_rounds(semi: SemiSettings, settings: InteractiveSettings) -> int:
    """Prompting rounds of AugSeg's pseudo-labelled images: SAM's R for mixed prompts
    ("for multi-prompt scenarios, we sample interactive prompts for both teacher and student
    networks based on SAM pseudo-labels"), one for boxes and uniform points, which the
    paper applies "solely in single prompt scenarios"."""
    return settings.num_rounds if semi.prompt == "mixed" else 1


def _augseg_loss(model, images, batch, key, model_state, teacher, model_def, settings, semi):
    b, n, size = batch["masks"].shape[0], batch["masks"].shape[1], batch["masks"].shape[-1]
    img_size = model.config.img_size
    k_view, k_prompt, k_rounds = jax.random.split(key, 3)
    if "strong_image" not in batch:  # called on a whole batch (train_step adds the views)
        batch = augseg_views(k_view, batch, img_size, semi)
    pseudo = batch["is_pseudo"].astype(bool)
    mask_valid = batch["mask_valid"].astype(bool)
    area = prompts.image_area(batch["image_size"], size, img_size)
    pasted = batch["pasted"].astype(bool)
    embeddings = model.encode_image(normalize_and_pad(batch["strong_image"], batch["image_size"]))
    teacher_model = model_def.merge(jax.lax.stop_gradient(teacher), model_state)
    teacher_embeddings = teacher_model.encode_image(images)

    # Human-labelled images: SUM's interactive rounds (the pseudo-labelled ones sit out).
    human = {**batch, "mask_valid": mask_valid & ~pseudo[:, None]}
    _, aux = training_rounds(model, embeddings, human, k_rounds, settings)

    # Pseudo-labelled images: prompts from the pseudo-label's visible part (not pasted
    # over), the same for teacher and student.
    flat = lambda x: x.reshape((b * n,) + x.shape[2:])
    unflat = lambda x: x.reshape((b, n) + x.shape[1:])
    pasted_bn = jnp.broadcast_to(pasted[:, None], (b, n, size, size))
    visible = (batch["masks"] > 0) & ~pasted_bn
    area_bn = jnp.broadcast_to(area[:, None], (b, n, size, size))
    task = _task_ids(batch, settings)
    slots = settings.num_point_slots
    if semi.prompt == "uniform_point":
        points = grid_points(k_prompt, n, batch["image_size"])[:, :, None]
        labels = jnp.ones((b, n, 1), jnp.int32)
        boxes = jnp.zeros((b, n, 4), jnp.float32)
        box_valid = jnp.zeros((b, n), bool)
        valid = jnp.broadcast_to(pseudo[:, None], (b, n))
    else:
        first = prompts.sample_first_prompts(
            k_prompt,
            flat(visible),
            None,
            img_size=img_size,
            image_size=jnp.broadcast_to(batch["image_size"][:, None], (b, n, 2)).reshape(b * n, 2),
            box_prob=1.0 if semi.prompt == "box" else settings.box_prob,
            box_noise_frac=settings.box_noise_frac,
            box_noise_max=settings.box_noise_max,
        )
        points = jnp.zeros((b, n, slots, 2), jnp.float32).at[:, :, 0].set(unflat(first["point"]))
        labels = jnp.full((b, n, slots), -2, jnp.int32)
        labels = labels.at[:, :, 0].set(jnp.where(unflat(first["point_valid"]), 1, -2))
        boxes, box_valid = unflat(first["box"]), unflat(first["box_valid"])
        valid = mask_valid & pseudo[:, None] & visible.any(axis=(-2, -1))

    def decode_pair(points, labels, mask_inputs, mask_valid, task_ids, multimask):
        s_in, t_in = (None, None) if mask_inputs is None else mask_inputs
        common = {"points": points, "labels": labels, "boxes": boxes, "box_valid": box_valid,
                  "mask_valid": mask_valid, "task_ids": task_ids, "multimask": multimask}  # fmt: skip
        student = _decode(model, embeddings, mask_inputs=s_in, **common)
        teach = _decode(teacher_model, teacher_embeddings, mask_inputs=t_in, **common)
        return student, jax.tree.map(jax.lax.stop_gradient, teach)

    per_round, _ = consistency_rounds(
        decode_pair,
        jax.random.fold_in(k_prompt, 1),
        pseudo_labels=batch["masks"],
        visible=visible,
        pasted=pasted_bn,
        area=area_bn,
        points=points,
        labels=labels,
        task_ids=task,
        valid=valid,
        num_rounds=pseudo_label_rounds(semi, settings),
        select=not (semi.multi_consistency or semi.prompt == "uniform_point"),
        settings=settings,
        img_size=img_size,
    )
    cons_image = per_round.mean(axis=0)  # [B]: mean over the rounds
    cons_valid = valid.any(axis=-1)
    image_valid = jnp.where(pseudo, cons_valid, aux["image_valid"])
    aux["image_loss"] = jnp.where(pseudo, cons_image, aux["image_loss"])
    aux["image_valid"] = image_valid
    cons_mean = losses.mean_over_images(cons_image, cons_valid & pseudo)
    aux["loss_pseudo"] = jnp.full_like(aux["loss_pseudo"], cons_mean)
    return losses.mean_over_images(aux["image_loss"], image_valid), aux


def consistency_rounds(
    decode_pair,
    key: Array,
    *,
    pseudo_labels: Array,
    visible: Array,
    pasted: Array,
    area: Array,
    points: Array,
    labels: Array,
    task_ids: Array,
    valid: Array,
    num_rounds: int,
    select: bool,
    settings: InteractiveSettings,
    img_size: int,
    record: bool = False,
) -> tuple[Array, dict[str, Array] | None]:
    """AugSeg's consistency over the prompting rounds of the pseudo-labelled masks.

    Args:
      decode_pair: `(points, labels, mask_inputs, mask_valid, task_ids, multimask) ->
        ((student logits, IoU), (teacher logits, IoU))`, `[B, N, M, L, L]` and `[B, N, M]`,
        the teacher's without gradient; `mask_inputs` is None (round 1) or the pair
        `(student's, teacher's)` `[B, N, L, L]` previous logits.
      key: PRNG key of the clicks.
      pseudo_labels: 0/1 `[B, N, L, L]` (used to select round 1's outputs).
      visible: bool `[B, N, L, L]` the pseudo-label outside CutMix's pasted box (clicks
        correct the teacher's prediction towards it).
      pasted, area: bool `[B, N, L, L]` (see `consistency_loss`).
      points, labels: round 1's prompt `[B, N, P, 2]`, `[B, N, P]` (label -2: empty slot);
        slot `r` takes round `r + 1`'s click.
      task_ids: `[B, N]` round 1's task prompt (-1 none); later rounds get it only with
        `settings.continuous_task_prompt`.
      valid: bool `[B, N]` masks that count.
      num_rounds: static, 1 (single prompt) or more.
      select, settings, img_size: as in `consistency_loss` / rounds.py.
      record: also return, per later round, the decoder's inputs and both outputs.

    Returns:
      `(per_round [num_rounds, B], record)`: each image's round loss (mean over its valid
      masks; 0 for an image without one) and, with `record`, `[num_rounds - 1, ...]` arrays
      `points`, `labels`, `student_in`, `teacher_in`, `student`, `teacher`, `task_ids`.
    """
    b, n = pseudo_labels.shape[:2]
    slots = points.shape[2]
    flat = lambda x: x.reshape((b * n,) + x.shape[2:])
    unflat = lambda x: x.reshape((b, n) + x.shape[1:])
    kw = settings.loss_kwargs()

    def round_loss(student, teacher, select):
        cons = consistency_loss(
            flat(student),
            flat(teacher),
            flat(pseudo_labels),
            flat(pasted),
            flat(area),
            select=select,
            focal_weight=kw["focal_weight"],
            dice_weight=kw["dice_weight"],
            alpha=kw["alpha"],
            gamma=kw["gamma"],
        )
        return losses.image_means(unflat(cons), valid)[0]

    (student, s_iou), (teacher, t_iou) = decode_pair(points, labels, None, None, task_ids, True)
    first = round_loss(student, teacher, select)
    if num_rounds == 1:
        return first[None], None
    # Rounds 2..R as SAM's (rounds.py): each network's most confident round-1 output, then
    # its single output, is its own mask prompt; rounds 2..R-1 add one click from the error
    # region of the teacher's prediction against the visible pseudo-label, the same click
    # for both networks.
    pick = lambda lg, iou: jnp.take_along_axis(
        lg, jnp.argmax(iou, -1)[..., None, None, None], axis=2
    )[:, :, 0]
    later_task = jnp.where(settings.continuous_task_prompt, task_ids, -1)
    click_area = flat(area) if settings.restrict_to_image else None

    def body(carry, xs):
        points, labels, s_prev, t_prev = carry
        r, k = xs
        click, click_label, ok = prompts.sample_error_points(
            k, flat(visible), flat(t_prev) > 0, None, click_area, img_size=img_size
        )
        add = unflat(ok) & (r <= num_rounds - 2)
        fill = (jnp.arange(slots) == jnp.minimum(r, slots - 1)) & add[..., None]
        labels = jnp.where(fill, unflat(click_label)[..., None], labels)
        points = jnp.where(fill[..., None], unflat(click)[:, :, None, :], points)
        inputs = (jax.lax.stop_gradient(s_prev), t_prev)
        (s_out, _), (t_out, _) = decode_pair(
            points, labels, inputs, jnp.ones((b, n), bool), later_task, False
        )
        ys = round_loss(s_out, t_out, False)
        if record:
            ys = (ys, {"points": points, "labels": labels, "student_in": inputs[0],
                       "teacher_in": t_prev, "student": s_out[:, :, 0],
                       "teacher": t_out[:, :, 0], "task_ids": later_task})  # fmt: skip
        return (points, labels, s_out[:, :, 0], t_out[:, :, 0]), ys

    if settings.remat_rounds and not record:
        body = jax.checkpoint(body, prevent_cse=False)
    carry = (points, labels, pick(student, s_iou), pick(teacher, t_iou))
    rounds = jnp.arange(1, num_rounds)
    _, ys = jax.lax.scan(body, carry, (rounds, jax.random.split(key, num_rounds - 1)))
    later, rec = ys if record else (ys, None)
    return jnp.concatenate([first[None], later], axis=0), rec
