"""SUM's training losses (§3.2.1, App. B.1): focal, Dice and IoU-prediction MSE, plain and
uncertainty-aware, and their per-round combination.

Conventions shared by every function here:

- `logits`, `targets` and `certainty` are `[N, H, W]` (one row per mask; the interactive
  step flattens its `[B, N]` mask axes into one). `targets` are 0/1, `certainty` is
  `c = 1 - u` in `[0, 1]` with `u` the uncertainty map of §3.2.3.
- `area` (optional, bool `[N, H, W]`) marks the pixels of the real image: eq. (1) averages
  over "the m pixels of an input image", so the zero padding that squares a non-square
  photo (a third of the frame for 3:2) counts in neither focal, Dice nor the IoU target.
  Without it every pixel is real.
- Every loss returns one value per mask, `[N]`. Reductions over masks happen in
  `image_means` (mean over an image's valid masks) and `mean_over_images` (mean over the
  images that have at least one valid mask): every image weighs the same whatever its
  number of masks, as in the paper's one-image-per-GPU data-parallel training (App. B.1).
- Losses are computed in float32 whatever the logits' dtype, because focal terms of
  confident pixels underflow in bfloat16.

Formulas (m = H * W pixels, p = sigmoid(logits), y = targets):

- focal (Lin et al. 2017, as in SAM):
  `l_i = alpha_t * (1 - p_t)**gamma * BCE(p_i, y_i)`, `p_t = p y + (1-p)(1-y)`,
  `alpha_t = alpha y + (1-alpha)(1-y)`; plain: `mean_i l_i`; uncertainty-aware (eq. 1):
  `(1/m) sum_i c_i l_i`: the mean is over all m real pixels, not normalised by `sum c`, so
  a fully uncertain mask (`c = 0`) contributes nothing.
- Dice (eq. 2): `1 - (2 I + eps) / (S + eps)`, `I = sum_i y_i p_i k_i`,
  `S = sum_i (y_i + p_i) k_i`, with `k_i = 1[c_i > theta]` (uncertainty-aware) or 1
  (plain). With no pixel kept, `I = S = 0` and the loss is exactly 0.
- IoU MSE: `(iou_pred - IoU(logits > 0, y))**2` over the real pixels; the target IoU is a
  constant (stop-gradient); an empty prediction against an empty target counts as IoU 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sum_jax.ops.masks import iou_counts, iou_from_counts

Array = jax.Array


def sigmoid_focal(
    logits: Array,
    targets: Array,
    certainty: Array | None = None,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
    area: Array | None = None,
) -> Array:
    """Per-mask sigmoid focal loss, optionally weighted per pixel by certainty (eq. 1).

    Args:
      logits: `[N, H, W]` mask logits.
      targets: `[N, H, W]` 0/1 targets (any dtype).
      certainty: `[N, H, W]` `c = 1 - u` or None for the plain loss.
      alpha: weight of the positive class (0.25 as in SAM); negative disables it.
      gamma: focusing exponent (2).
      area: bool `[N, H, W]` real-image pixels, or None (all pixels).

    Returns:
      `[N]` float32: mean over the m real pixels of `c_i * focal_i`.
    """
    x = logits.astype(jnp.float32)
    y = targets.astype(jnp.float32)
    p = jax.nn.sigmoid(x)
    # The stable form of BCE-with-logits: max(x, 0) - x y + log(1 + exp(-|x|)).
    ce = jnp.maximum(x, 0.0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x)))
    p_t = p * y + (1.0 - p) * (1.0 - y)
    loss = ce * (1.0 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * y + (1.0 - alpha) * (1.0 - y)) * loss
    if certainty is not None:
        loss = certainty.astype(jnp.float32) * loss
    if area is None:
        return loss.mean(axis=(-2, -1))
    area = area.astype(jnp.float32)
    return (loss * area).sum(axis=(-2, -1)) / jnp.maximum(area.sum(axis=(-2, -1)), 1.0)


def dice(
    logits: Array,
    targets: Array,
    certainty: Array | None = None,
    theta: float = 0.6,
    *,
    eps: float = 1.0,
    area: Array | None = None,
) -> Array:
    """Per-mask Dice loss; with `certainty`, only pixels with `c > theta` count (eq. 2).

    Args:
      logits: `[N, H, W]` mask logits.
      targets: `[N, H, W]` 0/1 targets.
      certainty: `[N, H, W]` `c = 1 - u` or None for the plain loss.
      theta: certainty threshold (strict `>`); 0.6 in App. B.1, 0.5 in the authors' code.
      eps: smoothing constant added to numerator and denominator (1, as in SAM).
      area: bool `[N, H, W]` real-image pixels, or None (all pixels).

    Returns:
      `[N]` float32 `1 - (2 I + eps) / (S + eps)`.
    """
    p = jax.nn.sigmoid(logits.astype(jnp.float32))
    y = targets.astype(jnp.float32)
    keep = None if area is None else area.astype(bool)
    if certainty is not None:
        kept = certainty > theta
        keep = kept if keep is None else keep & kept
    if keep is not None:
        keep = keep.astype(jnp.float32)
        p = p * keep
        y = y * keep
    inter = (p * y).sum(axis=(-2, -1))
    total = (p + y).sum(axis=(-2, -1))
    # Equal to 1 - (2 I + eps) / (S + eps), written without the cancellation of 1 - 1: it is
    # exactly 0 when no pixel is kept, even with XLA's reciprocal-based division.
    return (total - 2.0 * inter) / (total + eps)


def mask_iou(logits: Array, targets: Array, area: Array | None = None) -> Array:
    """IoU `[N]` of the binarised prediction (`logits > 0`) with the 0/1 target, counted
    over the real pixels `area` (all when None); 1 when both are empty. Not differentiable
    (it is a regression target)."""
    pred, gt = logits > 0, targets > 0
    if area is not None:
        pred, gt = pred & area.astype(bool), gt & area.astype(bool)
    return iou_from_counts(*iou_counts(pred, gt))


def iou_mse(iou_pred: Array, logits: Array, targets: Array, area: Array | None = None) -> Array:
    """Per-mask squared error `[N]` between the IoU head's prediction and the actual IoU of
    the binarised prediction with the target (SAM's IoU-head loss)."""
    actual = jax.lax.stop_gradient(mask_iou(logits, targets, area))
    return (iou_pred.astype(jnp.float32) - actual) ** 2


def combined_loss(
    logits: Array,
    iou_pred: Array,
    targets: Array,
    certainty: Array | None = None,
    *,
    focal_weight: float = 20.0,
    dice_weight: float = 1.0,
    iou_weight: float = 1.0,
    theta: float = 0.6,
    alpha: float = 0.25,
    gamma: float = 2.0,
    area: Array | None = None,
    actual_iou: Array | None = None,
) -> dict[str, Array]:
    """SUM's loss of one prediction per mask: `20 focal + 1 dice + 1 iou_mse` (App. B.1).

    Args:
      logits: `[N, H, W]`; iou_pred: `[N]`; targets: `[N, H, W]`;
      certainty: `[N, H, W]` or None. Pass `c = 1` for human labels to get the plain
        losses (`1 > theta`), which lets one batch mix human and pseudo labels.
      area: bool `[N, H, W]` real-image pixels, or None (all pixels).
      actual_iou: `[N]` the IoU head's target when it is measured on another frame than
        the mask losses (point-sampled losses, `train.loss_resolution`); None: the IoU of
        `logits > 0` with `targets` over `area`.

    Returns:
      dict of `[N]` float32 arrays: `loss`, `focal`, `dice`, `iou_mse`, `iou` (actual IoU).
    """
    focal = sigmoid_focal(logits, targets, certainty, alpha=alpha, gamma=gamma, area=area)
    dc = dice(logits, targets, certainty, theta, area=area)
    if actual_iou is None:
        actual_iou = mask_iou(logits, targets, area)
    iou = jax.lax.stop_gradient(actual_iou)
    mse = (iou_pred.astype(jnp.float32) - iou) ** 2
    loss = focal_weight * focal + dice_weight * dc + iou_weight * mse
    return {"loss": loss, "focal": focal, "dice": dc, "iou_mse": mse, "iou": iou}


def multimask_loss(
    logits: Array,
    iou_pred: Array,
    targets: Array,
    certainty: Array | None = None,
    area: Array | None = None,
    *,
    supervise_all_iou: bool = True,
    actual_iou: Array | None = None,
    **loss_kwargs,
) -> tuple[dict[str, Array], Array]:
    """The loss of `M` outputs per mask for one ambiguous prompt (round 1).

    With `supervise_all_iou` (the default, SAM 2's `MultiStepMultiMasksAndIous`): the output
    with the lowest mask loss `focal_weight * focal + dice_weight * dice` is chosen, only its
    mask is back-propagated, and the IoU head of **every** output is trained:
    `iou_mse = mean over the M outputs of (iou_pred_j - IoU_j)^2`. The IoU predictions of the
    outputs not chosen pick the mask passed to round 2 and the mask returned at inference,
    so they must be trained too.

    With `supervise_all_iou=False` (the rule before issue 11): each output gets the full
    combined loss, IoU MSE included, and the lowest is kept, so the IoU head is trained only
    on the chosen output, and the IoU error takes part in the choice.

    Args:
      logits: `[N, M, H, W]`; iou_pred: `[N, M]`; targets, certainty, area: `[N, H, W]`
        (shared by the M outputs) or `[N, M, H, W]` (one per output, e.g. point samples).
      supervise_all_iou: the rule above.
      actual_iou: `[N, M]` IoU targets measured elsewhere (see `combined_loss`), or None.
      loss_kwargs: weights and focal/Dice parameters for `combined_loss`.

    Returns:
      (dict of `[N]` terms: `loss`, `focal`, `dice`, `iou` of the chosen output and
      `iou_mse` as trained; `best [N]` int32 index of the chosen output).
    """
    n, m = logits.shape[:2]

    def flat(a):
        if a is None:
            return None
        if a.ndim == logits.ndim:  # one per output
            return a.reshape((n * m,) + a.shape[2:])
        return jnp.repeat(a, m, axis=0)

    terms = combined_loss(
        logits.reshape((n * m,) + logits.shape[2:]),
        iou_pred.reshape(n * m),
        flat(targets),
        flat(certainty),
        area=flat(area),
        actual_iou=None if actual_iou is None else actual_iou.reshape(n * m),
        **loss_kwargs,
    )
    terms = {k: v.reshape(n, m) for k, v in terms.items()}
    focal_weight = loss_kwargs.get("focal_weight", 20.0)
    dice_weight = loss_kwargs.get("dice_weight", 1.0)
    iou_weight = loss_kwargs.get("iou_weight", 1.0)
    mask_loss = focal_weight * terms["focal"] + dice_weight * terms["dice"]
    best = jnp.argmin(mask_loss if supervise_all_iou else terms["loss"], axis=1)
    chosen = {k: jnp.take_along_axis(v, best[:, None], axis=1)[:, 0] for k, v in terms.items()}
    if supervise_all_iou:
        chosen["iou_mse"] = terms["iou_mse"].mean(axis=1)
        chosen["loss"] = (
            focal_weight * chosen["focal"] + dice_weight * chosen["dice"]
        ) + iou_weight * chosen["iou_mse"]
    return chosen, best.astype(jnp.int32)


def masked_mean(values: Array, valid: Array, axis=None) -> Array:
    """Mean of `values` over the entries where `valid` is true (padding masks excluded),
    over `axis` (all axes when None); 0 when nothing is valid, so an all-padding batch gives
    a zero loss, not NaN."""
    v = valid.astype(jnp.float32)
    return (values * v).sum(axis=axis) / jnp.maximum(v.sum(axis=axis), 1.0)


def image_means(values: Array, mask_valid: Array) -> tuple[Array, Array]:
    """Per-image mean over valid masks: `values [B, N]`, `mask_valid bool [B, N]` ->
    `(image_values [B], image_valid bool [B])`; an image with no valid mask gets 0 and
    `image_valid` false."""
    return masked_mean(values, mask_valid, axis=-1), mask_valid.astype(bool).any(axis=-1)


def mean_over_images(image_values: Array, image_valid: Array) -> Array:
    """The batch value: `sum_i valid_i * value_i / max(#valid images, 1)`.

    Every image with at least one valid mask weighs the same (App. B.1: one image per GPU,
    data-parallel). To compute it over micro-batches, accumulate `sum_i valid_i * value_i`
    and `sum_i valid_i` and divide once at the end.
    """
    return masked_mean(image_values, image_valid)


def loss_kwargs_from_config(loss_config) -> dict[str, float]:
    """The keyword arguments of `combined_loss` from `config.loss` (see configs/base.py)."""
    return {
        "focal_weight": float(loss_config.focal_weight),
        "dice_weight": float(loss_config.dice_weight),
        "iou_weight": float(loss_config.iou_weight),
        "theta": float(loss_config.theta),
        "alpha": float(loss_config.alpha),
        "gamma": float(loss_config.gamma),
    }
