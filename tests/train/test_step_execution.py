"""The step's memory options keep its arithmetic: gradient accumulation over micro-batches
gives the update of the whole batch at once, rematerialisation (encoder blocks and rounds)
changes no gradient, and the bfloat16 step follows the float32 step's losses.

Prompts are made deterministic (round 1: the exact box of the target; round 2: the mask
prompt, no new click), so that splitting the batch changes which PRNG key draws them but
not what they are: the reference is then the same step on the whole batch.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import base
from sum_jax.models.sam import build_sam, execution_overrides
from sum_jax.train import optim, sharding
from sum_jax.train.step import (
    TrainState,
    apply_gradients,
    init_train_state,
    jit_train_step,
    resolve_microbatches,
    split_microbatches,
)
from tests.train.test_rounds import make_batch

LR = 1e-3
IMAGES, MASKS = 4, 3


def config(eps: float = 1.0, **model):
    cfg = base.get_config()
    cfg.model.variant = "tiny"
    cfg.optimizer.lr = LR
    # Adam's first step is lr * g / (|g| + eps): with the usual eps 1e-8 a gradient that is
    # float32 noise around 0 (1e-8) moves a parameter by lr in either direction. eps = 1
    # makes the update lr * g / (|g| + 1), continuous in g, so parameters compare.
    cfg.optimizer.eps = eps
    cfg.interactive.num_rounds = 2
    cfg.interactive.box_prob = 1.0
    cfg.interactive.box_noise_frac = 0.0
    cfg.train.batch_size = IMAGES
    for k, v in model.items():
        cfg.model[k] = v
    return cfg


def batch(seed: int) -> dict[str, np.ndarray]:
    b = make_batch(seed, IMAGES, MASKS)
    # Unequal valid masks per image, and image 3 has none: micro-batches {0, 2} and {1, 3}
    # hold 2 and 1 of the 3 images that count (the loss is a mean over images).
    b["mask_valid"] = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]], bool)
    return b


def flat(tree):
    return {optim.path_str(kp): np.array(x, copy=True) for kp, x in jax.tree.leaves_with_path(tree)}


def run(cfg, steps: int = 1, seed: int = 0, same_batch: bool = False):
    """`steps` jitted steps from the same initial tiny model (on `batch(step)`, or always
    `batch(0)`); `(metrics per step, params, setup)`."""
    model = build_sam("tiny", rngs=nnx.Rngs(seed), **execution_overrides(cfg.model))
    mesh = sharding.make_mesh((1, 1), jax.devices()[:1])
    state, setup = init_train_state(model, cfg, mesh)
    step = jit_train_step(setup)
    history = []
    for i in range(steps):
        state, metrics = step(state, sharding.shard_batch(batch(0 if same_batch else i), mesh))
        history.append(jax.device_get(metrics))
    return history, flat(state.params), setup


@pytest.fixture(scope="module")
def reference():
    """float32, no remat, the whole batch at once."""
    return run(config())


def assert_same_step(got, ref, rtol=1e-5):
    (m_got,), p_got, _ = got
    (m_ref,), p_ref, _ = ref
    for k in ("loss", "round_loss", "round_loss_human", "round_loss_pseudo", "round_iou"):
        np.testing.assert_allclose(m_got[k], m_ref[k], rtol=rtol, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(m_got["grad_norm"], m_ref["grad_norm"], rtol=1e-4)
    # Gradients within 1e-5 relative (and float32 noise) move parameters by at most
    # lr * |dg| (eps = 1): 1e-3 lr.
    for path, x in p_ref.items():
        np.testing.assert_allclose(p_got[path], x, rtol=0, atol=1e-3 * LR, err_msg=path)


def test_microbatches_resolve_from_devices():
    assert resolve_microbatches(-1, 40, 8) == 5
    assert resolve_microbatches(-1, 40, 1) == 40
    assert resolve_microbatches(2, 16, 8) == 2
    with pytest.raises(ValueError, match="train.microbatches=3"):
        resolve_microbatches(3, 16, 8)
    with pytest.raises(ValueError, match="train.microbatches=4"):
        resolve_microbatches(4, 16, 8)  # 4 images per micro-batch on 8 devices


def test_split_microbatches_keeps_each_devices_images():
    x = {"a": np.arange(8)}
    micro = split_microbatches(x, 2)["a"]
    np.testing.assert_array_equal(micro, [[0, 2, 4, 6], [1, 3, 5, 7]])
    # 4 devices holding 2 consecutive images each: every micro-batch has image 2d or 2d+1
    # at position d, which device d holds.
    assert all(set(micro[:, d]) == {2 * d, 2 * d + 1} for d in range(4))


def test_memory_options_together_change_no_gradient(reference):
    """Accumulation over 2 micro-batches, block remat (encoder and rounds) and 3 mask chunks
    at once, float32: the step of the whole batch (one compilation for the three options;
    each alone runs under `-m slow`, below)."""
    cfg = config(remat="block", mask_chunks=3)
    cfg.train.microbatches = 2
    got = run(cfg)
    assert got[2].microbatches == 2 and reference[2].microbatches == 1
    assert got[2].settings.remat_rounds and got[2].settings.mask_chunks == 3
    assert_same_step(got, reference)


@pytest.mark.slow
def test_accumulation_equals_one_batch(reference):
    """2 micro-batches of 2 images (2 and 1 images with valid masks) vs the 4 at once, float32:
    losses and per-round metrics (also split by data source) within 1e-5 relative, the
    gradient norm (a sum of squares over 10^5 entries) within 1e-4 (float32 summation
    order), parameters after AdamW within 1e-3 lr."""
    cfg = config()
    cfg.train.microbatches = 2
    got = run(cfg)
    assert got[2].microbatches == 2 and reference[2].microbatches == 1
    assert_same_step(got, reference)


@pytest.mark.slow
def test_remat_changes_no_gradient(reference):
    """Block remat of the encoder and of the rounds, float32: the same step."""
    got = run(config(remat="block"))
    assert got[2].settings.remat_rounds
    assert_same_step(got, reference)


# 20 steps in each dtype (a minute on 2 cores): under `-m slow`; the default suite runs the
# bfloat16 step against float32 through tests/train/test_lora_step.py (the same step with
# adapters) and the bfloat16 model in tests/models/test_execution.py.
@pytest.mark.slow
def test_bfloat16_step_follows_float32():
    """20 AdamW steps (lr 1e-3, eps 1e-8) on one batch of 4 images x 3 masks, in bfloat16
    and float32 from the same parameters. bfloat16 rounds activations to 2^-9 relative; through
    the tiny encoder and decoder the logits move by about 1%, which the losses (means of
    focal, Dice and IoU terms over many pixels) average down: every step's loss stays within
    5% of float32's, and the mean over the 20 steps within 2%."""
    steps = 20
    ref, _, _ = run(config(eps=1e-8), steps, same_batch=True)
    got, _, _ = run(config(eps=1e-8, compute_dtype="bfloat16"), steps, same_batch=True)
    ref_loss = np.array([m["loss"] for m in ref])
    got_loss = np.array([m["loss"] for m in got])
    assert np.all(np.isfinite(got_loss))
    assert ref_loss[-1] < ref_loss[0]  # the run trains, so the comparison covers updates
    np.testing.assert_allclose(got_loss, ref_loss, rtol=0.05)
    assert abs(got_loss.mean() / ref_loss.mean() - 1) < 0.02


def test_update_writes_the_donated_parameters_in_place():
    """`apply_gradients` jitted with the state donated copies no parameter: AdamW writes the
    new parameters into the donated buffers. (When the update norm re-read the old
    parameters unordered with those writes, XLA copied every parameter at the start of the
    step and kept the copies alive throughout: 2.4 GiB at ViT-H size. This small AdamW
    update showed the same 2 copies.)"""
    tx = optax.adamw(1e-3, weight_decay=0.1)
    params = {"a": jnp.ones((256, 512)), "b": jnp.ones((512,))}
    state = TrainState(
        jnp.zeros((), jnp.int32), params, {}, tx.init(params), jnp.zeros((2,), jnp.uint32)
    )
    update = jax.jit(functools.partial(apply_gradients, tx=tx), donate_argnums=0)
    compiled = update.lower(state, jnp.float32(1.0), params).compile()
    hlo = compiled.as_text()
    assert "state_params__a" in hlo  # the entry parameters' names, which the pattern reads
    assert not re.findall(r"copy\(%?state_params", hlo)
    grads = {"a": jnp.full((256, 512), 0.5), "b": jnp.full((512,), -2.0)}
    reference = optax.apply_updates(params, tx.update(grads, tx.init(params), params)[0])
    reference = jax.tree.map(np.asarray, reference)  # before `update` consumes `params`
    new_state, _ = update(state, jnp.float32(1.0), grads)
    for k, x in reference.items():
        np.testing.assert_allclose(np.asarray(new_state.params[k]), x, rtol=1e-7, err_msg=k)


@pytest.mark.slow
def test_mask_chunks_change_no_gradient(reference):
    """Decoding each image's 3 masks one at a time (3 chunks, each rematerialised), float32:
    the same step."""
    got = run(config(mask_chunks=3))
    assert got[2].settings.mask_chunks == 3
    assert_same_step(got, reference)
