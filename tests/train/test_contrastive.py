"""U2PL's pixel contrastive loss (sum_jax/train/contrastive.py) against a float64 NumPy
reference written from U2PL's `compute_contra_memobank_loss`, on masks cut from a photo."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sum_jax.train import contrastive
from tests.train.test_losses import photo_inputs

GRID, CELLS = 32, 8  # L x L maps, h x h embedding grid (the tiny SAM's)
THETA, T = 0.6, 0.5


def inputs(seed: int = 0, channels: int = 16):
    """Two images of 4 masks from the coffee photo (grey-level bands), blocky certainties
    (whole 4 x 4 blocks reliable or not, plus single unreliable pixels), random embeddings,
    the real-image cells, and `mask_valid` with one padding mask."""
    _, masks, _, (h, w) = photo_inputs(n=4, side=128, grid=GRID)
    rng = np.random.default_rng(seed)
    targets = np.stack([masks, masks[::-1]]).astype(np.uint8)  # [2, 4, 32, 32]
    blocks = rng.random((2, 4, CELLS, CELLS)) < 0.35
    c = np.where(np.kron(blocks, np.ones((4, 4))) > 0, 0.2, 0.9)
    c[rng.random(c.shape) < 0.01] = 0.1  # one unreliable pixel spoils its cell
    area = np.zeros((2, CELLS, CELLS), bool)
    area[:, : int(np.ceil(h * CELLS / GRID)), : int(np.ceil(w * CELLS / GRID))] = True
    emb = rng.standard_normal((2, CELLS, CELLS, channels)).astype(np.float32)
    valid = np.ones((2, 4), bool)
    valid[1, 3] = False
    return emb, targets, c.astype(np.float32), area, valid


def np_cells(targets, c, area, theta):
    """Per cell, by loops over 4 x 4 blocks: majority label, all-pixels-reliable, inside."""
    b, n, size, _ = targets.shape
    h = area.shape[-1]
    f = size // h
    rel = np.zeros((b, n, 2, h * h), bool)
    neg = np.zeros((b, n, 2, h * h), bool)
    for i in range(b):
        for k in range(n):
            for y in range(h):
                for x in range(h):
                    blk = np.s_[y * f : (y + 1) * f, x * f : (x + 1) * f]
                    label = int(targets[i, k][blk].astype(np.float64).mean() >= 0.5)
                    good = bool((c[i, k][blk] > theta).all())
                    if not area[i, y, x]:
                        continue
                    if good:
                        rel[i, k, label, y * h + x] = True
                    else:
                        neg[i, k, 1 - label, y * h + x] = True
    return rel, neg


def np_loss(emb, rel, neg, anchors, negatives, valid, temperature):
    """U2PL's per-class InfoNCE in float64, per mask then per image (module docstring)."""
    b, h, w, ch = emb.shape
    x = emb.astype(np.float64).reshape(b, h * w, ch)

    def cos(a, v):
        return a @ v / (max(np.linalg.norm(a), 1e-8) * max(np.linalg.norm(v), 1e-8))

    out = np.zeros(b)
    for i in range(b):
        per_mask = []
        for k in range(rel.shape[1]):
            if not valid[i, k]:
                continue
            total, classes = 0.0, 0
            for y in range(2):
                if not rel[i, k, y].any():
                    continue
                classes += 1
                if not neg[i, k, y].any():
                    continue
                proto = x[i, rel[i, k, y]].mean(axis=0)
                ce = []
                for q, a in enumerate(anchors[i, k, y]):
                    sims = [cos(x[i, a], proto)]
                    sims += [cos(x[i, a], x[i, m]) for m in negatives[i, k, y, q]]
                    z = np.array(sims) / temperature
                    ce.append(np.log(np.exp(z - z.max()).sum()) + z.max() - z[0])
                total += float(np.mean(ce))
            per_mask.append(total / classes if classes >= 2 else 0.0)
        out[i] = np.mean(per_mask) if per_mask else 0.0
    return out


def test_cells_match_the_block_rule():
    _, targets, c, area, _ = inputs()
    rel, neg = contrastive.cell_sets(jnp.asarray(targets), jnp.asarray(c), jnp.asarray(area), THETA)
    ref_rel, ref_neg = np_cells(targets, c, area, THETA)
    np.testing.assert_array_equal(rel, ref_rel)
    np.testing.assert_array_equal(neg, ref_neg)
    assert ref_rel.sum() > 50 and ref_neg.sum() > 20  # both sets are populated
    assert not (ref_rel[:, :, 0] & ref_rel[:, :, 1]).any()


def test_loss_equals_the_float64_reference():
    emb, targets, c, area, valid = inputs()
    settings = contrastive.ContrastiveSettings(THETA, T, num_queries=12, num_negatives=5)
    key = jax.random.key(3)
    got = contrastive.pixel_contrastive_loss(
        key, jnp.asarray(emb), jnp.asarray(targets), jnp.asarray(c), jnp.asarray(area),
        jnp.asarray(valid), settings,
    )  # fmt: skip
    # The same samples, drawn again by the sampler (tested on its own below).
    rel, neg = np_cells(targets, c, area, THETA)
    key_a, key_n = jax.random.split(key)
    anchors = np.asarray(contrastive.sample_uniform(key_a, jnp.asarray(rel), 12))
    negatives = np.asarray(contrastive.sample_uniform(key_n, jnp.asarray(neg), 60)).reshape(
        anchors.shape + (5,)
    )
    has = rel.any(-1)
    assert np.all(np.take_along_axis(rel, anchors, -1)[has])  # anchors are reliable, class y
    has_n = neg.any(-1)
    assert np.all(
        np.take_along_axis(neg, negatives.reshape(neg.shape[:3] + (-1,)), -1)[has_n]
    )  # negatives are unreliable cells of the other class
    expected = np_loss(emb, rel, neg, anchors, negatives, valid, T)
    assert np.all(expected > 0.1)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


def test_gradient_reaches_only_the_anchors():
    """Prototype and negatives carry no gradient (U2PL detaches both): the embedding's
    gradient is zero at every cell that is never an anchor."""
    emb, targets, c, area, valid = inputs(seed=1)
    settings = contrastive.ContrastiveSettings(THETA, T, num_queries=6, num_negatives=4)
    key = jax.random.key(0)

    def total(e):
        args = (jnp.asarray(targets), jnp.asarray(c), jnp.asarray(area), jnp.asarray(valid))
        return contrastive.pixel_contrastive_loss(key, e, *args, settings).sum()

    grad = np.asarray(jax.grad(total)(jnp.asarray(emb)))
    rel, _ = contrastive.cell_sets(jnp.asarray(targets), jnp.asarray(c), jnp.asarray(area), THETA)
    anchors = np.asarray(contrastive.sample_uniform(jax.random.split(key)[0], rel, 6))
    used = np.zeros((2, CELLS * CELLS), bool)
    for i in range(2):
        for k in range(4):
            if valid[i, k]:
                used[i, anchors[i, k].reshape(-1)] = True
    g = np.abs(grad).reshape(2, CELLS * CELLS, -1).sum(-1)
    assert np.all(g[~used] == 0.0)
    assert np.count_nonzero(g[used]) > 0.5 * used.sum()


def test_sampler_is_uniform_over_members():
    members = np.zeros((2, 50), bool)
    members[0, [3, 7, 8, 20, 49]] = True
    members[1, 10:30] = True
    idx = np.asarray(contrastive.sample_uniform(jax.random.key(1), jnp.asarray(members), 20000))
    assert np.all(np.take_along_axis(members, idx, -1))
    for row, count in ((0, 5), (1, 20)):
        freq = np.bincount(idx[row], minlength=50)[members[row]] / 20000
        # Binomial standard error of 1/count at 20000 draws is < 0.0031: 5 sigma.
        assert np.abs(freq - 1 / count).max() < 5 * np.sqrt((1 / count) / 20000)


def test_step_loss_gains_the_weighted_term_on_pseudo_images_only():
    """`rounds.add_contrastive_loss`: each pseudo-labelled image's loss gains
    `weight * contrastive` (its masks, reference above), human-labelled images none; the
    step's loss stays the mean of the per-image losses over the valid images. (The rounds
    draw their prompts from the same key with the loss on or off: `interactive_loss` calls
    this after `training_rounds`.)"""
    from sum_jax.models.sam import VARIANTS
    from sum_jax.train.rounds import InteractiveSettings, add_contrastive_loss
    from tests.train.test_rounds import make_batch

    class Tiny:  # add_contrastive_loss reads the model's config only
        config = VARIANTS["tiny"]

    batch = make_batch(4, 4, 3)
    # Whole 4 x 4 blocks certain (u = 0) or not (u = 255), so that cells of both kinds exist.
    rng = np.random.default_rng(0)
    blocks = rng.random(batch["uncertainty"].shape[:2] + (CELLS, CELLS)) < 0.3
    batch["uncertainty"] = (255 * np.kron(blocks, np.ones((4, 4)))).astype(np.uint8)
    emb = jnp.asarray(rng.standard_normal((4, CELLS, CELLS, 32)), jnp.float32)
    aux = {"image_loss": jnp.asarray([1.0, 2.0, 3.0, 4.0]),
           "image_valid": jnp.asarray([True, True, True, False])}  # fmt: skip
    settings = InteractiveSettings(num_rounds=2, contrastive_weight=0.5)
    loss, out = add_contrastive_loss(Tiny(), emb, batch, jax.random.key(5), settings, aux)
    extra = np.asarray(out["image_loss"]) - np.asarray(aux["image_loss"])
    pseudo = batch["is_pseudo"]
    assert np.all(extra[~pseudo] == 0.0) and np.all(extra[pseudo] > 0.05)
    np.testing.assert_allclose(float(out["contrastive"]), (extra[:3] / 0.5).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(loss), np.mean(np.asarray(out["image_loss"])[:3]), rtol=1e-6)
