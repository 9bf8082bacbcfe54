"""LoRA fine-tuning through the trainer (sum_jax.train.loop + sum_jax.train.adapters) on a
tiny SAM: a run killed after a checkpoint and resumed equals an uninterrupted one;
checkpoints hold the trained tree and the base model's reference only; a resume on another
base is refused with the fix; the merged and the separate exports load as the same plain
SAM, whose untargeted weights are the base's."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from configs import base
from sum_jax.checkpointing import (
    ADAPTER_FILE,
    load_model,
    load_sam,
    load_state_dict,
    model_fingerprint,
    save_sam,
)
from sum_jax.models.sam import build_sam
from sum_jax.train import loop, optim
from tests.train.test_loop import NUM_STEPS, Stop, losses_by_step, tiny_config

pytestmark = pytest.mark.integration


def lora_config(data_dir: str, export: str = "merged"):
    c = tiny_config(data_dir)
    c.lora.targets = (base.ENCODER_LORA, base.DECODER_LORA)
    c.lora.rank = 4
    c.lora.alpha = 8.0
    c.lora.dropout = 0.1
    c.lora.export = export
    return c


def flat(tree) -> dict[str, np.ndarray]:
    return {optim.path_str(kp): np.asarray(x) for kp, x in jax.tree.leaves_with_path(tree)}


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """An uninterrupted LoRA run (merged export), and one killed after step 3 (checkpoint
    at 2) then resumed (separate export)."""
    straight = tmp_path_factory.mktemp("lora_straight")
    loop.train_and_evaluate(lora_config(data_dir), straight)
    resumed = tmp_path_factory.mktemp("lora_resumed")

    def stop_at_3(step):
        if step == 3:
            raise Stop()

    with pytest.raises(Stop):
        loop.train_and_evaluate(lora_config(data_dir, "separate"), resumed, on_step=stop_at_3)
    killed = losses_by_step(resumed)
    loop.train_and_evaluate(lora_config(data_dir, "separate"), resumed)
    return straight, resumed, killed


def test_resumed_lora_run_equals_the_uninterrupted_one(runs):
    straight, resumed, killed = runs
    assert sorted(killed) == [1, 2, 3]
    a, b = losses_by_step(straight), losses_by_step(resumed)
    assert sorted(a) == list(range(1, NUM_STEPS + 1))
    assert a == b  # bit-identical: same batches, prompts, dropout masks and adapters
    log = (resumed / "train.log").read_text()
    assert "resumed from" in log and "at step 2" in log
    # The separate export loads (base + adapters, merged on load) as the merged export.
    assert (resumed / "model" / ADAPTER_FILE).is_file()
    merged, separate = (
        flat(load_state_dict(straight / "model")),
        flat(nnx.to_pure_dict(nnx.state(load_sam(resumed / "model")))),
    )
    assert merged.keys() == separate.keys()
    for path, x in merged.items():
        np.testing.assert_array_equal(separate[path], x, err_msg=path)


def test_checkpoints_hold_the_trained_tree_and_the_base_reference(runs):
    straight = runs[0]
    folder = straight / "checkpoints" / str(NUM_STEPS)
    meta = ocp.StandardCheckpointer().metadata(folder / "state")
    tree = getattr(meta, "item_metadata", meta)
    assert set(tree.keys()) == {"step", "params", "opt_state", "rng"}  # no model_state
    paths = list(flat(jax.tree.map(lambda _: 0, dict(tree["params"]))))
    assert paths and all(".lora.lora_" in p or "task_embeddings" in p for p in paths)
    recorded = json.loads((folder / "meta" / "metadata").read_text())
    assert recorded == {"base_model": "random:tiny", "base_hash": model_fingerprint("random:tiny")}


def test_merged_export_is_a_plain_sam_with_the_base_elsewhere(runs):
    initial = flat(nnx.to_pure_dict(nnx.state(load_model("random:tiny"))))
    trained = flat(load_state_dict(runs[0] / "model"))
    assert trained.keys() == initial.keys()  # a plain SAM: no adapter entries
    changed = {p for p in initial if not np.array_equal(initial[p], trained[p])}
    assert "image_encoder.blocks.0.attn.qkv.kernel" in changed
    assert "mask_decoder.transformer.layers.0.self_attn.q_proj.kernel" in changed
    assert "prompt_encoder.task_embeddings.embedding" in changed  # trained, not adapted
    # Everything else is the base, bit for bit: biases, norms, the neck, untargeted linears.
    import re

    targets = [re.compile(t) for t in (base.ENCODER_LORA, base.DECODER_LORA)]
    expected = {p for p in initial if any(t.fullmatch(p) for t in targets)}
    assert changed == expected | {"prompt_encoder.task_embeddings.embedding"}


def test_resume_on_another_base_is_refused_with_the_fix(runs, data_dir, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(runs[1], work)
    shutil.rmtree(work / "model")
    other = tmp_path / "other_base"
    save_sam(build_sam("tiny", rngs=nnx.Rngs(3)), other)
    c = lora_config(data_dir, "separate")
    c.model.checkpoint = str(other)
    c.train.num_steps = NUM_STEPS + 2
    with pytest.raises(ValueError, match=r"trained on the base model random:tiny") as err:
        loop.train_and_evaluate(c, work)
    assert str(other) in str(err.value)
    assert "--config.model.checkpoint=random:tiny" in str(err.value)
    # An adapter directory whose base changed is refused when loaded.
    adapters_dir = tmp_path / "adapters"
    shutil.copytree(runs[1] / "model", adapters_dir)
    info = json.loads((adapters_dir / ADAPTER_FILE).read_text())
    info["base_model"], info["base_hash"] = str(other), "0" * 32
    (adapters_dir / ADAPTER_FILE).write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"adapters need the base model they were trained on"):
        load_sam(adapters_dir)


def test_parameter_listing_counts_the_trainable_tree(runs):
    head = (runs[0] / "parameters.txt").read_text().splitlines()[0]
    listed = int(head.split()[0].replace(",", ""))
    model = sum(x.size for x in flat(load_state_dict(runs[0] / "model")).values())
    assert 0 < listed < model / 3  # adapters and task table, not the base
    assert not tiny_config("").lora.targets  # the default stays full fine-tuning
