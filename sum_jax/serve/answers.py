"""The shape of every JSON answer of the web API, declared once (docs/serve.md shows them).

`app.py` builds each answer as one of these `TypedDict`s, and the API tests check every
answer they receive against its declaration (`conforms`), so a field renamed, dropped or
given another type on one side fails a test instead of breaking the page or a client.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, TypedDict, Union

# Masks -------------------------------------------------------------------------------------


class PngMask(TypedDict):
    png: str  # base64 of a 1-bit PNG, white = mask


class Rle(TypedDict):
    size: list[int]  # [H, W]
    counts: str  # COCO compressed RLE (runs down the columns)


class RleMask(TypedDict):
    rle: Rle


EncodedMask = PngMask | RleMask


# Answers -----------------------------------------------------------------------------------


class ErrorAnswer(TypedDict):
    """Every 4xx and 500 answer."""

    error: str


class ModelInfo(TypedDict):
    name: str
    img_size: int
    encoder_embed_dim: int
    num_tasks: int


class LimitsInfo(TypedDict):
    max_side: int
    max_bytes: int


class InfoAnswer(TypedDict):
    """`GET /api/info`."""

    models: list[ModelInfo]
    banner: str | None
    tasks: list[str]
    mask_formats: list[str]
    display_mask_side: int  # the page's `max_mask_side`: the size its clicks are warm for
    limits: LimitsInfo


class StatusAnswer(TypedDict):
    """`GET /api/status`: the start-up warm-up."""

    ready: bool
    done: int
    total: int
    step: str
    seconds: float
    error: str | None


class ImageEntry(TypedDict):
    id: str
    name: str
    width: int
    height: int
    source: Literal["sample", "folder", "upload"]


class ImagesAnswer(TypedDict):
    """`GET /api/images`."""

    images: list[ImageEntry]


class EmbedTime(TypedDict):
    embed_ms: float  # 0 for an embedding that was cached


class EmbedAnswer(TypedDict):
    """`POST /api/embed`."""

    image_id: str
    name: str
    width: int
    height: int
    models: dict[str, EmbedTime]
    ms: float


class Candidate(TypedDict):
    mask: EncodedMask
    score: float


class _ModelAnswer(TypedDict):
    mask: EncodedMask
    score: float
    best: int
    ms: float  # decoder and mask encoding
    embed_ms: float
    task_used: Literal["none", "unlabelled", "salient", "entity", "part"]


class ModelAnswer(_ModelAnswer, total=False):
    task_note: str  # only when the task used is not the one asked for, or changes nothing
    candidates: list[Candidate]  # only for one point alone (`multimask`)


class PredictAnswer(TypedDict):
    """`POST /api/predict`."""

    image_id: str
    width: int
    height: int
    mask_width: int  # the masks' size: the image's, or smaller with `max_mask_side`
    mask_height: int
    task: Literal["none", "salient", "entity", "part"]
    multimask: bool
    models: dict[str, ModelAnswer]
    ms: float


# Checking ----------------------------------------------------------------------------------


def conforms(value: Any, declared: Any, where: str = "answer") -> list[str]:
    """Every way `value` (decoded JSON) differs from the type `declared` (a TypedDict, list,
    dict, union, Literal or plain type), one sentence each; empty if it conforms. JSON has
    no int/float distinction for whole floats, but Python's json module keeps it, so an int
    where a float is declared (or the reverse) counts as a difference."""
    origin = typing.get_origin(declared)
    if isinstance(declared, type) and typing.is_typeddict(declared):
        if not isinstance(value, dict):
            return [f"{where} is {type(value).__name__}, not an object ({declared.__name__})"]
        hints = typing.get_type_hints(declared)
        problems = [f"{where} lacks {k!r}" for k in sorted(declared.__required_keys__)
                    if k not in value]  # fmt: skip
        problems += [f"{where} has the undeclared field {k!r}" for k in sorted(value)
                     if k not in hints]  # fmt: skip
        for key in hints.keys() & value.keys():
            problems += conforms(value[key], hints[key], f"{where}.{key}")
        return problems
    if origin in (Union, types.UnionType):
        options = typing.get_args(declared)
        tries = [conforms(value, option, where) for option in options]
        if any(not t for t in tries):
            return []
        return [f"{where} = {value!r:.60} is none of {[_name(o) for o in options]}: "
                + "; ".join(min(tries, key=len))]  # fmt: skip
    if origin is Literal:
        allowed = typing.get_args(declared)
        return [] if value in allowed else [f"{where} = {value!r:.60} is not one of {allowed}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where} is {type(value).__name__}, not a list"]
        (item,) = typing.get_args(declared)
        return [p for i, v in enumerate(value) for p in conforms(v, item, f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where} is {type(value).__name__}, not an object"]
        key_type, item = typing.get_args(declared)
        return [p for k, v in value.items()
                for p in conforms(k, key_type, f"{where} key") + conforms(v, item, f"{where}[{k!r}]")]  # fmt: skip
    if declared is type(None):
        return [] if value is None else [f"{where} = {value!r:.60} is not null"]
    if declared in (int, float) and isinstance(value, bool):
        return [f"{where} is a bool, not {declared.__name__}"]
    if isinstance(declared, type):
        if isinstance(value, declared):
            return []
        return [f"{where} is {type(value).__name__} ({value!r:.60}), not {declared.__name__}"]
    raise TypeError(f"conforms cannot check the declared type {declared!r} ({where})")


def _name(declared: Any) -> str:
    return getattr(declared, "__name__", repr(declared))
