"""SUM's training step written with the official PyTorch SAM and torch autograd.

The reference that `benchmarks/train_step_speed.py --torch` times against our jitted step,
and that tests/train/test_torch_step_reference.py checks against it from the same weights.
It computes what `sum_jax.train.rounds.interactive_loss` and `sum_jax.train.step.train_step`
compute for SUM's base config (full fine-tuning, low-res losses, no HQ parts):

- the image encoder once per image (SAM's normalisation, zero padding outside `image_size`);
- 7 rounds per mask: round 1 a jittered box or one positive point (the task prompt, no mask
  prompt, three outputs: the mask loss of the output with the lowest `20 focal + dice`, the
  IoU head of all three trained, the most confident output passed on); rounds 2 .. R-1 one
  click from the error region of the previous prediction (drawn proportionally to
  `c = 1 - u` on pseudo-labelled images); round R no new click; from round 2 the previous
  low-res logits, detached, as the mask prompt;
- focal + Dice with SUM's certainty weighting and threshold on pseudo-labelled images, MSE
  of the IoU prediction, per image the mean over valid masks, the mean over rounds and
  images;
- `torch.optim.AdamW` with the same parameter groups as ours: layer-wise lr decay over the
  encoder's blocks and no weight decay on biases, norms and embeddings (the plan comes from
  `sum_jax.train.optim.make_plan`, so both sides read the same config).

The official `MaskDecoder` has no attention mask, so where our decoder masks absent point
slots out of attention this step leaves them out: each image's masks are decoded in groups
that share the number of prompt tokens (attention does not depend on the tokens' order).
SUM's task prompt, not part of SAM, is a zero-initialised `[num_tasks, C]` table added to
the dense prompt embedding, as in `sum_jax.models.prompt_encoder`.

Clicks are drawn with torch's generator (Gumbel-max, as ours), so the two steps draw
different clicks from the same batch; `loss(..., prompts=...)` replays given prompts
instead (those our `interactive_loss(..., record=True)` returns), which makes the two
computations the same one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from flax import nnx

from convert import key_map
from sum_jax import checkpointing
from sum_jax.models.sam import SamConfig
from sum_jax.train import optim
from sum_jax.train.rounds import InteractiveSettings

ABSENT = -2  # a point slot that takes no part (sum_jax.models.prompt_encoder.LABEL_ABSENT)
TASK_TABLE = "prompt_encoder.task_embeddings.embedding"


class TorchSumStep:
    """SUM's step on an official `segment_anything` model: `step(batch)` runs the rounds,
    back-propagates and updates the model's parameters (and the task table) in place."""

    def __init__(self, model: torch.nn.Module, sam_config: SamConfig, config, *, seed: int = 0):
        if config.optimizer.schedule != "constant" or int(config.optimizer.warmup_steps) > 0:
            raise ValueError("the PyTorch step implements a constant learning rate only")
        self.model = model
        self.sam_config = sam_config
        self.settings = InteractiveSettings.from_config(config)
        if self.settings.loss_resolution != "low" or self.settings.contrastive_weight:
            raise ValueError("the PyTorch step implements SUM's low-res losses only")
        self.generator = torch.Generator().manual_seed(seed)
        self.task_embeddings = torch.nn.Parameter(
            torch.zeros(sam_config.num_tasks, sam_config.prompt_embed_dim)
        )
        self.params = self._flax_named_params()
        self.optimizer = torch.optim.AdamW(
            self._param_groups(config.optimizer),
            lr=float(config.optimizer.lr),
            betas=(float(config.optimizer.b1), float(config.optimizer.b2)),
            eps=float(config.optimizer.eps),
        )

    def _flax_named_params(self) -> dict[str, torch.nn.Parameter]:
        """Every trainable tensor under our parameter path (`image_encoder.blocks.0...`)."""
        abstract = checkpointing.abstract_sam(self.sam_config)
        paths = key_map.flatten(nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))
        torch_params = dict(self.model.named_parameters())
        params = {}
        for path in paths:
            if path == TASK_TABLE:
                params[path] = self.task_embeddings
            else:
                params[path] = torch_params.pop(key_map.torch_key(path))
        if torch_params:
            raise ValueError(f"PyTorch parameters with no sum_jax path: {sorted(torch_params)}")
        return params

    def _param_groups(self, opt_config) -> list[dict]:
        """AdamW groups by (lr multiplier, weight decay) from our optimiser's plan."""
        plan = optim.make_plan({p: 0 for p in self.params}, opt_config)
        lr, decay = float(opt_config.lr), float(opt_config.weight_decay)
        groups: dict[tuple[float, bool], list] = {}
        for path, param in self.params.items():
            if plan.frozen[path]:
                param.requires_grad_(False)
                continue
            groups.setdefault((plan.lr_mult[path], plan.weight_decay[path]), []).append(param)
        return [
            {"params": ps, "lr": lr * mult, "weight_decay": decay if wd else 0.0}
            for (mult, wd), ps in groups.items()
        ]

    def step(self, batch: dict[str, np.ndarray], *, prompts=None) -> float:
        """One step on a numpy batch of docs/contracts.md; returns the loss. Gradients stay on
        the parameters until the next step."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(batch, prompts=prompts)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def loss(self, batch: dict[str, np.ndarray], *, prompts=None) -> torch.Tensor:
        """SUM's interactive loss of `batch`.

        Args:
          batch: numpy arrays `image u8[B, S, S, 3]`, `image_size [B, 2]`, `masks [B, N, L,
            L]`, `mask_valid [B, N]`, `uncertainty u8[B, N, L, L]`, `is_pseudo [B]`,
            `task_id [B]`.
          prompts: None to draw the clicks here, or the decoder's inputs of every round as
            `interactive_loss(..., record=True)` returns them (`aux["rounds"]`): `points
            [R, B, N, P, 2]`, `labels [R, B, N, P]`, `boxes [R, B, N, 4]`, `box_valid
            [R, B, N]`.
        """
        s, st = self.sam_config.img_size, self.settings
        model = self.model
        t = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}
        b, n, size = t["masks"].shape[:3]
        bn, rounds, slots = b * n, st.num_rounds, st.num_point_slots

        image_size = t["image_size"].long()
        x = (t["image"].float().permute(0, 3, 1, 2) - model.pixel_mean) / model.pixel_std
        rows = torch.arange(s)[None, :, None] < image_size[:, 0, None, None]
        cols = torch.arange(s)[None, None, :] < image_size[:, 1, None, None]
        x = torch.where((rows & cols)[:, None], x, 0.0)
        embeddings = model.image_encoder(x)  # [B, C, h, w]

        targets = t["masks"].reshape(bn, size, size).float()
        pseudo = t["is_pseudo"].bool()[:, None, None, None]
        certainty = ((255 - t["uncertainty"].long()).float() / 255.0).clamp(0.0, 1.0)
        loss_c = torch.where(pseudo & st.uncertainty_aware_loss, certainty, 1.0).reshape(
            bn, size, size
        )
        sample_c = torch.where(pseudo & st.uncertainty_sampling, certainty, 1.0).reshape(
            bn, size, size
        )
        mask_valid = t["mask_valid"].bool()
        image_valid = mask_valid.any(-1)
        area = image_area(image_size, size, s)  # [B, L, L]
        area_f = area[:, None].expand(b, n, size, size).reshape(bn, size, size)
        task = t["task_id"].long()[:, None].expand(b, n)

        if prompts is None:
            first = first_prompts(
                self.generator,
                targets,
                sample_c,
                s,
                image_size[:, None].expand(b, n, 2).reshape(bn, 2),
                st,
            )
            points = torch.zeros(bn, slots, 2)
            points[:, 0] = first["point"]
            labels = torch.full((bn, slots), ABSENT, dtype=torch.long)
            labels[:, 0] = torch.where(first["point_valid"], 1, ABSENT)
            boxes, box_valid = first["box"], first["box_valid"]
        else:
            replay = {k: torch.from_numpy(np.asarray(v)) for k, v in prompts.items()}
            boxes = replay["boxes"][0].reshape(bn, 4).float()
            box_valid = replay["box_valid"][0].reshape(bn).bool()

        prev = torch.zeros(bn, size, size)
        image_losses = []
        for r in range(rounds):
            if prompts is not None:
                points = replay["points"][r].reshape(bn, slots, 2).float()
                labels = replay["labels"][r].reshape(bn, slots).long()
            elif 1 <= r <= rounds - 2:
                point, label, ok = error_points(
                    self.generator,
                    targets,
                    prev > 0,
                    sample_c,
                    area_f if st.restrict_to_image else None,
                    s,
                )
                labels = labels.clone()
                points = points.clone()
                labels[ok, r] = label[ok]
                points[ok, r] = point[ok]
            use_task = (r == 0 or st.continuous_task_prompt) and st.use_task_prompt
            logits, iou_pred = self.decode(
                embeddings,
                points.reshape(b, n, slots, 2),
                labels.reshape(b, n, slots),
                boxes.reshape(b, n, 4),
                box_valid.reshape(b, n),
                None if r == 0 else prev.detach().reshape(b, n, size, size),
                task if use_task else None,
                multimask=r == 0,
            )  # [BN, M, L, L], [BN, M]
            if r == 0:
                terms = multimask_loss(logits, iou_pred, targets, loss_c, area_f, st)
                best = iou_pred.argmax(-1)
                prev = logits[torch.arange(bn), best]
            else:
                terms = combined_loss(logits[:, 0], iou_pred[:, 0], targets, loss_c, area_f, st)
                prev = logits[:, 0]
            per_mask = terms.reshape(b, n)
            v = mask_valid.float()
            image_losses.append((per_mask * v).sum(-1) / v.sum(-1).clamp(min=1.0))
        image_loss = torch.stack(image_losses).mean(0)  # [B]
        v = image_valid.float()
        return (image_loss * v).sum() / v.sum().clamp(min=1.0)

    def decode(self, embeddings, points, labels, boxes, box_valid, mask_inputs, task, *, multimask):
        """`[B, N, ...]` prompts -> `[B N, M, L, L]` logits and `[B N, M]` IoU predictions,
        each image's masks decoded in groups with the same prompt tokens (see the module
        docstring): absent point slots are left out, SAM's padding point is added to points
        without a box by the official prompt encoder itself."""
        model = self.model
        pe, decoder = model.prompt_encoder, model.mask_decoder
        dense_pe = pe.get_dense_pe()
        b, n = labels.shape[:2]
        outputs, order = [], []
        for i in range(b):
            valid = labels[i] != ABSENT  # [N, P]
            counts = valid.sum(-1)
            kinds = 2 * counts + box_valid[i].long()
            for kind in torch.unique(kinds).tolist():
                idx = torch.nonzero(kinds == kind)[:, 0]
                k, has_box, g = kind // 2, bool(kind % 2), len(idx)
                point_input = None
                if k:
                    # The valid slots, in slot order.
                    slot = torch.argsort((~valid[idx]).long(), dim=-1, stable=True)[:, :k]
                    pts = points[i, idx].gather(1, slot[..., None].expand(g, k, 2))
                    point_input = (pts, labels[i, idx].gather(1, slot))
                sparse, dense = pe(
                    points=point_input,
                    boxes=boxes[i, idx] if has_box else None,
                    masks=None if mask_inputs is None else mask_inputs[i, idx][:, None],
                )
                # With no prompt at all, the official encoder gives a batch of one.
                sparse = sparse.expand(g, *sparse.shape[1:])
                dense = dense.expand(g, *dense.shape[1:])
                if task is not None:
                    ids = task[i, idx]
                    row = self.task_embeddings[ids.clamp(0, len(self.task_embeddings) - 1)]
                    dense = dense + torch.where((ids >= 0)[:, None], row, 0.0)[..., None, None]
                logits, iou = decoder(
                    image_embeddings=embeddings[i : i + 1],
                    image_pe=dense_pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=multimask,
                )
                outputs.append((logits, iou))
                order.append(i * n + idx)
        inverse = torch.argsort(torch.cat(order))
        logits = torch.cat([o[0] for o in outputs])[inverse]
        iou = torch.cat([o[1] for o in outputs])[inverse]
        return logits, iou


def image_area(image_size: torch.Tensor, mask_size: int, img_size: int) -> torch.Tensor:
    """bool `[B, L, L]`: grid pixels overlapping the real image (`prompts.image_area`)."""
    idx = torch.arange(mask_size, dtype=torch.float32) * (img_size / mask_size)
    rows = idx[None, :] < image_size[:, 0, None].float()
    cols = idx[None, :] < image_size[:, 1, None].float()
    return rows[:, :, None] & cols[:, None, :]


def sample_points(generator, region: torch.Tensor, weights: torch.Tensor):
    """One pixel per row of `region [N, H, W]` with probability proportional to `weights`
    (Gumbel-max): `(coords [N, 2]` pixel centres `(x, y)`, `valid [N])`."""
    n, h, w = region.shape
    wts = (region.float() * weights.clamp(min=0.0)).reshape(n, h * w)
    u = torch.rand(wts.shape, generator=generator).clamp(min=1e-20)
    score = torch.where(wts > 0, torch.log(torch.where(wts > 0, wts, 1.0)), -torch.inf)
    idx = (score - torch.log(-torch.log(u))).argmax(-1)
    coords = torch.stack([idx % w, idx // w], -1).float() + 0.5
    return coords, (wts > 0).any(-1)


def first_prompts(generator, targets, certainty, img_size: int, image_size, st):
    """Round 1: a jittered box (probability `box_prob`) or one positive point per mask
    (`sum_jax.train.prompts.sample_first_prompts`)."""
    n, size = targets.shape[0], targets.shape[-1]
    k = img_size / size
    use_box = torch.rand(n, generator=generator) < st.box_prob
    coords, point_ok = sample_points(generator, targets > 0, certainty)
    mask = targets > 0
    rows, cols = mask.any(-1), mask.any(-2)
    line = torch.arange(size)
    y0 = torch.where(rows, line, size).min(-1).values
    y1 = torch.where(rows, line, -1).max(-1).values
    x0 = torch.where(cols, line, size).min(-1).values
    x1 = torch.where(cols, line, -1).max(-1).values
    box_ok = rows.any(-1)
    boxes = torch.where(box_ok[:, None], torch.stack([x0, y0, x1, y1], -1).float(), 0.0)
    boxes = boxes * k + torch.tensor([0.0, 0.0, k - 1.0, k - 1.0])
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    std = (st.box_noise_frac * torch.stack([width, height, width, height], -1)).clamp(
        max=st.box_noise_max
    )
    noisy = boxes + std * torch.randn(boxes.shape, generator=generator)
    hw = image_size.float()
    upper = torch.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], -1) - 1.0
    noisy = torch.minimum(noisy.clamp(min=0.0), upper)
    boxes = torch.stack(
        [
            torch.minimum(noisy[:, 0], noisy[:, 2]),
            torch.minimum(noisy[:, 1], noisy[:, 3]),
            torch.maximum(noisy[:, 0], noisy[:, 2]),
            torch.maximum(noisy[:, 1], noisy[:, 3]),
        ],
        -1,
    )
    return {
        "point": coords * k - 0.5,
        "point_valid": point_ok & ~use_box,
        "box": boxes,
        "box_valid": box_ok & use_box,
    }


def error_points(generator, targets, prediction, certainty, area, img_size: int):
    """The next click per mask from `targets XOR prediction` (within `area`): positive on a
    false negative, negative on a false positive (`prompts.sample_error_points`)."""
    truth = targets > 0
    error = truth ^ prediction
    if area is not None:
        error = error & area
    coords, valid = sample_points(generator, error, certainty)
    n, h, w = truth.shape
    col = coords[:, 0].floor().long().clamp(0, w - 1)
    row = coords[:, 1].floor().long().clamp(0, h - 1)
    label = truth.reshape(n, h * w)[torch.arange(n), row * w + col].long()
    return coords * (img_size / w) - 0.5, label, valid


def focal_dice_iou(logits, iou_pred, targets, certainty, area, st):
    """Per mask (rows of `[K, L, L]`): SUM's focal (eq. 1), Dice (eq. 2) and IoU MSE."""
    y, a = targets, area.float()
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    p_t = p * y + (1.0 - p) * (1.0 - y)
    focal = ce * (1.0 - p_t) ** st.gamma
    if st.alpha >= 0:
        focal = (st.alpha * y + (1.0 - st.alpha) * (1.0 - y)) * focal
    focal = (certainty * focal * a).sum((-2, -1)) / a.sum((-2, -1)).clamp(min=1.0)
    keep = a * (certainty > st.theta).float()
    inter = (p * keep * y * keep).sum((-2, -1))
    total = (p * keep + y * keep).sum((-2, -1))
    dice = (total - 2.0 * inter) / (total + 1.0)
    with torch.no_grad():
        pred, gt = (logits > 0) & area, (y > 0) & area
        union = (pred | gt).sum((-2, -1)).float()
        iou = torch.where(union > 0, (pred & gt).sum((-2, -1)).float() / union.clamp(min=1.0), 1.0)
    return focal, dice, (iou_pred - iou) ** 2


def combined_loss(logits, iou_pred, targets, certainty, area, st):
    """`20 focal + dice + iou_mse` per mask (`losses.combined_loss`)."""
    focal, dice, mse = focal_dice_iou(logits, iou_pred, targets, certainty, area, st)
    return st.focal_weight * focal + st.dice_weight * dice + st.iou_weight * mse


def multimask_loss(logits, iou_pred, targets, certainty, area, st):
    """Round 1's loss of `M` outputs per mask (`losses.multimask_loss`): the mask loss of
    the output with the lowest `20 focal + dice`; every output's IoU MSE (SAM 2's rule) or,
    with `supervise_all_iou` off, the output with the lowest full loss."""
    n, m = logits.shape[:2]
    rep = lambda x: x.repeat_interleave(m, 0)
    focal, dice, mse = (
        v.reshape(n, m)
        for v in focal_dice_iou(
            logits.reshape(n * m, *logits.shape[2:]),
            iou_pred.reshape(n * m),
            rep(targets),
            rep(certainty),
            rep(area),
            st,
        )
    )
    mask_loss = st.focal_weight * focal + st.dice_weight * dice
    if st.supervise_all_iou:
        best = mask_loss.argmin(-1)
        return mask_loss[torch.arange(n), best] + st.iou_weight * mse.mean(-1)
    full = mask_loss + st.iou_weight * mse
    return full[torch.arange(n), full.argmin(-1)]
