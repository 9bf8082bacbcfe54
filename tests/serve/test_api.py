"""The JSON API of `python -m sum_jax.serve` through Starlette's TestClient: every endpoint,
answers equal to `SamPredictor` on the same prompts (or, for masks asked at a smaller size,
to SAM's post-processing as a float64 formula), clear 4xx answers to bad input, and every answer of
every test checked against its declared shape (`CheckedClient`)."""

from __future__ import annotations

import base64
import io
import json
import threading

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from sum_jax.inference.predictor import SamPredictor
from sum_jax.ops.transforms import preprocess_shape
from sum_jax.serve import answers
from sum_jax.serve.app import create_app
from sum_jax.serve.sessions import ModelSession
from tests.serve.conftest import SIZE, CheckedClient, make_catalogue, make_sessions

BANNER = "these masks are meaningless"


@pytest.fixture(scope="module")
def served(models, photo_dir):
    """(client, sessions, catalogue) of one app over both models and the photo folder."""
    sessions = make_sessions(models)
    catalogue = make_catalogue(photo_dir)
    with CheckedClient(create_app(sessions, catalogue, BANNER)) as client:
        yield client, sessions, catalogue


@pytest.fixture(scope="module")
def client(served):
    return served[0]


@pytest.fixture(scope="module")
def reference(models, photo_dir):
    """`reference(model_name, image_id)`: an official-style SamPredictor on the decoded photo,
    built apart from the server's sessions."""
    cache = {}

    def get(name, image_id):
        if (name, image_id) not in cache:
            p = SamPredictor(models[name])
            p.set_image(np.asarray(Image.open(photo_dir / image_id).convert("RGB")))
            cache[name, image_id] = p
        return cache[name, image_id]

    return get


def png_mask(encoded: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded["png"]))).convert("L")) > 0


def rle_mask(encoded: dict) -> np.ndarray:
    rle = {"size": encoded["rle"]["size"], "counts": encoded["rle"]["counts"].encode()}
    return coco_mask.decode(rle).astype(bool)


def bilinear_f64(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PyTorch's `F.interpolate(x, size, mode="bilinear", align_corners=False)` of the last two
    axes as a float64 formula: output i reads input `s = max((i + 0.5) * n_in / n_out - 0.5,
    0)` between `floor(s)` and the next (the last input repeats), weighted by distance."""

    def matrix(n_in: int, n_out: int) -> np.ndarray:
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        m = np.zeros((n_out, n_in))
        np.add.at(m, (np.arange(n_out), i0), 1 - (src - i0))
        np.add.at(m, (np.arange(n_out), i1), src - i0)
        return m

    rows, cols = matrix(x.shape[-2], size[0]), matrix(x.shape[-1], size[1])
    return rows @ np.asarray(x, np.float64) @ cols.T


def sam_postprocess(low_res: np.ndarray, image_size: tuple[int, int], img_size: int,
                    mask_size: tuple[int, int]) -> np.ndarray:  # fmt: skip
    """Logits `[C, H', W']` (float64) from low-res logits `[C, l, l]` by SAM's
    `postprocess_masks` with the original size replaced by `mask_size` (the rule
    docs/serve.md gives for `max_mask_side`): bilinear to `img_size`, cropped to the resized
    image, bilinear to `mask_size`."""
    rh, rw = preprocess_shape(*image_size, img_size)
    x = bilinear_f64(low_res, (img_size, img_size))[..., :rh, :rw]
    return bilinear_f64(x, mask_size)


# Logits within this fraction of the largest one from 0 may fall either side in float32
# (two bilinear passes round to a few float32 ulps, ~1e-7 of it); they are few.
MARGIN = 1e-5


def clear_of_zero(logits: np.ndarray) -> np.ndarray:
    """Where float64 `logits` are further from 0 than float32 rounding could move them."""
    return np.abs(logits) > MARGIN * np.abs(logits).max()


def assert_mask_of(mask: np.ndarray, logits: np.ndarray) -> None:
    """`mask` is `logits > 0` wherever the float64 logits are clear of 0 (the server computes
    in float32), and unclear pixels are under 0.1 %."""
    clear = clear_of_zero(logits)
    np.testing.assert_array_equal(mask[clear], logits[clear] > 0)
    assert clear.mean() > 0.999, clear.mean()


def png_bytes(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def test_page_and_its_files_are_served_without_anything_from_elsewhere(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for path in ("/static/app.js", "/static/style.css"):
        assert path in page.text
        assert client.get(path).status_code == 200
    text = page.text + client.get("/static/app.js").text + client.get("/static/style.css").text
    assert "http://" not in text and "https://" not in text  # no CDN, no downloads


def test_info_names_models_tasks_limits_and_banner(client):
    info = client.get("/api/info").json()
    assert [m["name"] for m in info["models"]] == ["SAM", "SUM"]
    assert info["models"][0]["img_size"] == 128 and info["models"][1]["num_tasks"] == 4
    assert info["tasks"] == ["none", "salient", "entity", "part"]
    assert info["banner"] == BANNER
    assert info["limits"] == {"max_side": 1024, "max_bytes": 2 * 2**20}


def test_images_are_listed_and_served_as_the_pixels_the_models_see(client, photo_dir):
    listed = {im["id"]: im for im in client.get("/api/images").json()["images"]}
    assert set(listed) == {"chelsea.jpg", "coffee.png", "mirror.png"}
    assert (listed["chelsea.jpg"]["width"], listed["chelsea.jpg"]["height"]) == SIZE[::-1]
    response = client.get("/api/images/chelsea.jpg")
    assert response.headers["content-type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(response.content)))
    np.testing.assert_array_equal(shown, np.asarray(Image.open(photo_dir / "chelsea.jpg")))


def test_embed_runs_each_model_once_per_image(served):
    client, sessions, _ = served
    first = client.post("/api/embed", json={"image_id": "mirror.png"}).json()
    assert (first["width"], first["height"]) == SIZE[::-1]
    assert set(first["models"]) == {"SAM", "SUM"}
    assert all(s.cached("mirror.png") for s in sessions)
    again = client.post("/api/embed", json={"image_id": "mirror.png"}).json()
    assert again["models"] == {"SAM": {"embed_ms": 0.0}, "SUM": {"embed_ms": 0.0}}


def test_first_click_answers_every_model_with_three_candidates(client, reference):
    click = [200.0, 150.0]
    answer = client.post(
        "/api/predict", json={"image_id": "chelsea.jpg", "points": [[*click, 1]]}
    ).json()
    assert answer["multimask"] is True and set(answer["models"]) == {"SAM", "SUM"}
    shown = {}
    for name, got in answer["models"].items():
        masks, scores, _ = reference(name, "chelsea.jpg").predict(np.array([click]), np.array([1]))
        assert len(got["candidates"]) == 3
        for k in range(3):
            np.testing.assert_array_equal(png_mask(got["candidates"][k]["mask"]), masks[k])
            assert got["candidates"][k]["score"] == pytest.approx(float(scores[k]), abs=1e-6)
        assert got["best"] == int(np.argmax(scores))
        np.testing.assert_array_equal(png_mask(got["mask"]), masks[got["best"]])
        assert got["score"] == pytest.approx(float(scores.max()), abs=1e-6)
        assert got["ms"] > 0
        shown[name] = masks[got["best"]]
    assert not np.array_equal(shown["SAM"], shown["SUM"])  # two models, two answers


def test_clicks_box_and_task_give_one_mask_as_rle(client, reference):
    points = [[200.0, 150.0, 1], [40.5, 30.25, 0]]
    box = [100.0, 50.0, 400.0, 290.0]
    body = {"image_id": "chelsea.jpg", "points": points, "box": box, "mask_format": "rle"}
    answers = {}
    for task in ("none", "salient"):
        answer = client.post("/api/predict", json={**body, "task": task}).json()
        assert answer["multimask"] is False and answer["task"] == task
        got = answer["models"]["SUM"]
        assert "candidates" not in got
        masks, scores, _ = reference("SUM", "chelsea.jpg").predict(
            np.array(points)[:, :2],
            np.array(points)[:, 2].astype(int),
            np.array(box),
            multimask_output=False,
            task=None if task == "none" else task,
        )
        np.testing.assert_array_equal(rle_mask(got["mask"]), masks[0])
        assert got["score"] == pytest.approx(float(scores[0]), abs=1e-6)
        answers[task] = rle_mask(got["mask"])
    assert not np.array_equal(answers["none"], answers["salient"])  # the task prompt acts


def test_masks_asked_smaller_are_sams_post_processing_at_that_size(client, reference):
    """`max_mask_side`: the masks come straight from the low-res logits at the smaller size,
    equal to SAM's own post-processing told that size (a float64 formula, `sam_postprocess`),
    with SamPredictor.predict's scores; a limit the image fits in gives the masks at the
    image's size, as SamPredictor.predict."""
    click = [200.0, 150.0]
    body = {"image_id": "chelsea.jpg", "points": [[*click, 1]], "mask_format": "rle"}
    # 400 px: the frame of 512 x 512 px that the photo's own masks use, so nothing compiles.
    answer = client.post("/api/predict", json={**body, "max_mask_side": 400}).json()
    h, w = preprocess_shape(*SIZE, 400)
    assert (answer["mask_width"], answer["mask_height"]) == (w, h) == (400, 266)
    for name, got in answer["models"].items():
        predictor = reference(name, "chelsea.jpg")
        _, scores, low_res = predictor.predict(np.array([click]), np.array([1]))
        expected = sam_postprocess(low_res, SIZE, predictor.config.img_size, (h, w))
        assert 0.02 < (expected[got["best"]] > 0).mean() < 0.98
        for k in range(3):
            assert_mask_of(rle_mask(got["candidates"][k]["mask"]), expected[k])
            assert got["candidates"][k]["score"] == pytest.approx(float(scores[k]), abs=1e-6)
    # A limit the photo fits in: the photo's own size and masks.
    whole = client.post("/api/predict", json={**body, "max_mask_side": 1024}).json()
    assert (whole["mask_width"], whole["mask_height"]) == SIZE[::-1]
    masks, _, _ = reference("SUM", "chelsea.jpg").predict(np.array([click]), np.array([1]))
    for k in range(3):
        np.testing.assert_array_equal(
            rle_mask(whole["models"]["SUM"]["candidates"][k]["mask"]), masks[k]
        )


def test_every_answer_is_checked_against_its_declaration(client):
    """The client of these tests fails any answer off its declared shape (answers.py): here
    real answers of each endpoint pass, and the same answers with one field drifted fail."""
    before = client.checked
    info = client.get("/api/info").json()
    client.get("/api/status")
    client.get("/api/images")
    embed = client.post("/api/embed", json={"image_id": "chelsea.jpg"}).json()
    predict = client.post("/api/predict", json={"image_id": "chelsea.jpg",
                                                 "points": [[5, 5, 1]]}).json()  # fmt: skip
    client.post("/api/predict", json={"image_id": "nope"})
    assert client.checked == before + 6
    drifted = [
        (info, answers.InfoAnswer, lambda a: a["limits"].pop("max_bytes"), "lacks 'max_bytes'"),
        (embed, answers.EmbedAnswer, lambda a: a["models"]["SAM"].update(embed_ms="0"), "not float"),
        (predict, answers.PredictAnswer, lambda a: a["models"]["SUM"].update(best=True), "a bool"),
        (predict, answers.PredictAnswer, lambda a: a.update(task="bogus"), "not one of"),
        (predict, answers.PredictAnswer,
         lambda a: a["models"]["SAM"]["candidates"][1].update(mask={"rle": {"size": [1, 2]}}),
         "none of"),
        (predict, answers.PredictAnswer, lambda a: a.update(colour=1), "undeclared field"),
    ]  # fmt: skip
    for answer, declared, drift, words in drifted:
        assert answers.conforms(answer, declared) == []
        spoilt = json.loads(json.dumps(answer))
        drift(spoilt)
        problems = answers.conforms(spoilt, declared)
        assert problems and words in problems[0], problems


def test_a_chosen_model_alone_answers(client):
    answer = client.post(
        "/api/predict",
        json={"image_id": "chelsea.jpg", "box": [10, 10, 200, 200], "models": ["SAM"]},
    ).json()
    assert list(answer["models"]) == ["SAM"]


def test_upload_is_embedded_listed_served_and_segmented(client, photo_dir):
    photo = np.asarray(Image.open(photo_dir / "coffee.png"))[:, ::-1]
    data = png_bytes(np.ascontiguousarray(photo))
    up = client.post(
        "/api/embed?name=flipped.png", content=data, headers={"content-type": "image/png"}
    )
    assert up.status_code == 200, up.text
    up = up.json()
    assert up["name"] == "flipped.png" and (up["width"], up["height"]) == SIZE[::-1]
    assert all(t["embed_ms"] > 0 for t in up["models"].values())
    same = client.post("/api/embed", content=data, headers={"content-type": "image/png"}).json()
    assert same["image_id"] == up["image_id"]  # same bytes, same id, embedding reused
    assert same["models"]["SAM"]["embed_ms"] == 0.0
    assert up["image_id"] in [im["id"] for im in client.get("/api/images").json()["images"]]
    shown = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{up['image_id']}").content)))
    np.testing.assert_array_equal(shown, photo)
    answer = client.post("/api/predict", json={"image_id": up["image_id"], "points": [[10, 10, 1]]})
    assert answer.status_code == 200


TOO_WIDE = png_bytes(np.zeros((8, 1100, 3), np.uint8))  # the test limit is 1024 px per side


def _truncated_jpeg() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        out, format="JPEG"
    )
    return out.getvalue()[:2000]  # the header reads, the pixels do not


TRUNCATED = _truncated_jpeg()


ONE = {"image_id": "chelsea.jpg", "points": [[1, 1, 1]]}  # a valid body, spoilt below
HUGE_INT = b'{"image_id": "chelsea.jpg", "points": [[' + b"9" * 5000 + b", 1, 1]]}"
CAT = {"image_id": "chelsea.jpg"}


@pytest.mark.parametrize(
    "request_, status, words",
    [
        (("predict", b"{not json"), 400, "not valid JSON"),
        (("predict", [1, 2]), 400, "must be a JSON object"),
        (("predict", {"points": [[1, 1, 1]]}), 400, "image_id"),
        (("predict", {**ONE, "colour": 1}), 400, "unknown field"),
        (("predict", {**ONE, "image_id": "nope.jpg"}), 404, "unknown image id"),
        (("predict", {**ONE, "models": ["HQ"]}), 404, "unknown model"),
        (("predict", {**CAT, "points": [[452, 10, 1]]}), 400, "outside the image"),
        (("predict", {**CAT, "points": [[-1, 10, 1]]}), 400, "outside the image"),
        (("predict", {**CAT, "box": [0, 0, 500, 100]}), 400, "outside the image"),
        (("predict", {**CAT, "box": [50, 0, 10, 100]}), 400, "x0 <= x1"),
        (("predict", {**CAT, "points": [[1, 1, 2]]}), 400, "label"),
        (("predict", {**CAT, "points": [[1, "a", 1]]}), 400, "points[0][1]"),
        (("predict", {**CAT, "points": []}), 400, "at least one point"),
        (("predict", {**ONE, "task": "x"}), 400, "task must be one of"),
        (("predict", {**ONE, "mask_format": "x"}), 400, "mask_format"),
        (("predict", b"[" * 100_000 + b"]" * 100_000), 400, "nested too deeply"),
        (("predict", HUGE_INT), 400, "not valid JSON"),
        (("predict", {**ONE, "image_id": 5}), 400, "got 5 (int)"),
        (("predict", {**ONE, "points": "abc"}), 400, "points must be a list"),
        (("predict", {**ONE, "task": ["salient"]}), 400, "task must be one of"),
        (("predict", {**ONE, "mask_format": {}}), 400, "mask_format must be one of"),
        (("predict", {**ONE, "models": ["SAM", "SAM"]}), 400, "distinct model names"),
        (("predict", {**ONE, "models": "SAM"}), 400, "models must be a non-empty list"),
        (("predict", {**ONE, "max_mask_side": 0}), 400, "max_mask_side must be a whole number"),
        (("predict", {**ONE, "max_mask_side": 512.5}), 400, "got 512.5"),
        (("predict", {**ONE, "max_mask_side": True}), 400, "max_mask_side"),
        (("embed", {**CAT, "models": "SAM"}), 400, "models must be a non-empty list"),
        (("embed", {**CAT, "colour": 1}), 400, "unknown field(s) ['colour']"),
        (("embed", [CAT]), 400, "must be a JSON object"),
        (("embed", {"image_id": "nope.jpg"}), 404, "unknown image id"),
        (("embed", {"image": "chelsea.jpg"}), 400, "unknown field(s) ['image']"),
        (("embed", {"models": ["SAM"]}), 400, "image_id"),
        (("upload", b"GIF89a but not really"), 415, "not an image"),
        (("upload", b""), 415, "empty"),
        (("upload", b'{"image_id": "chelsea.jpg"}'), 415, "send JSON as application/json"),
        (("upload", TRUNCATED), 415, "truncated or corrupt"),
        (("upload", TOO_WIDE), 413, "1100x8 px; the limit is 1024 px"),
        (("upload", b"\0" * (2 * 2**20 + 1)), 413, "the limit is 2 MB"),
        (("get", "/api/images/nope.jpg"), 404, "unknown image id"),
        (("get", "/api/nothing"), 404, "no such page or endpoint"),
        (("get", "/api/predict"), 405, "GET is not allowed"),
    ],
)
def test_bad_input_gets_a_4xx_json_error_and_the_server_keeps_serving(
    client, request_, status, words
):
    kind, payload = request_
    if kind == "get":
        response = client.get(payload)
    elif kind == "upload":
        response = client.post("/api/embed", content=payload, headers={"content-type": "image/png"})
    else:
        content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        response = client.post(
            f"/api/{kind}", content=content, headers={"content-type": "application/json"}
        )
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    ok = client.post("/api/predict", json={"image_id": "chelsea.jpg", "points": [[5, 5, 1]]})
    assert ok.status_code == 200


def test_embeddings_beyond_the_cache_are_dropped_and_recomputed(models, photo_dir):
    (session,) = make_sessions({"SAM": models["SAM"]}, cache_images=2)
    catalogue = make_catalogue(photo_dir)
    ids = ["chelsea.jpg", "mirror.png", "coffee.png"]
    for image_id in ids:
        assert session.embed(image_id, catalogue.array(image_id)) > 0
    assert [session.cached(i) for i in ids] == [False, True, True]
    point = (np.array([[100.0, 100.0]]), np.array([1]))
    again = session.predict("chelsea.jpg", catalogue.array("chelsea.jpg"), *point, None,
                            multimask=True, task=None)  # fmt: skip
    assert again.embed_ms > 0 and session.cached("chelsea.jpg") and not session.cached("mirror.png")


def test_concurrent_clicks_on_different_images_get_their_own_image(models, photo_dir, reference):
    (session,) = make_sessions({"SUM": models["SUM"]})
    catalogue = make_catalogue(photo_dir)
    ids = ["chelsea.jpg", "mirror.png", "coffee.png"]
    clicks = [np.array([[30.0 + 40 * k, 20.0 + 25 * k]]) for k in range(6)]
    results, errors = {}, []

    def worker(t):
        try:
            for k, click in enumerate(clicks):
                image_id = ids[(t + k) % 3]
                p = session.predict(image_id, catalogue.array(image_id), click, np.array([1]),
                                    None, multimask=False, task="part")  # fmt: skip
                results[t, k] = (image_id, p.masks[0])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (t, k), (image_id, mask) in results.items():
        expected = reference("SUM", image_id).predict(
            clicks[k], np.array([1]), multimask_output=False, task="part"
        )[0][0]
        np.testing.assert_array_equal(mask, expected)


def test_every_shape_of_click_is_compiled_when_an_image_is_embedded(models, photo_dir):
    """The fifth click (8 point slots), the ninth (16), ... and a box reuse what embedding the
    image compiled: no click after the embedding waits for XLA."""
    from sum_jax.inference import predictor as predictor_module

    (session,) = make_sessions({"SAM": models["SAM"]})
    image = make_catalogue(photo_dir).array("mirror.png")
    session.embed("mirror.png", image)
    compiled = predictor_module._decode._cache_size()
    rng = np.random.default_rng(0)
    for n in (1, 2, 4, 5, 9, 17, 33, 64):
        points = rng.uniform(0, 300, (n, 2))
        session.predict("mirror.png", image, points, rng.integers(0, 2, n), None,
                        multimask=n == 1, task=None)  # fmt: skip
    session.predict("mirror.png", image, None, None, np.array([5.0, 5, 200, 100]),
                    multimask=False, task="part")  # fmt: skip
    assert predictor_module._decode._cache_size() == compiled


def test_warmup_compiles_each_listed_size_once_and_reports_progress(models, photo_dir):
    from sum_jax.serve.sessions import Warmup

    sessions = make_sessions(models)
    catalogue = make_catalogue(photo_dir)
    listed = catalogue.list()
    warmup = Warmup(sessions, [(e["id"], e["height"], e["width"]) for e in listed],
                    catalogue.array)  # fmt: skip
    with CheckedClient(create_app(sessions, catalogue, warmup=warmup)) as client:
        before = client.get("/api/status").json()
        assert before["ready"] is False and before["done"] == 0
        warmup.start().join(timeout=300)
        status = client.get("/api/status").json()
    # Three photos of one size: one bucket, embedded through its first photo by both models.
    assert status == {**status, "ready": True, "done": 1, "total": 1, "error": None}
    assert all(s.cached(listed[0]["id"]) for s in sessions)


def test_task_fallback_is_reported_not_echoed(models, photo_dir, reference):
    from sum_jax.checkpointing import TaskRecord

    sessions = [
        ModelSession("SUM", models["SUM"], tasks=TaskRecord((0, 1))),  # trained on 0 and 1
        ModelSession("SAM", models["SAM"]),  # a fresh model: a zero task table
    ]
    body = {"image_id": "chelsea.jpg", "points": [[200, 150, 1], [60, 40, 0]],
            "mask_format": "rle"}  # fmt: skip
    with CheckedClient(create_app(sessions, make_catalogue(photo_dir))) as client:
        part = client.post("/api/predict", json={**body, "task": "part"}).json()
        salient = client.post("/api/predict", json={**body, "task": "salient"}).json()
        none = client.post("/api/predict", json=body).json()
    got = part["models"]["SUM"]
    assert got["task_used"] == "unlabelled"
    assert "'part' (id 3) was not in this model's training data" in got["task_note"]
    expected = reference("SUM", "chelsea.jpg").predict(
        np.array([[200, 150], [60, 40]]), np.array([1, 0]), multimask_output=False, task=0
    )[0][0]
    np.testing.assert_array_equal(rle_mask(got["mask"]), expected)
    assert salient["models"]["SUM"]["task_used"] == "salient"
    assert "task_note" not in salient["models"]["SUM"]
    assert "task table is zero" in salient["models"]["SAM"]["task_note"]
    assert none["models"]["SUM"]["task_used"] == none["models"]["SAM"]["task_used"] == "none"
    assert "task_note" not in none["models"]["SAM"]


def test_a_bug_of_ours_is_a_json_500_and_the_server_keeps_serving(models, photo_dir):
    sessions = make_sessions(models)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    sessions[1].predict = broken
    app = create_app(sessions, make_catalogue(photo_dir))
    with CheckedClient(app, raise_server_exceptions=False) as client:
        body = {"image_id": "chelsea.jpg", "points": [[5, 5, 1]]}
        failed = client.post("/api/predict", json=body)
        assert failed.status_code == 500
        assert failed.json() == {
            "error": "internal error (RuntimeError); the server log has the details"
        }
        assert client.post("/api/predict", json={**body, "models": ["SAM"]}).status_code == 200
