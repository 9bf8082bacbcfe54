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
PRETRAINING = {"pretrain_small.py", "pretrain_small_stage2.py"}
TRAINING = ["ft_small.py", "ft_medium.py", "ft_large.py", "demo.py", *sorted(PRETRAINING),
            "small_scale.py:sum", "small_scale.py:vanilla"] + [
    f"ablations.py:{v}" for v in ablations.VARIANTS
]  # fmt: skip
# Training configs without pseudo-labels: the human-labelled data alone, or (pretraining)
# generated scenes alone.
NO_UNLABELLED = {"ablations.py:human_only", "small_scale.py:vanilla", *PRETRAINING}
NO_UNLABELLED |= {"ablations.py:adapter"}  # Fig. 5's "Adapter FT": human labels only
NO_UNLABELLED |= {"ablations.py:hq_sam"}  # Fig. 4's HQ-SAM: human labels only
# Fig. 5's other baselines: human labels only.
NO_UNLABELLED |= {"ablations.py:decoder_prompt_encoder", "ablations.py:lora_samed"}
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


def step_setup(config, model_config, mesh):
    """`(setup, abstract state, program key)` of a config's step as the trainer builds it:
    the config's compute dtype, remat, attention and block scan, HQ-SAM's parts and the
    adapters when the config asks for them. Configs whose keys are equal compile to the
    same program (data-only variants share theirs)."""
    run_config = dataclasses.replace(model_config, **execution_overrides(config.model))
    # HQ-SAM's parts when the config asks for them, as `loop.with_hq_parts` adds them.
    run_config = dataclasses.replace(run_config, hq=bool(config.model.get("hq", False)))
    setup, abstract = train_setup(adapters.abstract_model(run_config, config), config, mesh)
    key = repr(
        (
            run_config,
            # theta is a constant of the same program: the Fig. 16 sweep shares one trace.
            dataclasses.replace(setup.settings, theta=0.6),
            setup.semi,
            setup.microbatches,
            config.optimizer.to_dict(),
            config.lora.to_dict(),
            config.get("adapter", {}),
            dict(mesh.shape),
        )
    )
    return setup, abstract, key


@pytest.mark.parametrize("spec", TRAINING)
def test_training_config_reads_the_data_it_names(spec):
    config = load(spec)
    model_config = VARIANTS[config.model.variant]
    assert config.model.checkpoint
    data = loop.data_config(config, model_config, process_count=1)
    assert (data.image_size, data.mask_size) == (model_config.img_size, model_config.low_res_size)
    assert data.labelled or spec in PRETRAINING, "human-labelled data (or scenes)"
    if spec not in NO_UNLABELLED:
        assert data.unlabelled
        assert data.pseudo_label_dir or spec == "demo.py"  # the demo makes its own


# One ViT-H lowering per distinct step program: each is a trace of about a minute, so they
# run under `-m slow`; the default suite compiles every program on the tiny model below.
_LOWERED: dict[str, str] = {}


@pytest.mark.slow
@pytest.mark.parametrize("spec", TRAINING)
def test_training_config_lowers_its_step_at_full_size(spec):
    config = load(spec)
    model_config = VARIANTS[config.model.variant]
    # The 8 fake CPU devices stand in for the real machine; the layout is the config's own
    # where it fits them (ft_large's (-1, 8) does).
    if np.prod([d for d in config.sharding.mesh_shape if d != -1]) > len(jax.devices()):
        config.sharding.mesh_shape = (1, -1)
    mesh = sharding.make_mesh(config.sharding.mesh_shape)
    if int(config.train.batch_size) % mesh.devices.size:
        config.train.batch_size = mesh.devices.size
    setup, abstract, key = step_setup(config, model_config, mesh)
    if key in _LOWERED:
        return
    lowered = jit_train_step(setup).lower(abstract, abstract_batch(config, setup, model_config))
    _LOWERED[key] = lowered.as_text()[:100]
    assert "jit_train_step" in _LOWERED[key]


def table_runs() -> list[str]:
    """Every training run a column of experiments/tables.py names (variants joined by `+`)."""
    from experiments import tables

    runs = {c.run for spec in tables.TABLES.values() for c in spec.columns if c.run}
    return sorted(runs - set(ablations.VARIANTS))


DRY_RUNS = TRAINING + [f"ablations.py:{run},ft_small" for run in table_runs()]
# The tiny model's programs traced / compiled so far (one per distinct step program).
_TINY: dict[str, set[str]] = {"traced": set(), "compiled": set()}


def dry_run(spec: str, compile_it: bool) -> None:
    """Builds a config's whole step (its losses, rounds, semi-supervised variant, adapters,
    HQ parts, optimiser, micro-batches, execution options) on the tiny model and traces it,
    and lowers and compiles it when asked."""
    config = load(spec)
    if VARIANTS[config.model.variant].img_size > 128:
        config.model.variant = "tiny"
    model_config = VARIANTS[config.model.variant]
    mesh = sharding.make_mesh((1, 1), jax.devices()[:1])
    config.train.batch_size = 2
    config.train.masks_per_image = int(config.model.get("mask_chunks", 1))
    setup, abstract, key = step_setup(config, model_config, mesh)
    done = _TINY["compiled" if compile_it else "traced"]
    if key in done:
        return
    traced = jit_train_step(setup).trace(abstract, abstract_batch(config, setup, model_config))
    # The step's outputs: the new state (same structure and shapes) and its metrics.
    new_state, metrics = traced.out_info
    assert jax.tree.structure(new_state) == jax.tree.structure(abstract)
    assert {"loss", "grad_norm", "update_norm"} <= set(metrics)
    if compile_it:
        lowered = traced.lower()
        assert "jit_train_step" in lowered.as_text()[:200]
        assert lowered.compile() is not None
    done.add(key)


@pytest.mark.parametrize("spec", DRY_RUNS)
def test_dry_run_traces_the_step_on_the_tiny_model(spec):
    """Every training config, and every run a table column names (Tables 1, 2, 4, 6,
    10-13, Fig. 4, 5, 12, 16), traces its whole step on the tiny model (27 distinct
    programs, 4-7 s each). The steps train for real in tests/train (SUM, each
    semi-supervised variant, U2PL, LoRA, the adapters, HQ-SAM); lowering and compiling all
    of them takes 15 minutes on 2 cores, so that runs under `-m slow` (below)."""
    dry_run(spec, compile_it=False)


@pytest.mark.slow
@pytest.mark.parametrize("spec", DRY_RUNS)
def test_dry_run_compiles_the_step_on_the_tiny_model(spec):
    dry_run(spec, compile_it=True)


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
    # Fig. 5's baselines fine-tune on the human labels alone, without task prompt; the
    # parameterisations alone keep SUM's data.
    for name in ("human_only", "decoder_prompt_encoder", "lora_samed"):
        cfg = ablations.get_config(f"{name},ft_small")
        assert cfg.data.unlabelled == "" and not cfg.interactive.use_task_prompt, name
        assert cfg.data.labelled == ablations.get_config("sum,ft_small").data.labelled
    assert ablations.get_config("decoder_only").data.unlabelled
    samed = ablations.get_config("lora_samed")
    assert (samed.lora.rank, samed.lora.alpha, samed.lora.parts) == (4, 4.0, "qv")
    assert samed.lora.targets == (r"image_encoder\.blocks\.\d+\.attn\.qkv\.kernel",)
    assert samed.optimizer.layer_decay == 1.0
    assert "entityseg:train" in sum_cfg.data.labelled  # the ablations run on FT-Medium
    assert "entityseg:train" not in ablations.get_config("sum,ft_small").data.labelled
    confidence = ablations.get_config("confidence_uncer")
    assert confidence.data.pseudo_label_dir != sum_cfg.data.pseudo_label_dir
    assert confidence.loss == sum_cfg.loss and confidence.interactive == sum_cfg.interactive
    u2pl = ablations.get_config("u2pl")
    assert sum_cfg.loss.contrastive_weight == 0.0 and u2pl.loss.contrastive_weight == 1.0
    # App. E.1: plain losses and sampling on pseudo-labels, SUM's maps for the contrastive
    # split only (so the pipeline must still load them), SUM's task prompts.
    assert not u2pl.loss.uncertainty_aware and not u2pl.interactive.uncertainty_sampling
    assert u2pl.interactive.use_task_prompt and u2pl.data.unlabelled
    assert u2pl.data.pseudo_label_dir == sum_cfg.data.pseudo_label_dir  # SUM's maps
    assert loop.needs_uncertainty(u2pl)
    assert loop.data_config(u2pl, VARIANTS["vit_h"], process_count=1).require_uncertainty
    assert not loop.needs_uncertainty(ablations.get_config("vanilla"))
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


def test_adapter_variants_set_what_they_say_and_compose():
    from configs import base

    sum_cfg = ablations.get_config("sum")
    assert not sum_cfg.adapter.enabled  # off by default: SAM's encoder unchanged
    adapter, sum_adapter = ablations.get_config("adapter"), ablations.get_config("sum_adapter")
    for cfg in (adapter, sum_adapter):
        assert cfg.adapter.enabled and (cfg.adapter.ratio, cfg.adapter.scale) == (0.25, 0.5)
        assert cfg.optimizer.layer_decay == 1.0 and not cfg.lora.targets
    # Fig. 5's "Adapter FT": human-labelled data, no task prompt, only the adapters train.
    assert adapter.data.unlabelled == "" and not adapter.interactive.use_task_prompt
    assert adapter.optimizer.param_groups == base.encoder_adapter_groups(decoder=False)
    assert adapter.optimizer.param_groups[-1] == (r".*", {"frozen": True})
    # Fig. 12's "SUM (Encoder Adapter arch.)": SUM's data, losses and task prompts.
    assert sum_adapter.data == sum_cfg.data and sum_adapter.loss == sum_cfg.loss
    assert sum_adapter.interactive == sum_cfg.interactive
    assert sum_adapter.optimizer.param_groups == base.encoder_adapter_groups(decoder=True)
    # Composition: `+` applies left to right, data variants keep the adapters.
    human = ablations.get_config("human_only+adapter,ft_small")
    assert human.adapter.enabled and human.data.unlabelled == ""
    assert "entityseg:train" not in human.data.labelled
    vanilla = ablations.get_config("vanilla+sum_adapter")
    assert vanilla.adapter.enabled and not vanilla.loss.uncertainty_aware
    assert not vanilla.interactive.use_task_prompt and vanilla.data.unlabelled
    assert ablations.get_config("sum_adapter+no_task_prompt").adapter.enabled


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
    "human_only": "none",  # a baseline (Fig. 5, Fig. 17)
    "vanilla": "none",  # the standard SAM training protocol (§4.1)
    "no_task_prompt": "none",
    "refined_labels": "none",  # the Mask-Refinement baseline, standard protocol (§4.3)
    "continuous_tp": "every",
    "no_uncertainty_sampling": "first",
    "theta_0.2": "first",
    "theta_0.5": "first",
    "theta_0.6": "first",
    "theta_0.8": "first",
    "decoder_prompt_encoder": "none",  # Fig. 5's baseline (human labels)
    "decoder_only": "first",  # the parameterisation alone: SUM with a frozen encoder
    "full": "first",
    "loss_points": "first",
    "confidence_uncer": "first",  # SUM with other maps
    "u2pl": "first",  # the paper's U2PL has SUM's task prompts (App. E)
    "lora_encoder": "first",
    "lora_encoder_decoder": "first",
    "lora_samed": "none",  # Fig. 5's "LoRA FT" baseline (human labels)
    "adapter": "none",  # Fig. 5's Adapter FT, on human labels like the other baselines there
    "sum_adapter": "first",  # Fig. 12's SUM (Encoder Adapter arch.)
    "hq_sam": "none",  # Fig. 4's HQ-SAM, on human labels (Human-Annotation-Only)
    "sum_hq": "first",  # Fig. 4 / Fig. 12's SUM (HQ-SAM arch.)
    "discrepancy_uncer": "first",
    "discrepancy_dual_decoder": "first",
    "augseg_mixed_prompt": "none",  # SAM's training procedure (App. E.1)
    "augseg_box_prompt": "none",  # SAM's training procedure (App. E.1)
    "augseg_multi_consistency": "none",  # SAM's training procedure (App. E.1)
    "augseg_uniform_point": "none",  # SAM's training procedure (App. E.1)
}


@pytest.mark.parametrize("variant", ablations.VARIANTS)
def test_task_prompt_in_training_is_classified(variant):
    """Every ablation is classified above, and trains with the task prompt as classified:
    the baselines (§4.1, §4.3, Fig. 5) never see one."""
    assert set(TASK_PROMPT_IN_TRAINING) == set(ablations.VARIANTS)
    it = ablations.get_config(variant).interactive
    trained = (
        "none" if not it.use_task_prompt else ("every" if it.continuous_task_prompt else "first")
    )
    assert trained == TASK_PROMPT_IN_TRAINING[variant]


def test_every_table_column_trains_as_it_is_evaluated():
    """Each column of experiments/tables.py that names a training run (a variant, or
    variants joined by `+`) evaluates its model with the task prompt as the run trained it:
    none, round 1, or every round."""
    from experiments import tables

    def mode(use, continuous):
        return "none" if not use else ("every" if continuous else "first")

    checked = 0
    for spec in tables.TABLES.values():
        for column in spec.columns:
            if not column.run:
                continue
            assert set(column.run.split("+")) <= set(ablations.VARIANTS), column.run
            it = ablations.get_config(column.run).interactive
            overrides = dict(column.overrides)
            evaluated = mode(
                overrides.get("use_task_prompt", True),
                overrides.get("continuous_task_prompt", False),
            )
            assert mode(it.use_task_prompt, it.continuous_task_prompt) == evaluated, (
                spec.name, column.name)  # fmt: skip
            checked += 1
    assert checked >= 30


def test_ft_large_records_its_stand_ins_for_the_paper_part_sets():
    """FT-Large's stand-in human sets include the train splits of the paper's part
    evaluation families: the config names them so the exported model records them."""
    from configs import ft_large
    from sum_jax.data import registry

    config = ft_large.get_config()
    part_families = {registry.family(r) for r in registry.PAPER_EVAL_SETS[3]}
    trained = {registry.family(r) for r in config.data.labelled}
    assert set(config.data.not_in_paper) == part_families & trained
    assert set(config.data.not_in_paper) == {"fashionpedia", "paco", "mhp", "easyportrait"}
    assert not ablations.get_config("sum,ft_small").data.not_in_paper
    assert registry.family("entityseg_2:validation") == "entityseg"
    assert registry.family("mhp:validation@1000") == "mhp"
    assert registry.family("dut_omron") == "dut_omron"
