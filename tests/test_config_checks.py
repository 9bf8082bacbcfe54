"""The config schema every command checks at start (`sum_jax.config_checks`), the one model
grammar (`cli.check_model_dir`), damaged or mismatched model directories
(`checkpointing.check_arrays`, `load_sam`) and run_table's variant labels."""

from __future__ import annotations

import importlib
import json
import shutil

import pytest
from ml_collections import ConfigDict

from sum_jax import checkpointing, cli, config_checks

# Every shipped config and the command that reads it.
CONFIGS = [
    ("configs.base", "train"),
    ("configs.ft_small", "train"),
    ("configs.ft_medium", "train"),
    ("configs.ft_large", "train"),
    ("configs.small_scale", "train"),
    ("configs.demo", "train"),
    ("configs.pretrain_small", "pretrain"),
    ("configs.pretrain_small_stage2", "pretrain"),
    ("configs.refine", "train_refiner"),
    ("configs.eval", "evaluate"),
    ("configs.pseudo_labels", "pseudo_labels"),
    ("configs.uncertainty", "uncertainty"),
    ("configs.data.prepare", "prepare_data"),
]


@pytest.mark.parametrize("module,command", CONFIGS)
def test_every_shipped_config_passes_its_commands_schema(module, command):
    config_checks.check(importlib.import_module(module).get_config(), command)


def test_every_ablation_passes_the_training_schema():
    from configs import ablations

    for variant in ablations.VARIANTS:
        config_checks.check(ablations.get_config(f"{variant},ft_small"), "train")


def _config(module: str, **fields) -> ConfigDict:
    config = importlib.import_module(module).get_config()
    for path, value in fields.items():
        node = config
        *parents, leaf = path.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


# (config module, command, field overrides with "__" for ".", texts the message holds)
REFUSED = [
    ("configs.pseudo_labels", "pseudo_labels", {"generator__points_per_side": 0},
     ("config.generator.points_per_side=0", "at least 1")),
    ("configs.pseudo_labels", "pseudo_labels", {"max_images": -1},
     ("config.max_images=-1", "leave it unset for every image")),
    ("configs.pseudo_labels", "pseudo_labels", {"max_images": 0}, ("config.max_images=0",)),
    ("configs.pseudo_labels", "pseudo_labels", {"generator__pred_iou_thresh": 1.5},
     ("config.generator.pred_iou_thresh=1.5", "in [0, 1]")),
    ("configs.pseudo_labels", "pseudo_labels",
     {"generator__crop_n_layers": 2, "generator__crop_n_points_downscale_factor": 4,
      "generator__points_per_side": 8},
     ("points_per_side=8", "no grid point", "at least 16")),
    ("configs.refine", "train_refiner", {"holdout_fraction": 1.0},
     ("config.holdout_fraction=1.0", "in [0, 1)")),
    ("configs.refine", "train_refiner", {"holdout_fraction": float("nan")},
     ("config.holdout_fraction=nan", "finite")),
    ("configs.refine", "train_refiner", {"eval_batch_size": 0}, ("config.eval_batch_size=0",)),
    ("configs.data.prepare", "prepare_data", {"task_id": 7},
     ("config.task_id=7", "in [0, 3]")),
    ("configs.eval", "evaluate", {"max_images": -1}, ("config.max_images=-1",)),
    ("configs.eval", "evaluate", {"noc_thresholds": (0.85, 1.5)},
     ("config.noc_thresholds=(0.85, 1.5)", "in (0, 1]")),
    ("configs.eval", "evaluate", {"single_output_token": 4},
     ("config.single_output_token=4", "in [0, 3]")),
    ("configs.ft_small", "train", {"train__num_steps": -5},
     ("config.train.num_steps=-5", "at least 1")),
    ("configs.ft_small", "train", {"train__microbatches": 7},
     ("config.train.microbatches=7", "does not divide", "batch_size=40", "[1, 2, 4, 5, 8")),
    ("configs.ft_small", "train", {"model__mask_chunks": 4},
     ("config.model.mask_chunks=4", "masks_per_image=30")),
    ("configs.ft_small", "train", {"loss__theta": 2.0}, ("config.loss.theta=2.0",)),
    ("configs.ft_small", "train", {"eval__max_images": 0}, ("config.eval.max_images=0",)),
    ("configs.eval", "evaluate", {"eval_sets": "coift:validation@-3"},
     ("config.eval_sets", "'coift:validation@-3'", "at least 1")),
    ("configs.ft_small", "train", {"eval__eval_sets": "mhp:validation@x"},
     ("config.eval.eval_sets", "mhp:validation@x")),
    ("configs.ft_small", "train", {"data__task_ids": {"dis5k": 9}},
     ("config.data.task_ids.dis5k=9", "3 (part)")),
    ("configs.ft_small", "train", {"sharding__mesh_shape": (0, -1)},
     ("config.sharding.mesh_shape=(0, -1)",)),
    ("configs.uncertainty", "uncertainty", {"pictures": -1}, ("config.pictures=-1",)),
    ("configs.demo", "train", {"demo__refiner__holdout_fraction": 1.5},
     ("config.demo.refiner.holdout_fraction=1.5",)),
    ("configs.demo", "train", {"demo__pseudo_labels__generator__points_per_side": 0},
     ("config.demo.pseudo_labels.generator.points_per_side=0",)),
    ("configs.demo", "train", {"demo__baseline": "human_only+vanila"},
     ("config.demo.baseline=", "unknown ablation 'vanila'", "vanilla")),
]  # fmt: skip


@pytest.mark.parametrize("module,command,fields,expect", REFUSED, ids=[str(r[2]) for r in REFUSED])
def test_out_of_range_values_are_refused_naming_the_field(module, command, fields, expect):
    with pytest.raises(cli.InputError) as info:
        config_checks.check(_config(module, **fields), command)
    for text in expect:
        assert text in str(info.value), (text, str(info.value))


def test_boundary_values_that_mean_something_are_kept():
    # 0 turns a filter off, max_images=1 is one image, microbatches=-1 one image per device.
    config_checks.check(_config("configs.pseudo_labels", max_images=1,
                                generator__pred_iou_thresh=0.0), "pseudo_labels")  # fmt: skip
    config_checks.check(_config("configs.refine", holdout_fraction=0.0), "train_refiner")
    config_checks.check(_config("configs.ft_small", train__microbatches=-1), "train")
    config_checks.check(_config("configs.ft_small", train__microbatches=8), "train")


def test_a_field_of_the_wrong_type_in_a_config_file_is_refused():
    config = ConfigDict({"max_images": "10", "pictures": 2.5})
    with pytest.raises(cli.InputError, match=r"config.max_images='10'.*whole number"):
        config_checks.check(config, "uncertainty")
    with pytest.raises(cli.InputError, match=r"config.pictures=2.5.*whole number"):
        config_checks.check(ConfigDict({"pictures": 2.5}), "uncertainty")


def test_max_images_means_the_first_n_images_in_the_evaluator():
    from sum_jax.evaluate.runner import EvalSettings

    assert EvalSettings.from_config(importlib.import_module("configs.eval").get_config()) \
        .max_images is None  # fmt: skip


# --- the model grammar and damaged model directories ---


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    import jax
    import numpy as np
    from flax import nnx

    from sum_jax.models.sam import VARIANTS

    # Arrays of the right shapes without a Flax initialisation (slow on a busy CPU).
    config = VARIANTS["tiny"]
    abstract = nnx.to_pure_dict(nnx.state(checkpointing.abstract_sam(config)))
    state = jax.tree.map(lambda x: np.ones(x.shape, x.dtype), abstract)
    path = tmp_path_factory.mktemp("models") / "tiny"
    checkpointing.save_state_dict(path, config, state)
    return path


def test_random_specs_name_a_known_variant():
    cli.check_model_dir("random:tiny", "--checkpoint")
    with pytest.raises(cli.InputError, match=r"--checkpoint=random:huge: no SAM variant.*tiny"):
        cli.check_model_dir("random:huge", "--checkpoint")


def test_a_truncated_array_file_is_called_damaged_not_another_architecture(tiny_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_dir, copy)
    chunk = next((copy / "params" / "image_encoder.neck.0.kernel").glob("0.*"))
    chunk.write_bytes(chunk.read_bytes()[:10])
    cli.check_model_dir(str(copy), "--checkpoint")  # the metadata is whole
    with pytest.raises(checkpointing.DamagedModelError) as info:
        checkpointing.load_sam(copy)
    text = str(info.value)
    assert f"model directory {copy} is damaged" in text and "neck.0.kernel" in text
    assert "convert.sam_checkpoint" in text and "architecture" not in text
    # One line, short whatever the path's length (it is named several times).
    assert "\n" not in text and len(text.replace(str(copy), "DIR")) < 600


def test_damaged_metadata_is_refused_before_any_array_is_read(tiny_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_dir, copy)
    meta = copy / "params" / "_METADATA"
    meta.write_bytes(meta.read_bytes()[:100])
    with pytest.raises(cli.InputError, match=r"--checkpoint=.*model.*is damaged.*_METADATA"):
        cli.check_model_dir(str(copy), "--checkpoint")


def test_a_config_of_another_variant_is_summarised_in_one_line(tiny_dir, tmp_path):
    from sum_jax.models.sam import VARIANTS

    copy = tmp_path / "model"
    shutil.copytree(tiny_dir, copy)
    (copy / "sam_config.json").write_text(json.dumps(VARIANTS["small"].to_dict()))
    with pytest.raises(cli.InputError) as info:
        cli.check_model_dir(str(copy), "--checkpoint")
    text = str(info.value)
    assert "the params of a tiny SAM in" in text and "do not fit the small model" in text
    assert (
        "arrays differ in shape, first: image_encoder." in text and "[32] stored vs [128]" in text
    )
    assert "\n" not in text and len(text) < 1000


def test_a_truncated_packed_model_is_damaged(tmp_path):
    copy = tmp_path / "small"
    shutil.copytree(checkpointing.PRETRAINED_ROOT / "small", copy)
    packed = copy / checkpointing.PACKED_FILE
    packed.write_bytes(packed.read_bytes()[:1000])
    with pytest.raises(checkpointing.DamagedModelError, match="params.npz does not read"):
        checkpointing.load_sam(copy)


# --- run_table labels a model by the variant it records ---


def test_table6_labels_a_model_by_its_recorded_variant():
    from experiments import tables

    spec = tables.TABLES["table6"]
    rows = spec.render(spec, {"SUM ViT-H": {"variant": "tiny"}, "SAM ViT-B": {"variant": "vit_b"}})
    labels = [r[0] for r in rows[1:]]
    assert "tiny (in the ViT-H columns)" in labels and "ViT-H" not in labels
    assert "ViT-B" in labels
    assert tables.models_note({"SUM ViT-H": {"variant": "tiny"}}) == "\nModels: SUM ViT-H: tiny\n"


def test_run_table_records_each_models_variant(tmp_path, monkeypatch):
    from configs import eval as eval_config
    from experiments import run_table, tables

    def fake_evaluate(config, model, examples, out, name, **kwargs):
        (tmp_path / "t6" / run_table.slug(name)).mkdir(parents=True)
        return {"name": name}

    monkeypatch.setattr(run_table.runner, "evaluate", fake_evaluate)
    monkeypatch.setattr(run_table.reports, "plot_curves", lambda *a: None)
    spec = tables.TABLES["table6"]
    md = run_table.run_table(eval_config.get_config(), spec, {"SUM ViT-H": "random:tiny"},
                             str(tmp_path / "t6"))  # fmt: skip
    assert "| tiny (in the ViT-H columns) |" in md and "Models: SUM ViT-H: tiny" in md
    assert json.loads((tmp_path / "t6" / "SUM_ViT-H" / "model.json").read_text()) == {
        "checkpoint": "random:tiny",
        "variant": "tiny",
    }
    with pytest.raises(cli.InputError, match="--checkpoint=SUM ViT-H=random:huge"):
        run_table.run_table(eval_config.get_config(), spec, {"SUM ViT-H": "random:huge"},
                            str(tmp_path / "t6"))  # fmt: skip


def test_segment_takes_the_model_grammar_of_evaluate_and_serve(tmp_path):
    import numpy as np
    from PIL import Image

    from tests.cli_harness import run_command

    Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(tmp_path / "a.png")
    args = [f"--image={tmp_path / 'a.png'}", "--point=5,5", "--single"]
    # NAME=SPEC, as evaluate and serve take it, and a bare random:<variant>.
    named = run_command("sum_jax.segment", [*args, "--checkpoint=SAM=random:tiny",
                                            f"--output_dir={tmp_path / 'a'}"])  # fmt: skip
    assert named.code in (0, None), named.stderr[-2000:]
    assert json.loads((tmp_path / "a" / "result.json").read_text())["mask_area_px"] >= 0
    bad = run_command("sum_jax.segment", [*args, "--checkpoint=SAM=random:huge",
                                          f"--output_dir={tmp_path / 'b'}"])  # fmt: skip
    assert bad.code == 2 and "--checkpoint=random:huge: no SAM variant" in bad.stderr
