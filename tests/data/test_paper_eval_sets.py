"""The paper's 14 evaluation sets (issue 11 item 10): registry entries, the default eval
config, preparation from fabricated folders in EntitySeg's and Fashionpedia's released
layouts with the count warning, and the reports' coverage of the 14 sets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from configs import eval as eval_config
from sum_jax.data import builder, registry, rle, sources
from sum_jax.evaluate import reports
from tests.data import fake_datasets as fake

# §4.1 / App. C.2: the sets per task, in the order of the paper's Tables 5 and 14-18.
PAPER = {
    1: ["coift", "dis5k", "hrsod", "thinobject5k", "big", "voceval"],
    2: ["entityseg_0", "entityseg_1", "entityseg_2"],
    3: ["mhp", "easyportrait", "fashionpedia", "fashionpedia_subpart", "paco"],
}


def test_fourteen_sets_one_entry_each_with_the_papers_counts():
    refs = registry.paper_eval_refs()
    assert len(refs) == 14 and eval_config.get_config().eval_sets == ",".join(refs)
    assert {t: [r.split(":")[0] for r in rs] for t, rs in registry.PAPER_EVAL_SETS.items()} == (
        PAPER
    )
    for task, names in PAPER.items():
        for name in names:
            assert registry.KNOWN[name].task_id == task, name
    counts = {n: registry.KNOWN[n].paper_images.get("validation") for n in registry.KNOWN}
    assert counts["entityseg_0"] == 454 and counts["entityseg_1"] == 459
    assert counts["entityseg_2"] == 401
    assert counts["fashionpedia"] == 1148 and counts["fashionpedia_subpart"] == 861
    for name in ("mhp", "easyportrait", "paco"):
        assert registry.KNOWN[name].paper_first_images == {"validation": 1000}
        assert f"{name}:validation@1000" in refs


def coco_masks(rng, h, w, k):
    masks = fake.random_masks(rng, h, w, k)
    return masks, [{"size": [h, w], "counts": rle.encode(m).decode()} for m in masks]


def make_entityseg_release(root: Path, rng, counts=(3, 2, 2)):
    """EntitySeg's v1.0 layout: `entityseg_val_0{k}.json` (COCO RLE, class-agnostic
    `category_id`, `category_id_ori`, image `img_source`/URL fields) beside image folders
    `entity_0{k}_<n>/` holding the train and validation images of part k."""
    truth = {}
    for part, (n, folder) in enumerate(zip(counts, ("11580", "11598", "10049")), start=1):
        images, annotations = [], []
        for i in range(n):
            h, w = int(rng.integers(40, 70)), int(rng.integers(40, 70))
            image = fake.random_image(rng, h, w)
            name = f"sa_{part}{i:03d}.jpg"
            fake.save_png(root / f"entity_0{part}_{folder}" / name.replace(".jpg", ".png"), image)
            image_id = 1000 * part + i
            images.append(
                {
                    "id": image_id,
                    "file_name": name.replace(".jpg", ".png"),
                    "height": h,
                    "width": w,
                    "img_source": "ADE20K",
                    "url_flag": "0",
                    "url_dataset": "",
                    "url_image": "",
                }
            )
            masks, segs = coco_masks(rng, h, w, 3)
            for k, seg in enumerate(segs):
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "segmentation": seg,
                        "category_id": 1,
                        "category_id_ori": f"thing_{k}",
                        "bbox": [0, 0, w, h],
                        "area": int(masks[k].sum()),
                    }
                )
            truth[(part, str(image_id))] = (image, masks)
        (root / f"entityseg_val_0{part}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": []})
        )
    return truth


def test_three_entityseg_validation_sets_from_the_release_layout(tmp_path, rng, caplog):
    truth = make_entityseg_release(tmp_path / "src", rng)
    for k in range(3):
        with caplog.at_level(logging.WARNING, logger="sum_jax"):
            report = builder.prepare(
                {"dataset": f"entityseg_{k}", "source_dir": str(tmp_path / "src")},
                tmp_path / "data",
                progress=False,
            )
        src = sources.open_source(tmp_path / "data", f"entityseg_{k}", "validation")
        records = [sources.normalize_record(src[i]) for i in range(len(src))]
        expected = {i: v for (p, i), v in truth.items() if p == k + 1}
        assert [r["image_id"] for r in records] == list(expected)
        for r in records:
            assert r["task_id"] == 2 and r["dataset"] == f"entityseg_{k}"
            np.testing.assert_array_equal(sources.decode_masks(r), expected[r["image_id"]][1])
        # One warning line naming the set and both counts.
        paper = (454, 459, 401)[k]
        line = (
            f"entityseg_{k}:validation: {len(expected)} images prepared, the paper evaluates "
            f"{paper} (§4.1, App. C.2): check the source folder and options"
        )
        assert report.warnings == [line]
        assert f"WARNING: entityseg_{k}:validation" in str(report)
        lines = [r.getMessage() for r in caplog.records if f"entityseg_{k}:" in r.getMessage()]
        assert len(lines) == 1
        caplog.clear()


def make_fashionpedia_release(root: Path, rng, n=4):
    """Fashionpedia's layout: `instances_attributes_val2020.json` (COCO with 46 categories,
    `attributes`, per-annotation `attribute_ids`, polygons or RLE) and the images in `val/`.
    Image i has one garment (category 1) and, for i > 0, garment parts (27 sleeve, 32
    neckline); image 0 has no part."""
    categories = [{"id": c, "name": f"c{c}", "supercategory": "x"} for c in range(46)]
    images, annotations, truth = [], [], {}
    for i in range(n):
        h, w = int(rng.integers(40, 70)), int(rng.integers(40, 70))
        image = fake.random_image(rng, h, w)
        fake.save_png(root / "val" / f"{i}.png", image)
        images.append({"id": i, "file_name": f"{i}.png", "height": h, "width": w})
        cats = [1] if i == 0 else [1, 27, 32]
        masks, segs = coco_masks(rng, h, w, len(cats))
        for cat, seg in zip(cats, segs):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "segmentation": seg,
                    "category_id": cat,
                    "attribute_ids": [115, 136],
                    "iscrowd": 0,
                    "bbox": [0, 0, w, h],
                }
            )
        truth[str(i)] = (masks, cats)
    (root / "instances_attributes_val2020.json").write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": categories,
                "attributes": [{"id": 115, "name": "a"}, {"id": 136, "name": "b"}],
            }
        )
    )
    return truth


def test_fashionpedia_main_and_subpart_sets(tmp_path, rng):
    truth = make_fashionpedia_release(tmp_path / "src", rng)
    main = builder.prepare(
        {
            "dataset": "fashionpedia",
            "source_dir": str(tmp_path / "src"),
            "splits": "validation:val",
        },
        tmp_path / "data",
        progress=False,
    )
    sub = builder.prepare(
        {"dataset": "fashionpedia_subpart", "source_dir": str(tmp_path / "src")},
        tmp_path / "data",
        progress=False,
    )

    def read(name):
        src = sources.open_source(tmp_path / "data", name, "validation")
        return [sources.normalize_record(src[i]) for i in range(len(src))]

    main_records, sub_records = read("fashionpedia"), read("fashionpedia_subpart")
    assert [r["image_id"] for r in main_records] == ["0", "1", "2", "3"]
    for r in main_records:
        assert r["mask_labels"] == truth[r["image_id"]][1] and r["task_id"] == 3
    # The subpart set: only garment-part masks, and only images that have one.
    assert [r["image_id"] for r in sub_records] == ["1", "2", "3"]
    for r in sub_records:
        masks = truth[r["image_id"]][0]
        assert r["mask_labels"] == [27, 32]
        np.testing.assert_array_equal(sources.decode_masks(r), masks[1:])
    assert main.warnings[0].startswith("fashionpedia:validation: 4 images prepared")
    assert "the paper evaluates 1148" in main.warnings[0]
    assert sub.warnings[0].startswith("fashionpedia_subpart:validation: 3 images prepared")
    assert "861" in sub.warnings[0]


def test_first_n_sets_warn_only_below_n_and_unknown_sets_never():
    assert registry.count_warning("mhp", "validation", 1000) is None
    assert registry.count_warning("mhp", "validation", 5000) is None
    line = registry.count_warning("paco", "validation", 999)
    assert line and line.startswith("paco:validation: 999 images prepared") and "first 1000" in line
    assert registry.count_warning("entityseg_2", "validation", 401) is None
    assert registry.count_warning("my_set", "validation", 3) is None
    assert registry.count_warning("fashionpedia", "train", 3) is None


def test_reports_say_whether_the_means_are_over_the_papers_sets():
    all_sets = {n for names in PAPER.values() for n in names}
    full = reports.paper_set_coverage(all_sets)
    assert full["complete"] and all(not v["missing"] for v in full["tasks"].values())
    partial = reports.paper_set_coverage((all_sets - {"entityseg_1", "paco"}) | {"lvis"})
    assert not partial["complete"]
    assert partial["tasks"]["entity"]["missing"] == ["entityseg_1"]
    assert partial["tasks"]["part"]["missing"] == ["paco"]
    assert partial["tasks"]["other"]["extra"] == ["lvis"]
