"""Hostile source folders: every COCO polygon and RLE is checked before pycocotools sees it,
broken JSON entries are named, near-binary masks say what values they hold, folder names with
`[`/`]` are literal, and symbolic-link loops are walked once.

The segmentations below used to crash the process (pycocotools' C rasteriser on 1e300 or NaN
coordinates) or allocate gigabytes (1e10): a test that runs at all shows they no longer reach it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from sum_jax.data import builder, rle, sources
from sum_jax.data.formats import common
from sum_jax.data.records import DataError, IssueLog
from tests.data import fake_datasets as fake

H, W = 30, 40


def coco_config(root: Path, name: str = "hostile", on_error: str = "skip", **options) -> dict:
    return {
        "dataset": name,
        "format": "coco",
        "task_id": 2,
        "source_dir": str(root),
        "on_error": on_error,
        "options": {"annotation_file": "annotations.json", "image_dir": "images", **options},
    }


def records_of(data_dir: Path, name: str) -> dict[str, dict]:
    src = sources.open_source(data_dir, name, "train")
    out = {}
    for i in range(len(src)):
        record = sources.normalize_record(src[i])
        out[record["image_id"]] = record
    return out


# --- segmentations: checked before any native call ---

GOOD_BOX = fake.polygon_of_box(2, 3, 20, 25)
BAD_SEGMENTATIONS = {
    "1e300 polygon": ([[1e300, 1.0, 5.0, 1.0, 5.0, 5.0]], "outside the 30x40 image"),
    "1e10 polygon": ([[0.0, 0.0, 1e10, 0.0, 1e10, 1e10]], "outside the 30x40 image"),
    "NaN polygon": ([[0.0, 0.0, math.nan, 4.0, 5.0, 5.0]], "finite"),
    "infinite polygon": ([[0.0, 0.0, 4.0, -math.inf, 5.0, 5.0]], "finite"),
    "int beyond float range": ([[0, 0, 10**400, 4, 5, 5]], "finite"),
    "just past the bound": ([[0, 0, 81, 0, 5, 5]], "x must lie in [-40, 80]"),
    "string coordinate": ([[0, 0, "4", 4, 5, 5]], "holds str '4', not a number"),
    "boolean coordinate": ([[0, 0, True, 4, 5, 5]], "holds true"),
    "null polygon": ([None], "polygon 0 is null"),
    "nested polygon": ([[[0, 0], [4, 4], [5, 5]]], "holds list"),
    "odd polygon": ([[0, 0, 4, 4, 5]], "needs an even number >= 6"),
    "zig-zag outline": ([[0, 0, 80, 0] * 1000], "outline is 160000 pixels long"),
    "second polygon bad": ([GOOD_BOX, [0, 0, 5, 5, 9, math.nan]], "polygon 1 point 2"),
    "size a string": ({"size": "30x40", "counts": "PP"}, "'size' is str"),
    "size of three": ({"size": [30, 40, 3], "counts": "PP"}, "not [height, width]"),
    "size of another image": ({"size": [40, 30], "counts": [1200]}, "differs from the image"),
    "counts a number": ({"size": [H, W], "counts": 12}, "'counts' is int 12"),
    "counts null": ({"size": [H, W], "counts": None}, "'counts' is null"),
    "negative run": ({"size": [H, W], "counts": [-5, H * W + 5]}, "run 0 is int -5"),
    "float run": ({"size": [H, W], "counts": [600.0, 600]}, "run 0 is float 600.0"),
    "string run": ({"size": [H, W], "counts": ["600", 600]}, "run 0 is str '600'"),
    "runs short of the image": ({"size": [H, W], "counts": [600, 599]}, "covers 1199 pixels"),
    "huge run": ({"size": [H, W], "counts": [2**40, 1]}, "covers"),
    "non-ASCII counts": ({"size": [H, W], "counts": "P\u00e9P"}, "non-ASCII"),
    "counts outside the alphabet": ({"size": [H, W], "counts": "P~P"}, "outside '0'..'o'"),
    "segmentation a string": ("polygon", "segmentation is str"),
    "segmentation null": (None, "segmentation is null"),
}


@pytest.mark.parametrize("segmentation,expect", BAD_SEGMENTATIONS.values(), ids=BAD_SEGMENTATIONS)
def test_bad_segmentation_never_reaches_pycocotools(segmentation, expect, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("pycocotools was called with an unchecked segmentation")

    monkeypatch.setattr(rle.mask_utils, "frPyObjects", forbidden)
    monkeypatch.setattr(rle.mask_utils, "merge", forbidden)
    with pytest.raises(rle.RLEError) as info:
        rle.from_coco_segmentation(segmentation, H, W)
    assert expect in str(info.value)


def test_polygons_near_the_image_are_rasterised_as_pycocotools_does():
    """The bound is loose enough for real annotations: points just outside the image (as
    annotators click past the edge) and exactly one image size out still rasterise."""
    polygons = [[-3.5, -2.0, 45.0, -1.0, 41.0, 33.0, -1.0, 31.0], [-40, -30, 80, 60, 0, 60]]
    counts = rle.from_coco_segmentation(polygons, H, W)
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, H, W)))
    np.testing.assert_array_equal(rle.decode(counts, H, W), expected.astype(bool))
    runs = rle.parse_counts(rle.encode(expected)).tolist()
    assert rle.from_coco_segmentation({"size": [H, W], "counts": runs}, H, W) == rle.encode(
        expected
    )


def test_bad_segmentations_in_a_real_file_are_skipped_and_named(tmp_path, rng):
    """One image with a good polygon and every bad segmentation above: the good mask is
    written, each bad one reported with the file, its annotation id and what is wrong."""
    root = tmp_path / "src"
    image = fake.random_image(rng, H, W)
    fake.save_png(root / "images" / "a.png", image)
    anns = [{"id": 1, "image_id": 5, "category_id": 1, "segmentation": [GOOD_BOX]}]
    for k, (segmentation, _) in enumerate(BAD_SEGMENTATIONS.values()):
        anns.append({"id": 100 + k, "image_id": 5, "category_id": 1, "segmentation": segmentation})
    coco = {
        "images": [{"id": 5, "file_name": "a.png", "height": H, "width": W}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "thing"}],
    }
    # Python's json writes NaN/Infinity and reads them back, as real exporters' files hold them.
    (root / "annotations.json").write_text(json.dumps(coco))
    report = builder.prepare(coco_config(root), tmp_path / "data", progress=False)
    assert report.issue_counts == {"bad segmentation": len(BAD_SEGMENTATIONS)}
    for k, (_, expect) in enumerate(BAD_SEGMENTATIONS.values()):
        (message,) = [m for m in report.issues if f"annotation id {100 + k}," in m]
        assert "annotations.json" in message and expect in message, message
    (record,) = records_of(tmp_path / "data", "hostile").values()
    truth = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([GOOD_BOX], H, W)))
    np.testing.assert_array_equal(sources.decode_masks(record)[0], truth.astype(bool))


# --- broken JSON entries ---


@pytest.fixture
def broken_coco(tmp_path, rng):
    """Four images (a, b, c, d) and entries of every broken kind around them."""
    root = tmp_path / "src"
    names = ["a", "b", "c", "d"]
    for name in names:
        fake.save_png(root / "images" / f"{name}.png", fake.random_image(rng, H, W))
    box = fake.polygon_of_box(2, 3, 20, 25)
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": H, "width": W},
            None,  # a null entry
            {"id": 2, "file_name": "b.png"},
            {"id": 2, "file_name": "c.png"},  # the same id again: b and c both dropped
            {"id": 4, "file_name": "d.png", "height": "30", "width": W},  # height a string
            {"id": [9], "file_name": "d.png"},  # unhashable id
            {"id": 10, "file_name": 7},  # file_name a number
        ],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 1, "segmentation": [box]},
            None,
            {"id": 12, "image_id": 1, "category_id": 99, "segmentation": [box]},  # no such cat
            {"id": 13, "image_id": 77, "category_id": 1, "segmentation": [box]},  # no such image
            {"id": 14, "image_id": 2, "category_id": 1, "segmentation": [box]},  # duplicated id
            {"id": 15, "image_id": 4, "category_id": 1, "segmentation": [box]},
            {"id": 16, "image_id": 1, "category_id": "1", "segmentation": [box]},  # string cat
            {"id": 17, "image_id": {"x": 1}, "segmentation": [box]},  # unhashable image id
            {"id": 18, "image_id": 1, "category_id": 2, "segmentation": [box]},
        ],
        "categories": [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}, None, {"id": "3"}],
    }
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


def test_broken_entries_are_skipped_and_named(broken_coco, tmp_path):
    report = builder.prepare(coco_config(broken_coco), tmp_path / "data", progress=False)
    assert report.issue_counts == {
        "json bad entry": 9,
        "duplicate image id": 1,
        "unknown image id": 1,
        "unknown category": 1,
    }
    text = "\n".join(report.issues)
    for expected in (
        "images[1] is null",
        "images[4] (id 4): 'height' is '30', not a positive integer",
        "images[5] (id [9]): 'id' is [9], not an integer or a string",
        "images[6] (id 10): 'file_name' is 7, not a file name",
        "image id 2 is listed 2 times (images[2] 'b.png', images[3] 'c.png')",
        "annotations[1] is null",
        "annotations[2] (id 12): 'category_id' 99 is not the id of any entry of 'categories'",
        "annotations[3] (id 13): 'image_id' 77 is not the id of any entry of 'images'",
        "annotations[6] (id 16): 'category_id' is '1', not an integer",
        "annotations[7] (id 17): 'image_id' is {'x': 1}",
        "categories[2] is null",
        "categories[3] is an object whose 'id' is '3'",
    ):
        assert expected in text, (expected, text)
    assert all(m.startswith(str(broken_coco / "annotations.json")) for m in report.issues)
    # Only image 1 is left, with exactly its two attributable annotations (11 and 18):
    # neither b nor c gets the other's mask.
    records = records_of(tmp_path / "data", "hostile")
    assert list(records) == ["1"]
    assert records["1"]["mask_labels"] == [1, 2]


def test_raise_names_the_first_broken_entry(broken_coco, tmp_path):
    with pytest.raises(DataError, match=r"annotations.json: images\[1\] is null"):
        builder.prepare(coco_config(broken_coco, on_error="raise"), tmp_path / "data",
                        progress=False)  # fmt: skip
    assert not builder.dataset_dir(tmp_path / "data", "hostile").exists()


def test_every_image_skipped_says_why(tmp_path, rng):
    """When nothing is left, the error holds the skipped problems, not only "no image"."""
    root = tmp_path / "src"
    fake.save_png(root / "images" / "a.png", fake.random_image(rng, H, W))
    coco = {
        "images": [{"id": 1, "file_name": "a.png"}],
        "annotations": [{"id": 3, "image_id": 1, "segmentation": [[0, 0, 1e10, 0, 5, 5]]}],
    }
    (root / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match=r"no usable image.*annotation id 3.*polygon 0 point 1"):
        builder.prepare(coco_config(root), tmp_path / "data", progress=False)


def test_category_ids_option_must_be_integers(tmp_path, rng):
    root = tmp_path / "src"
    fake.make_coco_dataset(root, rng, n=1)
    with pytest.raises(ValueError, match=r"options.category_ids=\['shirt'\]"):
        builder.prepare(coco_config(root, category_ids=["shirt"]), tmp_path / "data",
                        progress=False)  # fmt: skip


def test_sa1b_null_annotation_is_named(tmp_path, rng):
    root = tmp_path / "src"
    fake.write_sa1b_pair(root, "sa_1", fake.random_image(rng, H, W),
                         fake.random_masks(rng, H, W, 2))  # fmt: skip
    record = json.loads((root / "sa_1.json").read_text())
    record["annotations"].insert(1, None)
    (root / "sa_1.json").write_text(json.dumps(record))
    report = builder.prepare({"dataset": "sa1b", "source_dir": str(root)}, tmp_path / "data",
                             progress=False)  # fmt: skip
    assert report.issue_counts == {"json bad entry": 1}
    assert "sa_1.json: annotations[1] is null" in report.issues[0]
    assert report.splits["train"]["masks_written"] == 2


# --- masks that are not what the threshold expects ---


@pytest.mark.parametrize(
    "values,expect",
    [
        (
            [0, 1, 2],
            (
                "values found {0, 1, 2}, and mask_threshold='auto' takes a mask whose "
                "largest value is 2 as an 8-bit mask and keeps values >= 128"
            ),
        ),
        ([0, 100], "values found {0, 100}"),
        ([0, 127], "values found {0, 127}"),
        ([0, 1000], "largest value is 1000 as a 16-bit mask and keeps values >= 32768"),
        ([0], "every pixel is 0"),
    ],
    ids=["0-1-2", "0-100", "0-127", "16-bit 0-1000", "all zero"],
)
def test_near_binary_mask_says_what_it_holds(tmp_path, values, expect):
    mask = np.zeros((H, W), np.uint16 if max(values) > 255 else np.uint8)
    for k, v in enumerate(values):
        mask[k * 5 : k * 5 + 5] = v
    path = tmp_path / "m.png"
    Image.fromarray(mask).save(path)
    log = IssueLog("skip")
    assert common.read_binary_mask(path, H, W, "auto", log) is None
    (issue,) = log.issues
    assert str(issue).startswith(str(path)) and expect in str(issue), str(issue)
    if len(values) > 1:
        assert "--config.options.mask_threshold=1" in str(issue)
        # ... and the fix it names reads the mask: every nonzero pixel is foreground.
        fixed = common.read_binary_mask(path, H, W, "1", IssueLog("raise"))
        np.testing.assert_array_equal(fixed, mask > 0)


def test_numeric_threshold_is_named_when_nothing_passes(tmp_path):
    path = tmp_path / "m.png"
    Image.fromarray(np.where(np.arange(W) < 9, 0, 200).astype(np.uint8)[None].repeat(H, 0)).save(
        path
    )
    log = IssueLog("skip")
    assert common.read_binary_mask(path, H, W, 250, log) is None
    assert "values found {0, 200}, and mask_threshold=250 keeps values >= 250" in str(log.issues[0])


@pytest.mark.parametrize("threshold", ["half", "nan", True, None])
def test_mask_threshold_must_be_auto_or_a_number(tmp_path, rng, threshold):
    root = tmp_path / "src"
    fake.make_folder_dataset(root, rng, n=1, many=False)
    config = {"dataset": "t", "format": "folder", "task_id": 1, "source_dir": str(root),
              "options": {**fake.FOLDER_OPTIONS, "mask_threshold": threshold}}  # fmt: skip
    if threshold is None:  # unset: the default ("auto") applies
        assert builder.prepare(config, tmp_path / "data", progress=False).splits
        return
    with pytest.raises(ValueError, match="options.mask_threshold="):
        builder.prepare(config, tmp_path / "data", progress=False)


def test_label_maps_of_ignored_values_only_say_so(tmp_path, rng):
    root = tmp_path / "src"
    fake.save_png(root / "images" / "a.png", fake.random_image(rng, H, W))
    label_map = np.zeros((H, W), np.uint8)
    label_map[:5] = 255
    fake.save_png(root / "labels" / "a_0.png", label_map)
    config = {"dataset": "lm", "format": "label_map", "task_id": 3, "source_dir": str(root),
              "options": fake.LABEL_MAP_OPTIONS}  # fmt: skip
    with pytest.raises(DataError) as info:
        builder.prepare(config, tmp_path / "data", progress=False)
    assert "a_0.png) hold only the values [0, 255], all in ignore_labels=[0, 255]" in str(
        info.value
    )
    report = builder.prepare({**config, "options": {**fake.LABEL_MAP_OPTIONS,
                              "ignore_labels": "0"}}, tmp_path / "data", progress=False)  # fmt: skip
    assert report.splits["train"]["masks_written"] == 1


# --- folder names are literal; links are walked once ---


def test_brackets_in_folder_and_file_names_are_literal(tmp_path, rng):
    """`set [v2]/im[1]/a[0].png`: none of it is read as a character class. Before, the glob
    `[v2]` matched a folder named `v` or `2`, so nothing (or another folder) was found."""
    root = tmp_path / "set [v2]"
    truth = {}
    for name in ("a[0]", "b?", "c*"):
        image, masks = fake.random_image(rng, H, W), fake.random_masks(rng, H, W, 1)
        fake.save_png(root / "im[1]" / f"{name}.png", image)
        fake.save_png(root / "gt[1]" / f"{name}.png", masks[0].astype(np.uint8) * 255)
        truth[name] = masks
    # Decoys a pattern reading of the names would pick up instead.
    fake.save_png(tmp_path / "set v" / "im1" / "a0.png", fake.random_image(rng, H, W))
    fake.save_png(root / "gt[1]" / "a0.png", np.full((H, W), 255, np.uint8))
    fake.save_png(root / "gt[1]" / "bx.png", np.full((H, W), 255, np.uint8))
    config = {"dataset": "brackets", "format": "folder", "task_id": 1, "source_dir": str(root),
              "options": {"image_dir": "im[1]", "mask_dir": "gt[1]", "image_globs": ["*.png"],
                          "mask_globs": ["{stem}.png"]}}  # fmt: skip
    report = builder.prepare(config, tmp_path / "data", progress=False)
    assert not report.issue_counts, report.issues
    records = records_of(tmp_path / "data", "brackets")
    assert sorted(records) == sorted(truth)
    for name, masks in truth.items():
        np.testing.assert_array_equal(sources.decode_masks(records[name]), masks)


def test_wildcard_path_option_under_a_bracketed_root(tmp_path):
    """In a path option only `*` is a wildcard (EntitySeg's `entity_01_*`)."""
    root = tmp_path / "EntitySeg [copy]"
    (root / "entity_[1]_11580").mkdir(parents=True)
    (root / "entity_1_999").mkdir()
    assert common.resolve(root, "entity_[1]_*", "") == root / "entity_[1]_11580"
    (root / "val[a]").mkdir()
    assert common.resolve(root, "{split}*", "val[a]") == root / "val[a]"
    with pytest.raises(FileNotFoundError, match=r"expected exactly one match, found 0"):
        common.resolve(root, "entity_[2]_*", "")


def test_symlink_loop_stores_each_image_once(tmp_path, rng):
    """SA-1B's `**/sa_*.jpg` over a folder with a link back to its parent, and a second link
    to a folder already read: each image once, each link reported (a plain recursive glob
    follows the loop 40 levels deep and stores the image 41 times)."""
    root = tmp_path / "src"
    truth = fake.make_sa1b_dataset(root, rng, n=2)
    os.symlink("..", root / "sa_000000" / "back")
    os.symlink(root / "sa_000001", root / "also_sa_000001")
    report = builder.prepare({"dataset": "sa1b", "source_dir": str(root)}, tmp_path / "data",
                             progress=False)  # fmt: skip
    assert report.issue_counts == {"symlink loop": 1, "duplicate folder": 1}
    assert any("sa_000000/back: symbolic link loop: it leads back to" in m for m in report.issues)
    assert any("also_sa_000001: the same folder as" in m for m in report.issues)
    assert sorted(records_of(tmp_path / "data", "sa1b")) == sorted(truth)


def test_symlink_loop_under_raise_is_refused(tmp_path, rng):
    root = tmp_path / "src"
    fake.make_folder_dataset(root, rng, n=2, many=False)
    os.symlink("../images", root / "images" / "again")
    config = {"dataset": "loop", "format": "folder", "task_id": 1, "source_dir": str(root),
              "on_error": "raise", "options": {**fake.FOLDER_OPTIONS,
                                               "image_globs": ["**/*.png"]}}  # fmt: skip
    with pytest.raises(DataError, match=r"images/again: symbolic link loop"):
        builder.prepare(config, tmp_path / "data", progress=False)
    report = builder.prepare({**config, "on_error": "skip"}, tmp_path / "data", progress=False)
    assert report.splits["train"]["images_written"] == 2


def test_a_second_name_of_one_image_is_read_once(tmp_path, rng):
    root = tmp_path / "src"
    fake.make_folder_dataset(root, rng, n=2, many=False)
    os.symlink("img00.png", root / "images" / "img00_link.png")
    fake.save_png(root / "masks" / "img00_link.png", np.full((4, 4), 255, np.uint8))
    report = builder.prepare(
        {"dataset": "links", "format": "folder", "task_id": 1, "source_dir": str(root),
         "options": fake.FOLDER_OPTIONS}, tmp_path / "data", progress=False)  # fmt: skip
    assert report.issue_counts == {"duplicate file": 1}
    assert "img00_link.png: the same file as" in report.issues[0]
    assert sorted(records_of(tmp_path / "data", "links")) == ["img00", "img01"]


def test_find_files_matches_glob_where_glob_is_right(tmp_path):
    """Without links or brackets in the folder names, the loop-safe walk finds exactly what
    Python's glob finds (the reference), hidden files and folders included."""
    import glob

    names = ["a.png", "b.jpg", ".hidden.png", "x/a.png", "x/y/c.png", "x/.h/d.png", "x/y/z/e.png",
             "img_1_0.png", "img_1_1.png", "img_10_0.png", "img_2_0.png", "q?.png", "n[1].png"]  # fmt: skip
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    patterns = ["*.png", "**/*.png", "x/*/*.png", "**", "x/**/c.png", "img_1_*.png",
                "img_[12]_*.png", "*_?_0.png", ".*", "x/y", "q[?].png", "n[[]1].png", "*/y/*"]  # fmt: skip
    listings: dict = {}
    for pattern in patterns:
        expected = sorted(
            tmp_path / p
            for p in glob.glob(pattern, root_dir=tmp_path, recursive=True)
            if (tmp_path / p).is_file()
        )
        assert common.find_files(tmp_path, [pattern], listings=listings) == expected, pattern


def test_two_images_with_one_id_keep_the_first_and_report_the_second(tmp_path, rng):
    """`a.png` and `a.jpg` are both image `a`: before, the second was dropped silently."""
    root = tmp_path / "src"
    truth = fake.make_folder_dataset(root, rng, n=2, many=False)
    Image.fromarray(fake.random_image(rng, H, W)).save(root / "images" / "img00.jpg")
    report = builder.prepare(
        {"dataset": "ids", "format": "folder", "task_id": 1, "source_dir": str(root),
         "options": fake.FOLDER_OPTIONS}, tmp_path / "data", progress=False)  # fmt: skip
    assert report.issue_counts == {"duplicate image id": 1}
    assert "img00.jpg: image id 'img00' is taken by" in report.issues[0]
    records = records_of(tmp_path / "data", "ids")
    assert sorted(records) == sorted(truth)
    np.testing.assert_array_equal(sources.decode_masks(records["img00"]), truth["img00"][1])


@pytest.mark.parametrize(
    "options,error,expect",
    [
        ({"mask_globs": ["*.png"]}, ValueError, "options.mask_globs: pattern '*.png' has no {stem}"),
        ({"mask_dir": "gt"}, FileNotFoundError, "mask file folder does not exist (options.mask_dir='gt')"),
    ],
    ids=["mask glob without stem", "mask folder missing"],
)  # fmt: skip
def test_mask_options_that_cannot_pair_are_refused(tmp_path, rng, options, error, expect):
    root = tmp_path / "src"
    fake.make_folder_dataset(root, rng, n=1, many=False)
    config = {"dataset": "t", "format": "folder", "task_id": 1, "source_dir": str(root),
              "options": {**fake.FOLDER_OPTIONS, **options}}  # fmt: skip
    with pytest.raises(error) as info:
        builder.prepare(config, tmp_path / "data", progress=False)
    assert expect in str(info.value)
