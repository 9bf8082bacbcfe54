"""Per-model predictors with a small LRU of image embeddings.

The expensive step, the image encoder, runs once per (model, image); a click runs only the
prompt encoder and the mask decoder on the cached embedding. `SamPredictor.predict` pads
prompt counts to powers of two and is compiled per image size, so the first embedding of a
new image size also runs one warm-up click of each kind (three candidates / one mask): the
user's first click then costs milliseconds, not a compilation.
"""

from __future__ import annotations

import collections
import copy
import threading
import time
from dataclasses import dataclass

import numpy as np

from sum_jax.checkpointing import load_model, parse_checkpoint
from sum_jax.cli import InputError
from sum_jax.inference.predictor import SamPredictor
from sum_jax.models.sam import Sam


@dataclass
class Prediction:
    """One model's answer: `masks [C, H, W]` bool and `scores [C]` (C = 3 or 1), the index of
    the mask to show, and what it cost (`embed_ms` is 0 when the embedding was cached)."""

    masks: np.ndarray
    scores: np.ndarray
    best: int
    ms: float
    embed_ms: float


class ModelSession:
    """One model, its embeddings of the last `cache_images` images, thread-safe.

    Each cached image holds a shallow copy of one base `SamPredictor`: the copies share the
    model's split graph and weights (so the jitted functions are reused, not retraced) and
    differ only in their image embedding, so concurrent requests on different images do not
    overwrite each other's image.
    """

    def __init__(self, name: str, model: Sam, cache_images: int = 4):
        self.name = name
        self.config = model.config
        self.cache_images = cache_images
        self._base = SamPredictor(model)
        self._cache: collections.OrderedDict[str, SamPredictor] = collections.OrderedDict()
        self._lock = threading.Lock()  # guards _cache and _warm
        self._embed_lock = threading.Lock()  # one embedding at a time: they fill the device
        self._warm: set[tuple[int, int]] = set()

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
        size = tuple(predictor.original_size)
        with self._lock:
            if size in self._warm:
                return
        h, w = size
        centre = np.array([[w / 2, h / 2]])
        predictor.predict(centre, np.array([1]), multimask_output=True)
        predictor.predict(centre, np.array([1]), multimask_output=False)
        with self._lock:
            self._warm.add(size)

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
    ) -> Prediction:
        """`SamPredictor.predict` on `image` (embedded first if not cached). `points [N, 2]`
        (x, y) pixels, `labels [N]`, `box [4]`; raises ValueError for prompts the model
        refuses (e.g. a task id beyond its task table)."""
        predictor, embed_ms = self._predictor(image_id, image)
        start = time.perf_counter()
        masks, scores, _ = predictor.predict(
            points, labels, box, multimask_output=multimask, task=task
        )
        ms = (time.perf_counter() - start) * 1e3
        return Prediction(masks, scores, int(np.argmax(scores)), ms, embed_ms)


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
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"--checkpoint={name}={path} does not load: {e}") from e
        sessions.append(ModelSession(name, model, cache_images))
    return sessions
