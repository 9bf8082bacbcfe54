"""LoRA fine-tuning through the training step (sum_jax/train/adapters.py): only the adapters
(and the task table) change, the frozen base weights stay bit-identical, the optimiser keeps
moments for the trainable tree only, and the step composes with micro-batches, remat, the
block scan and bfloat16.

Uses the deterministic-prompt batch of tests/train/test_step_execution.py, so splitting the
batch into micro-batches changes which key draws the prompts, not what they are.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from configs import base
from sum_jax.models.sam import build_sam, execution_overrides
from sum_jax.train import adapters, sharding
from sum_jax.train.step import init_train_state, jit_train_step
from tests.train.test_step_execution import LR, batch, config, flat

STEPS = 3


def lora_config(dropout: float = 0.0, **model):
    cfg = config(**model)
    cfg.lora.targets = (base.ENCODER_LORA, base.DECODER_LORA)
    cfg.lora.rank = 4
    cfg.lora.alpha = 8.0
    cfg.lora.dropout = dropout
    return cfg


def run(cfg, steps: int = STEPS):
    """`steps` jitted LoRA steps from one tiny model: `(metrics, initial state, final state,
    setup)`, states as flat `{path: numpy}` dicts of params and model_state."""
    model = build_sam("tiny", rngs=nnx.Rngs(0), **execution_overrides(cfg.model))
    model = adapters.adapt(model, cfg)
    mesh = sharding.make_mesh((1, 1), jax.devices()[:1])
    state, setup = init_train_state(model, cfg, mesh)
    first = (flat(state.params), flat(state.model_state))
    step = jit_train_step(setup)
    history = []
    for i in range(steps):
        state, metrics = step(state, sharding.shard_batch(batch(i), mesh))
        history.append(jax.device_get(metrics))
    opt_leaves = jax.tree.leaves(state.opt_state)
    return history, first, (flat(state.params), flat(state.model_state)), setup, opt_leaves


@pytest.fixture(scope="module")
def reference():
    return run(lora_config())


def test_only_adapters_and_task_table_train(reference):
    history, (params0, frozen0), (params1, frozen1), setup, opt_leaves = reference
    assert setup.lora is not None
    assert all(np.isfinite(m["loss"]) for m in history)
    # The trainable tree: adapters and the task table, nothing else.
    assert all(p.endswith((".lora.lora_a", ".lora.lora_b")) or p.startswith(
        "prompt_encoder.task_embeddings.") for p in params0)  # fmt: skip
    assert any("task_embeddings" in p for p in params0)
    # Every frozen base weight is bit-identical after the steps.
    assert frozen0.keys() == frozen1.keys()
    assert any(p.endswith("attn.qkv.kernel") for p in frozen0)
    for path, x in frozen0.items():
        np.testing.assert_array_equal(frozen1[path], x, err_msg=path)
    # Every B (zero at the start) and the A of the encoder's adapters moved.
    moved = [p for p in params0 if not np.array_equal(params0[p], params1[p])]
    assert all(p in moved for p in params0 if p.endswith("lora_b"))
    # Adam's two moments of the trainable tree are the only arrays of optimiser state.
    trainable = sum(x.size for x in params0.values())
    state_size = sum(x.size for x in opt_leaves if x.ndim > 0)
    assert state_size == 2 * trainable
    base_size = sum(x.size for x in frozen0.values())
    assert trainable < 0.2 * base_size


def assert_close_steps(got, ref, rtol):
    for m_got, m_ref in zip(got[0], ref[0], strict=True):
        np.testing.assert_allclose(m_got["loss"], m_ref["loss"], rtol=rtol)
    for path, x in ref[2][0].items():
        np.testing.assert_allclose(got[2][0][path], x, rtol=0, atol=STEPS * 1e-3 * LR,
                                   err_msg=path)  # fmt: skip


def test_lora_composes_with_microbatches_remat_and_block_scan(reference):
    """float32: 2 micro-batches, block remat (encoder and rounds) and the scanned encoder
    blocks give the reference's losses (1e-5) and adapters (1e-3 lr per step, eps = 1)."""
    cfg = lora_config(remat="block", scan_blocks=True)
    cfg.train.microbatches = 2
    got = run(cfg)
    assert got[3].microbatches == 2
    assert_close_steps(got, reference, rtol=1e-5)


def test_bfloat16_lora_step_follows_float32(reference):
    got = run(lora_config(compute_dtype="bfloat16"))
    assert {x.dtype for x in got[2][0].values()} == {np.dtype(np.float32)}
    for m_got, m_ref in zip(got[0], reference[0], strict=True):
        np.testing.assert_allclose(m_got["loss"], m_ref["loss"], rtol=0.05)


def test_dropout_changes_the_step_and_keeps_the_base(reference):
    history, (_, frozen0), (_, frozen1), _, _ = run(lora_config(dropout=0.5), steps=2)
    plain = reference[0]
    # Step 1's B is zero, so dropout shows from step 2 on.
    assert history[1]["loss"] != plain[1]["loss"]
    for path, x in frozen0.items():
        np.testing.assert_array_equal(frozen1[path], x, err_msg=path)


@pytest.mark.parametrize("semi_loss", [False, True], ids=["interactive", "semi_supervised"])
def test_every_micro_batch_draws_its_own_dropout_masks(semi_loss, monkeypatch):
    """`accumulated_loss_and_grads` hands micro-batch m the model state reseeded from
    `fold_in(key, m)`: the interactive loss and a semi-supervised `batch_loss` alike (the
    latter once got the step's masks for every micro-batch). The losses here record the
    dropout keys they are given; the reference is `fold_in` and `reseed_dropout` written
    out: `fold_in(fold_in(fold_in(key, m), stream), leaf index)`."""
    import jax.numpy as jnp

    from sum_jax.models import lora
    from sum_jax.train import optim, step

    seen = []

    def record(model_state):
        keys = jax.tree.leaves(model_state)
        jax.debug.callback(lambda *k: seen.append([np.array(x) for x in k]), *keys)

    def fake_loss(params, micro, model_state):
        record(model_state)
        loss = jnp.sum(params["w"]) * jnp.sum(micro["mask_valid"])
        return loss, {"image_valid": micro["mask_valid"].any(-1), "loss": loss[None]}

    class FakeDef:
        def merge(self, params, model_state):
            return (params, model_state)

    monkeypatch.setattr(
        step,
        "interactive_loss",
        lambda model, micro, key, settings: fake_loss(model[0], micro, model[1]),
    )
    dropout = lora.DROPOUT_KEY
    model_state = {
        "a": {dropout: jax.random.key_data(jax.random.key(1))},
        "b": {dropout: jax.random.key_data(jax.random.key(2))},
    }
    params = {"w": jnp.ones(3)}
    state = step.TrainState(
        jnp.zeros((), jnp.int32), params, model_state, None, jnp.zeros((2,), jnp.uint32)
    )
    plan = optim.ParamPlan(group={"w": 0}, frozen={"w": False}, lr_mult={"w": 1.0},
                           weight_decay={"w": False})  # fmt: skip
    micro_batch = {
        "mask_valid": np.ones((4, 2), bool),
        "is_pseudo": np.array([0, 1, 0, 1], np.int32),
    }
    batch_loss = None
    if semi_loss:
        batch_loss = lambda p, micro, key, ms: fake_loss(p, micro, ms)
    key = jax.random.key(7)
    jax.jit(
        lambda s, b, k: step.accumulated_loss_and_grads(
            s, b, k, 2, model_def=FakeDef(), plan=plan, settings=None, batch_loss=batch_loss
        )
    )(state, micro_batch, key)
    jax.effects_barrier()
    assert len(seen) == 2
    for m, got in enumerate(seen):
        base = jax.random.fold_in(jax.random.fold_in(key, m), 0x4C6F5241)
        want = [jax.random.key_data(jax.random.fold_in(base, i)) for i in range(2)]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, np.asarray(w))
    assert not np.array_equal(seen[0][0], seen[1][0])


def test_samed_variant_trains_qv_adapters_prompt_encoder_and_decoder():
    """`lora_samed` (Fig. 5's "LoRA FT", SAMed's setting): the trainable tree is exactly the
    q/v adapters of every encoder block's fused qkv plus the whole prompt encoder and mask
    decoder; the rest of the encoder is frozen base weight; no layer decay."""
    from configs import ablations
    from sum_jax.train import optim
    from sum_jax.train.step import ModelDef, train_setup

    cfg = ablations.get_config("lora_samed,ft_small")
    cfg.model.variant = "tiny"
    model = adapters.abstract_model(build_sam("tiny").config, cfg)
    mesh = sharding.make_mesh((1, 1), jax.devices()[:1])
    setup, abstract = train_setup(model, cfg, mesh)
    paths = {optim.path_str(kp): x.shape for kp, x in jax.tree.leaves_with_path(abstract.params)}
    frozen = {optim.path_str(kp) for kp, _ in jax.tree.leaves_with_path(abstract.model_state)}
    depth = build_sam("tiny").config.encoder_depth
    encoder = {p for p in paths if p.startswith("image_encoder.")}
    c = build_sam("tiny").config.encoder_embed_dim
    assert encoder == {f"image_encoder.blocks.{i}.attn.qkv.lora.lora_{ab}"
                       for i in range(depth) for ab in "ab"}  # fmt: skip
    assert paths["image_encoder.blocks.0.attn.qkv.lora.lora_a"] == (c, 2 * 4)  # q and v, rank 4
    assert all(
        p.split(".")[0] in ("image_encoder", "prompt_encoder", "mask_decoder") for p in paths
    )
    _, base_params, _ = ModelDef.split(build_sam("tiny"))
    for kp, _ in jax.tree.leaves_with_path(base_params):
        p = optim.path_str(kp)
        if p.startswith(("prompt_encoder.", "mask_decoder.")):
            assert p in paths, p  # trains
        else:
            assert p in frozen and p not in paths, p  # frozen base
    assert set(setup.plan.lr_mult.values()) == {1.0} and not any(setup.plan.frozen.values())
