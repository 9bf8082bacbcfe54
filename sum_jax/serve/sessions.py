"""Per-model predictors with a small LRU of image embeddings.

The expensive step, the image encoder, runs once per (model, image); a click runs only the
prompt encoder and the mask decoder on the cached embedding. `SamPredictor.predict` pads
point counts to powers of two (4, 8, ..., 64 slots) and compiles once per mask frame: the
image's size bucket (`predictor.frame_bucket`) for masks at the photo's size, one square
frame for the page's masks of photos larger than `DISPLAY_SIDE` (`mask_geometry`). The
first embedding of an image whose page frame is new also runs one warm-up click of every
shape a request can have in that frame (three candidates; one mask with 4, 8, 16, 32 and 64
point slots): after an image is embedded, no click of the page, not even the fifth or the
33rd, waits for XLA. `Warmup` does this in the background at start-up for every frame the
listed images need.
"""

from __future__ import annotations

import collections
import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sum_jax.checkpointing import TaskRecord, load_model, parse_checkpoint, read_tasks
from sum_jax.cli import InputError
from sum_jax.inference.predictor import (
    SIZE_BUCKET,
    SamPredictor,
    bucket_size,
    frame_bucket,
    task_index,
)
from sum_jax.models.sam import Sam
from sum_jax.ops.transforms import preprocess_shape
from sum_jax.serve.answers import StatusAnswer
from sum_jax.serve.prompts import MAX_POINTS, TASK_NAMES

# The page asks for masks of at most this many px per side: a 12 MP photo's clicks then
# upscale the low-res logits to 1024 x 768, not 4000 x 3000 (exports ask for the full size).
DISPLAY_SIDE = 1024


def point_slots(max_points: int = MAX_POINTS) -> tuple[int, ...]:
    """The point-slot counts `SamPredictor` pads a request of 1..max_points points to."""
    slots, n = [], bucket_size(1, minimum=4)
    while n <= bucket_size(max_points, minimum=4):
        slots.append(n)
        n *= 2
    return tuple(slots)


def mask_geometry(
    height: int, width: int, max_side: int | None
) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """`((H', W'), frame)` of the masks answered for a `height x width` image when they may
    have at most `max_side` px per side (None: no limit). A photo within the limit gets its
    own size and frame None (`SamPredictor`'s size bucket, exactly `predict`'s masks); a
    larger one the size SAM would resize it to with that longest side (`preprocess_shape`)
    in one square frame per limit (`max_side` rounded up to `SIZE_BUCKET`), shared by every
    photo over the limit."""
    if max_side is None or max(height, width) <= max_side:
        return (height, width), None
    side = -(-max_side // SIZE_BUCKET) * SIZE_BUCKET
    return preprocess_shape(height, width, max_side), (side, side)


def page_frame(height: int, width: int) -> tuple[int, int]:
    """The frame the page's clicks on a `height x width` image are computed in (warm-up key)."""
    size, frame = mask_geometry(height, width, DISPLAY_SIDE)
    return frame or frame_bucket(*size)


@dataclass
class Prediction:
    """One model's answer: `masks [C, H', W']` bool (the image's size, or smaller: see
    `mask_geometry`) and `scores [C]` (C = 3 or 1), the index of the mask to show, and what
    it cost (`embed_ms` is 0 when the embedding was cached)."""

    masks: np.ndarray
    scores: np.ndarray
    best: int
    ms: float
    embed_ms: float
    task_used: int  # the task id the decoder got (-1: none); may differ from the one asked
    task_note: str | None  # why, or that the task prompt changes nothing; None otherwise


class ModelSession:
    """One model, its embeddings of the last `cache_images` images, thread-safe.

    Each cached image holds a shallow copy of one base `SamPredictor`: the copies share the
    model's split graph and weights (so the jitted functions are reused, not retraced) and
    differ only in their image embedding, so concurrent requests on different images do not
    overwrite each other's image.
    """

    def __init__(
        self, name: str, model: Sam, cache_images: int = 4, tasks: TaskRecord | None = None
    ):
        """`tasks`: the model directory's task record (`read_tasks`); None for a plain SAM."""
        self.name = name
        self.config = model.config
        self.cache_images = cache_images
        self.tasks = tasks
        self._base = SamPredictor(model, tasks)
        table = np.asarray(model.prompt_encoder.task_embeddings.embedding[...])
        # A converted SAM has a zero task table: a task prompt there changes nothing.
        self.task_table_is_zero = not np.any(table)
        self._cache: collections.OrderedDict[str, SamPredictor] = collections.OrderedDict()
        self._lock = threading.Lock()  # guards _cache and _warm
        self._embed_lock = threading.Lock()  # one embedding at a time: they fill the device
        self._warm: set[tuple[int, int]] = set()  # frames every click shape is compiled for

    def task_note(self, asked: int, used: int) -> str | None:
        """A sentence when the task prompt the decoder got is not the one asked for, or
        changes nothing; None otherwise."""
        if used != asked:
            return (
                f"task {TASK_NAMES.get(asked, asked)!r} (id {asked}) was not in this model's "
                f"training data (task ids {sorted(self.tasks.task_ids)}"
                f"{'' if self.tasks.task_prompt else ', trained without task prompts'}): "
                f"task {used} ({TASK_NAMES.get(used, used)}) was used, as SUM does (App. H.1)"
            )
        if asked >= 0 and self.task_table_is_zero:
            return (
                "this model learnt no task prompts (its task table is zero): the task "
                "changes nothing"
            )
        return None

    def cached(self, image_id: str) -> bool:
        with self._lock:
            return image_id in self._cache

    def embed(self, image_id: str, image: np.ndarray) -> float:
        """Embeds `image` under `image_id` unless cached; returns the milliseconds spent (0 on
        a cache hit)."""
        return self._predictor(image_id, image)[1]

    def _predictor(self, image_id: str, image: np.ndarray) -> tuple[SamPredictor, float]:
        with self._lock:
            hit = self._cache.get(image_id)
            if hit is not None:
                self._cache.move_to_end(image_id)
                return hit, 0.0
        with self._embed_lock:
            with self._lock:  # embedded by another request while this one waited
                hit = self._cache.get(image_id)
            if hit is not None:
                return hit, 0.0
            start = time.perf_counter()
            predictor = copy.copy(self._base)
            predictor.set_image(image)
            predictor.features.block_until_ready()
            self._warm_up(predictor)
            ms = (time.perf_counter() - start) * 1e3
            with self._lock:
                self._cache[image_id] = predictor
                while len(self._cache) > self.cache_images:
                    self._cache.popitem(last=False)
            return predictor, ms

    def _warm_up(self, predictor: SamPredictor) -> None:
        """One click of every shape the page's requests can take on this image (masks of at
        most `DISPLAY_SIDE` px, `mask_geometry`), unless its frame is warm: one point alone
        (three candidates), and one mask from 4, 8, ..., 64 point slots."""
        h, w = predictor.original_size
        size, frame = mask_geometry(h, w, DISPLAY_SIDE)
        key = frame or frame_bucket(*size)
        with self._lock:
            if key in self._warm:
                return
        sized = {"mask_size": None if frame is None else size, "mask_frame": frame}
        predictor.predict(np.array([[w / 2, h / 2]]), np.array([1]), multimask_output=True,
                          **sized)  # fmt: skip
        for slots in point_slots():
            points = np.stack([np.linspace(0, w, slots), np.linspace(0, h, slots)], axis=1)
            predictor.predict(points, np.ones(slots, int), multimask_output=False, **sized)
        with self._lock:
            self._warm.add(key)

    def predict(
        self,
        image_id: str,
        image: np.ndarray,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        *,
        multimask: bool,
        task: str | None,
        max_mask_side: int | None = None,
    ) -> Prediction:
        """`SamPredictor.predict` on `image` (embedded first if not cached). `points [N, 2]`
        (x, y) pixels, `labels [N]`, `box [4]`; masks of at most `max_mask_side` px per side
        (`mask_geometry`; None: the image's size). Raises ValueError for prompts the model
        refuses (e.g. a task id beyond its task table)."""
        predictor, embed_ms = self._predictor(image_id, image)
        start = time.perf_counter()
        asked = task_index(task, self.config.num_tasks)
        task_used = predictor.task_id(task)
        size, frame = mask_geometry(*predictor.original_size, max_mask_side)
        masks, scores, _ = predictor.predict(
            points, labels, box, multimask_output=multimask,
            task=None if task_used < 0 else task_used,
            mask_size=None if frame is None else size, mask_frame=frame,
        )  # fmt: skip
        ms = (time.perf_counter() - start) * 1e3
        return Prediction(masks, scores, int(np.argmax(scores)), ms, embed_ms, task_used,
                          self.task_note(asked, task_used))  # fmt: skip


def load_sessions(specs: list[str], cache_images: int = 4) -> list[ModelSession]:
    """One `ModelSession` per `NAME=DIR` spec, in order. A model that does not load raises
    InputError naming the flag, so the server never starts half-loaded."""
    parsed = [parse_checkpoint(s) for s in specs]
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise InputError(f"--checkpoint names must differ, got {names}; use NAME=DIR")
    sessions = []
    for name, path in parsed:
        try:
            model = load_model(path, field="checkpoint")
            tasks = read_tasks(path)
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"--checkpoint={name}={path} does not load: {e}") from e
        sessions.append(ModelSession(name, model, cache_images, tasks))
    return sessions


@dataclass
class Warmup:
    """Embeds one image of every mask frame the page needs for a list (`page_frame`: a
    size bucket, or the one frame of photos over `DISPLAY_SIDE`) with every model, in a
    background thread, so that every click the page can make on those images is compiled
    before the page says "ready". `status()` is what `GET /api/status` answers while it runs.

    `images`: `(image_id, height, width)` in the page's order; `load(image_id)` gives its
    pixels. The first image's frame goes last, so that its embedding is still cached when
    the page opens on it.
    """

    sessions: list[ModelSession]
    images: list[tuple[str, int, int]]
    load: Callable[[str], np.ndarray]
    on_done: Callable[[dict], None] | None = None  # called with status() at the end
    _done: int = 0
    _step: str = ""
    _error: str | None = None
    _start: float = field(default_factory=time.perf_counter)
    _seconds: float | None = None
    _thread: threading.Thread | None = None

    def __post_init__(self):
        seen: dict[tuple[int, int], str] = {}
        for image_id, h, w in self.images:
            seen.setdefault(page_frame(h, w), image_id)
        self.todo = [(image_id, bucket) for bucket, image_id in seen.items()][::-1]

    def start(self) -> Warmup:
        self._thread = threading.Thread(target=self.run, daemon=True, name="warm-up")
        self._thread.start()
        return self

    def run(self) -> None:
        try:
            for image_id, (bh, bw) in self.todo:
                self._step = f"compiling clicks for masks up to {bw}x{bh} px ({image_id})"
                image = self.load(image_id)
                for session in self.sessions:
                    session.embed(image_id, image)
                self._done += 1
        except Exception as e:  # noqa: BLE001 - reported by status(); requests still work
            self._error = f"{type(e).__name__}: {e}"
        self._step = ""
        self._seconds = time.perf_counter() - self._start
        if self.on_done is not None:
            self.on_done(self.status())

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> StatusAnswer:
        """`{"ready", "done", "total", "step", "seconds", "error"}`."""
        ready = self._seconds is not None
        return {
            "ready": ready,
            "done": self._done,
            "total": len(self.todo),
            "step": self._step,
            "seconds": round(self._seconds if ready else time.perf_counter() - self._start, 1),
            "error": self._error,
        }
