"""A `POST /api/predict` body -> checked prompts, and masks -> the API's JSON encodings.

The request (pixels of the original image, x right, y down):

    {"image_id": "coffee", "points": [[x, y, 1], [x, y, 0]], "box": [x0, y0, x1, y1],
     "task": "none" | "salient" | "entity" | "part", "models": ["SAM", "SUM"],
     "mask_format": "png" | "rle", "max_mask_side": 1024}

Every problem is an ApiError 400 whose message names the field and shows (shortened) what
was sent.
"""

from __future__ import annotations

import base64
import io
import math
import reprlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from sum_jax.data import rle
from sum_jax.serve.errors import ApiError

# The page's task selector -> SamPredictor's `task` (None: no task prompt).
TASKS = {"none": None, "salient": "salient", "entity": "entity", "part": "part"}
# Task ids as answers name them (-1: no task prompt; 0: SUM's default, "unlabelled").
TASK_NAMES = {-1: "none", 0: "unlabelled", 1: "salient", 2: "entity", 3: "part"}
MAX_POINTS = 64  # per request: the largest point-slot count the server compiles
MASK_FORMATS = ("png", "rle")
_FIELDS = {"image_id", "points", "box", "task", "models", "mask_format", "max_mask_side"}
EMBED_FIELDS = {"image_id", "models"}
_repr = reprlib.Repr()  # what a message shows of a value: short, whatever was sent
_repr.maxlevel, _repr.maxlist, _repr.maxdict, _repr.maxstring, _repr.maxother = 3, 6, 6, 40, 40
_short = _repr.repr


def check_fields(body: Any, fields: set[str]) -> dict:
    """ApiError 400 unless `body` is a JSON object whose keys are all in `fields`."""
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - fields)
    if unknown:
        raise ApiError(400, f"unknown field(s) {_short(unknown)}; the fields are {sorted(fields)}")
    return body


def parse_image_id(body: dict) -> str:
    image_id = body.get("image_id")
    if image_id is None:
        raise ApiError(
            400, "image_id (a string from GET /api/images or POST /api/embed) is missing"
        )
    if not isinstance(image_id, str) or not image_id:
        raise ApiError(
            400,
            "image_id must be a non-empty string (from GET /api/images or POST /api/embed), "
            f"got {_short(image_id)} ({type(image_id).__name__})",
        )
    return image_id


def parse_models(value: Any) -> list[str] | None:
    """The `models` field: None (every model) or a non-empty list of distinct names."""
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(m, str) for m in value)
        or len(set(value)) != len(value)
    ):
        raise ApiError(
            400, f'models must be a non-empty list of distinct model names (["SUM"]), got '
            f"{_short(value)}",
        )  # fmt: skip
    return value


@dataclass(frozen=True)
class Prompts:
    """One prediction's prompts: `points [N, 2]` (x, y), `labels [N]` (1 or 0), `box [4]`."""

    image_id: str
    points: np.ndarray | None
    labels: np.ndarray | None
    box: np.ndarray | None
    task: str  # a key of TASKS
    models: list[str] | None  # None: every model
    mask_format: str
    max_mask_side: int | None = None  # masks of at most this many px per side; None: full

    @property
    def multimask(self) -> bool:
        """SAM's rule: one click alone is ambiguous, so three candidates; more prompts, one."""
        return self.box is None and self.points is not None and len(self.points) == 1


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"{field} must be a finite number, got {_short(value)}")
    return float(value)


def parse_prompts(body: Any) -> Prompts:
    """Checks a decoded JSON body (types, labels, box order, task, format)."""
    body = check_fields(body, _FIELDS)
    image_id = parse_image_id(body)

    points = labels = None
    raw_points = body.get("points")
    raw_points = [] if raw_points is None else raw_points
    if not isinstance(raw_points, list) or len(raw_points) > MAX_POINTS:
        raise ApiError(
            400, f"points must be a list of at most {MAX_POINTS} [x, y, label] triples, got "
            f"{_short(raw_points)}",
        )  # fmt: skip
    if raw_points:
        rows = []
        for i, p in enumerate(raw_points):
            if not isinstance(p, list) or len(p) != 3:
                raise ApiError(400, f"points[{i}] must be [x, y, label], got {_short(p)}")
            x, y = _number(p[0], f"points[{i}][0]"), _number(p[1], f"points[{i}][1]")
            if p[2] not in (0, 1) or isinstance(p[2], bool):
                raise ApiError(400, f"points[{i}][2] (label) must be 1 (positive) or 0 (negative)")
            rows.append((x, y, int(p[2])))
        points = np.array([r[:2] for r in rows], np.float64)
        labels = np.array([r[2] for r in rows], np.int32)

    box = None
    if body.get("box") is not None:
        b = body["box"]
        if not isinstance(b, list) or len(b) != 4:
            raise ApiError(400, f"box must be [x0, y0, x1, y1], got {_short(b)}")
        box = np.array([_number(v, f"box[{i}]") for i, v in enumerate(b)], np.float64)
        if box[2] < box[0] or box[3] < box[1]:
            raise ApiError(400, f"box must have x0 <= x1 and y0 <= y1, got {b}")
    if points is None and box is None:
        raise ApiError(400, "give at least one point or a box")

    task = body.get("task", "none")
    if not isinstance(task, str) or task not in TASKS:
        raise ApiError(400, f"task must be one of {list(TASKS)}, got {_short(task)}")
    models = parse_models(body.get("models"))
    mask_format = body.get("mask_format", "png")
    if not isinstance(mask_format, str) or mask_format not in MASK_FORMATS:
        raise ApiError(
            400, f"mask_format must be one of {list(MASK_FORMATS)}, got {_short(mask_format)}"
        )
    side = body.get("max_mask_side")
    if side is not None and (isinstance(side, bool) or not isinstance(side, int) or side < 1):
        raise ApiError(
            400, "max_mask_side must be a whole number of pixels, at least 1 (or null for "
            f"masks of the image's size), got {_short(side)}",
        )  # fmt: skip
    return Prompts(image_id, points, labels, box, task, models, mask_format, side)


def check_on_image(prompts: Prompts, width: int, height: int) -> None:
    """ApiError 400 unless every point and the box lie on the `width x height` image
    (0 <= x <= width, 0 <= y <= height, as SamPredictor accepts)."""
    points, box = prompts.points, prompts.box
    if points is not None:
        for i, (x, y) in enumerate(points):
            if not (0 <= x <= width and 0 <= y <= height):
                raise ApiError(
                    400,
                    f"points[{i}] = ({x:g}, {y:g}) is outside the image "
                    f"({width}x{height} px; x in 0..{width}, y in 0..{height})",
                )
    if box is not None and not (
        0 <= box[0] and 0 <= box[1] and box[2] <= width and box[3] <= height
    ):
        raise ApiError(400, f"box {box.tolist()} is outside the image ({width}x{height} px)")


def encode_mask(mask: np.ndarray, mask_format: str) -> dict[str, Any]:
    """bool `[H, W]` -> `{"png": base64 of a 1-bit PNG}` or `{"rle": {"size": [H, W],
    "counts": COCO compressed RLE}}` (pycocotools' format: runs down the columns)."""
    if mask_format == "rle":
        return {"rle": {"size": list(mask.shape), "counts": rle.encode(mask).decode("ascii")}}
    out = io.BytesIO()
    Image.fromarray(np.asarray(mask, bool)).save(out, format="PNG")
    return {"png": base64.b64encode(out.getvalue()).decode("ascii")}


def decode_mask(encoded: dict[str, Any]) -> np.ndarray:
    """The inverse of `encode_mask`: bool `[H, W]` (for clients written in Python, and tests)."""
    if "rle" in encoded:
        h, w = encoded["rle"]["size"]
        return rle.decode(encoded["rle"]["counts"], h, w)
    with Image.open(io.BytesIO(base64.b64decode(encoded["png"]))) as im:
        return np.asarray(im.convert("L")) > 127
