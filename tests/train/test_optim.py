"""sum_jax.train.optim: parameter groups, layer-wise lr decay, frozen parameters."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from configs import base
from sum_jax.train import optim

DEPTH = 3


class Block(nnx.Module):
    def __init__(self, rngs):
        self.norm1 = nnx.LayerNorm(4, rngs=rngs)
        self.attn = nnx.Module()
        self.attn.qkv = nnx.Linear(4, 12, rngs=rngs)
        self.attn.rel_pos_h = nnx.Param(jnp.ones((3, 2)))


class Encoder(nnx.Module):
    def __init__(self, rngs):
        self.patch_embed = nnx.Module()
        self.patch_embed.proj = nnx.Conv(3, 4, (2, 2), rngs=rngs)
        self.pos_embed = nnx.Param(jnp.full((1, 2, 2, 4), 0.5))
        self.blocks = nnx.List([Block(rngs) for _ in range(DEPTH)])
        self.neck = nnx.List([nnx.Conv(4, 4, (1, 1), use_bias=False, rngs=rngs)])


class TinySamLike(nnx.Module):
    """Paths like SAM's: image_encoder.blocks.{i}.attn.qkv.kernel, prompt_encoder.*, ..."""

    def __init__(self, rngs):
        self.image_encoder = Encoder(rngs)
        self.prompt_encoder = nnx.Module()
        self.prompt_encoder.task_embeddings = nnx.Embed(4, 4, rngs=rngs)
        # Not an nnx.Param: must not be seen by the optimiser at all.
        self.prompt_encoder.gaussian = nnx.Variable(jnp.ones((2, 2)))
        self.mask_decoder = nnx.Module()
        self.mask_decoder.iou_head = nnx.Linear(4, 4, rngs=rngs)


def params_of(model):
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def opt_config(**overrides):
    cfg = base.get_config().optimizer
    cfg.lr = 1e-3
    cfg.update(overrides)
    return cfg


def test_every_parameter_gets_exactly_one_group():
    params = params_of(TinySamLike(nnx.Rngs(0)))
    paths = optim.param_paths(params)
    assert "image_encoder.blocks.2.attn.qkv.kernel" in paths
    assert not any("gaussian" in p for p in paths)
    for groups in (base.full_finetune_groups(), base.decoder_only_groups()):
        assigned = optim.assign_groups(params, groups)
        flat = dict(zip(paths, jax.tree.leaves(assigned)))
        assert set(flat) == set(paths)
        parsed = optim.parse_groups(groups)
        for p, i in flat.items():
            # The assigned group matches, and no earlier group does (first match wins).
            assert parsed[i][0].fullmatch(p)
            assert not any(parsed[j][0].fullmatch(p) for j in range(i))
    with pytest.raises(ValueError, match="matches no parameter group"):
        optim.assign_groups(params, ((r"image_encoder\..*", {}),))
    with pytest.raises(ValueError, match="unknown parameter-group settings"):
        optim.assign_groups(params, ((r".*", {"lr": 2.0}),))


def test_default_groups_on_tiny_sam():
    from sum_jax.models.sam import build_sam

    params = params_of(nnx.eval_shape(lambda: build_sam("tiny")))
    plan = optim.make_plan(params, opt_config())
    assert len(plan.group) == len(jax.tree.leaves(params))
    # Weight decay on kernels only; never on biases, norms, embeddings, positions.
    for p, wd in plan.weight_decay.items():
        assert wd == p.endswith(".kernel"), p
    assert not any(plan.frozen.values())
    frozen = optim.make_plan(params, opt_config(param_groups=base.decoder_only_groups())).frozen
    for p, f in frozen.items():
        assert f == p.startswith("image_encoder."), p


def test_layer_decay_multipliers():
    params = params_of(TinySamLike(nnx.Rngs(0)))
    plan = optim.make_plan(params, opt_config(layer_decay=0.8))
    d = DEPTH
    for i in range(d):
        assert plan.lr_mult[f"image_encoder.blocks.{i}.attn.qkv.kernel"] == pytest.approx(
            0.8 ** (d - i)
        )
        assert plan.lr_mult[f"image_encoder.blocks.{i}.norm1.scale"] == pytest.approx(
            0.8 ** (d - i)
        )
    assert plan.lr_mult["image_encoder.patch_embed.proj.kernel"] == pytest.approx(0.8 ** (d + 1))
    assert plan.lr_mult["image_encoder.pos_embed"] == pytest.approx(0.8 ** (d + 1))
    assert plan.lr_mult["image_encoder.neck.0.kernel"] == 1.0
    assert plan.lr_mult["prompt_encoder.task_embeddings.embedding"] == 1.0
    assert plan.lr_mult["mask_decoder.iou_head.kernel"] == 1.0
    # Group lr multipliers compose with layer decay.
    groups = ((r"mask_decoder\..*", {"lr_mult": 10.0}),) + base.full_finetune_groups()
    plan = optim.make_plan(params, opt_config(param_groups=groups))
    assert plan.lr_mult["mask_decoder.iou_head.kernel"] == 10.0


def test_one_step_applies_multipliers_decay_and_freezing():
    model = TinySamLike(nnx.Rngs(0))
    params = params_of(model)
    groups = ((r"image_encoder\.blocks\.0\..*", {"frozen": True}),) + base.full_finetune_groups()
    cfg = opt_config(lr=1e-3, weight_decay=0.0, layer_decay=0.8, param_groups=groups)
    tx, plan = optim.make_optimizer(params, cfg, num_steps=10)
    state = tx.init(params)
    # Frozen parameters keep no Adam moments.
    n_moments = sum(x.size for x in jax.tree.leaves(state))
    n_train = sum(
        x.size
        for p, x in zip(optim.param_paths(params), jax.tree.leaves(params))
        if not plan.frozen[p]
    )
    assert n_moments == 2 * n_train + 2  # mu, nu, and the Adam and schedule step counters
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    paths = optim.param_paths(params)
    for p, old, upd, nxt in zip(
        paths, jax.tree.leaves(params), jax.tree.leaves(updates), jax.tree.leaves(new)
    ):
        if plan.frozen[p]:
            np.testing.assert_array_equal(nxt, old, err_msg=p)
        else:
            # Adam's first step moves by lr * g / (|g| + eps) = lr (g = 1), times the multiplier.
            np.testing.assert_allclose(upd, -1e-3 * plan.lr_mult[p], rtol=1e-5, err_msg=p)
            assert not np.array_equal(nxt, old), p
    assert any(plan.frozen.values()) and not all(plan.frozen.values())


def test_decoupled_weight_decay_only_where_enabled():
    params = params_of(TinySamLike(nnx.Rngs(0)))
    tx, plan = optim.make_optimizer(params, opt_config(lr=0.1, weight_decay=0.5), num_steps=10)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    for p, u, x in zip(
        optim.param_paths(params), jax.tree.leaves(updates), jax.tree.leaves(params)
    ):
        expected = -0.1 * plan.lr_mult[p] * 0.5 * x if plan.weight_decay[p] else 0 * x
        np.testing.assert_allclose(u, expected, rtol=1e-6, atol=1e-12, err_msg=p)
    assert plan.weight_decay["image_encoder.blocks.0.attn.qkv.kernel"]
    assert not plan.weight_decay["image_encoder.blocks.0.attn.qkv.bias"]
    assert not plan.weight_decay["image_encoder.pos_embed"]


def test_schedule():
    cfg = ml_collections.ConfigDict({"lr": 1.0, "warmup_steps": 10, "schedule": "cosine"})
    sched = optim.learning_rate_schedule(cfg, num_steps=110)
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(0.5)
    assert float(sched(10)) == pytest.approx(1.0)
    assert float(sched(60)) == pytest.approx(0.5, abs=1e-6)
    assert float(sched(110)) == pytest.approx(0.0, abs=1e-6)
    cfg.schedule = "constant"
    cfg.warmup_steps = 0
    assert float(optim.learning_rate_schedule(cfg, 10)(7)) == 1.0
