"""sum_jax.train.rounds: what each scanned round feeds the decoder, and what flows back."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from sum_jax.models.sam import build_sam
from sum_jax.ops.transforms import normalize_and_pad
from sum_jax.train import losses
from sum_jax.train.rounds import InteractiveSettings, interactive_loss, training_rounds
from sum_jax.train.step import ModelDef

B, N, L, S = 2, 4, 32, 128  # tiny SAM: 128 px input, 32 x 32 low-res logits
ROUNDS = 7


def make_batch(seed: int, b: int = B, n: int = N) -> dict[str, np.ndarray]:
    """A training batch (docs/contracts.md) with rectangles as masks; the last mask of every
    image is padding; odd images are pseudo-labelled."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((b, n, L, L), np.uint8)
    for i in range(b):
        for j in range(n):
            y0, x0 = rng.integers(0, 18, 2)
            h, w = rng.integers(4, 12, 2)
            masks[i, j, y0 : y0 + h, x0 : x0 + w] = 1
    mask_valid = np.ones((b, n), bool)
    mask_valid[:, -1] = False
    image_size = np.tile(np.array([[S, 100]], np.int32), (b, 1))
    image_size[::2] = [96, S]
    return {
        "image": rng.integers(0, 256, (b, S, S, 3)).astype(np.uint8),
        "image_size": image_size,
        "masks": masks,
        "mask_valid": mask_valid,
        "uncertainty": rng.integers(0, 256, (b, n, L, L)).astype(np.uint8),
        "is_pseudo": np.arange(b) % 2 == 1,
        "task_id": (np.arange(b) % 3 + 1).astype(np.int32),
    }


def real_pixels(image_size: np.ndarray) -> np.ndarray:
    """bool `[B, L, L]`: the grid pixels that overlap the resized image (`ceil(h L / S)` rows
    and `ceil(w L / S)` columns, as the data pipeline resizes masks onto the grid)."""
    out = np.zeros((len(image_size), L, L), bool)
    for i, (h, w) in enumerate(image_size):
        out[i, : int(np.ceil(h * L / S)), : int(np.ceil(w * L / S))] = True
    return out


def np_image_means(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """`[B, N]` -> `[B]`: each image's mean over its valid masks (float64)."""
    values = np.asarray(values, np.float64)
    return np.array([v[m].mean() if m.any() else 0.0 for v, m in zip(values, valid)])


@pytest.fixture(scope="module")
def model():
    return build_sam("tiny", rngs=nnx.Rngs(1))


@pytest.fixture(scope="module")
def run(model):
    """Jitted recording run of the interactive loss for a given settings object."""
    graphdef, state = nnx.split(model)
    cache = {}

    def call(batch, key, settings=None):
        settings = settings or InteractiveSettings()
        if settings not in cache:
            cache[settings] = jax.jit(
                lambda st, bt, k: interactive_loss(
                    nnx.merge(graphdef, st), bt, k, settings, record=True
                )
            )
        return cache[settings](state, batch, key)

    return call


@pytest.fixture(scope="module")
def recorded(run):
    batch = make_batch(0)
    loss, aux = run(batch, jax.random.key(0))
    return batch, loss, jax.tree.map(np.asarray, aux)


def test_round_prompts(recorded):
    _, _, aux = recorded
    r = aux["rounds"]
    labels, points = r["labels"], r["points"]  # [R, B, N, P], [R, B, N, P, 2]
    assert labels.shape == (ROUNDS, B, N, ROUNDS - 1)
    box_valid = r["box_valid"]
    # The box persists unchanged in every round.
    assert (box_valid == box_valid[0]).all() and (r["boxes"] == r["boxes"][0]).all()
    # Round 1: either a box or one positive point in slot 0 (the targets are non-empty).
    point0 = labels[0, ..., 0] == 1
    assert np.all(point0 ^ box_valid[0])
    assert np.all(labels[0, ..., 1:] == -2)
    assert box_valid[0].any() and point0.any()
    for k in range(1, ROUNDS):
        # Earlier prompts are kept exactly.
        np.testing.assert_array_equal(labels[k][..., :k], labels[k - 1][..., :k])
        np.testing.assert_array_equal(points[k][..., :k, :], points[k - 1][..., :k, :])
        # No prompt beyond the current round's slot.
        assert np.all(labels[k][..., k + 1 :] == -2)
    # Rounds 2..6 each add one click in their slot (there is always some error left for
    # random tiny-model predictions); round 7 adds none.
    for k in range(1, ROUNDS - 1):
        assert np.all(np.isin(labels[k][..., k], [0, 1]))
    np.testing.assert_array_equal(labels[-1], labels[-2])
    np.testing.assert_array_equal(points[-1], points[-2])


def test_clicks_come_from_previous_error_region(recorded):
    batch, _, aux = recorded
    r = aux["rounds"]
    targets = batch["masks"] > 0
    for k in range(1, ROUNDS - 1):
        prev_pred = r["logits"][k - 1] > 0  # [B, N, L, L]
        xy = r["points"][k][..., k, :] * L / S  # back to the mask grid
        col, row = np.floor(xy[..., 0]).astype(int), np.floor(xy[..., 1]).astype(int)
        bi, ni = np.meshgrid(np.arange(B), np.arange(N), indexing="ij")
        t = targets[bi, ni, row, col]
        assert np.all(t != prev_pred[bi, ni, row, col]), k  # in the error region
        np.testing.assert_array_equal(r["labels"][k][..., k], t.astype(int))  # FN -> 1, FP -> 0
        # Never in the padding below/right of the image.
        h, w = batch["image_size"][:, 0:1], batch["image_size"][:, 1:2]
        assert np.all(row * S / L < h) and np.all(col * S / L < w)


def test_mask_prompts_and_task_prompts(recorded, run):
    batch, _, aux = recorded
    r = aux["rounds"]
    assert not r["mask_valid"][0].any() and r["mask_valid"][1:].all()
    assert np.all(r["mask_inputs"][0] == 0)
    for k in range(1, ROUNDS):
        np.testing.assert_array_equal(r["mask_inputs"][k], r["logits"][k - 1])
    task = np.broadcast_to(batch["task_id"][:, None], (B, N))
    np.testing.assert_array_equal(r["task_ids"][0], task)
    assert np.all(r["task_ids"][1:] == -1)
    # Continuous task prompt: the task id in every round.
    settings = dataclasses.replace(InteractiveSettings(), continuous_task_prompt=True)
    _, aux_c = run(batch, jax.random.key(0), settings)
    np.testing.assert_array_equal(
        np.asarray(aux_c["rounds"]["task_ids"]), np.broadcast_to(task, (ROUNDS, B, N))
    )


def test_recorded_inputs_reproduce_outputs_and_losses(model, recorded):
    """Re-decoding each round's recorded inputs gives the logits passed on and the losses:
    round 1 decodes three masks, trains the lowest-loss one and passes on the one with the
    highest predicted IoU; later rounds decode one mask."""
    batch, loss, aux = recorded
    r = aux["rounds"]
    graphdef, state = nnx.split(model)
    emb = jax.jit(lambda st, x: nnx.merge(graphdef, st).encode_image(x))(
        state, normalize_and_pad(batch["image"], batch["image_size"])
    )
    decode = jax.jit(
        lambda st, *args, multimask_output, task_ids: nnx.merge(graphdef, st).decode(
            *args, multimask_output=multimask_output, task_ids=task_ids
        ),
        static_argnames="multimask_output",
    )
    c = 1.0 - batch["uncertainty"] / 255.0
    c = np.where(batch["is_pseudo"][:, None, None, None], c, 1.0).reshape(B * N, L, L)
    targets = batch["masks"].reshape(B * N, L, L)
    area = np.repeat(real_pixels(batch["image_size"]), N, axis=0)  # [B * N, L, L]
    round_losses, image_losses = [], []
    for k in range(ROUNDS):
        logits, iou = decode(
            state,
            emb,
            r["points"][k],
            r["labels"][k],
            r["boxes"][k],
            r["box_valid"][k],
            r["mask_inputs"][k],
            r["mask_valid"][k],
            multimask_output=k == 0,
            task_ids=r["task_ids"][k],
        )
        logits, iou = np.asarray(logits), np.asarray(iou)
        if k == 0:
            assert logits.shape[2] == 3
            passed = np.take_along_axis(logits, iou.argmax(-1)[..., None, None, None], 2)[:, :, 0]
            terms, _ = losses.multimask_loss(
                logits.reshape(B * N, 3, L, L), iou.reshape(B * N, 3), targets, c, area
            )
        else:
            assert logits.shape[2] == 1
            passed = logits[:, :, 0]
            terms = losses.combined_loss(
                logits.reshape(B * N, L, L), iou.reshape(B * N), targets, c, area=area
            )
        np.testing.assert_allclose(passed, r["logits"][k], rtol=1e-4, atol=1e-4)
        per_image = np_image_means(np.asarray(terms["loss"]).reshape(B, N), batch["mask_valid"])
        image_losses.append(per_image)
        round_losses.append(per_image.mean())  # every image here has valid masks
    np.testing.assert_allclose(aux["loss"], round_losses, rtol=1e-4)
    np.testing.assert_allclose(aux["image_loss"], np.mean(image_losses, axis=0), rtol=1e-4)
    np.testing.assert_allclose(float(loss), np.mean(round_losses), rtol=1e-4)


def test_padding_masks_contribute_nothing(recorded, run):
    batch, loss, _ = recorded
    changed = {k: v.copy() for k, v in batch.items()}
    changed["masks"][:, -1] = 1 - changed["masks"][:, -1]  # only padding masks change
    loss2, _ = run(changed, jax.random.key(0))
    assert float(loss2) == pytest.approx(float(loss), rel=1e-6)
    changed["masks"][:, 0] = 1 - changed["masks"][:, 0]  # a valid mask: the loss moves
    loss3, _ = run(changed, jax.random.key(0))
    assert abs(float(loss3) - float(loss)) > 1e-3


def test_fully_uncertain_pseudo_labels_give_no_focal_or_dice(recorded, run):
    batch = {k: v.copy() for k, v in recorded[0].items()}
    batch["uncertainty"][:] = 255  # u = 1: c = 0 everywhere
    batch["is_pseudo"][:] = True
    _, aux = run(batch, jax.random.key(0))
    assert np.all(np.asarray(aux["focal"]) == 0) and np.all(np.asarray(aux["dice"]) == 0)
    # No pixel can be sampled: no clicks at all, only boxes (or nothing).
    assert np.all(np.asarray(aux["rounds"]["labels"]) == -2)
    batch["is_pseudo"][:] = False  # the same maps are ignored for human labels
    _, aux = run(batch, jax.random.key(0))
    assert np.all(np.asarray(aux["focal"]) > 0) and np.all(np.asarray(aux["dice"]) > 0)


def test_every_round_reaches_the_encoder(model):
    """The Jacobian of the R per-round losses w.r.t. an encoder parameter has no zero row:
    the image is encoded once, outside the scan, and every round back-propagates into it."""
    model_def, params, rest = ModelDef.split(model)
    batch = make_batch(1)
    settings = InteractiveSettings()

    def round_losses(bias):
        p = jax.tree.map(lambda x: x, params)
        p["image_encoder"]["patch_embed"]["proj"]["bias"] = bias
        m = model_def.merge(p, rest)
        return interactive_loss(m, batch, jax.random.key(0), settings)[1]["loss"]

    bias = params["image_encoder"]["patch_embed"]["proj"]["bias"]
    jac = jax.jit(jax.jacrev(round_losses))(bias)  # [R, C]
    assert jac.shape == (ROUNDS,) + bias.shape
    assert np.all(np.abs(np.asarray(jac)).sum(axis=1) > 0)


def sub_jaxprs(params):
    """The jaxprs nested in an equation's parameters (scan/cond/pjit bodies)."""
    for v in params.values():
        for x in v if isinstance(v, (tuple, list)) else (v,):
            if isinstance(x, jax.extend.core.ClosedJaxpr):
                yield x.jaxpr
            elif isinstance(x, jax.extend.core.Jaxpr):
                yield x


def test_one_encoder_call_and_no_host_callbacks(model):
    """The jaxpr of the step holds the 16x16 patch-embedding convolution once, outside the
    rounds' loop, and no callback primitive that would go to the host between rounds."""
    graphdef, state = nnx.split(model)
    batch = make_batch(2)
    jaxpr = jax.make_jaxpr(
        lambda st: interactive_loss(
            nnx.merge(graphdef, st), batch, jax.random.key(0), InteractiveSettings()
        )[0]
    )(state)

    patch_convs, loops, callbacks = [], [], []

    def walk(jx, inside_loop):
        for eqn in jx.eqns:
            name = eqn.primitive.name
            if name == "conv_general_dilated" and eqn.params["window_strides"] == (16, 16):
                patch_convs.append(inside_loop)
            if "callback" in name:
                callbacks.append(name)
            if name in ("scan", "while"):
                loops.append(name)
            for sub in sub_jaxprs(eqn.params):
                walk(sub, inside_loop or name in ("scan", "while"))

    walk(jaxpr.jaxpr, False)
    assert patch_convs == [False]
    assert loops.count("scan") == 1
    assert not callbacks


def test_no_gradient_through_previous_logits(model, recorded):
    """The gradient of the interactive loss equals that of a reference that re-decodes every
    round from its recorded inputs held as constants (the previous round's logits enter as
    a fixed mask prompt): nothing flows back through the logits passed between rounds."""
    batch, _, aux = recorded
    r = aux["rounds"]
    model_def, params, rest = ModelDef.split(model)
    settings = InteractiveSettings()
    c = 1.0 - batch["uncertainty"] / 255.0
    c = np.where(batch["is_pseudo"][:, None, None, None], c, 1.0).reshape(B * N, L, L)
    targets = batch["masks"].reshape(B * N, L, L)
    area = np.repeat(real_pixels(batch["image_size"]), N, axis=0)
    valid = jax.numpy.asarray(batch["mask_valid"])

    # The image embedding is a constant here: the encoder's path is not in question and
    # its backward pass would dominate the test's time.
    emb = jax.jit(
        lambda p: model_def.merge(p, rest).encode_image(
            normalize_and_pad(batch["image"], batch["image_size"])
        )
    )(params)

    fields = ("points", "labels", "boxes", "box_valid", "mask_inputs", "mask_valid", "task_ids")

    def reference(p):
        m = model_def.merge(p, rest)

        def decode(inputs, multimask):
            points, labels, boxes, box_valid, mask_inputs, mask_valid, task_ids = inputs
            return m.decode(emb, points, labels, boxes, box_valid,
                            mask_inputs,  # a constant: the recorded previous logits
                            mask_valid, multimask_output=multimask, task_ids=task_ids)  # fmt: skip

        def image_losses(terms):
            return losses.masked_mean(terms["loss"].reshape(B, N), valid, axis=1)

        logits, iou = decode([r[f][0] for f in fields], True)
        terms, _ = losses.multimask_loss(
            logits.reshape(B * N, 3, L, L), iou.reshape(B * N, 3), targets, c, area
        )
        first = image_losses(terms)

        # Rounds 2..R decode their recorded inputs one after the other (a scan: the program
        # holds one decoder instead of R - 1 unrolled ones, which took most of the time).
        def later_round(carry, inputs):
            logits, iou = decode(inputs, False)
            terms = losses.combined_loss(
                logits.reshape(B * N, L, L), iou.reshape(B * N), targets, c, area=area
            )
            return carry, image_losses(terms)

        _, later = jax.lax.scan(later_round, None, [r[f][1:] for f in fields])
        return jax.numpy.concatenate([first[None], later]).mean()

    def actual(p):
        m = model_def.merge(p, rest)
        return training_rounds(m, emb, batch, jax.random.key(0), settings)[0]

    ref_loss, ref_grad = jax.jit(jax.value_and_grad(reference))(params)
    got_loss, got_grad = jax.jit(jax.value_and_grad(actual))(params)
    np.testing.assert_allclose(float(got_loss), float(ref_loss), rtol=1e-4)
    ref_leaves = dict(jax.tree.leaves_with_path(ref_grad))
    # Per parameter array, the gradients agree to float32 summation noise, relative to that
    # array's gradient norm (1e-3) or, for arrays whose gradient is itself noise (e.g. a
    # bias feeding a LayerNorm), to the largest gradient norm (1e-6).
    norms = {kp: np.linalg.norm(np.asarray(g)) for kp, g in ref_leaves.items()}
    floor = 1e-6 * max(norms.values())
    errors = {}
    for kp, g in jax.tree.leaves_with_path(got_grad):
        err = np.linalg.norm(np.asarray(g) - np.asarray(ref_leaves[kp]))
        errors[jax.tree_util.keystr(kp)] = (err, norms[kp])
        assert err <= 1e-3 * norms[kp] + floor, (jax.tree_util.keystr(kp), err, norms[kp])
    # The mask prompt's own encoder does get gradient from the rounds that use it.
    assert any("mask_downscaling" in k and n > 0 for k, (_, n) in errors.items()), errors
