"""The PyTorch SUM step of `benchmarks/train_step_speed.py --torch` (tests/torch_train_step.py)
computes our step: same weights (through the converter's key map), same prompts (ours,
replayed), and the loss, every gradient and every AdamW update agree in float32; its own
click sampling follows the rules of `sum_jax.train.prompts`."""

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from configs import base
from convert import key_map
from sum_jax.models.sam import VARIANTS
from sum_jax.train import optim
from sum_jax.train.rounds import InteractiveSettings, interactive_loss
from tests import torch_train_step
from tests.torch_reference import flax_from_torch, rel_err, torch_sam
from tests.train.test_rounds import make_batch

SAM = VARIANTS["tiny"]
PROMPT_KEYS = ("points", "labels", "boxes", "box_valid")


@pytest.fixture(scope="module")
def config():
    config = base.get_config()
    config.model.variant = "tiny"
    # Large enough that one update stands well above the float32 rounding of the weights.
    config.optimizer.lr = 1e-3
    return config


@pytest.fixture(scope="module")
def both(config):
    """Our loss, gradients, AdamW updates and recorded prompts; then the PyTorch step's
    loss, gradients and updates from the same weights with those prompts replayed."""
    # One thread: the tiny model's ops are too small to share, and on a busy machine
    # PyTorch's two OpenMP threads wait on each other (a step then takes 20x longer).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    batch = make_batch(5)
    tmodel = torch_sam(SAM, seed=2, perturb=0.05)
    fmodel = flax_from_torch(tmodel, SAM)
    graphdef, params, rest = nnx.split(fmodel, nnx.Param, ...)
    settings = InteractiveSettings.from_config(config)

    def loss_fn(p):
        return interactive_loss(nnx.merge(graphdef, p, rest), batch, jax.random.key(3), settings,
                                record=True)  # fmt: skip

    (loss, aux), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
    pure, pure_grads = nnx.to_pure_dict(params), nnx.to_pure_dict(grads)
    tx, _ = optim.make_optimizer(pure, config.optimizer, 10)
    updates = jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])(pure_grads, pure)
    ours = {
        "loss": float(loss),
        "grads": {k: np.array(v) for k, v in key_map.flatten(pure_grads).items()},
        "updates": {k: np.array(v) for k, v in key_map.flatten(updates).items()},
        "prompts": {k: np.array(aux["rounds"][k]) for k in PROMPT_KEYS},
    }

    step = torch_train_step.TorchSumStep(tmodel, SAM, config)
    before = {k: p.detach().clone() for k, p in step.params.items()}
    theirs = {"loss": step.step(batch, prompts=ours["prompts"])}
    flax_layout = lambda k, t: key_map.to_flax_layout(k, t.detach().numpy())
    theirs["grads"] = {k: flax_layout(k, p.grad) for k, p in step.params.items()}
    theirs["updates"] = {k: flax_layout(k, p - before[k]) for k, p in step.params.items()}
    yield ours, theirs, batch, step
    torch.set_num_threads(threads)


def noise_floor(grads: dict[str, np.ndarray]) -> float:
    """The float32 rounding left in gradients that are zero in exact arithmetic (the key
    biases of attention, which softmax cancels): a millionth of the whole gradient's norm."""
    return 1e-6 * float(
        np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in grads.values()))
    )


def test_loss_and_gradients_agree(both):
    ours, theirs, _, _ = both
    assert ours["loss"] > 0.1
    assert theirs["loss"] == pytest.approx(ours["loss"], rel=1e-5)
    assert set(theirs["grads"]) == set(ours["grads"])
    # Relative error 1e-4 (measured: at most 4e-6), or below the noise floor.
    floor = noise_floor(ours["grads"])
    errors = {
        k: np.linalg.norm(theirs["grads"][k] - g) / (1e-4 * np.linalg.norm(g) + floor)
        for k, g in ours["grads"].items()
    }
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1.0, (worst, rel_err(theirs["grads"][worst], ours["grads"][worst]))
    assert sum(np.linalg.norm(g) > 1e3 * floor for g in ours["grads"].values()) > 100
    # Gradients reach every part the step trains: the encoder's first layer (through every
    # round), the mask prompt's stack (rounds 2..7) and the task rows of the batch's tasks.
    for path in (
        "image_encoder.patch_embed.proj.kernel",
        "prompt_encoder.mask_downscaling.0.kernel",
        "mask_decoder.iou_prediction_head.layers.2.kernel",
    ):
        assert np.abs(ours["grads"][path]).max() > 0, path
    task = ours["grads"][torch_train_step.TASK_TABLE]
    assert np.abs(task[1:3]).max() > 0 and not task[[0, 3]].any()


def test_adamw_updates_agree(both, config):
    """One step from the same weights: the same update per parameter, i.e. the same layer
    decay, learning rate and weight-decay groups (where the gradient is clearly non-zero:
    Adam's first step divides it by its own magnitude)."""
    ours, theirs, _, _ = both
    lr = config.optimizer.lr
    depth = SAM.encoder_depth
    floor = noise_floor(ours["grads"])
    compared = 0
    for path, update in ours["updates"].items():
        grad = ours["grads"][path]
        if np.linalg.norm(grad) < 1e3 * floor:  # Adam would scale rounding noise up to lr
            continue
        big = np.abs(grad) > 1e-3 * np.abs(grad).max()
        compared += 1
        np.testing.assert_allclose(theirs["updates"][path][big], update[big], rtol=1e-3,
                                   atol=1e-3 * lr, err_msg=path)  # fmt: skip
    assert compared > 100
    # The layer decay shows: the patch embedding moves by 0.8^(depth+1) lr per element.
    patch = np.abs(theirs["updates"]["image_encoder.patch_embed.proj.bias"])
    assert np.median(patch) == pytest.approx(lr * 0.8 ** (depth + 1), rel=0.05)


def test_own_clicks_follow_the_rules(both):
    """Without replayed prompts the step draws its own: first points inside the target,
    boxes inside the real image, error clicks inside the error region and the image with
    the target's label, never on a pixel of zero certainty."""
    _, _, batch, step = both
    gen = torch.Generator().manual_seed(0)
    st, s = step.settings, SAM.img_size
    b, n, size = batch["masks"].shape[:3]
    targets = torch.from_numpy(batch["masks"]).reshape(b * n, size, size).float()
    certainty = torch.rand(b * n, size, size, generator=gen)
    certainty[:, :, ::2] = 0.0  # even columns may never be drawn
    image_size = torch.from_numpy(batch["image_size"]).repeat_interleave(n, 0).long()
    first = torch_train_step.first_prompts(gen, targets, certainty, s, image_size, st)
    k = s / size
    col, row = ((first["point"] + 0.5) / k).floor().long().unbind(-1)
    point_ok = first["point_valid"]
    assert point_ok.any() and first["box_valid"].any()
    assert targets[torch.arange(b * n), row, col][point_ok].eq(1).all()
    assert (col[point_ok] % 2 == 1).all()
    boxes = first["box"][first["box_valid"]]
    hw = image_size[first["box_valid"]].float()
    assert (boxes >= 0).all() and (boxes[:, [2, 3]] <= hw[:, [1, 0]] - 1).all()
    assert (boxes[:, :2] <= boxes[:, 2:]).all()

    # A few false positives beside the false negatives of an empty prediction.
    prediction = torch.rand(b * n, size, size, generator=gen) > 0.97
    area = torch_train_step.image_area(image_size, size, s)
    point, label, valid = torch_train_step.error_points(
        gen, targets, prediction, certainty, area, s
    )
    col, row = ((point + 0.5) / k).floor().long().unbind(-1)
    at = lambda x: x[torch.arange(b * n), row, col][valid]
    assert valid.all()
    assert at((targets > 0) ^ prediction).all() and at(area).all()
    assert torch.equal(at(targets).long(), label[valid]) and (col[valid] % 2 == 1).all()
    assert 0 < label.sum() < len(label)  # both kinds of click occur
    loss = step.loss(batch)
    assert torch.isfinite(loss) and loss.item() > 0.1
