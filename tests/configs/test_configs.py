"""Every config in configs/ loads through `config_flags` as the commands load it, and every
training config's step is built and lowered on abstract shapes (ViT-H costs no memory), or
compiled where the model is tiny, so no config rots."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from configs import ablations
from sum_jax.inference.mask_generator import GeneratorSettings
from sum_jax.models.sam import VARIANTS, execution_overrides
from sum_jax.pseudo_labels.generation import generator_settings
from sum_jax.train import adapters, loop, sharding
from sum_jax.train.step import abstract_batch, jit_train_step, train_setup

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TRAINING = ["ft_small.py", "ft_medium.py", "ft_large.py", "demo.py", "pretrain_small.py",
            "small_scale.py:sum", "small_scale.py:vanilla"] + [
    f"ablations.py:{v}" for v in ablations.VARIANTS
]  # fmt: skip
# Training configs without pseudo-labels: the human-labelled data alone, or (pretraining)
# generated scenes alone.
NO_UNLABELLED = {"ablations.py:human_only", "small_scale.py:vanilla", "pretrain_small.py"}
OTHER = [
    "base.py",
    "eval.py",
    "pseudo_labels.py",
    "uncertainty.py",
    "refine.py",
    "data/prepare.py",
    "data/pipeline.py",
]


def load(spec: str):
    """Loads `configs/<spec>` exactly as `--config=configs/<spec>` does."""
    name = f"config_{abs(hash(spec))}"
    holder = flags.FlagValues()
    config_flags.DEFINE_config_file(name, str(CONFIGS / spec), flag_values=holder)
    holder(["prog"])
    return holder[name].value


def test_every_config_file_is_covered():
    on_disk = {
        str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.py") if p.name != "__init__.py"
    }
    named = {s.split(":")[0] for s in TRAINING + OTHER}
    assert on_disk == named


@pytest.mark.parametrize("spec", OTHER)
def test_other_configs_load_and_validate(spec):
    config = load(spec)
    assert config.to_dict()
    if spec == "pseudo_labels.py":
        assert generator_settings(config.generator) == GeneratorSettings()  # the paper's filters


# One lowering per distinct step program (data-only variants share theirs), so the suite
# traces ViT-H a handful of times, not once per config.
_LOWERED: dict[str, str] = {}


# Variants whose step is the same program as another's up to a scalar (theta) or a name
# (`full` is `sum`): lowered under `-m slow` only, to keep the default suite short.
SAME_PROGRAM = {"ablations.py:theta_0.2", "ablations.py:theta_0.5", "ablations.py:theta_0.8",
                "ablations.py:full", "ablations.py:confidence_uncer",
                "ablations.py:augseg_box_prompt"}  # fmt: skip
# Variants whose step is a sibling's with one option changed (a second decoder instead of
# the teacher, all three output pairs, LoRA on the decoder too): the default suite lowers
# the sibling, `-m slow` lowers these too (each a ViT-H trace of about a minute).
SIBLING_PROGRAM = {"ablations.py:discrepancy_dual_decoder",
                   "ablations.py:augseg_multi_consistency", "ablations.py:augseg_uniform_point",
                   "ablations.py:lora_encoder_decoder"}  # fmt: skip


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(s, marks=pytest.mark.slow) if s in SAME_PROGRAM | SIBLING_PROGRAM else s
        for s in TRAINING
    ],
)
def test_training_config_builds_and_lowers_its_step(spec):
    config = load(spec)
    model_config = VARIANTS[config.model.variant]
    assert config.model.checkpoint
    data = loop.data_config(config, model_config, process_count=1)
    assert (data.image_size, data.mask_size) == (model_config.img_size, model_config.low_res_size)
    assert data.labelled or spec == "pretrain_small.py", "human-labelled data (or scenes)"
    if spec not in NO_UNLABELLED:
        assert data.unlabelled
        assert data.pseudo_label_dir or spec == "demo.py"  # the demo makes its own
    # The 8 fake CPU devices stand in for the real machine; the layout is the config's own
    # where it fits them (ft_large's (-1, 8) does).
    if np.prod([d for d in config.sharding.mesh_shape if d != -1]) > len(jax.devices()):
        config.sharding.mesh_shape = (1, -1)
    mesh = sharding.make_mesh(config.sharding.mesh_shape)
    if int(config.train.batch_size) % mesh.devices.size:
        config.train.batch_size = mesh.devices.size
    # The model as the trainer builds it: the config's compute dtype, remat, attention, scan.
    run_config = dataclasses.replace(model_config, **execution_overrides(config.model))
    setup, abstract = train_setup(adapters.abstract_model(run_config, config), config, mesh)
    key = repr(
        (
            run_config,
            setup.settings,
            setup.microbatches,
            config.optimizer.to_dict(),
            config.lora.to_dict(),
            dict(mesh.shape),
        )
    )
    if key in _LOWERED:
        return
    step = jit_train_step(setup)
    lowered = step.lower(abstract, abstract_batch(config, setup, model_config))
    if model_config.img_size <= 128:
        lowered.compile()  # tiny: compile it for real
    _LOWERED[key] = lowered.as_text()[:100]
    assert "jit_train_step" in _LOWERED[key]


def test_ablation_variants_change_what_they_name():
    sum_cfg = ablations.get_config("sum")
    assert ablations.get_config("human_only").data.unlabelled == ""
    vanilla = ablations.get_config("vanilla")
    assert not vanilla.loss.uncertainty_aware and not vanilla.interactive.uncertainty_sampling
    assert not ablations.get_config("no_task_prompt").interactive.use_task_prompt
    assert ablations.get_config("continuous_tp").interactive.continuous_task_prompt
    assert ablations.get_config("theta_0.3").loss.theta == 0.3
    assert [ablations.get_config(f"theta_{t}").loss.theta for t in ablations.THETAS] == [
        0.2,
        0.5,
        0.6,
        0.8,
    ]  # Fig. 16
    no_sampling = ablations.get_config("no_uncertainty_sampling")
    assert not no_sampling.interactive.uncertainty_sampling  # App. F.2
    assert no_sampling.loss.uncertainty_aware and no_sampling.interactive.use_task_prompt
    assert ablations.get_config("refined_labels").data.pseudo_label_dir != (
        sum_cfg.data.pseudo_label_dir
    )
    for name in ("decoder_prompt_encoder", "decoder_only"):
        frozen = dict(ablations.get_config(name).optimizer.param_groups)
        assert frozen[r"image_encoder\..*"] == {"frozen": True}
    assert "entityseg:train" in sum_cfg.data.labelled  # the ablations run on FT-Medium
    assert "entityseg:train" not in ablations.get_config("sum,ft_small").data.labelled
    confidence = ablations.get_config("confidence_uncer")
    assert confidence.data.pseudo_label_dir != sum_cfg.data.pseudo_label_dir
    assert confidence.loss == sum_cfg.loss and confidence.interactive == sum_cfg.interactive
    u2pl = ablations.get_config("u2pl")
    assert sum_cfg.loss.contrastive_weight == 0.0 and u2pl.loss.contrastive_weight == 1.0
    assert u2pl.loss.uncertainty_aware and u2pl.interactive.uncertainty_sampling
    assert u2pl.data.pseudo_label_dir == sum_cfg.data.pseudo_label_dir  # SUM's maps
    assert sum_cfg.semi.method == "none"
    for name, discrepancy in (("discrepancy_uncer", "teacher"), ("discrepancy_dual_decoder", "dual_decoder")):  # fmt: skip
        semi = ablations.get_config(name).semi
        assert (semi.method, semi.discrepancy) == ("discrepancy", discrepancy)
        assert ablations.get_config(name).loss.uncertainty_aware  # SUM's losses, other maps
    augseg = {v: ablations.get_config(v) for v in ablations.AUGSEG}
    assert {
        v: (c.semi.method, c.semi.prompt, c.semi.multi_consistency) for v, c in augseg.items()
    } == {
        "augseg_mixed_prompt": ("augseg", "mixed", False),
        "augseg_box_prompt": ("augseg", "box", False),
        "augseg_multi_consistency": ("augseg", "mixed", True),
        "augseg_uniform_point": ("augseg", "uniform_point", False),
    }  # Table 4
    assert not any(
        c.loss.uncertainty_aware or c.interactive.uncertainty_sampling for c in augseg.values()
    )
    with pytest.raises(ValueError, match="unknown ablation"):
        ablations.get_config("vanila")


def test_lora_variants_compose_with_data_and_uncertainty_variants():
    assert not ablations.get_config("sum").lora.targets  # full fine-tuning by default
    encoder = ablations.get_config("lora_encoder").lora.targets
    both = ablations.get_config("lora_encoder_decoder").lora.targets
    assert len(encoder) == 1 and len(both) == 2 and both[0] == encoder[0]
    vanilla = ablations.get_config("vanilla+lora_encoder,ft_small")
    assert vanilla.lora.targets == encoder
    assert not vanilla.loss.uncertainty_aware and not vanilla.interactive.use_task_prompt
    assert "entityseg:train" not in vanilla.data.labelled
    # Order matters only where two variants set the same field.
    assert ablations.get_config("lora_encoder+human_only").data.unlabelled == ""
    with pytest.raises(ValueError, match="unknown ablation"):
        ablations.get_config("sum+lora")


def test_config_typo_is_an_error():
    holder = flags.FlagValues()
    config_flags.DEFINE_config_file("config", str(CONFIGS / "ft_small.py"), flag_values=holder)
    with pytest.raises(Exception, match="nmu_steps"):
        holder(["prog", "--config.train.nmu_steps=10"])


# How each ablation's model is trained with respect to the task prompt, for every variant:
# "none" (never), "first" (round 1, SUM), "every" (every round). A new variant must be
# classified here.
TASK_PROMPT_IN_TRAINING = {
    "sum": "first",
    "human_only": "first",
    "vanilla": "none",  # the standard SAM training protocol (§4.1)
    "no_task_prompt": "none",
    "refined_labels": "none",  # the Mask-Refinement baseline, standard protocol (§4.3)
    "continuous_tp": "every",
    "no_uncertainty_sampling": "first",
    "theta_0.2": "first",
    "theta_0.5": "first",
    "theta_0.6": "first",
    "theta_0.8": "first",
    "decoder_prompt_encoder": "first",
    "full": "first",
    "confidence_uncer": "first",  # SUM with other maps
    "u2pl": "first",  # the paper's U2PL has SUM's task prompts (App. E)
    "lora_encoder": "first",
    "lora_encoder_decoder": "first",
    "discrepancy_uncer": "first",
    "discrepancy_dual_decoder": "first",
    "augseg_mixed_prompt": "none",  # SAM's training procedure (App. E.1)
    "augseg_box_prompt": "none",  # SAM's training procedure (App. E.1)
    "augseg_multi_consistency": "none",  # SAM's training procedure (App. E.1)
    "augseg_uniform_point": "none",  # SAM's training procedure (App. E.1)
}
# The table columns (experiments/tables.py) that evaluate a variant's model.
EVALUATED_AS = {
    "vanilla": ("table2", "Vanilla"),
    "refined_labels": ("table2", "Mask Refinement"),
    "no_task_prompt": ("table2", "SUM w/o Task Prompt"),
    "sum": ("table2", "SUM"),
    "continuous_tp": ("table2", "SUM Continuous TP"),
    "confidence_uncer": ("table1", "SUM Confidence-Uncer"),
    "u2pl": ("table1", "U2PL"),
    # Issue 16's other variants (checked once configs/ablations.py defines them).
    "discrepancy_uncer": ("table1", "SUM Discrepancy-Uncer"),
    "discrepancy_dual_decoder": ("table1", "SUM Discrepancy-Uncer (dual decoder)"),
    "augseg_mixed_prompt": ("table1", "AugSeg Mixed-Prompt"),
    "augseg_multi_consistency": ("table4", "AugSeg Mixed-Prompt (multi-consistency)"),
    "augseg_box_prompt": ("table4", "AugSeg Box-Prompt"),
    "augseg_uniform_point": ("table4", "AugSeg Uniform Point-Prompt"),
}


@pytest.mark.parametrize("variant", ablations.VARIANTS)
def test_task_prompt_in_training_matches_evaluation(variant):
    """Every ablation trains with the task prompt as its table column evaluates it: the
    baselines of "the standard SAM training protocol" (§4.1, §4.3) never see one."""
    from experiments import tables

    assert set(TASK_PROMPT_IN_TRAINING) == set(ablations.VARIANTS)
    # Every column that names a run names a variant (or one of issue 16's still to come).
    runs = {c.run for spec in tables.TABLES.values() for c in spec.columns if c.run}
    assert runs <= set(ablations.VARIANTS) | set(EVALUATED_AS)
    it = ablations.get_config(variant).interactive
    trained = (
        "none" if not it.use_task_prompt else ("every" if it.continuous_task_prompt else "first")
    )
    assert trained == TASK_PROMPT_IN_TRAINING[variant]
    if variant in EVALUATED_AS:
        table, name = EVALUATED_AS[variant]
        (column,) = [c for c in tables.TABLES[table].columns if c.name == name]
        overrides = dict(column.overrides)
        evaluated = (
            "none"
            if not overrides.get("use_task_prompt", True)
            else ("every" if overrides.get("continuous_task_prompt", False) else "first")
        )
        assert trained == evaluated, (variant, trained, evaluated)
