"""Known datasets: their source format, task id, splits and default folder layout.

The task id follows the paper (§3.2.4, §4.1, App. C): 0 unlabelled (SA-1B), 1 salient object
(HQSeg-44K's parts, COIFT, HRSOD, BIG, VOCEVAL), 2 entity (EntitySeg), 3 part (Fashionpedia,
PACO, LVIS, Multi-Human Parsing, EasyPortrait; App. C.2 lists LVIS among the part sets).
`PAPER_EVAL_SETS` lists the paper's 14 evaluation sets by task (§4.1, App. C.2, the rows of
its Tables 5 and 14-18), with the image counts the paper gives in `paper_images` /
`paper_first_images`. Every
field can be overridden in the prepare config; a name not listed here is a custom dataset whose
format and task id the config must give.

`splits` maps a TFDS split name to a *tag* that replaces `{split}` in the layout's paths, so one
prepare call writes e.g. DIS5K's `DIS-TR` as `train` and `DIS-VD` as `validation`. The layouts
are those of the public releases (HQ-SAM's HQSeg-44K archive for the salient sets); check them
with `python -m sum_jax.prepare_data ... --config.dry_run` before a long run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sum_jax.data.records import TASK_ENTITY, TASK_PART, TASK_SALIENT, TASK_UNLABELLED


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to prepare one dataset."""

    name: str
    format: str
    task_id: int
    splits: dict[str, str] = dataclasses.field(default_factory=lambda: {"train": ""})
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""
    # Images per split in the paper's evaluation (§4.1, App. C.2): `paper_images` exact,
    # `paper_first_images` the sets of which the paper takes the first N images (the
    # prepared split must hold at least N). Preparation warns when a split differs.
    paper_images: dict[str, int] = dataclasses.field(default_factory=dict)
    paper_first_images: dict[str, int] = dataclasses.field(default_factory=dict)


_VAL = {"validation": ""}
# Fashionpedia's garment-part categories (hood, collar, lapel, epaulette, sleeve, pocket,
# neckline, buckle, zipper, applique, bead, bow, flower, fringe, ribbon, rivet, ruffle,
# sequin, tassel): ids 27-45 of its 46; 0-26 are whole garments and accessories.
FASHIONPEDIA_PART_IDS = tuple(range(27, 46))
_CASCADE_PSP = {"image_globs": ["*_im.jpg", "*_im.png"], "mask_globs": ["{stem}_gt.png"]}

KNOWN: dict[str, DatasetSpec] = {
    s.name: s
    for s in [
        # HQSeg-44K (training, salient objects) and the salient-object evaluation sets.
        DatasetSpec(
            "dis5k",
            "folder",
            TASK_SALIENT,
            {"train": "DIS-TR", "validation": "DIS-VD"},
            {"image_dir": "{split}/im", "mask_dir": "{split}/gt"},
            "DIS5K (HQSeg-44K part; DIS-VD eval)",
        ),
        DatasetSpec(
            "thinobject5k",
            "folder",
            TASK_SALIENT,
            {"train": "train", "validation": "test"},
            {"image_dir": "images_{split}", "mask_dir": "masks_{split}"},
            "ThinObject5K",
        ),
        DatasetSpec(
            "fss1000",
            "folder",
            TASK_SALIENT,
            options={"image_globs": ["*/*.jpg"]},
            description="FSS-1000: <class>/<n>.jpg next to <class>/<n>.png",
        ),
        DatasetSpec(
            "ecssd",
            "folder",
            TASK_SALIENT,
            options={"image_dir": "images", "mask_dir": "ground_truth_mask"},
            description="ECSSD",
        ),
        DatasetSpec("msra10k", "folder", TASK_SALIENT, description="MSRA-10K: x.jpg next to x.png"),
        DatasetSpec(
            "dut_omron",
            "folder",
            TASK_SALIENT,
            options={"image_dir": "DUT-OMRON-image", "mask_dir": "pixelwiseGT-new-PNG"},
            description="DUT-OMRON",
        ),
        DatasetSpec(
            "coift",
            "folder",
            TASK_SALIENT,
            _VAL,
            {"image_dir": "images", "mask_dir": "masks"},
            "COIFT",
        ),
        DatasetSpec(
            "hrsod",
            "folder",
            TASK_SALIENT,
            _VAL,
            {"image_dir": "images", "mask_dir": "masks_max255"},
            "HR-SOD",
        ),
        DatasetSpec("big", "folder", TASK_SALIENT, _VAL, _CASCADE_PSP, "BIG (CascadePSP layout)"),
        DatasetSpec(
            "voceval", "folder", TASK_SALIENT, _VAL, _CASCADE_PSP, "VOCEVAL (CascadePSP layout)"
        ),
        # Entity segmentation.
        DatasetSpec(
            "entityseg",
            "coco",
            TASK_ENTITY,
            {"train": "train", "validation": "val"},
            {"annotation_file": "entityseg_{split}.json", "image_dir": "images"},
            "EntitySeg",
        ),
        # The paper's three EntitySeg validation sets ("Entityseg 0/1/2" in its tables): the
        # release's three parts, each a COCO JSON beside its image folder
        # (entityseg_val_01.json + entity_01_11580/, ...; docs/data.md).
        *[
            DatasetSpec(
                f"entityseg_{k}",
                "coco",
                TASK_ENTITY,
                _VAL,
                {
                    "annotation_file": f"entityseg_val_0{k + 1}.json",
                    "image_dir": f"entity_0{k + 1}_*",
                },
                f"EntitySeg validation set {k} (part 0{k + 1} of the release)",
                paper_images={"validation": count},
            )
            for k, count in enumerate((454, 459, 401))
        ],
        # Part segmentation.
        DatasetSpec(
            "fashionpedia",
            "coco",
            TASK_PART,
            {"train": "train", "validation": "val"},
            {"annotation_file": "instances_attributes_{split}2020.json", "image_dir": "{split}"},
            "Fashionpedia main set: garments and their parts (category_ids selects a subset)",
            paper_images={"validation": 1148},
        ),
        DatasetSpec(
            "fashionpedia_subpart",
            "coco",
            TASK_PART,
            _VAL,
            {
                "annotation_file": "instances_attributes_val2020.json",
                "image_dir": "val",
                "category_ids": list(FASHIONPEDIA_PART_IDS),
            },
            "Fashionpedia fine-grained subpart set: the garment-part categories only",
            paper_images={"validation": 861},
        ),
        DatasetSpec(
            "paco",
            "coco",
            TASK_PART,
            {"train": "train", "validation": "val"},
            {"annotation_file": "annotations/paco_lvis_v1_{split}.json", "image_dir": ""},
            "PACO-LVIS",
            paper_first_images={"validation": 1000},
        ),
        DatasetSpec(
            "lvis",
            "coco",
            TASK_PART,
            {"train": "train", "validation": "val"},
            {"annotation_file": "lvis_v1_{split}.json", "image_dir": ""},
            "LVIS v1",
        ),
        DatasetSpec(
            "mhp",
            "label_map",
            TASK_PART,
            {"train": "train", "validation": "val"},
            {
                "image_dir": "{split}/images",
                "label_dir": "{split}/parsing_annos",
                "label_globs": ["{stem}_*.png"],
            },
            "Multi-Human Parsing v2: one part map per person",
            paper_first_images={"validation": 1000},
        ),
        DatasetSpec(
            "easyportrait",
            "label_map",
            TASK_PART,
            {"train": "train", "validation": "val"},
            {"image_dir": "images/{split}", "label_dir": "annotations/{split}"},
            "EasyPortrait",
            paper_first_images={"validation": 1000},
        ),
        # Unlabelled.
        DatasetSpec("sa1b", "sa1b", TASK_UNLABELLED, description="SA-1B images (SA-250K subset)"),
    ]
}


# Evaluation sets made from another dataset's images: the family they belong to.
_DERIVED = {
    "fashionpedia_subpart": "fashionpedia",
    "entityseg_0": "entityseg",
    "entityseg_1": "entityseg",
    "entityseg_2": "entityseg",
}


def family(name: str) -> str:
    """The dataset a set's images come from (`fashionpedia_subpart` -> `fashionpedia`,
    `entityseg_1` -> `entityseg`, `mhp:validation@1000` -> `mhp`)."""
    name = name.partition(":")[0].partition("@")[0].lower()
    return _DERIVED.get(name, name)


def lookup(name: str) -> DatasetSpec | None:
    """The registry entry for a dataset name (case-insensitive), or None for a custom one."""
    return KNOWN.get(name.lower())


# The paper's 14 evaluation sets (§4.1, App. C.2; the rows of Tables 5 and 14-18), as
# `name:split[@N]` (`@N`: the first N images) per task, in the tables' order.
PAPER_EVAL_SETS: dict[int, tuple[str, ...]] = {
    TASK_SALIENT: (
        "coift:validation",
        "dis5k:validation",
        "hrsod:validation",
        "thinobject5k:validation",
        "big:validation",
        "voceval:validation",
    ),
    TASK_ENTITY: (
        "entityseg_0:validation",
        "entityseg_1:validation",
        "entityseg_2:validation",
    ),
    TASK_PART: (
        "mhp:validation@1000",
        "easyportrait:validation@1000",
        "fashionpedia:validation",
        "fashionpedia_subpart:validation",
        "paco:validation@1000",
    ),
}


def paper_eval_refs() -> list[str]:
    """The 14 sets of `PAPER_EVAL_SETS` in order, as `configs/eval.py`'s `eval_sets` lists."""
    return [ref for refs in PAPER_EVAL_SETS.values() for ref in refs]


def paper_dataset_names() -> dict[str, int]:
    """`{dataset name: task id}` of the paper's 14 sets."""
    return {ref.partition(":")[0]: task for task, refs in PAPER_EVAL_SETS.items() for ref in refs}


def count_warning(name: str, split: str, prepared: int) -> str | None:
    """One line when a prepared split's image count differs from the paper's, else None."""
    spec = lookup(name)
    if spec is None:
        return None
    if split in spec.paper_images and prepared != spec.paper_images[split]:
        return (
            f"{name}:{split}: {prepared} images prepared, the paper evaluates "
            f"{spec.paper_images[split]} (§4.1, App. C.2): check the source folder and options"
        )
    if split in spec.paper_first_images and prepared < spec.paper_first_images[split]:
        return (
            f"{name}:{split}: {prepared} images prepared, the paper evaluates the first "
            f"{spec.paper_first_images[split]} (§4.1, App. C.2): check the source folder"
        )
    return None
