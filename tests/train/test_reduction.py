"""The step's loss weighs every image equally (App. B.1: one image and up to 30 masks per GPU,
data-parallel), whatever its number of masks and however the batch is sharded."""

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from configs import base
from sum_jax.data import image_ops
from sum_jax.models.sam import build_sam
from sum_jax.train import sharding
from sum_jax.train.rounds import InteractiveSettings, interactive_loss
from sum_jax.train.step import init_train_state, train_step

S, L, N = 128, 32, 30  # tiny SAM's input frame and low-res grid; masks per image


def photo_element(photo: np.ndarray, masks: list[np.ndarray], pseudo: bool, task: int):
    """One batch element (docs/contracts.md) from a photo and its full-size masks, padded to
    `N` masks; pseudo-labelled elements get a smooth uncertainty map per mask."""
    image, size = image_ops.resize_longest_side_and_pad(photo, S)
    grid = np.zeros((N, L, L), np.uint8)
    for i, m in enumerate(masks):
        grid[i] = image_ops.mask_to_frame(m, S, L)
    valid = np.arange(N) < len(masks)
    rng = np.random.default_rng(len(masks))
    ys, xs = np.mgrid[:L, :L] / L
    u = (255 * np.abs(np.sin(3 * xs + rng.random((N, 1, 1)) * 6) * ys)).astype(np.uint8)
    return {
        "image": image,
        "image_size": size,
        "masks": grid,
        "mask_valid": valid,
        "uncertainty": u if pseudo else np.zeros((N, L, L), np.uint8),
        "is_pseudo": np.bool_(pseudo),
        "task_id": np.int32(task),
    }


@pytest.fixture(scope="module")
def elements():
    """A human-labelled 3:2 photo with 1 mask (the coffee cup's dark region) and a
    pseudo-labelled photo with 30 masks (SLIC superpixels)."""
    from skimage import color, data, segmentation

    coffee = data.coffee()
    human = photo_element(coffee, [color.rgb2gray(coffee) < 0.3], pseudo=False, task=1)
    cat = data.chelsea()
    segments = segmentation.slic(cat, n_segments=30, start_label=0)
    ids = np.unique(segments)[:N]
    pseudo = photo_element(cat, [segments == i for i in ids], pseudo=True, task=0)
    assert human["mask_valid"].sum() == 1 and pseudo["mask_valid"].sum() == len(ids) >= 25
    return human, pseudo


def config():
    """Round 1 is the unjittered box and the second (last) round adds no click, so the
    prompts do not depend on the PRNG: each image sees the same prompts alone or in a
    batch."""
    cfg = base.get_config()
    cfg.interactive.num_rounds = 2
    cfg.interactive.box_prob = 1.0
    cfg.interactive.box_noise_frac = 0.0
    return cfg


def stack(batch_elements):
    return {k: np.stack([e[k] for e in batch_elements]) for k in batch_elements[0]}


def test_step_loss_is_the_mean_of_the_images_losses(elements):
    """The step on both images, one per device, against each image's loss alone."""
    human, pseudo = elements
    model = build_sam("tiny", rngs=nnx.Rngs(3))
    settings = InteractiveSettings.from_config(config())
    graphdef, weights = nnx.split(model)
    loss_alone = jax.jit(
        lambda w, b: interactive_loss(nnx.merge(graphdef, w), b, jax.random.key(0), settings)[0]
    )
    alone = [float(loss_alone(weights, stack([e]))) for e in (human, pseudo)]

    cfg = config()
    cfg.sharding.mesh_shape = (2, 1)
    mesh = sharding.make_mesh(cfg.sharding.mesh_shape, jax.devices()[:2])
    state, setup = init_train_state(model, cfg, mesh)
    step = functools.partial(
        train_step, model_def=setup.model_def, tx=setup.tx, plan=setup.plan, settings=settings
    )
    _, both = jax.jit(step)(state, sharding.shard_batch(stack([human, pseudo]), mesh))
    both = jax.tree.map(np.asarray, both)
    np.testing.assert_allclose(float(both["loss"]), np.mean(alone), rtol=1e-5)
    np.testing.assert_allclose(np.mean(both["round_loss_human"]), alone[0], rtol=1e-5)
    np.testing.assert_allclose(np.mean(both["round_loss_pseudo"]), alone[1], rtol=1e-5)
    assert int(both["images_human"]) == 1 and int(both["images_pseudo"]) == 1
    assert int(both["masks_human"]) == 1 and int(both["masks_pseudo"]) >= 25
    # A mean over masks would give the human image 1/31 of the weight: a different number.
    per_mask = (alone[0] + int(both["masks_pseudo"]) * alone[1]) / (1 + int(both["masks_pseudo"]))
    assert abs(per_mask - np.mean(alone)) > 1e-2 * abs(np.mean(alone))
