"""Config numbers out of range, config-file errors and models that do not load.

Every command checks its config's numbers at start (`sum_jax.config_checks`): the field,
what it holds and the range are named before anything is read or written. `max_images` is
unset (every image) or N >= 1 in every command. A model is given in one grammar everywhere
(a directory, `pretrained:<name>`, `random:<variant>`); a model directory with a truncated
file is called damaged (with the command that remakes it), one whose `sam_config.json` is
another variant's gets a one-line summary of the shapes that differ.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.corpus import EVAL, FT, PL, SEG, TR, UNC, Case


def _model_copy(w, t: Path) -> Path:
    shutil.copytree(w.model, t / "model")
    return t / "model"


def truncated_chunk(w, t: Path) -> None:
    """The world's model with one array file cut short (an interrupted copy)."""
    chunk = next((_model_copy(w, t) / "params" / "image_encoder.neck.0.kernel").glob("0.*"))
    chunk.write_bytes(chunk.read_bytes()[:10])


def truncated_metadata(w, t: Path) -> None:
    meta = _model_copy(w, t) / "params" / "_METADATA"
    meta.write_bytes(meta.read_bytes()[:200])


def small_config(w, t: Path) -> None:
    """The world's tiny model with the small variant's sam_config.json."""
    from sum_jax.models.sam import VARIANTS

    (_model_copy(w, t) / "sam_config.json").write_text(json.dumps(VARIANTS["small"].to_dict()))


def _pl(w, t, *extra):
    return [*PL, f"--config.data_dir={w.data}", f"--config.checkpoint={w.model}",
            f"--config.output_dir={t}/pl", *extra]  # fmt: skip


def _seg(w, t, *extra):
    return [f"--image={w.image}", "--point=5,5", f"--output_dir={t}/seg", *extra]


def _ev(w, t, *extra):
    return [*EVAL, f"--config.data_dir={w.data}", f"--workdir={t}/ev", *extra]


def _tr(w, t, *extra):
    return [*TR, f"--workdir={t}/wd", f"--config.data_dir={w.data}",
            f"--config.checkpoint={w.model}", *extra]  # fmt: skip


CASES = [
    # --- numbers out of range, named before anything is read or written ---
    Case("pseudo_labels: points_per_side=0", "sum_jax.pseudo_labels",
         lambda w, t: _pl(w, t, "--config.generator.points_per_side=0"),
         ("config.generator.points_per_side=0", "at least 1")),
    Case("pseudo_labels: max_images=-1", "sum_jax.pseudo_labels",
         lambda w, t: _pl(w, t, "--config.max_images=-1"),
         ("config.max_images=-1", "leave it unset for every image")),
    Case("pseudo_labels: predicted-IoU threshold above 1", "sum_jax.pseudo_labels",
         lambda w, t: _pl(w, t, "--config.generator.pred_iou_thresh=1.5"),
         ("config.generator.pred_iou_thresh=1.5", "in [0, 1]")),
    Case("prepare: max_images=-1", "sum_jax.prepare_data",
         lambda w, t: [f"--config.data_dir={t}/data", "--config.dataset=toy2",
                       f"--config.source_dir={w.src}", "--config.format=folder",
                       "--config.task_id=1", "--config.max_images=-1"],
         ("config.max_images=-1", "N >= 1")),
    Case("prepare: task_id 7", "sum_jax.prepare_data",
         lambda w, t: [f"--config.data_dir={t}/data", "--config.dataset=toy2",
                       f"--config.source_dir={w.src}", "--config.format=folder",
                       "--config.task_id=7"],
         ("config.task_id=7", "in [0, 3]")),
    Case("train_refiner: holdout_fraction=1.5", "sum_jax.train_refiner",
         lambda w, t: _tr(w, t, "--config.holdout_fraction=1.5"),
         ("config.holdout_fraction=1.5", "in [0, 1)")),
    Case("train_refiner: min_iou negative", "sum_jax.train_refiner",
         lambda w, t: _tr(w, t, "--config.pairs.min_iou=-0.5"),
         ("config.pairs.min_iou=-0.5", "in [0, 1]")),
    Case("train: microbatches that do not divide the batch", "sum_jax.train",
         lambda w, t: [*FT, f"--workdir={t}/wd", "--config.train.microbatches=7"],
         ("config.train.microbatches=7", "does not divide", "config.train.batch_size=40")),
    Case("train: theta above 1", "sum_jax.train",
         lambda w, t: [*FT, f"--workdir={t}/wd", "--config.loss.theta=1.5"],
         ("config.loss.theta=1.5", "in [0, 1]")),
    Case("train: eval.max_images=0", "sum_jax.train",
         lambda w, t: [*FT, f"--workdir={t}/wd", "--config.eval.max_images=0"],
         ("config.eval.max_images=0", "leave it unset")),
    Case("train: learning rate NaN", "sum_jax.train",
         lambda w, t: [*FT, f"--workdir={t}/wd", "--config.optimizer.lr=nan"],
         ("config.optimizer.lr=nan", "finite")),
    Case("pretrain: num_steps=0", "sum_jax.pretrain",
         lambda w, t: ["--config=configs/pretrain_small.py", f"--workdir={t}/wd",
                       "--config.train.num_steps=0", "--config.pretrain.ship=False"],
         ("config.train.num_steps=0", "at least 1")),
    Case("train: demo refiner holdout_fraction=1", "sum_jax.train",
         lambda w, t: ["--config=configs/demo.py", f"--workdir={t}/demo",
                       "--config.demo.refiner.holdout_fraction=1.0"],
         ("config.demo.refiner.holdout_fraction=1.0", "in [0, 1)")),
    Case("evaluate: max_images=-1", "sum_jax.evaluate",
         lambda w, t: _ev(w, t, f"--checkpoint={w.model}", "--config.max_images=-1"),
         ("config.max_images=-1", "leave it unset for every image")),
    Case("evaluate: single_output_token=5", "sum_jax.evaluate",
         lambda w, t: _ev(w, t, f"--checkpoint={w.model}", "--config.single_output_token=5"),
         ("config.single_output_token=5", "in [0, 3]")),
    Case("evaluate: eval set limit @0", "sum_jax.evaluate",
         lambda w, t: ["--config=configs/eval.py", "--config.eval_sets=toy:train@0",
                       f"--config.data_dir={w.data}", f"--workdir={t}/ev",
                       f"--checkpoint={w.model}"],
         ("config.eval_sets", "toy:train@0", "at least 1")),
    Case("uncertainty: max_images=0", "sum_jax.uncertainty",
         lambda w, t: [*UNC, f"--config.data_dir={w.data}", f"--config.pseudo_labels={w.labels}",
                       f"--config.refiner={w.model}", "--config.max_images=0"],
         ("config.max_images=0", "N >= 1")),
    Case("run_table: max_images=-1", "experiments.run_table",
         lambda w, t: ["--table=table1", f"--workdir={t}/t1", f"--config.data_dir={w.data}",
                       "--config.max_images=-1", f"--checkpoint=SUM={w.model}"],
         ("config.max_images=-1",)),
    # --- config files that do not load: the exception's line, no traceback ---
    Case("train: unknown ablation name", "sum_jax.train",
         lambda w, t: ["--config=configs/ablations.py:bogus,ft_small", f"--workdir={t}/wd"],
         ("--config=configs/ablations.py:bogus,ft_small", "unknown ablation 'bogus'", "vanilla",
          "theta_<x>")),
    Case("train: ablation theta that is not a number", "sum_jax.train",
         lambda w, t: ["--config=configs/ablations.py:theta_high", f"--workdir={t}/wd"],
         ("--config=configs/ablations.py:theta_high", "theta_<x> needs a number")),
    Case("train: demo baseline with a typo", "sum_jax.train",
         lambda w, t: ["--config=configs/demo.py", f"--workdir={t}/demo",
                       "--config.demo.baseline=human_only+vanila"],
         ("config.demo.baseline=", "unknown ablation 'vanila'")),
    # --- one model grammar, damaged and mismatched model directories ---
    Case("segment: random model of an unknown variant", SEG,
         lambda w, t: _seg(w, t, "--checkpoint=random:huge"),
         ("--checkpoint=random:huge", "no SAM variant", "tiny")),
    Case("pseudo_labels: random model of an unknown variant", "sum_jax.pseudo_labels",
         lambda w, t: [*PL, f"--config.data_dir={w.data}", "--config.checkpoint=random:vit_x",
                       f"--config.output_dir={t}/pl"],
         ("config.checkpoint=random:vit_x", "no SAM variant")),
    Case("segment: truncated params file", SEG,
         lambda w, t: _seg(w, t, f"--checkpoint={t}/model"),
         ("model directory", "is damaged", "neck.0.kernel", "convert.sam_checkpoint"),
         truncated_chunk),
    Case("evaluate: truncated params metadata", "sum_jax.evaluate",
         lambda w, t: _ev(w, t, f"--checkpoint=M={t}/model"),
         ("--checkpoint", "is damaged", "_METADATA"), truncated_metadata),
    Case("segment: sam_config.json of another variant", SEG,
         lambda w, t: _seg(w, t, f"--checkpoint=M={t}/model"),
         ("the params of a tiny SAM", "do not fit the small model", "arrays differ in shape"),
         small_config),
    Case("train_refiner: sam_config.json of another variant", "sum_jax.train_refiner",
         lambda w, t: [*TR, f"--workdir={t}/wd", f"--config.data_dir={w.data}",
                       f"--config.checkpoint={t}/model"],
         ("config.checkpoint=", "do not fit the small model"), small_config),
]  # fmt: skip
