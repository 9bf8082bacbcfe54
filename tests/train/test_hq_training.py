"""Training on HQ-SAM's architecture (`config.model.hq`): what trains, what each round
returns, and how the trainer builds and exports the model."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from segment_anything_hq import sam_model_registry as hq_registry

from configs import ablations
from convert import key_map
from sum_jax.checkpointing import abstract_sam, load_model, load_sam, read_config, save_sam
from sum_jax.models.sam import VARIANTS
from sum_jax.ops.transforms import normalize_and_pad
from sum_jax.train import loop, optim, sharding
from sum_jax.train.rounds import InteractiveSettings, interactive_loss
from sum_jax.train.step import initial_state, jit_train_step, train_setup
from tests import tiny_train_config
from tests.hq_reference import torch_sam_hq
from tests.torch_reference import flax_from_torch, rel_err
from tests.train.test_rounds import make_batch

TINY_HQ = dataclasses.replace(VARIANTS["tiny"], hq=True)


@pytest.mark.parametrize("variant", ["hq_sam", "sum_hq"])
def test_hq_variants_train_what_hq_sam_trains(variant):
    """The trainable parameters are those the official HQ-SAM builder leaves
    `requires_grad` (plus SUM's task table for `sum_hq`, which keeps its task prompt)."""
    config = ablations.get_config(variant)
    assert config.model.hq and config.model.hq_token_only
    assert (config.data.unlabelled == "") == (variant == "hq_sam")
    assert config.interactive.use_task_prompt == (variant == "sum_hq")
    assert (config.optimizer.lr, config.optimizer.weight_decay) == (1e-3, 0.0)  # HQ-SAM's Adam
    with torch.device("meta"):
        official = hq_registry["vit_b"](checkpoint=None)
    trains = {n for n, p in official.named_parameters() if p.requires_grad}
    hq_vit_b = dataclasses.replace(VARIANTS["vit_b"], hq=True)
    params = nnx.to_pure_dict(nnx.state(abstract_sam(hq_vit_b), nnx.Param))
    plan = optim.make_plan(params, config.optimizer)
    ours = {key_map.torch_key(p) for p, frozen in plan.frozen.items() if not frozen}
    task_table = {None} if variant == "sum_hq" else set()  # Flax-only: no PyTorch key
    assert ours == trains | task_table


@pytest.fixture(scope="module")
def pair():
    tmodel = torch_sam_hq(TINY_HQ, seed=4)
    return tmodel, flax_from_torch(tmodel, TINY_HQ)


def test_every_round_trains_the_hq_output(pair):
    """Round 1 has one output, the HQ token's mask, for box and point prompts alike, exactly
    what the official HQ decoder returns for those prompts (`multimask_output=False,
    hq_token_only=True`, HQ-SAM's training call); later rounds pass on the HQ mask too."""
    tmodel, model = pair
    batch = make_batch(3)
    graphdef, state = nnx.split(model)
    settings = InteractiveSettings(num_rounds=3, iou_weight=0.0)
    loss, aux = jax.jit(
        lambda st, bt, k: interactive_loss(nnx.merge(graphdef, st), bt, k, settings, record=True)
    )(state, batch, jax.random.key(0))
    assert np.isfinite(float(loss))
    rec = jax.tree.map(np.asarray, aux["rounds"])
    images = normalize_and_pad(jnp.asarray(batch["image"]), jnp.asarray(batch["image_size"]))
    kinds = set()
    for r in (0, 1):
        for i in range(batch["image"].shape[0]):
            with torch.no_grad():
                x = torch.from_numpy(np.asarray(images[i : i + 1])).permute(0, 3, 1, 2)
                emb, interm = tmodel.image_encoder(x)
            for j in range(batch["masks"].shape[1]):
                labels = rec["labels"][r, i, j]
                keep = labels != -2
                box = rec["boxes"][r, i, j] if rec["box_valid"][r, i, j] else None
                kinds.add((r, box is not None))
                points = None
                if keep.any():
                    points = (
                        torch.from_numpy(rec["points"][r, i, j][keep][None]),
                        torch.from_numpy(labels[keep][None]),
                    )
                mask_in = None
                if rec["mask_valid"][r, i, j]:
                    mask_in = torch.from_numpy(rec["mask_inputs"][r, i, j][None, None])
                with torch.no_grad():
                    sparse, dense = tmodel.prompt_encoder(
                        points=points,
                        boxes=None if box is None else torch.from_numpy(box[None]),
                        masks=mask_in,
                    )
                    ref, _ = tmodel.mask_decoder(
                        image_embeddings=emb,
                        image_pe=tmodel.prompt_encoder.get_dense_pe(),
                        sparse_prompt_embeddings=sparse,
                        dense_prompt_embeddings=dense,
                        multimask_output=False,
                        hq_token_only=True,
                        interm_embeddings=interm,
                    )
                assert rel_err(rec["logits"][r, i, j], ref[0, 0]) < 1e-4
    assert {(0, True), (0, False)} <= kinds  # round 1 had boxes and points


def test_a_step_moves_only_the_hq_parts(pair):
    """One optimiser step of `sum_hq`'s parameterisation: HQ parts and the task table may
    move, SAM's parameters stay bit-identical."""
    _, model = pair
    config = tiny_train_config.get_config()
    base = ablations.get_config("sum_hq")
    config.model.hq = True
    config.optimizer = base.optimizer
    config.loss.iou_weight = 0.0
    config.interactive.num_rounds = 2
    config.train.batch_size = len(jax.devices())  # one tiny image per (fake CPU) device
    config.train.masks_per_image = 2
    mesh = sharding.make_mesh((1, -1))
    setup, _ = train_setup(model, config, mesh)
    state = initial_state(model, setup, 0)
    before = jax.tree.map(np.asarray, state.params)
    b = int(config.train.batch_size)
    batch = make_batch(5, b=b, n=int(config.train.masks_per_image))
    state, _ = jit_train_step(setup)(state, sharding.shard_batch(batch, mesh))
    after = jax.tree.map(np.asarray, state.params)
    moved = set()
    for (path, x), y in zip(jax.tree.leaves_with_path(before), jax.tree.leaves(after)):
        name = optim.path_str(path)
        if not np.array_equal(x, y):
            moved.add(name)
    assert moved and all(n.split(".")[1] in {"hf_token", "hf_mlp", "compress_vit_feat",
                                              "embedding_encoder", "embedding_maskfeature",
                                              "task_embeddings"} for n in moved)  # fmt: skip
    assert any("hf_token" in n for n in moved) and any("compress_vit_feat" in n for n in moved)


def test_trainer_adds_records_and_reloads_hq_parts(tmp_path):
    """`config.model.hq` on a plain SAM adds fresh HQ parts and keeps SAM's weights; the
    model directory records it, so loading rebuilds the HQ parts; an HQ checkpoint without
    `config.model.hq` is refused."""
    config = ablations.get_config("hq_sam")
    config.model.checkpoint = "random:tiny"
    config.model.variant = "tiny"
    config.model.compute_dtype, config.model.remat = "float32", "none"  # as load_sam's
    model = loop.load_initial_model(config)
    assert model.config.hq and model.config.variant == "tiny"
    plain = key_map.flatten(nnx.to_pure_dict(nnx.state(load_model("random:tiny"))))
    with_hq = key_map.flatten(nnx.to_pure_dict(nnx.state(model)))
    assert set(plain) < set(with_hq)
    for path, value in plain.items():  # SAM's weights are kept
        np.testing.assert_array_equal(value, with_hq[path])
    save_sam(model, tmp_path / "hq")
    assert read_config(tmp_path / "hq").hq
    loaded = load_sam(tmp_path / "hq")
    assert loaded.mask_decoder.hf_token is not None
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 128, 128, 3)), jnp.float32)
    encode = jax.jit(lambda m, x: m.encode_image(x))
    np.testing.assert_array_equal(encode(loaded, x), encode(model, x))
    config.model.checkpoint = str(tmp_path / "hq")
    config.model.hq = False
    with pytest.raises(ValueError, match="is an HQ-SAM model but config.model.hq is False"):
        loop.load_initial_model(config)
