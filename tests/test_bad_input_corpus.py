"""The bad-input corpus: wrong or unusual input to every command, and what it must get back.

Each case runs a command in-process (`tests.cli_harness`, no subprocess per case) on a small
world made once per module (a prepared toy dataset, a tiny model directory, a `.pth`, a
pseudo-label folder) and asserts: exit status 2, a message naming the file or field, no
traceback, and every file that existed before byte-identical afterwards (nothing removed).
The predictor API cases assert the ValueError message instead of an exit status. A few real
subprocess runs prove the end-to-end path (`python -m ...`). The cases below are the first
ones; each area adds its own in `tests/corpus/cases_*.py`.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.cli_harness import run_command
from tests.corpus import (
    EVAL,
    FT,
    PL,
    SEG,
    TR,
    UNC,
    Case,
    World,
    empty_masks,
    fake,
    float_tiff,
    make_world,
    more_cases,
    own_train_config,
    prep,
    resnet,
    run_convert,
    snapshot,  # fmt: skip
    truncated_pth,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return make_world(tmp_path_factory.mktemp("world"))


CASES = [
    # --- prepare_data ---
    Case("prepare: source folder missing", "sum_jax.prepare_data",
         lambda w, t: prep(w, f"--config.source_dir={t}/nope", "--config.format=folder",
                            "--config.task_id=1"),
         ("config.source_dir=", "nope", "does not exist")),
    Case("prepare: source_dir unset", "sum_jax.prepare_data",
         lambda w, t: prep(w, "--config.format=folder", "--config.task_id=1"),
         ("config.source_dir", "not set")),
    Case("prepare: source_dir is a file", "sum_jax.prepare_data",
         lambda w, t: prep(w, f"--config.source_dir={w.afile}", "--config.format=folder",
                            "--config.task_id=1"),
         ("afile", "is a file")),
    Case("prepare: config typo", "sum_jax.prepare_data",
         lambda w, t: prep(w, "--config.sorce_dir=x"), ("--config.sorce_dir", "sorce_dir")),
    Case("prepare: rerun with another source", "sum_jax.prepare_data",
         lambda w, t: prep(w, f"--config.source_dir={t}", "--config.format=folder",
                            "--config.task_id=1"),
         ("toy", "source_dir:", "kept", "--config.overwrite")),
    Case("prepare: overwrite with a typo keeps the old copy", "sum_jax.prepare_data",
         lambda w, t: prep(w, f"--config.source_dir={w.src}_typo", "--config.format=folder",
                            "--config.task_id=1", "--config.overwrite=true"),
         ("src_typo", "does not exist")),
    Case("prepare: overwrite whose build fails keeps the old copy", "sum_jax.prepare_data",
         lambda w, t: prep(w, f"--config.source_dir={t}/empty", "--config.format=folder",
                            "--config.task_id=1", "--config.overwrite=true",
                            "--config.options.image_dir=images", "--config.options.mask_dir=masks",
                            "--config.options.image_globs=*.png",
                            "--config.options.mask_globs={stem}.png"),
         ("empty", "no usable image"), empty_masks),
    Case("prepare: data_dir is a file", "sum_jax.prepare_data",
         lambda w, t: ["--config.dataset=toy", f"--config.source_dir={w.src}",
                       f"--config.data_dir={w.afile}", "--config.format=folder",
                       "--config.task_id=1"],
         ("config.data_dir", "afile", "is a file")),
    Case("prepare: data_dir unset", "sum_jax.prepare_data",
         lambda w, t: ["--config.dataset=toy", f"--config.source_dir={w.src}",
                       "--config.format=folder", "--config.task_id=1"],
         ("config.data_dir", "not set")),
    Case("prepare: bad on_error", "sum_jax.prepare_data",
         lambda w, t: prep(w, f"--config.source_dir={t}", "--config.format=folder",
                            "--config.task_id=1", "--config.on_error=ignore"),
         ("on_error", "ignore")),
    Case("prepare: unknown dataset without a format", "sum_jax.prepare_data",
         lambda w, t: [f"--config.data_dir={w.data}", "--config.dataset=mystery",
                       f"--config.source_dir={t}"],
         ("mystery", "format")),
    Case("prepare: invalid dataset name", "sum_jax.prepare_data",
         lambda w, t: [f"--config.data_dir={w.data}", "--config.dataset=My-Set",
                       f"--config.source_dir={t}"],
         ("my-set", "[a-z]")),
    Case("prepare: task_id not a number", "sum_jax.prepare_data",
         lambda w, t: prep(w, "--config.task_id=salient"), ("task_id",)),
    # --- pseudo_labels ---
    Case("pseudo_labels: output_dir is a file", "sum_jax.pseudo_labels",
         lambda w, t: [*PL, f"--config.data_dir={w.data}", f"--config.output_dir={w.afile}",
                       f"--config.checkpoint={w.model}"],
         ("config.output_dir", "is a file")),
    Case("pseudo_labels: dataset not prepared", "sum_jax.pseudo_labels",
         lambda w, t: ["--config=configs/pseudo_labels.py", f"--config.data_dir={w.data}",
                       f"--config.output_dir={t}/out", f"--config.checkpoint={w.model}"],
         ("sa1b", "not prepared", "sum_jax.prepare_data")),
    Case("pseudo_labels: checkpoint missing", "sum_jax.pseudo_labels",
         lambda w, t: [*PL, f"--config.data_dir={w.data}", f"--config.output_dir={t}/out",
                       f"--config.checkpoint={t}/no_model"],
         ("config.checkpoint", "no_model", "convert.sam_checkpoint")),
    Case("pseudo_labels: checkpoint unset", "sum_jax.pseudo_labels",
         lambda w, t: [*PL, f"--config.data_dir={w.data}", f"--config.output_dir={t}/out"],
         ("config.checkpoint is not set", "convert.sam_checkpoint")),
    Case("pseudo_labels: data_dir unset", "sum_jax.pseudo_labels",
         lambda w, t: [*PL, f"--config.output_dir={t}/out", f"--config.checkpoint={w.model}"],
         ("config.data_dir", "not set")),
    Case("pseudo_labels: generator typo", "sum_jax.pseudo_labels",
         lambda w, t: [*PL, "--config.generator.pred_iou_tresh=0.5"],
         ("pred_iou_tresh", "pred_iou_thresh")),
    Case("pseudo_labels: crop layers", "sum_jax.pseudo_labels",
         lambda w, t: [*PL, f"--config.data_dir={w.data}", f"--config.output_dir={t}/out",
                       "--config.checkpoint=random:tiny", "--config.generator.crop_n_layers=1"],
         ("crop_n_layers",)),
    Case("pseudo_labels: model directory is a file", "sum_jax.pseudo_labels",
         lambda w, t: [*PL, f"--config.data_dir={w.data}", f"--config.output_dir={t}/out",
                       f"--config.checkpoint={w.afile}"],
         ("config.checkpoint", "afile", "is a file")),
    # --- train_refiner ---
    Case("train_refiner: workdir is a file", "sum_jax.train_refiner",
         lambda w, t: [*TR, f"--workdir={w.afile}", f"--config.data_dir={w.data}",
                       f"--config.checkpoint={w.model}"],
         ("--workdir", "afile", "is a file")),
    Case("train_refiner: checkpoint missing", "sum_jax.train_refiner",
         lambda w, t: [*TR, f"--workdir={t}/wd", f"--config.data_dir={w.data}",
                       f"--config.checkpoint={t}/nope"],
         ("config.checkpoint", "nope", "convert.sam_checkpoint")),
    Case("train_refiner: dataset not prepared", "sum_jax.train_refiner",
         lambda w, t: ["--config=configs/refine.py", f"--workdir={t}/wd",
                       f"--config.data_dir={w.data}", f"--config.checkpoint={w.model}"],
         ("dis5k", "not prepared", "prepare_data")),
    Case("train_refiner: config typo", "sum_jax.train_refiner",
         lambda w, t: [*TR, f"--workdir={t}/wd", "--config.optimizer.lrr=1"], ("lrr",)),
    # --- uncertainty ---
    Case("uncertainty: refiner unset", "sum_jax.uncertainty",
         lambda w, t: [*UNC, f"--config.data_dir={w.data}", f"--config.pseudo_labels={w.labels}"],
         ("config.refiner is not set", "sum_jax.train_refiner")),
    Case("uncertainty: refiner missing", "sum_jax.uncertainty",
         lambda w, t: [*UNC, f"--config.data_dir={w.data}", f"--config.pseudo_labels={w.labels}",
                       f"--config.refiner={t}/refiner"],
         ("config.refiner", "does not exist", "sum_jax.train_refiner")),
    Case("uncertainty: pseudo-label folder missing", "sum_jax.uncertainty",
         lambda w, t: [*UNC, f"--config.data_dir={w.data}", f"--config.pseudo_labels={t}/pl",
                       f"--config.refiner={w.model}"],
         ("config.pseudo_labels", "pl", "sum_jax.pseudo_labels")),
    Case("uncertainty: truncated pseudo-label file", "sum_jax.uncertainty",
         lambda w, t: [*UNC, f"--config.data_dir={w.data}", f"--config.pseudo_labels={w.labels}",
                       f"--config.refiner={w.model}"],
         (".npz", "sum_jax.pseudo_labels", "redoes")),
    Case("uncertainty: refined_labels_dir is a file", "sum_jax.uncertainty",
         lambda w, t: [*UNC, f"--config.data_dir={w.data}", f"--config.pseudo_labels={w.labels}",
                       f"--config.refiner={w.model}", f"--config.refined_labels_dir={w.afile}"],
         ("config.refined_labels_dir", "is a file")),
    Case("uncertainty: unknown source", "sum_jax.uncertainty",
         lambda w, t: [*UNC, f"--config.data_dir={w.data}", f"--config.pseudo_labels={w.labels}",
                       "--config.source=entropy"],
         ("config.source", "entropy", "refiner", "confidence")),
    # --- train ---
    Case("train: workdir is a file", "sum_jax.train",
         lambda w, t: [*FT, f"--workdir={w.afile}"], ("--workdir", "afile", "is a file")),
    Case("train: checkpoint missing", "sum_jax.train",
         lambda w, t: [*FT, f"--workdir={t}/wd", f"--config.model.checkpoint={t}/nope"],
         ("config.model.checkpoint", "nope", "convert.sam_checkpoint")),
    Case("train: labelled set not prepared", "sum_jax.train",
         lambda w, t: [*FT, f"--workdir={t}/wd", f"--config.model.checkpoint={w.model}",
                       f"--config.data.data_dir={w.data}"],
         ("config.data.labelled", "not prepared", "prepare_data")),
    Case("train: list field on the command line", "sum_jax.train",
         lambda w, t: [*FT, f"--workdir={t}/wd", "--config.data.labelled=toy:train"],
         ("--config.data.labelled", "list", "--config=YOUR_COPY.py")),
    Case("train: config typo", "sum_jax.train",
         lambda w, t: [*FT, f"--workdir={t}/wd", "--config.trian.num_steps=3"],
         ("--config.trian.num_steps", "trian", "train")),
    Case("train: value of the wrong type", "sum_jax.train",
         lambda w, t: [*FT, f"--workdir={t}/wd", "--config.train.num_steps=abc"],
         ("num_steps", "abc")),
    Case("train: keep_checkpoints=0 on an existing run", "sum_jax.train",
         lambda w, t: [*FT, f"--workdir={t}/run", f"--config.model.checkpoint={w.model}",
                       "--config.train.keep_checkpoints=0"],
         ("config.train.keep_checkpoints=0", "at least 1", "delete every one"),
         prepare=lambda w, t: fake.save_png(t / "run" / "checkpoints" / "100" / "state.png",
                                            np.zeros((4, 4), np.uint8))),
    Case("train: negative num_steps", "sum_jax.train",
         lambda w, t: [*FT, f"--workdir={t}/wd", "--config.train.num_steps=-5"],
         ("config.train.num_steps=-5", "at least 1")),
    Case("train: zero learning rate", "sum_jax.train",
         lambda w, t: [*FT, f"--workdir={t}/wd", "--config.optimizer.lr=0.0"],
         ("config.optimizer.lr=0.0", "above 0")),
    Case("train: microbatches zero", "sum_jax.train",
         lambda w, t: [*FT, f"--workdir={t}/wd", "--config.train.microbatches=0"],
         ("config.train.microbatches=0", "-1")),
    Case("train_refiner: keep_checkpoints negative", "sum_jax.train_refiner",
         lambda w, t: [*TR, f"--workdir={t}/wd", f"--config.data_dir={w.data}",
                       f"--config.checkpoint={w.model}", "--config.train.keep_checkpoints=-1"],
         ("config.train.keep_checkpoints=-1", "at least 1")),
    Case("train: config file missing", "sum_jax.train",
         lambda w, t: ["--config=configs/ft_smal.py", f"--workdir={t}/wd"],
         ("ft_smal.py", "no such config file", "ft_small.py")),
    Case("train: unlabelled set not prepared", "sum_jax.train",
         lambda w, t: [f"--config={t}/mine.py", f"--workdir={t}/wd",
                       f"--config.model.checkpoint={w.model}", f"--config.data.data_dir={w.data}",
                       "--config.data.unlabelled=sa1b:train"],
         ("config.data.unlabelled", "sa1b", "not prepared"), own_train_config),
    Case("train: model of another variant", "sum_jax.train",
         lambda w, t: [f"--config={t}/mine.py", f"--workdir={t}/wd",
                       f"--config.model.checkpoint={w.model}", f"--config.data.data_dir={w.data}",
                       "--config.data.unlabelled="],
         ("holds a tiny SAM", "config.model.variant"), own_train_config),
    # --- evaluate ---
    Case("evaluate: checkpoint missing", "sum_jax.evaluate",
         lambda w, t: [*EVAL, f"--config.data_dir={w.data}", f"--workdir={t}/ev",
                       f"--checkpoint={t}/nope"],
         ("--checkpoint", "nope", "convert.sam_checkpoint")),
    Case("evaluate: workdir is a file", "sum_jax.evaluate",
         lambda w, t: [*EVAL, f"--config.data_dir={w.data}", f"--workdir={w.afile}",
                       f"--checkpoint={w.model}"],
         ("--workdir", "is a file")),
    Case("evaluate: eval set not prepared", "sum_jax.evaluate",
         lambda w, t: ["--config=configs/eval.py", "--config.eval_sets=coift:validation",
                       f"--config.data_dir={w.data}", f"--workdir={t}/ev",
                       f"--checkpoint={w.model}"],
         ("config.eval_sets", "coift", "not prepared", "prepare_data")),
    Case("evaluate: data_dir unset", "sum_jax.evaluate",
         lambda w, t: [*EVAL, f"--workdir={t}/ev", f"--checkpoint={w.model}"],
         ("config.data_dir", "not set")),
    Case("evaluate: no split of that name", "sum_jax.evaluate",
         lambda w, t: ["--config=configs/eval.py", "--config.eval_sets=toy:validation",
                       f"--config.data_dir={w.data}", f"--workdir={t}/ev",
                       f"--checkpoint={w.model}"],
         ("config.eval_sets", "validation", "train")),
    Case("evaluate: --checkpoint not given", "sum_jax.evaluate",
         lambda w, t: [*EVAL, f"--workdir={t}/ev"], ("--checkpoint",)),
    # --- segment ---
    Case("segment: output_dir is a file", SEG,
         lambda w, t: [f"--image={w.image}", f"--output_dir={w.afile}"],
         ("--output_dir", "is a file")),
    Case("segment: image missing", SEG,
         lambda w, t: [f"--image={t}/none.png", f"--output_dir={t}/o"],
         ("none.png", "no such image file")),
    Case("segment: empty image file", SEG,
         lambda w, t: [f"--image={w.afile.parent / 'zero.png'}", f"--output_dir={t}/o"],
         ("zero.png", "0 bytes"),
         lambda w, t: (w.root / "zero.png").write_bytes(b"")),
    Case("segment: NaN click", SEG,
         lambda w, t: [f"--image={w.image}", "--point=nan,3", f"--output_dir={t}/o"],
         ("--point", "finite")),
    Case("segment: infinite box", SEG,
         lambda w, t: [f"--image={w.image}", "--box=0,0,inf,3", f"--output_dir={t}/o"],
         ("--box", "finite")),
    Case("segment: float TIFF", SEG,
         lambda w, t: [f"--image={t}/depth.tif", f"--output_dir={t}/o"],
         ("depth.tif", "float"), float_tiff),
    Case("segment: corrupt image", SEG,
         lambda w, t: [f"--image={w.afile}", f"--output_dir={t}/o"],
         ("afile", "not a readable image")),
    Case("segment: checkpoint missing", SEG,
         lambda w, t: [f"--image={w.image}", f"--checkpoint={t}/nope", f"--output_dir={t}/o"],
         ("--checkpoint", "nope", "convert.sam_checkpoint")),
    Case("segment: click label 2", SEG,
         lambda w, t: [f"--image={w.image}", "--point=3,3:2", f"--output_dir={t}/o"],
         ("--point", "label")),
    # --- convert ---
    Case("convert: empty file", "convert",
         lambda w, t: ["--input", str(t / "empty.pth"), "--output", str(t / "m")],
         ("empty.pth", "0 bytes"), lambda w, t: (t / "empty.pth").write_bytes(b"")),
    Case("convert: not a SAM state dict", "convert",
         lambda w, t: ["--input", str(t / "resnet.pth"), "--output", str(t / "m")],
         ("resnet.pth", "not a SAM checkpoint", "conv1.*", "fc.*"), resnet),
    Case("convert: existing model directory", "convert",
         lambda w, t: ["--input", str(w.pth), "--output", str(w.model)],
         ("--output", "model", "--overwrite")),
    Case("convert: forced wrong variant", "convert",
         lambda w, t: ["--input", str(w.pth), "--output", str(t / "m"), "--variant", "vit_b"],
         ("tiny.pth", "is a SAM tiny checkpoint, not vit_b", "--variant=tiny")),
    Case("convert: input missing", "convert",
         lambda w, t: ["--input", str(t / "sam.pth"), "--output", str(t / "m")],
         ("sam.pth", "no such file")),
    Case("convert: input is a folder", "convert",
         lambda w, t: ["--input", str(w.model), "--output", str(t / "m")],
         ("model", "is a folder", "--to-pytorch")),
    Case("convert: to-pytorch output is a folder", "convert",
         lambda w, t: ["--to-pytorch", "--input", str(w.model), "--output", str(w.data)],
         ("data", "is a folder")),
    Case("convert: existing .pth kept", "convert",
         lambda w, t: ["--to-pytorch", "--input", str(w.model), "--output", str(w.pth)],
         ("tiny.pth", "--overwrite")),
    Case("convert: truncated download", "convert",
         lambda w, t: ["--input", str(t / "cut.pth"), "--output", str(t / "m")],
         ("cut.pth", "not a readable PyTorch checkpoint"), truncated_pth),
    Case("convert: output is a file", "convert",
         lambda w, t: ["--input", str(w.pth), "--output", str(w.afile)],
         ("--output", "afile", "is a file")),
]  # fmt: skip
CASES += more_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, world: World, tmp_path: Path):
    if case.prepare is not None:
        case.prepare(world, tmp_path)
    # The shared world and what the case prepared (e.g. an existing run's checkpoints).
    before = {**snapshot(world.root), **snapshot(tmp_path)}
    args = case.args(world, tmp_path)
    result = run_convert(args) if case.command == "convert" else run_command(case.command, args)
    assert result.code == 2, (result.code, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    assert "error: " in result.stderr, result.stderr
    message = result.stderr[result.stderr.index("error: ") :]  # after any progress bar
    for text in case.expect:
        assert text in message, (text, message)
    after = {**snapshot(world.root), **snapshot(tmp_path)}
    assert {k: after.get(k) for k in before} == before, "a file that existed was changed"


def test_corpus_covers_every_command():
    counts = Counter(c.command.rsplit(".", 1)[-1] for c in CASES)
    assert {"prepare_data", "pseudo_labels", "train_refiner", "uncertainty", "train", "evaluate",
            "segment", "convert"} <= set(counts), counts  # fmt: skip
    assert len({c.name for c in CASES}) == len(CASES), "two cases share a name"
    assert sum(counts.values()) >= 40, counts


# --- the predictor API ---


@pytest.fixture(scope="module")
def predictor(world):
    from sum_jax.inference.predictor import SamPredictor

    p = SamPredictor.from_checkpoint(str(world.model))
    p.set_image(np.zeros((20, 30, 3), np.uint8))
    return p


API_CASES = [
    ("NaN click", {"point_coords": [[np.nan, 1.0]], "point_labels": [1]}, "finite"),
    ("infinite click", {"point_coords": [[1.0, np.inf]], "point_labels": [1]}, "finite"),
    ("NaN box", {"box": [0.0, 0.0, np.nan, 5.0]}, "finite"),
    ("infinite box", {"box": [0.0, -np.inf, 4.0, 5.0]}, "finite"),
    ("NaN mask input", {"mask_input": np.full((1, 32, 32), np.nan), "box": [0, 0, 4, 4]}, "NaN"),
    ("click outside", {"point_coords": [[100.0, 1.0]], "point_labels": [1]}, "outside"),
    ("label 2", {"point_coords": [[1.0, 1.0]], "point_labels": [2]}, "point_labels"),
    ("no prompt", {}, "at least one"),
]


@pytest.mark.parametrize("kwargs,expect", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_predictor_refuses(predictor, kwargs, expect):
    with pytest.raises(ValueError, match=expect):
        predictor.predict(**kwargs)


@pytest.mark.parametrize(
    "image,expect",
    [
        (np.zeros((20, 30, 3), np.float32), "uint8"),
        (np.zeros((20, 30), np.uint8), "HxWx3"),
        (np.zeros((20, 30, 4), np.uint8), "HxWx3"),
        (np.zeros((0, 30, 3), np.uint8), "empty"),
    ],
    ids=["float", "grey 2-D", "RGBA array", "empty"],
)
def test_set_image_refuses(predictor, image, expect):
    with pytest.raises(ValueError, match=expect):
        predictor.set_image(image)


# --- end to end, as a user runs them ---


@pytest.mark.parametrize(
    "argv,expect",
    [
        ([sys.executable, "-m", "sum_jax.prepare_data", "--config.trian=1"], "trian"),
        (
            [sys.executable, "-m", "convert.sam_checkpoint", "--input", "EMPTY", "--output", "M"],
            "0 bytes",
        ),
    ],
    ids=["prepare_data typo", "convert empty file"],
)
@pytest.mark.integration
def test_subprocess(argv, expect, tmp_path):
    (tmp_path / "EMPTY").write_bytes(b"")
    proc = subprocess.run(argv, check=False, cwd=tmp_path, env={**_env(), "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expect in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "M").exists()


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_convert_overwrite_swaps_whole_and_says_the_variant(world, tmp_path):
    import json
    import shutil

    from sum_jax.checkpointing import CONFIG_FILE, read_config
    from sum_jax.models.sam import VARIANTS

    target = tmp_path / "model"
    shutil.copytree(world.model, target)
    # An existing model of another variant (its config says vit_b).
    (target / CONFIG_FILE).write_text(json.dumps(VARIANTS["vit_b"].to_dict()))
    result = run_convert(["--input", str(world.pth), "--output", str(target), "--overwrite"])
    assert result.code == 0, result.stderr
    assert f"replacing the SAM vit_b model in {target} with SAM tiny" in result.stdout
    assert read_config(target).variant == "tiny"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing left beside it


def test_verbose_adds_the_traceback(tmp_path):
    quiet = run_command("sum_jax.segment", [f"--image={tmp_path}/none.png"])
    loud = run_command("sum_jax.segment", [f"--image={tmp_path}/none.png", "--verbose"])
    assert quiet.code == loud.code == 2
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr
    assert "none.png: no such image file" in loud.stderr
