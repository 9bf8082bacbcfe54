"""U2PL's pixel contrastive loss on SAM's image embeddings, for binary masks (App. E).

U2PL (Wang et al., CVPR 2022; github.com/Haochen-Wang409/U2PL, `compute_contra_memobank_loss`)
regularises the encoder's features: for each class, anchors are *reliable* pixels of the
class, the positive is the class prototype (the mean feature of its reliable pixels, no
gradient), negatives are *unreliable* pixels that do not belong to the class (no gradient);
the loss is InfoNCE on cosine similarities at temperature 0.5, with 256 anchors and 50
negatives per anchor, averaged over the classes present. The SUM paper's "improved U2PL"
uses SUM's uncertainty maps for reliability and adds the loss, weight 1, on pseudo-labelled
images.

SAM's masks carry no class, so each pseudo-label mask `k` of an image is one binary problem
with two classes, its foreground and its background, on the embedding grid (`h x w`, 64 x 64
for SAM; the `L x L` maps are `4h x 4h`). A cell's label is the majority of its `4 x 4` mask
pixels; it is *reliable* when all of them are (`c = 1 - u > theta`, the pixels SUM's Dice
keeps), *unreliable* otherwise; cells outside the real (unpadded) image are left out. For
class `y` of mask `k`:

- anchors: `num_queries` cells drawn uniformly, with replacement, from the reliable cells of
  class `y` (U2PL also requires the teacher's probability of `y` above 0.3: a pseudo-label is
  SAM's prediction binarised at 0.5, so its own class always passes);
- positive: the prototype of class `y`, the mean (stop-gradient) embedding of those cells;
- negatives: `num_negatives` per anchor, drawn uniformly with replacement from the
  unreliable cells labelled `1 - y` (U2PL: unreliable pixels whose class is not `y` but
  ranks among `y`'s likely confusions; with two classes the other class is that rank);
- `l = -log softmax(cos(a, [p, n_1..n_M]) / T)[0]`, averaged over anchors; a class with
  no negative contributes 0.

The mask's loss is the sum over its two classes divided by the number of classes with
reliable cells, and 0 when fewer than two have (U2PL returns 0 for a batch with one class);
the image's loss is the mean over its valid masks, and human-labelled images get 0.

Simplified against U2PL, and why: no memory bank of negatives across iterations (a mask's
foreground is a class of its own image only, so a per-class queue cannot exist; negatives
come from the same mask), no EMA teacher (the pseudo-labels and their reliability come from
the pseudo-label and uncertainty stages, not from a teacher's predictions; features for the
prototype and negatives are the student's own, stop-gradient), fixed reliability threshold
(`theta`) instead of U2PL's entropy percentiles (SUM's maps are mostly exactly 0, so
percentiles would tie), and no linear decay of the unreliable share over training.

Sampling is on device and static in shape: for a set of cells, `r = floor(U * count)` and the
sample is the cell where the running count of the set first exceeds `r`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ContrastiveSettings:
    """U2PL's contrastive loss: `temperature` 0.5, 256 anchors (`num_queries`) and 50
    negatives per anchor as in U2PL's configs; `theta` the reliability threshold on
    `c = 1 - u`."""

    theta: float = 0.6
    temperature: float = 0.5
    num_queries: int = 256
    num_negatives: int = 50


def cell_sets(targets: Array, certainty: Array, area: Array, theta: float) -> tuple[Array, Array]:
    """Anchor and negative cells of each mask's two classes on the embedding grid.

    Args:
      targets: `[B, N, L, L]` 0/1 masks; certainty: `[B, N, L, L]` `c = 1 - u`.
      area: bool `[B, h, w]` cells inside the real image, `L = f h`.
      theta: a cell is reliable when all its pixels have `c > theta`.

    Returns:
      `(reliable, negatives)`, bool `[B, N, 2, h * w]`; class 0 is the background, class 1
      the foreground. `reliable[..., y, :]`: reliable cells labelled `y`;
      `negatives[..., y, :]`: unreliable cells labelled `1 - y`.
    """
    b, n, size = targets.shape[0], targets.shape[1], targets.shape[-1]
    h, w = area.shape[-2:]
    f = size // h

    def blocks(x):
        return x.astype(jnp.float32).reshape(b, n, h, f, w, f)

    fg = blocks(targets).mean(axis=(3, 5)) >= 0.5  # [B, N, h, w] majority label
    reliable = blocks(certainty).min(axis=(3, 5)) > theta
    inside = area[:, None].astype(bool)
    labels = jnp.stack([~fg, fg], axis=2)  # [B, N, 2, h, w]
    rel = labels & (reliable & inside)[:, :, None]
    neg = labels[:, :, ::-1] & (~reliable & inside)[:, :, None]
    return rel.reshape(b, n, 2, h * w), neg.reshape(b, n, 2, h * w)


def sample_uniform(key: Array, members: Array, num: int) -> Array:
    """`num` indices drawn uniformly with replacement from the true entries of each row of
    `members [..., P]` -> int32 `[..., num]` (meaningless where a row is empty)."""
    running = jnp.cumsum(members.astype(jnp.int32), axis=-1)
    count = running[..., -1:]
    u = jax.random.uniform(key, members.shape[:-1] + (num,))
    r = jnp.minimum(jnp.floor(u * count), jnp.maximum(count - 1, 0)).astype(jnp.int32)
    flat_running = running.reshape(-1, running.shape[-1])
    flat_r = r.reshape(-1, num)
    idx = jax.vmap(lambda c, q: jnp.searchsorted(c, q, side="right"))(flat_running, flat_r)
    return jnp.minimum(idx, members.shape[-1] - 1).reshape(r.shape).astype(jnp.int32)


def contrastive_from_samples(
    embeddings: Array,
    reliable: Array,
    negatives: Array,
    anchors: Array,
    negative_idx: Array,
    mask_valid: Array,
    *,
    temperature: float,
) -> Array:
    """U2PL's loss per image for given samples.

    Args:
      embeddings: `[B, h, w, C]` image embeddings (gradients flow through the anchors).
      reliable, negatives: bool `[B, N, 2, P]` from `cell_sets` (`P = h w`).
      anchors: int32 `[B, N, 2, Q]` cell indices; negative_idx: int32 `[B, N, 2, Q, M]`.
      mask_valid: bool `[B, N]` masks that take part (padding and human labels excluded).

    Returns:
      `[B]` float32: per image, the mean over its valid masks of the mask's loss.
    """
    b, h, w, c = embeddings.shape
    n = reliable.shape[1]
    x = embeddings.astype(jnp.float32).reshape(b, h * w, c)
    # torch.cosine_similarity: each vector divided by max(|v|, 1e-8).
    unit = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-8)
    keys = jax.lax.stop_gradient(unit)
    rel = reliable.astype(jnp.float32)
    count = rel.sum(-1)  # [B, N, 2]
    proto = jnp.einsum("bnyp,bpc->bnyc", rel, jax.lax.stop_gradient(x))
    proto = proto / jnp.maximum(count, 1.0)[..., None]
    proto = proto / jnp.maximum(jnp.linalg.norm(proto, axis=-1, keepdims=True), 1e-8)
    # Cosines of every cell with every (key) cell and with every prototype, gathered at the
    # samples: [P, P] per image instead of a [Q, M, C] copy of the negatives per class.
    cell_cos = jnp.einsum("bpc,bqc->bpq", unit, keys)
    proto_cos = jnp.einsum("bpc,bkc->bpk", unit, proto.reshape(b, n * 2, c))
    bi = jnp.arange(b)[:, None, None, None]
    pos = proto_cos[bi, anchors, (jnp.arange(n * 2).reshape(1, n, 2, 1))]  # [B, N, 2, Q]
    neg = cell_cos[bi[..., None], anchors[..., None], negative_idx]  # [B, N, 2, Q, M]
    logits = jnp.concatenate([pos[..., None], neg], axis=-1) / temperature
    per_anchor = jax.nn.logsumexp(logits, axis=-1) - logits[..., 0]
    has_rel = count > 0
    has_neg = negatives.any(-1)
    per_class = jnp.where(has_rel & has_neg, per_anchor.mean(-1), 0.0)  # [B, N, 2]
    classes = has_rel.sum(-1)
    per_mask = jnp.where(classes >= 2, per_class.sum(-1) / jnp.maximum(classes, 1), 0.0)
    valid = mask_valid.astype(jnp.float32)
    return (per_mask * valid).sum(-1) / jnp.maximum(valid.sum(-1), 1.0)


def pixel_contrastive_loss(
    key: Array,
    embeddings: Array,
    targets: Array,
    certainty: Array,
    area: Array,
    mask_valid: Array,
    settings: ContrastiveSettings,
) -> Array:
    """U2PL's pixel contrastive loss per image, `[B]` (see the module docstring).

    Args:
      key: PRNG key of the anchors and negatives.
      embeddings: `[B, h, w, C]`; targets, certainty: `[B, N, L, L]`; area: bool `[B, h, w]`.
      mask_valid: bool `[B, N]`, false for padding masks and human-labelled images.
    """
    reliable, negatives = cell_sets(targets, certainty, area, settings.theta)
    key_a, key_n = jax.random.split(key)
    anchors = sample_uniform(key_a, reliable, settings.num_queries)
    neg_idx = sample_uniform(
        key_n, negatives, settings.num_queries * settings.num_negatives
    ).reshape(anchors.shape + (settings.num_negatives,))
    return contrastive_from_samples(
        embeddings,
        reliable,
        negatives,
        anchors,
        neg_idx,
        mask_valid,
        temperature=settings.temperature,
    )
