"""Task ids a model never trained on (issue 11 item 6): the exported record, the predictor's
default task and fallback, and the evaluator's fallback, on a tiny SAM whose task table rows
are made distinct (so a wrong task id changes the masks)."""

from __future__ import annotations

import logging

import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from flax import nnx

from sum_jax.checkpointing import TaskRecord, load_sam, read_tasks, save_sam
from sum_jax.evaluate import runner as eval_runner
from sum_jax.inference.predictor import SamPredictor
from sum_jax.models.sam import build_sam


@pytest.fixture(scope="module")
def model():
    m = build_sam("tiny", rngs=nnx.Rngs(0))
    table = m.prompt_encoder.task_embeddings.embedding
    table[...] = 3.0 * jnp.asarray(np.random.default_rng(0).standard_normal(table.shape))
    return m


@pytest.fixture(scope="module")
def image():
    return skimage.data.coffee()[::4, ::4]  # 100 x 150 real photo


def test_record_round_trips_and_plain_sam_has_none(model, tmp_path):
    sum_dir, sam_dir = tmp_path / "sum", tmp_path / "sam"
    save_sam(model, sum_dir, tasks=TaskRecord((0, 1)))
    save_sam(model, sam_dir)
    assert read_tasks(sum_dir) == TaskRecord((0, 1), True)
    assert read_tasks(sam_dir) is None and read_tasks("random:tiny") is None
    assert SamPredictor.from_checkpoint(str(sum_dir)).default_task == 0
    assert SamPredictor.from_checkpoint(str(sam_dir)).default_task is None
    baseline = TaskRecord((0, 1), task_prompt=False)  # Vanilla: no task prompt trained
    assert baseline.default_task is None and baseline.seen == frozenset()
    (sum_dir / "tasks.json").write_text("{broken")
    with pytest.raises(ValueError, match="tasks.json"):
        read_tasks(sum_dir)
    assert load_sam(sam_dir).config == model.config


def masks_for(predictor, image, **kwargs):
    predictor.set_image(image)
    _, _, low = predictor.predict(
        point_coords=np.array([[75, 50]]), point_labels=np.array([1]), **kwargs
    )
    return low


def test_predictor_defaults_and_unseen_task_fallback(model, image, caplog):
    sum_predictor = SamPredictor(model, TaskRecord((0, 1)))
    plain = SamPredictor(model)
    no_task = masks_for(plain, image, task=None)
    task0 = masks_for(plain, image, task=0)
    assert not np.allclose(no_task, task0)  # the table's rows matter for this model
    # Defaults: task 0 for a SUM model, no task prompt for a plain SAM.
    np.testing.assert_array_equal(masks_for(sum_predictor, image), task0)
    np.testing.assert_array_equal(masks_for(plain, image), no_task)
    # A seen task is used as asked; an unseen one becomes 0 with one log line per id.
    np.testing.assert_array_equal(
        masks_for(sum_predictor, image, task="salient"), masks_for(plain, image, task=1)
    )
    with caplog.at_level(logging.INFO, logger="sum_jax"):
        entity = masks_for(sum_predictor, image, task="entity")
        masks_for(sum_predictor, image, task=2)
    np.testing.assert_array_equal(entity, task0)
    lines = [r.getMessage() for r in caplog.records if "was not in" in r.getMessage()]
    assert len(lines) == 1 and "task id 2" in lines[0] and "using task 0" in lines[0]
    # Explicitly no task prompt stays possible for a SUM model.
    np.testing.assert_array_equal(masks_for(sum_predictor, image, task=None), no_task)


def test_evaluation_prompts_unseen_tasks_with_task_0(model, image, caplog):
    """Records keep the set's task (2, entity) for the per-task means; the model receives
    task 0 when its record lacks task 2, and task 2 otherwise."""
    mask = np.zeros(image.shape[:2], bool)
    mask[30:70, 40:110] = True
    example = {"image": image, "masks": mask[None], "task": np.int32(2), "dataset": "toy_entity"}
    settings = eval_runner.EvalSettings(num_rounds=2, noc_max_clicks=0, num_examples=0)

    def ious(tasks, task):
        records = eval_runner.evaluate_examples(
            eval_runner.SamRunner(model, tasks), [dict(example, task=np.int32(task))], settings
        )["point"]
        assert {r["task"] for r in records} == {task}
        return np.array([r["iou"] for r in records])

    with caplog.at_level(logging.INFO, logger="sum_jax"):
        unseen = ious(TaskRecord((0, 1, 3)), 2)
    as_task0 = ious(None, 0)
    as_task2 = ious(None, 2)
    np.testing.assert_array_equal(unseen, as_task0)
    assert not np.array_equal(as_task0, as_task2)
    np.testing.assert_array_equal(ious(TaskRecord((0, 2)), 2), as_task2)
    assert any("toy_entity" in r.getMessage() for r in caplog.records)
