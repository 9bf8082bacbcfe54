"""Hostile dataset sources for `prepare_data`: COCO polygons and RLE that used to crash
pycocotools (1e300, 1e10, NaN coordinates), broken JSON entries (null entries, an image id
listed twice, annotations of unknown images or categories), near-binary masks that the
threshold turns empty, label maps of ignored values only, a symbolic-link loop, and format
options of the wrong type.

Each source folder holds one image, so the one problem leaves nothing to prepare: the default
`on_error=skip` then stops with the problem itself in the message (`raise` cases stop at it
directly). Every case prepares into its own `data_dir` under the case's folder.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.corpus import Case
from tests.data import fake_datasets as fake

PREP = "sum_jax.prepare_data"
H, W = 12, 16
BOX = fake.polygon_of_box(1, 1, 9, 7)


def coco_args(t: Path, *extra: str) -> list[str]:
    return [f"--config.data_dir={t}/data", "--config.dataset=hostile", f"--config.source_dir={t}/src",
            "--config.format=coco", "--config.task_id=2", *extra]  # fmt: skip


def folder_args(t: Path, *extra: str) -> list[str]:
    return [f"--config.data_dir={t}/data", "--config.dataset=hostile", f"--config.source_dir={t}/src",
            "--config.format=folder", "--config.task_id=1", "--config.options.image_dir=images",
            "--config.options.mask_dir=masks", "--config.options.image_globs=*.png", *extra]  # fmt: skip


def coco_source(t: Path, images: list, annotations: list, categories: list | None = None) -> None:
    """`src/annotations.json` with these entries, and `src/images/a.png`, `b.png` (HxW)."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        fake.save_png(t / "src" / "images" / f"{name}.png", fake.random_image(rng, H, W))
    coco = {"images": images, "annotations": annotations}
    if categories is not None:
        coco["categories"] = categories
    # Python's json writes NaN and reads it back, as real exporters' files may hold it.
    (t / "src" / "annotations.json").write_text(json.dumps(coco))


IMAGE_A = {"id": 1, "file_name": "a.png", "height": H, "width": W}


def one_annotation(segmentation) -> Callable[[object, Path], None]:
    def prepare(w, t: Path) -> None:
        ann = {"id": 7, "image_id": 1, "category_id": 1, "segmentation": segmentation}
        coco_source(t, [IMAGE_A], [ann])

    return prepare


def null_annotation(w, t: Path) -> None:
    coco_source(t, [IMAGE_A], [None])


def null_image(w, t: Path) -> None:
    ann = {"id": 7, "image_id": 1, "segmentation": [BOX]}
    coco_source(t, [None, IMAGE_A], [ann])


def duplicate_image_id(w, t: Path) -> None:
    anns = [{"id": 7, "image_id": 1, "segmentation": [BOX]},
            {"id": 8, "image_id": 1, "segmentation": [BOX]}]  # fmt: skip
    coco_source(t, [IMAGE_A, {**IMAGE_A, "file_name": "b.png"}], anns)


def unknown_image(w, t: Path) -> None:
    coco_source(t, [IMAGE_A], [{"id": 7, "image_id": 99, "segmentation": [BOX]}])


def unknown_category(w, t: Path) -> None:
    ann = {"id": 7, "image_id": 1, "category_id": 12, "segmentation": [BOX]}
    coco_source(t, [IMAGE_A], [ann], categories=[{"id": 1, "name": "cat"}])


def deeply_nested(w, t: Path) -> None:
    coco_source(t, [IMAGE_A], [])
    (t / "src" / "annotations.json").write_text('{"images": [], "annotations": ' + "[" * 100_000)


def mask_of(*values: int):
    """A folder source whose one mask holds these values in bands (no 255)."""

    def prepare(w, t: Path) -> None:
        rng = np.random.default_rng(0)
        fake.save_png(t / "src" / "images" / "a.png", fake.random_image(rng, H, W))
        mask = np.zeros((H, W), np.uint8)
        for k, v in enumerate(values):
            mask[k * 3 : k * 3 + 3] = v
        fake.save_png(t / "src" / "masks" / "a.png", mask)

    return prepare


def ignored_labels_only(w, t: Path) -> None:
    rng = np.random.default_rng(0)
    fake.save_png(t / "src" / "images" / "a.png", fake.random_image(rng, H, W))
    label_map = np.zeros((H, W), np.uint8)
    label_map[:4] = 255
    fake.save_png(t / "src" / "labels" / "a.png", label_map)


def annotation_folder(w, t: Path) -> None:
    coco_source(t, [IMAGE_A], [])
    (t / "src" / "annotations.json").unlink()
    (t / "src" / "annotations.json").mkdir()


def symlink_loop(w, t: Path) -> None:
    mask_of(0, 255)(w, t)
    os.symlink(".", t / "src" / "images" / "up")


CASES = [
    Case("prepare: coco polygon at 1e300", PREP, lambda w, t: coco_args(t),
         ("annotations.json", "annotation id 7", "polygon 0 point 0",
          "more than one image size outside the 12x16 image"),
         one_annotation([[1e300, 1.0, 5.0, 1.0, 5.0, 5.0]])),
    Case("prepare: coco polygon at 1e10", PREP, lambda w, t: coco_args(t),
         ("annotations.json", "annotation id 7", "polygon 0 point 1", "outside", "x must lie in"),
         one_annotation([[0.0, 0.0, 1e10, 0.0, 1e10, 1e10]])),
    Case("prepare: coco polygon with NaN", PREP, lambda w, t: coco_args(t),
         ("annotations.json", "annotation id 7", "(nan, 4.0)", "finite"),
         one_annotation([[0.0, 0.0, math.nan, 4.0, 5.0, 5.0]])),
    Case("prepare: coco polygon of strings", PREP, lambda w, t: coco_args(t),
         ("annotation id 7", "polygon 0 holds str '1'", "not a number"),
         one_annotation([["1", "1", "9", "1", "9", "7"]])),
    Case("prepare: coco RLE size a string", PREP, lambda w, t: coco_args(t),
         ("annotation id 7", "RLE 'size' is str '12x16'", "[height, width]"),
         one_annotation({"size": "12x16", "counts": [H * W]})),
    Case("prepare: coco RLE counts a number", PREP, lambda w, t: coco_args(t),
         ("annotation id 7", "RLE 'counts' is int 192"),
         one_annotation({"size": [H, W], "counts": H * W})),
    Case("prepare: coco uncompressed RLE with a negative run", PREP, lambda w, t: coco_args(t),
         ("annotation id 7", "uncompressed RLE run 1 is int -8", "non-negative"),
         one_annotation({"size": [H, W], "counts": [100, -8, 100]})),
    Case("prepare: coco JSON nested 100,000 deep", PREP, lambda w, t: coco_args(t),
         ("annotations.json", "nested too deeply"), deeply_nested),
    Case("prepare: coco null annotation", PREP,
         lambda w, t: coco_args(t, "--config.on_error=raise"),
         ("annotations.json", "annotations[0] is null", "not an object"), null_annotation),
    Case("prepare: coco null image entry", PREP,
         lambda w, t: coco_args(t, "--config.on_error=raise"),
         ("annotations.json", "images[0] is null"), null_image),
    Case("prepare: coco image id listed twice", PREP, lambda w, t: coco_args(t),
         ("annotations.json", "image id 1 is listed 2 times", "'a.png'", "'b.png'",
          "give each image its own id"), duplicate_image_id),
    Case("prepare: coco annotation of an unknown image", PREP, lambda w, t: coco_args(t),
         ("annotations.json", "annotations[0] (id 7)", "'image_id' 99",
          "not the id of any entry of 'images'"), unknown_image),
    Case("prepare: coco category missing from categories", PREP, lambda w, t: coco_args(t),
         ("annotations.json", "annotations[0] (id 7)", "'category_id' 12",
          "not the id of any entry of 'categories'"), unknown_category),
    Case("prepare: coco category_ids not integers", PREP,
         lambda w, t: coco_args(t, "--config.options.category_ids=shirt,27"),
         ("options.category_ids=", "shirt", "integers"), unknown_category),
    Case("prepare: mask valued 0/1/2", PREP, lambda w, t: folder_args(t),
         ("masks/a.png", "values found {0, 1, 2}", "largest value is 2", "values >= 128",
          "--config.options.mask_threshold=1", "label_map"), mask_of(0, 1, 2)),
    Case("prepare: mask valued 0/100", PREP, lambda w, t: folder_args(t),
         ("masks/a.png", "values found {0, 100}", "an 8-bit mask", "values >= 128",
          "mask_threshold=1"), mask_of(0, 100)),
    Case("prepare: mask valued 0/127", PREP, lambda w, t: folder_args(t),
         ("masks/a.png", "values found {0, 127}", "values >= 128"), mask_of(0, 127)),
    Case("prepare: mask_threshold above every value", PREP,
         lambda w, t: folder_args(t, "--config.options.mask_threshold=200"),
         ("masks/a.png", "values found {0, 127}", "mask_threshold=200 keeps values >= 200"),
         mask_of(0, 127)),
    Case("prepare: mask_threshold not a number", PREP,
         lambda w, t: folder_args(t, "--config.options.mask_threshold=half"),
         ("options.mask_threshold='half'", "'auto' or a number"), mask_of(0, 255)),
    Case("prepare: label maps of ignored labels only", PREP,
         lambda w, t: [f"--config.data_dir={t}/data", "--config.dataset=hostile",
                       f"--config.source_dir={t}/src", "--config.format=label_map",
                       "--config.task_id=3", "--config.options.image_dir=images",
                       "--config.options.label_dir=labels", "--config.options.image_globs=*.png"],
         ("a.png) hold only the values [0, 255]", "ignore_labels=[0, 255]",
          "--config.options.ignore_labels"), ignored_labels_only),
    Case("prepare: coco annotation_file is a folder", PREP, lambda w, t: coco_args(t),
         ("annotations.json", "is a folder", "options.annotation_file"), annotation_folder),
    Case("prepare: mask glob without {stem}", PREP,
         lambda w, t: folder_args(t, "--config.options.mask_globs=*.png"),
         ("options.mask_globs", "'*.png' has no {stem}", "every image"), mask_of(0, 255)),
    Case("prepare: mask folder missing", PREP,
         lambda w, t: folder_args(t, "--config.options.mask_dir=gt"),
         ("gt", "mask file folder does not exist", "options.mask_dir='gt'"), mask_of(0, 255)),
    Case("prepare: symlink loop under on_error=raise", PREP,
         lambda w, t: folder_args(t, "--config.on_error=raise",
                                  "--config.options.image_globs=**/*.png"),
         ("images/up", "symbolic link loop", "leads back to"), symlink_loop),
]  # fmt: skip
