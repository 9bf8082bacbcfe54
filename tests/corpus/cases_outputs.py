"""Bad output folders and model names: a command pointed at a folder that holds another
command's outputs (a training run, evaluation reports, prepared data, a model directory, a
segmentation) is refused before it writes, naming both commands and another folder to use;
a model name that is not a plain name (`..`, `a/b`, `.x`) is refused naming `--checkpoint`.

Two processes on one folder and a full disk need a live second process or a failing write:
tests/test_output_dir.py and tests/segment/test_segment.py show those.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.corpus import EVAL, PL, SEG, TR, UNC, Case, own_train_config


def training_run(w, t: Path) -> None:
    """A training workdir as versions without owner records left it."""
    run = t / "run"
    (run / "checkpoints" / "10").mkdir(parents=True)
    (run / "checkpoints" / "10" / "state").write_bytes(b"\x00" * 16)
    (run / "metrics.jsonl").write_text('{"step": 10, "loss": 0.5}\n')
    (run / "summary.json").write_text('{"step": 10, "model": "run/model"}\n')


def evaluation(w, t: Path) -> None:
    """An evaluation workdir with its owner record."""
    ev = t / "ev"
    ev.mkdir()
    (ev / ".sum_jax_command.json").write_text(json.dumps({"command": "evaluate"}))
    (ev / "progress.jsonl").write_text('{"header": {}}\n')
    (ev / "summary.json").write_text('{"name": "SAM"}\n')


def segmentation(w, t: Path) -> None:
    seg = t / "seg"
    seg.mkdir()
    (seg / "mask.png").write_bytes(b"\x89PNG old mask")
    (seg / "result.json").write_text('{"scores": [0.9]}\n')


def ev(w, t: Path, *extra: str) -> list[str]:
    return [*EVAL, f"--config.data_dir={w.data}", *extra]


CASES = [
    # --- model names that would write outside the output folder ---
    Case("evaluate: model named ..", "sum_jax.evaluate",
         lambda w, t: ev(w, t, f"--workdir={t}/ev", f"--checkpoint=..={w.model}"),
         ("--checkpoint=..=", "'..'", "plain name")),
    Case("evaluate: model name with a path", "sum_jax.evaluate",
         lambda w, t: ev(w, t, f"--workdir={t}/ev", f"--checkpoint=SAM={w.model}",
                         f"--checkpoint=../up={w.model}"),
         ("--checkpoint=../up=", "path separator", "plain name")),
    Case("evaluate: hidden model name", "sum_jax.evaluate",
         lambda w, t: ev(w, t, f"--workdir={t}/ev", f"--checkpoint=.cache={w.model}"),
         ("--checkpoint=.cache=", "starts with '.'")),
    Case("evaluate: empty model name", "sum_jax.evaluate",
         lambda w, t: ev(w, t, f"--workdir={t}/ev", f"--checkpoint=={w.model}"),
         ("--checkpoint=", "NAME=DIR")),
    # --- a folder that holds another command's outputs ---
    Case("evaluate: into a training workdir", "sum_jax.evaluate",
         lambda w, t: ev(w, t, f"--workdir={t}/run", f"--checkpoint={w.model}"),
         ("--workdir=", "python -m sum_jax.train", "`evaluate`", "run_evaluate"), training_run),
    Case("evaluate: into a model directory", "sum_jax.evaluate",
         lambda w, t: ev(w, t, f"--workdir={w.model}", f"--checkpoint={w.model}"),
         ("--workdir=", "model directory", "sam_config.json")),
    Case("evaluate: into the prepared data_dir", "sum_jax.evaluate",
         lambda w, t: ev(w, t, f"--workdir={w.data}", f"--checkpoint={w.model}"),
         ("--workdir=", "prepared datasets", "sum_jax.prepare_data")),
    Case("segment: into a training workdir", SEG,
         lambda w, t: [f"--image={w.image}", f"--checkpoint={w.model}", f"--output_dir={t}/run"],
         ("--output_dir=", "sum_jax.train", "`segment`", "run_segment"), training_run),
    Case("segment: into an evaluation workdir", SEG,
         lambda w, t: [f"--image={w.image}", f"--checkpoint={w.model}", f"--output_dir={t}/ev"],
         ("--output_dir=", "sum_jax.evaluate", "recorded in .sum_jax_command.json"), evaluation),
    Case("prepare: data_dir is a segmentation folder", "sum_jax.prepare_data",
         lambda w, t: [f"--config.data_dir={t}/seg", "--config.dataset=toy",
                       f"--config.source_dir={w.src}", "--config.format=folder",
                       "--config.task_id=1"],
         ("config.data_dir=", "sum_jax.segment", "`prepare_data`"), segmentation),
    Case("pseudo_labels: output_dir is the prepared data_dir", "sum_jax.pseudo_labels",
         lambda w, t: [*PL, f"--config.data_dir={w.data}", f"--config.output_dir={w.data}",
                       f"--config.checkpoint={w.model}"],
         ("config.output_dir=", "sum_jax.prepare_data", "`pseudo_labels`")),
    Case("train_refiner: workdir is a training run", "sum_jax.train_refiner",
         lambda w, t: [*TR, f"--workdir={t}/run", f"--config.data_dir={w.data}",
                       f"--config.checkpoint={w.model}"],
         ("--workdir=", "sum_jax.train", "`train_refiner`"), training_run),
    Case("uncertainty: output_dir is a model directory", "sum_jax.uncertainty",
         lambda w, t: [*UNC, f"--config.data_dir={w.data}", f"--config.pseudo_labels={w.labels}",
                       "--config.source=confidence", f"--config.output_dir={w.model}"],
         ("config.output_dir=", "model directory")),
    Case("uncertainty: in place on a training workdir", "sum_jax.uncertainty",
         lambda w, t: [*UNC, f"--config.data_dir={w.data}", f"--config.pseudo_labels={t}/run",
                       "--config.source=confidence"],
         ("config.pseudo_labels=", "sum_jax.train", "`uncertainty`"), training_run),
    Case("train: into an evaluation workdir", "sum_jax.train",
         lambda w, t: [f"--config={t}/mine.py", f"--workdir={t}/ev",
                       f"--config.model.checkpoint={w.model}", f"--config.data.data_dir={w.data}",
                       "--config.data.unlabelled="],
         ("--workdir=", "sum_jax.evaluate", "`train`", "ev_train"),
         lambda w, t: (own_train_config(w, t), evaluation(w, t))),
    Case("train: demo into a segmentation folder", "sum_jax.train",
         lambda w, t: ["--config=configs/demo.py", f"--workdir={t}/seg"],
         ("--workdir=", "sum_jax.segment", "`train`"), segmentation),
]  # fmt: skip
CASES += [
    Case("convert: --overwrite onto a training workdir", "convert",
         lambda w, t: ["--input", str(w.pth), "--output", str(t / "run"), "--overwrite"],
         ("--output=", "sum_jax.train", "--overwrite replaces a whole model directory"),
         training_run),
    Case("convert: --overwrite onto a folder that is no model", "convert",
         lambda w, t: ["--input", str(w.pth), "--output", str(w.src), "--overwrite"],
         ("--output=", "is no model directory", "sam_config.json")),
]  # fmt: skip
CASES += [
    Case("run_table: workdir is a training run", "experiments.run_table",
         lambda w, t: ["--table=table1", f"--workdir={t}/run", f"--config.data_dir={w.data}"],
         ("--workdir=", "sum_jax.train", "`run_table`"), training_run),
]  # fmt: skip
