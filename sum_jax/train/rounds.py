"""SUM's interactive training step (App. B.1): 7 prompting rounds as one `jax.lax.scan`.

For each image in the batch the image is encoded once; then, for every mask of the image,

- round 1: a jittered box or one positive point (equal probability), the task prompt, no mask
  prompt, three outputs; the mask loss is that of the output with the lowest
  `20 focal + dice`, and the IoU head of all three outputs is trained (SAM 2's
  `supervise_all_iou`; `config.loss.supervise_all_iou = False` restores the earlier rule:
  the lowest full loss, IoU MSE included, trains only its own IoU prediction);
- rounds 2 .. R-1: one new point each from the error region of the previous round's
  prediction (false negative -> positive, false positive -> negative), all earlier prompts
  kept; the previous round's low-res logits (stop-gradient) as mask prompt; one output;
- round R: no new prompt, otherwise like rounds 2 .. R-1.

With `continuous_task_prompt` the task prompt is given in every round (the paper's
"Continuous TP" ablation), otherwise only in round 1 (`task_ids = -1` afterwards); with
`use_task_prompt` false it is never given ("SUM w/o task prompt").

Fixed shapes let every round share one scan body: the decoder always receives
`P = R - 1` point slots (slot 0: round 1's point, slot r: round r+1's point), with label -2
("absent", masked out of attention) until filled; a box with its `box_valid` flag; and a mask
prompt with `mask_valid` false in round 1. Each round decodes all four outputs once; round
1's three-output loss and the later single-output loss are the two branches of a `lax.cond`
on the round index, so the whole loop is one XLA while-loop with no host round trip. The
image embedding is computed before the scan and closed over, so gradients from every round
reach the encoder.

In round 1 the mask passed on (as mask prompt and to sample the next point) is the output
with the highest predicted IoU, as in SAM's training (SAM paper, App. A).

An HQ-SAM model (`model.config.hq`, sum_jax/models/hq.py) is trained on what it returns: its
one output (the HQ token's mask with `hq_token_only`), in every round. Round 1 too has that
single output, as HQ-SAM trains (`multimask_output=False, hq_token_only=True` in its
train.py): its HQ token has no multimask counterpart, so there is no best-of-three choice;
the IoU term compares the frozen IoU head's estimate (SAM's single-mask token's) with the
output's IoU, which is why the HQ configs set `loss.iou_weight = 0`.

Certainty `c = 1 - u` (from `batch['uncertainty']`, or a float `batch['certainty']` computed
in the step by the Discrepancy-Uncer variant) is used only for pseudo-labelled images
(`batch['is_pseudo']`): human-labelled masks use `c = 1`, which makes the uncertainty-aware
losses the plain ones and the sampling uniform.

Reduction (every image counts equally, App. B.1: one image and up to 30 masks per GPU,
data-parallel): each image's round loss is the mean of `20 focal + dice + iou_mse` over its
valid masks (padding masks, `mask_valid` false, are excluded); its step loss `image_loss` is
the mean of its R round losses; the step's loss is the mean of `image_loss` over the images
with at least one valid mask (`image_valid`). Focal, Dice and the IoU target count only the
real image's pixels on the `L x L` grid (those overlapping the unpadded image), not the zero
padding (eq. 1: "the m pixels of an input image"). All means are global over the batch,
whatever its sharding. With `loss_resolution` "full" or "points" focal and Dice are evaluated
at the `S x S` input frame instead (`batch['masks_full']`; train/loss_resolution.py), still
on real pixels only; prompts are sampled on the `L x L` grid in every setting.

Gradient accumulation over micro-batches: the global loss is
`sum_m sum_i image_valid_i * image_loss_i / max(sum_m sum_i image_valid_i, 1)`. Accumulate the
gradient of each micro-batch's `loss * max(n_m, 1)` (= `sum_i image_valid_i * image_loss_i`,
with `n_m = sum_i image_valid_i`, known from the batch alone: `mask_valid.any(-1)`) and
divide the sum by `max(sum_m n_m, 1)` once; that is exactly the full batch's gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from sum_jax.models.common import shard_leading_axis
from sum_jax.ops.transforms import normalize_and_pad
from sum_jax.train import contrastive, loss_resolution, losses, prompts

Array = jax.Array

METRIC_KEYS = ("loss", "focal", "dice", "iou_mse", "iou")


@dataclasses.dataclass(frozen=True)
class InteractiveSettings:
    """Static settings of the interactive loss (hashable, so they can be jit-static).

    Built from a config with `InteractiveSettings.from_config(config)`; see configs/base.py
    for the meaning of each field.
    """

    num_rounds: int = 7
    box_prob: float = 0.5
    box_noise_frac: float = 0.1
    box_noise_max: float = 20.0
    uncertainty_sampling: bool = True
    continuous_task_prompt: bool = False
    use_task_prompt: bool = True
    restrict_to_image: bool = True
    uncertainty_aware_loss: bool = True
    supervise_all_iou: bool = True
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    theta: float = 0.6
    alpha: float = 0.25
    gamma: float = 2.0
    # Rematerialise each round in the backward pass: the scan then stores only its carry.
    remat_rounds: bool = False
    # U2PL's pixel contrastive loss on the image embeddings of pseudo-labelled images
    # (sum_jax/train/contrastive.py), added to each image's loss with this weight; 0: off.
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 0.5
    contrastive_queries: int = 256
    contrastive_negatives: int = 50
    # Where focal and Dice are evaluated (sum_jax/train/loss_resolution.py).
    loss_resolution: str = "low"
    num_points: int = 112 * 112
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    # Decode the masks of an image in this many chunks, one after the other (`lax.map`,
    # each chunk rematerialised): the backward pass of a round then holds the decoder's
    # activations for one chunk of masks at a time. 1: all masks at once.
    mask_chunks: int = 1

    @classmethod
    def from_config(cls, config) -> InteractiveSettings:
        it, loss = config.interactive, config.loss
        return cls(
            num_rounds=int(it.num_rounds),
            box_prob=float(it.box_prob),
            box_noise_frac=float(it.box_noise_frac),
            box_noise_max=float(it.box_noise_max),
            uncertainty_sampling=bool(it.uncertainty_sampling),
            continuous_task_prompt=bool(it.continuous_task_prompt),
            use_task_prompt=bool(it.get("use_task_prompt", True)),
            restrict_to_image=bool(it.restrict_to_image),
            uncertainty_aware_loss=bool(loss.uncertainty_aware),
            supervise_all_iou=bool(loss.get("supervise_all_iou", True)),
            remat_rounds=str(config.model.get("remat", "none")) != "none",
            contrastive_weight=float(loss.get("contrastive_weight", 0.0)),
            contrastive_temperature=float(loss.get("contrastive_temperature", 0.5)),
            contrastive_queries=int(loss.get("contrastive_queries", 256)),
            contrastive_negatives=int(loss.get("contrastive_negatives", 50)),
            loss_resolution=loss_resolution.check_resolution(str(loss.get("resolution", "low"))),
            num_points=int(loss.get("num_points", 112 * 112)),
            oversample_ratio=float(loss.get("oversample_ratio", 3.0)),
            importance_sample_ratio=float(loss.get("importance_sample_ratio", 0.75)),
            mask_chunks=int(config.model.get("mask_chunks", 1)),
            **losses.loss_kwargs_from_config(loss),
        )

    @property
    def num_point_slots(self) -> int:
        """Point slots in the decoder's input: round 1's point plus one per rounds 2..R-1."""
        return max(self.num_rounds - 1, 1)

    def contrastive_settings(self) -> contrastive.ContrastiveSettings:
        return contrastive.ContrastiveSettings(
            theta=self.theta,
            temperature=self.contrastive_temperature,
            num_queries=self.contrastive_queries,
            num_negatives=self.contrastive_negatives,
        )

    def loss_kwargs(self) -> dict[str, float]:
        return {
            "focal_weight": self.focal_weight,
            "dice_weight": self.dice_weight,
            "iou_weight": self.iou_weight,
            "theta": self.theta,
            "alpha": self.alpha,
            "gamma": self.gamma,
        }


def interactive_loss(
    model: Any,
    batch: dict[str, Array],
    key: Array,
    settings: InteractiveSettings,
    *,
    record: bool = False,
) -> tuple[Array, dict[str, Any]]:
    """Encodes the batch's images once and runs the interactive rounds on every mask.

    Args:
      model: a `sum_jax.models.sam.Sam` (anything with its `config`, `encode_image` and
        `decode`).
      batch: the training batch of docs/contracts.md (`image`, `image_size`, `masks`,
        `mask_valid`, `uncertainty`, `is_pseudo`, `task_id`), as device arrays.
      key: PRNG key for this step's prompts.
      settings: static settings.
      record: also return, per round, exactly what the decoder received and the logits
        passed on (for tests and debugging; costs memory).

    Returns:
      `(loss, aux)`: the scalar loss and `aux` with per-round `[R]` metrics `loss`, `focal`,
      `dice`, `iou_mse`, `iou` (per image the mean over its valid masks, then the mean over
      images with a valid mask; `iou` of the trained output), `loss_human`, `loss_pseudo`
      (the same round loss over human / pseudo-labelled images only); per image `[B]`:
      `image_loss` (mean over rounds of the image's round loss) and `image_valid` (the image
      has at least one valid mask), so that `loss == sum(image_valid * image_loss) /
      max(sum(image_valid), 1)`; with `record`, `aux["rounds"]`: a dict of `[R, ...]`
      decoder inputs and outputs.
    """
    images = normalize_and_pad(batch["image"], batch["image_size"])
    embeddings = model.encode_image(images)
    loss, aux = training_rounds(model, embeddings, batch, key, settings, record=record)
    if settings.contrastive_weight:
        loss, aux = add_contrastive_loss(model, embeddings, batch, key, settings, aux)
    return loss, aux


def add_contrastive_loss(
    model: Any,
    image_embeddings: Array,
    batch: dict[str, Array],
    key: Array,
    settings: InteractiveSettings,
    aux: dict[str, Any],
) -> tuple[Array, dict[str, Any]]:
    """U2PL's pixel contrastive loss (sum_jax/train/contrastive.py) on the pseudo-labelled
    images, added with `settings.contrastive_weight` to each image's `image_loss`, so the
    step's loss stays the mean of `image_loss` over the valid images (and gradient
    accumulation stays exact). `aux["contrastive"]`: its mean over the same images (0 for
    human-labelled ones)."""
    batch = jax.tree.map(jnp.asarray, batch)
    is_pseudo = batch["is_pseudo"].astype(bool)
    certainty = (255 - batch["uncertainty"].astype(jnp.int32)).astype(jnp.float32) / 255.0
    h = image_embeddings.shape[1]
    area = prompts.image_area(batch["image_size"], h, model.config.img_size)
    if getattr(model.config, "hq", False):  # an HQ model's features hold more than SAM's
        image_embeddings = model.image_embedding(image_embeddings)
    per_image = contrastive.pixel_contrastive_loss(
        # A stream of its own: the rounds' prompts are the same with the loss on or off.
        jax.random.fold_in(key, 0x2917),
        image_embeddings,
        batch["masks"],
        certainty,
        area,
        batch["mask_valid"].astype(bool) & is_pseudo[:, None],
        settings.contrastive_settings(),
    )
    aux = dict(aux)
    aux["image_loss"] = aux["image_loss"] + settings.contrastive_weight * per_image
    aux["contrastive"] = losses.mean_over_images(per_image, aux["image_valid"])
    return losses.mean_over_images(aux["image_loss"], aux["image_valid"]), aux


def training_rounds(
    model: Any,
    image_embeddings: Array,
    batch: dict[str, Array],
    key: Array,
    settings: InteractiveSettings,
    *,
    record: bool = False,
) -> tuple[Array, dict[str, Any]]:
    """The scanned rounds given precomputed `image_embeddings [B, h, w, C]`; see
    `interactive_loss` for the arguments and results."""
    batch = jax.tree.map(jnp.asarray, batch)
    img_size = model.config.img_size
    targets = batch["masks"]
    b, n, size = targets.shape[0], targets.shape[1], targets.shape[-1]
    if size != model.config.low_res_size:
        raise ValueError(
            f"batch['masks'] are {size}x{size} but the model's low-res logits are "
            f"{model.config.low_res_size}x{model.config.low_res_size}"
        )
    bn, slots, num_rounds = b * n, settings.num_point_slots, settings.num_rounds
    chunks = settings.mask_chunks
    if chunks < 1 or n % chunks:
        raise ValueError(f"model.mask_chunks={chunks} does not split {n} masks per image")

    is_pseudo = batch["is_pseudo"].astype(bool)[:, None, None, None]
    # c = 1 - u/255, from the integer complement so that u = 255 gives exactly c = 0 (XLA
    # turns "/ 255" into a multiplication that does not round 255 * (1/255) to 1).
    certainty = (255 - batch["uncertainty"].astype(jnp.int32)).astype(jnp.float32) / 255.0
    if "certainty" in batch:
        # A map computed in the step (Discrepancy-Uncer, semi_supervised.py), f32 [B, N, L, L].
        certainty = batch["certainty"].astype(jnp.float32)
    certainty = jnp.clip(certainty, 0.0, 1.0)
    loss_c = jnp.where(is_pseudo & settings.uncertainty_aware_loss, certainty, 1.0)
    sample_c = jnp.where(is_pseudo & settings.uncertainty_sampling, certainty, 1.0)
    flat = lambda x: x.reshape((bn,) + x.shape[2:])
    unflat = lambda x: x.reshape((b, n) + x.shape[1:])
    targets_f, loss_c_f, sample_c_f = flat(targets), flat(loss_c), flat(sample_c)
    mask_valid_bn = batch["mask_valid"].astype(bool)
    image_valid = mask_valid_bn.any(axis=-1)  # [B]
    image_pseudo = batch["is_pseudo"].astype(bool)
    # The grid pixels of the real image: the losses' pixels, and where clicks may land.
    area = prompts.image_area(batch["image_size"], size, img_size)
    area_f = flat(jnp.broadcast_to(area[:, None], (b, n, size, size)))
    click_area_f = area_f if settings.restrict_to_image else None
    loss_inputs = _loss_frame(batch, settings, img_size, targets_f, loss_c_f, area_f)

    key_first, key_rounds = jax.random.split(key)
    first = prompts.sample_first_prompts(
        key_first,
        targets_f,
        sample_c_f,
        img_size=img_size,
        image_size=jnp.broadcast_to(batch["image_size"][:, None], (b, n, 2)).reshape(bn, 2),
        box_prob=settings.box_prob,
        box_noise_frac=settings.box_noise_frac,
        box_noise_max=settings.box_noise_max,
    )
    points = jnp.zeros((bn, slots, 2), jnp.float32).at[:, 0].set(first["point"])
    labels = jnp.full((bn, slots), -2, jnp.int32)
    labels = labels.at[:, 0].set(jnp.where(first["point_valid"], 1, -2))
    boxes, box_valid = unflat(first["box"]), unflat(first["box_valid"])
    task = jnp.broadcast_to(batch["task_id"].astype(jnp.int32)[:, None], (b, n))
    loss_kwargs = settings.loss_kwargs()

    # Under a mesh, keep every per-image and per-mask array split over the devices by
    # image inside the round scan (see `shard_leading_axis`).
    image_embeddings = shard_leading_axis(image_embeddings)

    def decode(points, labels, mask_inputs, mask_valid, task_ids, multimask):
        """`[B, N, ...]` prompts -> `[B, N, M, L, L]` logits, `[B, N, M]` IoU predictions."""
        per_mask = (unflat(points), unflat(labels), boxes, box_valid, mask_inputs, mask_valid)

        def run(args):
            p, lab, box, box_ok, mask_in, mask_ok, task = args
            return model.decode(
                image_embeddings,
                p,
                lab,
                box,
                box_ok,
                mask_in,
                mask_ok,
                multimask_output=multimask,
                task_ids=task,
            )

        if chunks == 1:
            logits, iou_pred = run(per_mask + (task_ids,))
        else:
            # [B, N, ...] -> [chunks, B, N / chunks, ...]: chunk c holds masks c N / chunks ..
            split = lambda x: jnp.moveaxis(x.reshape((b, chunks, n // chunks) + x.shape[2:]), 1, 0)
            merge = lambda x: jnp.moveaxis(x, 0, 1).reshape((b, n) + x.shape[3:])
            out = jax.lax.map(jax.checkpoint(run), jax.tree.map(split, per_mask + (task_ids,)))
            logits, iou_pred = jax.tree.map(merge, out)
        return shard_leading_axis(logits), shard_leading_axis(iou_pred)

    def body(carry, xs):
        points, labels, prev_logits = jax.tree.map(shard_leading_axis, carry)
        r, k = xs
        k_loss = None
        if settings.loss_resolution == "points":  # static: "low" keeps its random stream
            k, k_loss = jax.random.split(k)
        # Rounds 2 .. R-1 add one click from the error region of the previous prediction.
        new_point, new_label, ok = prompts.sample_error_points(
            k,
            targets_f,
            flat(prev_logits) > 0,
            sample_c_f,
            click_area_f,
            img_size=img_size,
        )
        add = ok & (r >= 1) & (r <= num_rounds - 2)
        fill = (jnp.arange(slots) == jnp.minimum(r, slots - 1))[None, :] & add[:, None]
        labels = jnp.where(fill, new_label[:, None], labels)
        points = jnp.where(fill[..., None], new_point[:, None, :], points)
        # The previous prediction is an input, not a path for gradients (SAM).
        mask_inputs = jax.lax.stop_gradient(prev_logits)
        mask_valid = jnp.broadcast_to(r > 0, (b, n))
        use_task = (r == 0) | settings.continuous_task_prompt
        task_ids = jnp.where(use_task & settings.use_task_prompt, task, -1)
        args = (points, labels, mask_inputs, mask_valid, task_ids)

        def first_round(logits, iou_pred):
            """SAM's three outputs `[B, N, 3, L, L]`: the loss of the best one."""
            x, y, c, a, actual_iou = loss_inputs(flat(logits), k_loss)
            terms, _ = losses.multimask_loss(
                x,
                flat(iou_pred),
                y,
                c,
                a,
                supervise_all_iou=settings.supervise_all_iou,
                actual_iou=actual_iou,
                **loss_kwargs,
            )
            best = jnp.argmax(iou_pred, axis=-1)  # SAM passes on the most confident mask
            passed = jnp.take_along_axis(logits, best[..., None, None, None], axis=2)[:, :, 0]
            return terms, passed

        def later_round(logits, iou_pred):
            """The single-mask output `[B, N, 1, L, L]`."""
            x, y, c, a, actual_iou = loss_inputs(flat(logits), k_loss)
            # Inputs with an output axis (point samples) lose it; shared ones are kept.
            one = lambda t: t if t is None or t.ndim < x.ndim else t[:, 0]
            terms = losses.combined_loss(
                x[:, 0],
                flat(iou_pred[..., 0]),
                one(y),
                one(c),
                area=one(a),
                actual_iou=None if actual_iou is None else actual_iou[:, 0],
                **loss_kwargs,
            )
            return terms, logits[:, :, 0]

        if getattr(model.config, "hq", False):  # HQ-SAM: its one output in every round
            terms, passed = later_round(*decode(*args, multimask=False))
        else:
            # One decoder pass gives all four outputs (SAM computes every mask token either
            # way); only the loss depends on the round, so only the loss is in the `cond`.
            # Decoding inside each branch put the decoder (forward and backward) into the
            # program twice: twice the tracing and compiling for nothing.
            logits, iou_pred = decode(*args, multimask=None)  # [B, N, 4, L, L], [B, N, 4]
            terms, passed = jax.lax.cond(
                r == 0,
                lambda: first_round(logits[:, :, 1:], iou_pred[..., 1:]),
                lambda: later_round(logits[:, :, :1], iou_pred[..., :1]),
            )
        # Per image: the mean over its valid masks; then the mean over images.
        per_image = {
            k_: losses.image_means(unflat(terms[k_]), mask_valid_bn)[0] for k_ in METRIC_KEYS
        }
        metrics = {k_: losses.mean_over_images(v, image_valid) for k_, v in per_image.items()}
        # The same round loss split by data source, for the trainer's logs.
        metrics["loss_human"] = losses.mean_over_images(
            per_image["loss"], image_valid & ~image_pseudo
        )
        metrics["loss_pseudo"] = losses.mean_over_images(
            per_image["loss"], image_valid & image_pseudo
        )
        ys = {"metrics": metrics, "image_loss": per_image["loss"]}
        if record:
            ys["rounds"] = {
                "points": unflat(points),
                "labels": unflat(labels),
                "boxes": boxes,
                "box_valid": box_valid,
                "mask_inputs": mask_inputs,
                "mask_valid": mask_valid,
                "task_ids": task_ids,
                "logits": passed,
            }
        return (points, labels, passed), ys

    init = (points, labels, jnp.zeros((b, n, size, size), jnp.float32))
    xs = (jnp.arange(num_rounds), jax.random.split(key_rounds, num_rounds))
    if settings.remat_rounds:
        # Only (points, labels, previous logits) and the round's key are kept per round;
        # the decoder's activations for the B x N masks are recomputed one round at a time.
        body = jax.checkpoint(body, prevent_cse=False)
    _, ys = jax.lax.scan(body, init, xs)
    aux = dict(ys["metrics"])
    aux["image_loss"] = ys["image_loss"].mean(axis=0)  # [B]: mean over rounds
    aux["image_valid"] = image_valid
    if record:
        aux["rounds"] = ys["rounds"]
    return losses.mean_over_images(aux["image_loss"], image_valid), aux


def _loss_frame(batch, settings: InteractiveSettings, img_size: int, targets, certainty, area):
    """The function that puts one round's logits `[BN, M, L, L]` (and a PRNG key, used by
    "points" only) into the frame of `settings.loss_resolution` (train/loss_resolution.py):
    it returns `(logits, targets, certainty, area, actual_iou)` for `losses.multimask_loss`
    / `combined_loss`. `targets`, `certainty` and `area` are the flattened `[BN, L, L]`
    low-res ones; `actual_iou` is None where the IoU target is measured on the loss frame.
    """
    resolution = settings.loss_resolution
    if resolution == "low":
        return lambda logits, key: (logits, targets, certainty, area, None)
    if "masks_full" not in batch:
        raise ValueError(
            f"config.loss.resolution={resolution!r} needs batch['masks_full'], the targets "
            f"at the {img_size}x{img_size} input frame (the data pipeline's full_res_masks)"
        )
    b, n = batch["masks"].shape[:2]
    bn = b * n
    targets_full = batch["masks_full"].reshape((bn,) + batch["masks_full"].shape[2:])
    if targets_full.shape[-2:] != (img_size, img_size):
        raise ValueError(
            f"batch['masks_full'] are {targets_full.shape[-2:]}, the input frame is "
            f"{img_size}x{img_size}"
        )
    image_size = jnp.broadcast_to(batch["image_size"][:, None], (b, n, 2)).reshape(bn, 2)

    if resolution == "full":
        # Real pixels of the input frame: rows < h and columns < w.
        area_full = prompts.image_area(image_size, img_size, img_size)
        certainty_full = loss_resolution.upsample(certainty, img_size)

        def full(logits, key):
            up = loss_resolution.upsample(logits, img_size)
            return up, targets_full, certainty_full, area_full, None

        return full

    extent = loss_resolution.image_extent(image_size, img_size)
    p = settings.num_points

    def points(logits, key):
        m = logits.shape[1]
        rows = logits.reshape((bn * m,) + logits.shape[2:])
        coords = loss_resolution.importance_points(
            key,
            rows,
            jnp.repeat(extent, m, axis=0),
            num_points=p,
            oversample_ratio=settings.oversample_ratio,
            importance_sample_ratio=settings.importance_sample_ratio,
        )
        # The M outputs' points of one mask in one row: the shared maps are not repeated.
        per_mask = coords.reshape(bn, m * p, 2)
        sample = lambda maps: loss_resolution.point_sample(maps, per_mask).reshape(bn, m, 1, p)
        x = loss_resolution.point_sample(rows, coords).reshape(bn, m, 1, p)
        actual_iou = losses.mask_iou(
            rows, jnp.repeat(targets, m, axis=0), jnp.repeat(area, m, axis=0)
        ).reshape(bn, m)
        return x, sample(targets_full), sample(certainty), None, actual_iou

    return points
