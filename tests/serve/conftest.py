"""Shared set-up of the web app tests: two tiny models ("SAM" and a different "SUM"), a
folder of real photos of one size (one compilation of the decoder serves them all), and a
TestClient that checks every JSON answer against its declaration (`answers.py`)."""

from __future__ import annotations

import urllib.parse
from typing import Any

import numpy as np
import pytest
import skimage.data
from flax import nnx
from PIL import Image
from starlette.testclient import TestClient

from sum_jax.models.sam import build_sam
from sum_jax.serve import answers
from sum_jax.serve.images import Catalogue, Limits
from sum_jax.serve.sessions import ModelSession

SIZE = (300, 451)  # (H, W) of scikit-image's chelsea photo
LIMITS = Limits(max_side=1024, max_bytes=2 * 2**20)


def tiny_models() -> dict:
    """Tiny "SAM" and "SUM" models with different weights; SUM's task prompts are random
    (a fresh model's are zero, which would make the task selector a no-op in the tests)."""
    sam = build_sam("tiny", rngs=nnx.Rngs(0))
    sum_ = build_sam("tiny", rngs=nnx.Rngs(1))
    table = sum_.prompt_encoder.task_embeddings.embedding
    table[...] = np.random.default_rng(0).normal(0, 1, table[...].shape).astype(np.float32)
    return {"SAM": sam, "SUM": sum_}


@pytest.fixture(scope="session")
def models() -> dict:
    return tiny_models()


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
    """`chelsea.jpg` (the photo as JPEG), `mirror.png` and `coffee.png` (a crop of the coffee
    photo), all 451x300."""
    root = tmp_path_factory.mktemp("photos")
    cat = skimage.data.chelsea()
    Image.fromarray(cat).save(root / "chelsea.jpg", quality=92)
    Image.fromarray(np.ascontiguousarray(cat[:, ::-1])).save(root / "mirror.png")
    coffee = skimage.data.coffee()[50 : 50 + SIZE[0], 70 : 70 + SIZE[1]]
    Image.fromarray(np.ascontiguousarray(coffee)).save(root / "coffee.png")
    return root


def make_sessions(models: dict, cache_images: int = 4) -> list[ModelSession]:
    return [ModelSession(name, model, cache_images) for name, model in models.items()]


def make_catalogue(photo_dir) -> Catalogue:
    return Catalogue(photo_dir, LIMITS)


# The declared answer of each JSON endpoint (a 4xx or 500 answer is an ErrorAnswer).
ANSWERS = {
    ("GET", "/api/info"): answers.InfoAnswer,
    ("GET", "/api/status"): answers.StatusAnswer,
    ("GET", "/api/images"): answers.ImagesAnswer,
    ("POST", "/api/embed"): answers.EmbedAnswer,
    ("POST", "/api/predict"): answers.PredictAnswer,
}


def declared_answer(method: str, path: str, status: int) -> Any:
    """The type an answer must have (None: not JSON, e.g. the page or a PNG)."""
    if status >= 400:
        return answers.ErrorAnswer
    return ANSWERS.get((method.upper(), path))


def check_answer(method: str, url: str, status: int, body: Any) -> None:
    """AssertionError naming every way a decoded JSON answer differs from its declaration."""
    path = urllib.parse.urlsplit(url).path
    declared = declared_answer(method, path, status)
    if declared is not None:
        problems = answers.conforms(body, declared)
        assert not problems, f"{method} {path} ({status}) answered off its declaration: {problems}"


class CheckedClient(TestClient):
    """Starlette's TestClient, checking every JSON answer it receives against the declared
    shape of its endpoint; `checked` counts them."""

    checked = 0

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any):
        response = super().request(method, url, *args, **kwargs)
        path = urllib.parse.urlsplit(str(url)).path
        if declared_answer(method, path, response.status_code) is not None:
            check_answer(method, path, response.status_code, response.json())
            self.checked += 1
        return response
