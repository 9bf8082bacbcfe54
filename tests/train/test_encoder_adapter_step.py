"""The encoder-adapter variants (configs/ablations.py `adapter`, `sum_adapter`) through the
training step on the tiny model: only what the variant trains changes (every other
parameter bit-identical), the loss on a fixed batch and key goes down, and the exported
model directory loads (as every command loads it) into exactly the trained model."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx

from configs import ablations
from sum_jax import checkpointing
from sum_jax.inference.predictor import SamPredictor
from sum_jax.models.sam import build_sam
from sum_jax.train import adapters, loop, sharding
from sum_jax.train.step import init_train_state, jit_train_step
from tests.models.test_execution import forward, photo
from tests.train.test_step_execution import batch, config, flat

STEPS = 4


def is_adapter(path: str) -> bool:
    return path.startswith("image_encoder.blocks.") and (
        ".space_adapter." in path or ".mlp_adapter." in path
    )


def train(variant: str):
    """`STEPS` jitted steps of `variant` on one fixed batch from the tiny model: initial and
    final flat params, the loss of every step, the final state and the setup.

    The test config's prompts are deterministic (round 1 the exact box, round 2 the mask
    prompt alone), so step i's loss is the loss of step i's parameters on the same inputs."""
    cfg = config(eps=1e-8)  # Adam's usual eps: full-size steps, so the loss moves
    ablations.apply(cfg, variant)
    model = adapters.adapt(build_sam("tiny", rngs=nnx.Rngs(0)), cfg)
    mesh = sharding.make_mesh((1, 1), jax.devices()[:1])
    state, setup = init_train_state(model, cfg, mesh)
    fixed = sharding.shard_batch(batch(0), mesh)
    first = flat(state.params)
    step = jit_train_step(setup)
    losses = []
    for _ in range(STEPS):
        state, metrics = step(state, fixed)
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses))
    return first, flat(state.params), losses, state, setup


@pytest.fixture(scope="module")
def sum_adapter():
    return train("sum_adapter")


def changed_paths(before, after):
    assert before.keys() == after.keys()
    return {p for p in before if not np.array_equal(before[p], after[p])}


def test_adapter_ft_trains_only_the_adapters():
    """Fig. 5's "Adapter FT": the adapters alone move; SAM, the task table included, stays."""
    before, after, losses, _, setup = train("adapter")
    assert not setup.settings.use_task_prompt
    adapter_paths = {p for p in before if is_adapter(p)}
    assert len(adapter_paths) == 2 * 2 * 4  # tiny: 2 blocks x 2 adapters x (fc1, fc2) x 2
    moved = changed_paths(before, after)
    assert moved <= adapter_paths
    # Every up-projection (zero at the start) moved, in every block.
    assert {p for p in adapter_paths if ".fc2." in p} <= moved
    assert losses[-1] < losses[0]


def test_sum_adapter_trains_adapters_prompt_encoder_and_decoder(sum_adapter):
    """Fig. 12's "SUM (Encoder Adapter arch.)": adapters, prompt encoder, mask decoder and
    task table move; the rest of the image encoder stays bit-identical."""
    before, after, losses, _, setup = sum_adapter
    assert setup.settings.use_task_prompt
    moved = changed_paths(before, after)
    encoder_rest = {p for p in before if p.startswith("image_encoder.") and not is_adapter(p)}
    assert encoder_rest and not (moved & encoder_rest)
    assert {p for p in before if is_adapter(p) and ".fc2." in p} <= moved
    assert any(p.startswith("mask_decoder.") for p in moved)
    assert any(p.startswith("prompt_encoder.task_embeddings.") for p in moved)
    assert losses[-1] < losses[0]
    # Frozen parameters keep no Adam moments; the adapters train at 10x the rate.
    assert setup.plan.lr_mult["image_encoder.blocks.0.mlp_adapter.fc2.kernel"] == 10.0
    assert setup.plan.frozen["image_encoder.blocks.0.attn.qkv.kernel"]
    assert not setup.plan.frozen["mask_decoder.iou_prediction_head.layers.0.kernel"]


def test_export_loads_as_the_trained_model(sum_adapter, tmp_path):
    """The export is a plain model directory recording the adapters: `load_model` (evaluate,
    segment, serve) and the predictor rebuild them, and the outputs are exactly the trained
    model's (which differ from the base SAM's)."""
    _, _, _, state, setup = sum_adapter
    trained = setup.model_def.merge(state.params, state.model_state)
    directory = tmp_path / "model"
    loop.export_model(state, setup, directory, checkpointing.TaskRecord((1, 2, 3)))
    recorded = json.loads((directory / checkpointing.CONFIG_FILE).read_text())
    assert recorded["encoder_adapter_ratio"] == 0.25
    assert recorded["encoder_adapter_scale"] == 0.5

    loaded = checkpointing.load_model(str(directory))
    assert loaded.config == trained.config.architecture()
    assert loaded.config.variant == "tiny"
    run = nnx.jit(forward)
    images = photo(trained.config.img_size)
    want = jax.device_get(run(trained, images))
    got = jax.device_get(run(loaded, images))
    for name, x, y in zip(("embeddings", "masks", "iou"), want, got, strict=True):
        np.testing.assert_array_equal(y, x, err_msg=name)
    predictor = SamPredictor.from_checkpoint(str(directory))
    assert predictor.model.image_encoder.blocks[1].mlp_adapter is not None
    # SAM's PyTorch model has no place for the adapters: the converter says so.
    pytest.importorskip("torch")
    from convert import sam_checkpoint

    with pytest.raises(sam_checkpoint.ConversionError, match="encoder adapters"):
        sam_checkpoint.orbax_to_pth(str(directory), str(tmp_path / "sam.pth"))
    # The trained adapters matter: without them (zeroed) the embeddings differ.
    for block in loaded.image_encoder.blocks:
        for a in (block.space_adapter, block.mlp_adapter):
            a.fc2.kernel[...] = a.fc2.kernel[...] * 0
            a.fc2.bias[...] = a.fc2.bias[...] * 0
    assert not np.array_equal(jax.device_get(run(loaded, images))[0], want[0])
