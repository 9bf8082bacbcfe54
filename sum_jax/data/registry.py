"""Known datasets: their source format, task id, splits and default folder layout.

The task id follows the paper (§3.2.4, §4.1, App. C): 0 unlabelled (SA-1B), 1 salient object
(HQSeg-44K's parts, COIFT, HRSOD, BIG, VOCEVAL), 2 entity (EntitySeg), 3 part (Fashionpedia,
PACO, LVIS, Multi-Human Parsing, EasyPortrait; App. C.2 lists LVIS among the part sets). Every
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


_VAL = {"validation": ""}
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
        # Part segmentation.
        DatasetSpec(
            "fashionpedia",
            "coco",
            TASK_PART,
            {"train": "train", "validation": "val"},
            {"annotation_file": "instances_attributes_{split}2020.json", "image_dir": "{split}"},
            "Fashionpedia (category_ids selects e.g. the garment-part subset)",
        ),
        DatasetSpec(
            "paco",
            "coco",
            TASK_PART,
            {"train": "train", "validation": "val"},
            {"annotation_file": "annotations/paco_lvis_v1_{split}.json", "image_dir": ""},
            "PACO-LVIS",
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
        ),
        DatasetSpec(
            "easyportrait",
            "label_map",
            TASK_PART,
            {"train": "train", "validation": "val"},
            {"image_dir": "images/{split}", "label_dir": "annotations/{split}"},
            "EasyPortrait",
        ),
        # Unlabelled.
        DatasetSpec("sa1b", "sa1b", TASK_UNLABELLED, description="SA-1B images (SA-250K subset)"),
    ]
}


def lookup(name: str) -> DatasetSpec | None:
    """The registry entry for a dataset name (case-insensitive), or None for a custom one."""
    return KNOWN.get(name.lower())
