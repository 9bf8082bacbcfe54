"""The prepared-example schema, and the error policy of dataset preparation.

Every dataset, whatever its source format, is prepared into the same TFDS features:

| feature      | type              | meaning                                                      |
|--------------|-------------------|--------------------------------------------------------------|
| `image`      | bytes             | the source file's encoded bytes, unchanged (JPEG/PNG/...)    |
| `image_id`   | str               | unique within the dataset (file stem or COCO image id)       |
| `dataset`    | str               | registry name of the source dataset                          |
| `task_id`    | int32             | 0 unlabelled, 1 salient object, 2 entity, 3 part             |
| `height`     | int32             | original image height                                        |
| `width`      | int32             | original image width                                         |
| `masks`      | sequence of bytes | COCO compressed RLE counts, `height x width`, column major    |
| `mask_labels`| sequence of int32 | category / label value of each mask, -1 when none            |

Storing the untouched image bytes and lossless RLE keeps preparation pixel exact and small;
decoding and resizing happen in the loader, where the target size is known.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import tensorflow_datasets as tfds

TASK_UNLABELLED, TASK_SALIENT, TASK_ENTITY, TASK_PART = 0, 1, 2, 3
TASK_NAMES = {0: "unlabelled", 1: "salient_object", 2: "entity", 3: "part"}

OnError = Literal["skip", "raise"]


def features() -> tfds.features.FeaturesDict:
    """The TFDS features of a prepared example (bytes as object tensors: no TF needed)."""
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=(), dtype=np.object_),
            "image_id": tfds.features.Text(),
            "dataset": tfds.features.Text(),
            "task_id": tfds.features.Scalar(dtype=np.int32),
            "height": tfds.features.Scalar(dtype=np.int32),
            "width": tfds.features.Scalar(dtype=np.int32),
            "masks": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_)),
            "mask_labels": tfds.features.Sequence(tfds.features.Scalar(dtype=np.int32)),
        }
    )


@dataclasses.dataclass
class Example:
    """One image and its masks, validated, ready to be written."""

    image: bytes
    image_id: str
    height: int
    width: int
    masks: list[bytes]
    mask_labels: list[int]

    def as_features(self, dataset: str, task_id: int) -> dict:
        return {
            "image": self.image,
            "image_id": self.image_id,
            "dataset": dataset,
            "task_id": task_id,
            "height": self.height,
            "width": self.width,
            "masks": list(self.masks),
            "mask_labels": [int(v) for v in self.mask_labels],
        }


class DataError(ValueError):
    """Bad input data; the message starts with the offending file."""

    def __init__(self, path: str, message: str, kind: str = "error"):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.kind = kind


@dataclasses.dataclass
class IssueLog:
    """Collects data problems under the `skip` policy, or raises them under `raise`.

    `kind` groups problems for the end-of-run summary ("corrupt image", "empty mask", ...).
    """

    on_error: OnError = "skip"
    issues: list[DataError] = dataclasses.field(default_factory=list)

    def report(self, path: str, message: str, kind: str) -> None:
        error = DataError(path, message, kind)
        if self.on_error == "raise":
            raise error
        self.issues.append(error)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for issue in self.issues:
            out[issue.kind] = out.get(issue.kind, 0) + 1
        return out

    def summary(self, max_lines: int = 20) -> str:
        if not self.issues:
            return "no problems found"
        lines = [f"{n} x {kind}" for kind, n in sorted(self.counts().items())]
        lines += [f"  {e}" for e in self.issues[:max_lines]]
        if len(self.issues) > max_lines:
            lines.append(f"  ... and {len(self.issues) - max_lines} more")
        return "\n".join(lines)
