"""The page in a real headless Chromium: clicks on a photo, the masks it shows and the pixels
on screen, checked against `SamPredictor.predict` for the same prompts (masks asked at the
photo's size), or against SAM's post-processing at the size asked for and the page's
documented sampling onto its canvas (a photo larger than the page's `max_mask_side`).

Needs Debian's `chromium` and `chromium-driver` (installed by .ci/run); skipped without them.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.request

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from scipy import ndimage

from sum_jax.inference.predictor import SamPredictor
from sum_jax.ops.transforms import preprocess_shape
from sum_jax.serve.app import create_app
from sum_jax.serve.images import Catalogue, Limits
from sum_jax.serve.server import BackgroundServer
from sum_jax.serve.sessions import DISPLAY_SIDE, Warmup
from tests.serve import webdriver
from tests.serve.conftest import check_answer, declared_answer, make_sessions
from tests.serve.test_api import clear_of_zero, sam_postprocess

pytestmark = pytest.mark.integration

BANNER = "Random weights: these masks are meaningless."
COLOURS = {"SAM": (30, 144, 255), "SUM": (255, 99, 71)}  # app.js COLOURS, in model order
MASK_ALPHA = 115 / 255  # app.js MASK_ALPHA
MARKER_PX = 6  # app.js MARKER_PX: a point marker's radius on screen

# A layer of a panel (the mask unless named) as row-major run lengths of alpha > 0 (0-runs
# first).
READ_MASK = """
const layer = arguments[1] || "mask";
const canvas = document.querySelector(`.panel[data-model="${arguments[0]}"] canvas.${layer}`);
const a = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
const runs = [];
let value = 0, n = 0;
for (let i = 3; i < a.length; i += 4) {
  const v = a[i] > 0 ? 1 : 0;
  if (v !== value) { runs.push(n); n = 0; value = v; }
  n++;
}
runs.push(n);
return {width: canvas.width, height: canvas.height, runs};
"""
PHOTO_RECT = """
const r = document.querySelector(`.panel[data-model="${arguments[0]}"] canvas.photo`)
  .getBoundingClientRect();
return [r.left, r.top, r.width, r.height];
"""
ANSWER_SHOWN = (
    "const s = window.sumServe; return s.seq > arguments[0] && s.shown === s.seq && "
    "/request \\d+ ms/.test(document.getElementById('status').textContent);"
)


def shown_mask(browser, name: str, layer: str = "mask") -> np.ndarray:
    got = browser.run(READ_MASK, name, layer)
    values = np.arange(len(got["runs"])) % 2
    return np.repeat(values, got["runs"]).reshape(got["height"], got["width"]).astype(bool)


def sampled(mask: np.ndarray, dh: int, dw: int) -> np.ndarray:
    """`mask [h, w]` as the page paints it on a `dh x dw` canvas at zoom 1 (docs/serve.md):
    each canvas column shows the mask column under its centre, each run of it from and to
    its ends' rows scaled and rounded half up (JavaScript's Math.round)."""
    h, w = mask.shape
    out = np.zeros((dh, dw), bool)
    for dx in range(dw):
        col = np.concatenate([[0], mask[:, min(w - 1, int(np.floor((dx + 0.5) * w / dw)))], [0]])
        edges = np.flatnonzero(np.diff(col.astype(np.int8)))  # run starts and ends
        for y0, y1 in edges.reshape(-1, 2):
            out[int(np.floor(y0 * dh / h + 0.5)) : int(np.floor(y1 * dh / h + 0.5)), dx] = True
    return out


class Recorder:
    """An ASGI app around another, keeping the JSON body of every `POST /api/predict` it
    receives (what the server was asked, whatever the page believes it sent) and checking
    every JSON answer the page gets against its declared shape (`problems`)."""

    def __init__(self, app):
        self.app, self.bodies, self.problems = app, [], []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        asked, answer, status = [], [], []

        async def recording():
            message = await receive()
            if message["type"] == "http.request" and path == "/api/predict":
                asked.append(message.get("body", b""))
                if not message.get("more_body"):
                    self.bodies.append(json.loads(b"".join(asked)))
            return message

        async def checking(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body":
                answer.append(message.get("body", b""))
                if not message.get("more_body") and declared_answer(method, path, status[0]):
                    try:
                        check_answer(method, path, status[0], json.loads(b"".join(answer)))
                    except AssertionError as e:
                        self.problems.append(str(e))
            await send(message)

        await self.app(scope, recording, checking)


@pytest.fixture(scope="module")
def page(models, photo_dir):
    """(browser, url, bodies) of the page served over both tiny models, opened and embedded;
    `bodies`: every predict request the server received."""
    if webdriver.find_browser() is None:
        pytest.skip(webdriver.MISSING)
    catalogue = Catalogue(photo_dir, Limits())  # the command's limits: a 4000x3000 upload fits
    sessions = make_sessions(models)
    # As the command does: the clicks compile in the background while Chromium starts, and the
    # page opens the first photo when the warm-up says "ready".
    listed = [(e["id"], e["height"], e["width"]) for e in catalogue.list()]
    warmup = Warmup(sessions, listed, catalogue.array).start()
    app = Recorder(create_app(sessions, catalogue, BANNER, warmup))
    with BackgroundServer(app) as url, webdriver.Chromium(width=1400, height=900) as browser:
        browser.set_viewport(1400, 900)  # the window the layout is checked in
        browser.open(url)
        browser.wait_for("return document.getElementById('status').textContent"
                         ".includes('embedded')", timeout=300)  # fmt: skip
        yield browser, url, app.bodies
    assert not app.problems, app.problems  # every answer the page got, as declared


def test_clicks_show_each_models_mask_equal_to_the_predictor(page, models, tmp_path):
    browser, url, _ = page
    assert browser.run("return document.getElementById('banner').textContent") == BANNER
    assert browser.run("return window.sumServe.image.id") == "chelsea.jpg"
    with urllib.request.urlopen(url + "api/images/chelsea.jpg") as r:
        photo = np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))
    predictors = {}
    for name, model in models.items():
        predictors[name] = SamPredictor(model)
        predictors[name].set_image(photo)
    rects = {name: browser.run(PHOTO_RECT, name) for name in models}
    assert all(r[2:] == [451, 300] for r in rects.values()), rects  # shown 1:1
    left, top = rects["SAM"][:2]

    def act(do) -> list[dict]:
        seq = browser.run("return window.sumServe.seq")
        do()
        browser.wait_for(f"{ANSWER_SHOWN.replace('arguments[0]', str(seq))}", timeout=60)
        return browser.run("return window.sumServe.prompts")

    # 1. A left click: a positive point; every panel shows its model's best of three masks.
    prompts = act(lambda: browser.click(round(left + 200), round(top + 150)))
    assert len(prompts) == 1 and prompts[0]["kind"] == "point" and prompts[0]["label"] == 1
    click = np.array([[prompts[0]["x"], prompts[0]["y"]]])
    assert np.abs(click - [200, 150]).max() <= 1
    expected = {}
    for name, predictor in predictors.items():
        masks, scores, _ = predictor.predict(click, np.array([1]))
        expected[name] = masks[np.argmax(scores)]
        assert 0.02 < expected[name].mean() < 0.98  # a mask with an inside and an outside
        np.testing.assert_array_equal(shown_mask(browser, name), expected[name])
        figures = f'.panel[data-model="{name}"] .candidates figure'
        assert browser.run(f"return document.querySelectorAll('{figures}').length") == 3

    # ... without moving the panels (the candidates fit below each photo) ...
    assert {name: browser.run(PHOTO_RECT, name) for name in models} == rects
    # ... and the screen shows the mask tinted over the photo, the photo elsewhere.
    shot_png = browser.screenshot()
    (tmp_path / "page.png").write_bytes(shot_png)
    shot = np.asarray(Image.open(io.BytesIO(shot_png)).convert("RGB")).astype(np.float64)
    yy, xx = np.mgrid[: photo.shape[0], : photo.shape[1]]
    away = np.hypot(xx - click[0, 0], yy - click[0, 1]) > 15  # the click's marker
    for name, (x0, y0, w, h) in rects.items():
        screen = shot[round(y0) : round(y0) + h, round(x0) : round(x0) + w]
        inside = ndimage.binary_erosion(expected[name], iterations=2) & away
        outside = ndimage.binary_erosion(~expected[name], iterations=2) & away
        tinted = (1 - MASK_ALPHA) * photo + MASK_ALPHA * np.array(COLOURS[name])
        assert np.abs(tinted - photo)[inside].mean() > 20  # the check below can tell them apart
        assert np.abs(screen - tinted)[inside].mean() < 3, (name, x0, y0)
        assert np.abs(screen - photo)[outside].mean() < 3, (name, x0, y0)

    # 2. A right click: a negative point; one mask from both points.
    prompts = act(lambda: browser.click(round(left + 60), round(top + 40), button="right"))
    assert [p["label"] for p in prompts] == [1, 0]
    points = np.array([[p["x"], p["y"]] for p in prompts])
    two_points = {}
    for name, predictor in predictors.items():
        masks, _, _ = predictor.predict(points, np.array([1, 0]), multimask_output=False)
        two_points[name] = masks[0]
        np.testing.assert_array_equal(shown_mask(browser, name), masks[0])

    # 3. A drag: a box added to the points, with the salient-object task selected.
    browser.run(
        "const t = document.getElementById('task'); t.value = 'salient';"
        "t.dispatchEvent(new Event('change'));"
    )
    browser.wait_for(ANSWER_SHOWN.replace("arguments[0]", "0"))
    prompts = act(lambda: browser.drag(round(left + 120), round(top + 60),
                                       round(left + 380), round(top + 280)))  # fmt: skip
    assert [p["kind"] for p in prompts] == ["point", "point", "box"]
    box = np.array(prompts[2]["box"])
    assert np.abs(box - [120, 60, 380, 280]).max() <= 1
    for name, predictor in predictors.items():
        masks, _, _ = predictor.predict(
            points, np.array([1, 0]), box, multimask_output=False, task="salient"
        )
        np.testing.assert_array_equal(shown_mask(browser, name), masks[0])

    # 4. Undo removes the box; back to no task, the two-point masks return.
    browser.run(
        "const t = document.getElementById('task'); t.value = 'none';"
        "t.dispatchEvent(new Event('change'));"
    )
    browser.wait_for(ANSWER_SHOWN.replace("arguments[0]", "0"))
    prompts = act(lambda: browser.run("document.getElementById('undo').click()"))
    assert [p["kind"] for p in prompts] == ["point", "point"]
    for name in models:
        np.testing.assert_array_equal(shown_mask(browser, name), two_points[name])


def test_an_uploaded_photo_is_shown_and_segmented(page, models, photo_dir, tmp_path):
    browser, _, _ = page
    photo = np.ascontiguousarray(np.asarray(Image.open(photo_dir / "coffee.png"))[::-1])
    Image.fromarray(photo).save(tmp_path / "upside down.png")
    browser.upload("#upload", tmp_path / "upside down.png")
    browser.wait_for(
        "const s = window.sumServe; return s.image && s.image.name === 'upside down.png' && "
        "document.getElementById('status').textContent.includes('embedded');",
        timeout=60,
    )
    assert browser.run("return document.getElementById('image').value").startswith("upload-")
    assert browser.run("return window.sumServe.prompts.length") == 0  # a new photo, no prompts
    # The upload's own embedding time, not that of a second (cached) embedding call.
    status = browser.run("return document.getElementById('status').textContent")
    assert "cached" not in status and "SAM " in status and " ms" in status, status
    left, top = browser.run(PHOTO_RECT, "SUM")[:2]
    seq = browser.run("return window.sumServe.seq")
    browser.click(round(left + 300), round(top + 100))
    browser.wait_for(ANSWER_SHOWN.replace("arguments[0]", str(seq)), timeout=60)
    (point,) = browser.run("return window.sumServe.prompts")
    predictor = SamPredictor(models["SUM"])
    predictor.set_image(photo)
    masks, scores, _ = predictor.predict(np.array([[point["x"], point["y"]]]), np.array([1]))
    np.testing.assert_array_equal(shown_mask(browser, "SUM"), masks[np.argmax(scores)])


LAYOUT = """
const [width, height] = arguments;
const photo = document.createElement("canvas");
photo.width = width;
photo.height = height;
const s = window.sumServe;
s.photo = photo;
s.image = {id: "layout-check", name: "layout-check", width, height};
sizeStages();
render();
window.scrollTo(0, document.body.scrollHeight);
const rect = (el) => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
return {panels: Array.from(document.querySelectorAll(".panel")).map(rect),
        stages: Array.from(document.querySelectorAll(".stage canvas.photo")).map(rect),
        status: rect(document.getElementById("status")),
        viewport: [window.innerWidth, window.innerHeight]};
"""


def test_clicks_are_fast_candidates_can_be_chosen_and_any_photo_fits(page, models):
    """After "ready", no click waits for a compilation (the fifth, with 8 point slots,
    included) and none is drawn in more than 100 ms (the page's Performance API measures);
    a candidate can be picked; photos of any aspect fit the 1400x900 window side by side."""
    browser, url, _ = page
    browser.run("const s = document.getElementById('image'); s.value = 'chelsea.jpg';"
                "s.dispatchEvent(new Event('change'));")  # fmt: skip
    browser.wait_for("const s = window.sumServe; return s.image && s.image.id === 'chelsea.jpg'"
                     " && document.getElementById('status').textContent.includes('embedded')",
                     timeout=60)  # fmt: skip
    with urllib.request.urlopen(url + "api/images/chelsea.jpg") as r:
        photo = np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))
    predictor = SamPredictor(models["SUM"])
    predictor.set_image(photo)
    left, top = browser.run(PHOTO_RECT, "SUM")[:2]
    first = len(browser.run("return window.sumServe.timings"))

    def act(do) -> None:
        seq = browser.run("return window.sumServe.seq")
        do()
        browser.wait_for(ANSWER_SHOWN.replace("arguments[0]", str(seq)), timeout=60)

    for k, (x, y) in enumerate([(200, 150), (250, 120), (150, 200), (300, 100), (100, 250)]):
        act(
            lambda x=x, y=y, k=k: browser.click(
                round(left + x), round(top + y), button="left" if k % 2 == 0 else "right"
            )
        )
    prompts = browser.run("return window.sumServe.prompts")
    points = np.array([[p["x"], p["y"]] for p in prompts])
    assert len(points) == 5
    masks, _, _ = predictor.predict(points, np.array([1, 0, 1, 0, 1]), multimask_output=False)
    np.testing.assert_array_equal(shown_mask(browser, "SUM"), masks[0])

    # One click alone again, then its first candidate picked in the SUM panel.
    browser.run("document.getElementById('reset').click()")
    act(lambda: browser.click(round(left + 200), round(top + 150)))
    browser.run("""document.querySelector('.panel[data-model="SUM"] figure[data-k="0"]').click()""")
    (point,) = browser.run("return window.sumServe.prompts")
    masks, _, _ = predictor.predict(np.array([[point["x"], point["y"]]]), np.array([1]))
    np.testing.assert_array_equal(shown_mask(browser, "SUM"), masks[0])
    assert browser.run("""return document.querySelector('.panel[data-model="SUM"] figure.best')
                          .dataset.k""") == "0"  # fmt: skip

    timings = browser.run("return window.sumServe.timings")[first:]
    assert len(timings) == 7, timings  # five clicks, one click alone, the candidate picked
    for t in timings:
        assert t["server"] < 1000 and t["draw"] < 100, timings

    # Any aspect fits the window, side by side, with the status line in view.
    for width, height in [(1200, 800), (600, 2000)]:
        got = browser.run(LAYOUT, width, height)
        vw, vh = got["viewport"]
        assert (vw, vh) == (1400, 900), got
        for x0, y0, x1, y1 in got["panels"] + got["stages"] + [got["status"]]:
            assert 0 <= x0 < x1 <= vw and 0 <= y0 < y1 <= vh, (width, height, got)
        (a, b) = got["stages"]
        assert a[2] <= b[0] and a[1] == b[1], got  # side by side
        shown_w, shown_h = a[2] - a[0], a[3] - a[1]
        assert abs(shown_w / shown_h - width / height) < 0.02, got


MARKER_WIDTH = """
const canvas = document.querySelector('.panel[data-model="SUM"] canvas.prompts');
const [u, v] = [arguments[0], arguments[1]];
const row = canvas.getContext("2d").getImageData(u - 20, v, 41, 1).data;
let n = 0;
for (let i = 3; i < row.length; i += 4) n += row[i] > 0 ? 1 : 0;
return n;
"""


def test_zoom_and_pan_keep_clicks_on_the_photo_pixel_under_the_pointer(page):
    """The wheel zooms about the pointer, a middle-button drag or Space + drag pans, 0 fits
    the photo again: at every view the server gets the click at the photo pixel shown under
    the pointer (within 1 px), and the markers keep their size on screen."""
    browser, _, bodies = page
    browser.run("const s = document.getElementById('image'); s.value = 'chelsea.jpg';"
                "s.dispatchEvent(new Event('change'));")  # fmt: skip
    browser.wait_for("const s = window.sumServe; return s.image && s.image.id === 'chelsea.jpg'"
                     " && document.getElementById('status').textContent.includes('embedded')",
                     timeout=60)  # fmt: skip
    left, top, w, _ = browser.run(PHOTO_RECT, "SUM")
    scale = w / 451  # screen px per photo px with the whole photo shown
    key = "window.dispatchEvent(new KeyboardEvent(arguments[0], {key: arguments[1]}));"
    u, v = 200, 120  # where the pointer stays, in the stage

    def click(du=0, dv=0) -> np.ndarray:
        """Clicks at the pointer (+ du, dv screen px); the point the server received."""
        seq, sent = browser.run("return window.sumServe.seq"), len(bodies)
        browser.click(round(left + u + du), round(top + v + dv))
        browser.wait_for(ANSWER_SHOWN.replace("arguments[0]", str(seq)), timeout=60)
        assert len(bodies) == sent + 1 and bodies[-1]["max_mask_side"] == DISPLAY_SIDE
        return np.array(bodies[-1]["points"][-1][:2])

    browser.run("document.getElementById('reset').click()")
    before = click()
    assert np.abs(before - np.array([u, v]) / scale).max() <= 1
    width_fit = browser.run(MARKER_WIDTH, u, v)
    browser.wheel(round(left + u), round(top + v), -300)  # about three notches in
    zoom = browser.wait_for("const z = window.sumServe.view.zoom; return z > 1.2 && z")
    # The pixel under the pointer stays there; one screen px is 1 / zoom of what it was.
    np.testing.assert_allclose(click(), before, atol=1)
    np.testing.assert_allclose(click(60, 40), before + np.array([60, 40]) / (scale * zoom), atol=1)
    # The marker keeps its size (a zoomed one would be `zoom` times as wide).
    assert abs(browser.run(MARKER_WIDTH, u + 60, v + 40) - width_fit) <= 1, width_fit

    # A middle-button drag moves the photo with the pointer.
    browser.drag(round(left + u), round(top + v), round(left + u - 80), round(top + v - 50),
                 button="middle")  # fmt: skip
    panned = before + np.array([80, 50]) / (scale * zoom)
    np.testing.assert_allclose(click(), panned, atol=1)
    # So does a left drag with Space held, adding no prompt.
    points = len(bodies[-1]["points"])
    browser.run(key, "keydown", " ")
    browser.drag(round(left + u), round(top + v), round(left + u + 40), round(top + v + 20))
    browser.run(key, "keyup", " ")
    np.testing.assert_allclose(click(), panned - np.array([40, 20]) / (scale * zoom), atol=1)
    assert len(bodies[-1]["points"]) == points + 1
    # 0 shows the whole photo again.
    browser.run(key, "keydown", "0")
    browser.wait_for("return window.sumServe.view.zoom === 1")
    np.testing.assert_allclose(click(), before, atol=1)


def test_hover_preview_shows_the_mask_a_click_there_would_give(page, models, photo_dir):
    """With the hover preview on (H), the pointer resting on the photo draws, apart from the
    shown mask, the mask a left click there would give, and adds no prompt; H turns it off."""
    browser, _, bodies = page
    browser.run("const s = document.getElementById('image'); s.value = 'coffee.png';"
                "s.dispatchEvent(new Event('change'));")  # fmt: skip
    browser.wait_for("const s = window.sumServe; return s.image && s.image.id === 'coffee.png'"
                     " && document.getElementById('status').textContent.includes('embedded')",
                     timeout=60)  # fmt: skip
    left, top = browser.run(PHOTO_RECT, "SUM")[:2]
    key = "window.dispatchEvent(new KeyboardEvent('keydown', {key: arguments[0]}));"
    seq = browser.run("return window.sumServe.seq")
    browser.click(round(left + 200), round(top + 150))
    browser.wait_for(ANSWER_SHOWN.replace("arguments[0]", str(seq)), timeout=60)
    shown = shown_mask(browser, "SUM")
    browser.run(key, "h")
    assert browser.run("return document.getElementById('hover').checked")
    sent = len(bodies)
    browser.pointer([{"type": "pointerMove", "duration": 0, "origin": "viewport",
                      "x": round(left + 330), "y": round(top + 90)}])  # fmt: skip
    browser.wait_for("return window.sumServe.hover.answer !== null", timeout=60)
    assert len(bodies) == sent + 1 and len(browser.run("return window.sumServe.prompts")) == 1
    points = np.array([p[:2] for p in bodies[-1]["points"]])
    assert np.abs(points[1] - [330, 90]).max() <= 1  # 1:1: screen px are photo px
    predictor = SamPredictor(models["SUM"])
    predictor.set_image(np.asarray(Image.open(photo_dir / "coffee.png").convert("RGB")))
    masks, _, _ = predictor.predict(points, np.array([1, 1]), multimask_output=False)
    assert not np.array_equal(masks[0], shown)  # the preview is not the shown mask again
    np.testing.assert_array_equal(shown_mask(browser, "SUM", "preview"), masks[0])
    np.testing.assert_array_equal(shown_mask(browser, "SUM"), shown)  # left as it was
    browser.run(key, "h")
    assert not shown_mask(browser, "SUM", "preview").any()


EXPORT = """
// Starts an export; its PNG as a data URL lands in window.exported (it may ask the server).
const make = arguments[0] === "labels" ? labelsCanvas : cutoutCanvas;
window.exported = null;
make(arguments[1]).then((canvas) => canvas.toBlob((blob) => {
  const reader = new FileReader();
  reader.onload = () => { window.exported = reader.result; };
  reader.readAsDataURL(blob);
}, "image/png"));
"""


def export_png(browser, kind: str, name: str, timeout: float = 60) -> np.ndarray:
    browser.run(EXPORT, kind, name)
    data = browser.wait_for("return window.exported", timeout=timeout)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))))


def test_two_objects_are_committed_and_exported_as_labels_coco_and_cutout(page, models):
    """Keys as listed on the page: N switches left clicks to negative, Enter commits the
    shown masks as an object; the label PNG, COCO JSON and cut-out hold them pixel for pixel."""
    browser, url, _ = page
    browser.run("const s = document.getElementById('image'); s.value = 'mirror.png';"
                "s.dispatchEvent(new Event('change'));")  # fmt: skip
    browser.wait_for("const s = window.sumServe; return s.image && s.image.id === 'mirror.png'"
                     " && document.getElementById('status').textContent.includes('embedded')",
                     timeout=60)  # fmt: skip
    with urllib.request.urlopen(url + "api/images/mirror.png") as r:
        photo = np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))
    left, top = browser.run(PHOTO_RECT, "SAM")[:2]
    key = "window.dispatchEvent(new KeyboardEvent('keydown', {key: arguments[0]}));"

    def click(x, y):
        seq = browser.run("return window.sumServe.seq")
        browser.click(round(left + x), round(top + y))
        browser.wait_for(ANSWER_SHOWN.replace("arguments[0]", str(seq)), timeout=60)

    # Object 1: one click, its best candidate. Object 2: a click, then N and a negative one.
    click(120, 100)
    browser.run(key, "Enter")
    click(330, 200)
    browser.run(key, "n")
    click(60, 250)
    browser.run(key, "Enter")
    browser.run(key, "p")
    objects = browser.run("return window.sumServe.objectsByImage['mirror.png']"
                          ".map((o) => o.prompts.points)")  # fmt: skip
    assert [[p[2] for p in points] for points in objects] == [[1], [1, 0]]
    assert "object 2" in browser.run("return document.getElementById('objects').textContent")

    expected = {}
    for name, model in models.items():
        predictor = SamPredictor(model)
        predictor.set_image(photo)
        ((x, y, _),) = objects[0]
        masks, scores, _ = predictor.predict(np.array([[x, y]]), np.array([1]))
        first = masks[np.argmax(scores)]
        points = np.array([p[:2] for p in objects[1]])
        second = predictor.predict(points, np.array([1, 0]), multimask_output=False)[0][0]
        expected[name] = (first, second)
        labels = export_png(browser, "labels", name)[..., 0]
        want = np.where(second, 2, np.where(first, 1, 0))
        np.testing.assert_array_equal(labels, want)
        cut = export_png(browser, "cutout", name)
        ys, xs = np.nonzero(first | second)
        box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        inside = (first | second)[box]
        assert cut.shape == (*inside.shape, 4)
        np.testing.assert_array_equal(cut[..., 3] > 0, inside)
        assert np.abs(cut[..., :3][inside].astype(int) - photo[box][inside]).max() <= 1

    coco = browser.run("return cocoJson()")
    assert coco["images"] == [{"id": 1, "file_name": "mirror.png", "width": 451, "height": 300}]
    got = {(a["object"], a["model"]): a for a in coco["annotations"]}
    assert len(got) == len(coco["annotations"]) == 4
    for (j, name), annotation in got.items():
        mask = expected[name][j - 1]
        rle = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode())
        np.testing.assert_array_equal(coco_mask.decode(rle).astype(bool), mask)
        assert annotation["area"] == mask.sum()
        ys, xs = np.nonzero(mask)
        assert annotation["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                      ys.max() - ys.min() + 1]  # fmt: skip


def test_a_4000x3000_upload_is_clicked_drawn_and_exported_fast(page, models, tmp_path):
    """A large photo: after its embedding (which compiles the frame of masks capped at
    DISPLAY_SIDE px) the photo fits the window, every click after the first takes under 1 s
    of server time and draws in under 100 ms, the drawn mask is SAM's mask at the capped
    size sampled onto the canvas, and the exports are at the photo's full size, exact."""
    browser, _, bodies = page
    rng = np.random.default_rng(0)
    big = np.asarray(
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), np.uint8)).resize((4000, 3000))
    )
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=90)
    browser.upload("#upload", tmp_path / "big.jpg")
    browser.wait_for(
        "const s = window.sumServe; return s.image && s.image.name === 'big.jpg' && "
        "document.getElementById('status').textContent.includes('embedded')",
        timeout=600,
    )
    x0, y0, w, h = browser.run(PHOTO_RECT, "SUM")
    assert x0 >= 0 and y0 >= 0 and x0 + w <= 1400 and y0 + h <= 900
    first = len(browser.run("return window.sumServe.timings"))
    clicks = [(0.5, 0.5), (0.2, 0.3), (0.7, 0.6), (0.3, 0.8), (0.8, 0.2)]
    for k, (fx, fy) in enumerate(clicks):
        seq = browser.run("return window.sumServe.seq")
        browser.click(round(x0 + fx * w), round(y0 + fy * h), "left" if k % 2 == 0 else "right")
        browser.wait_for(ANSWER_SHOWN.replace("arguments[0]", str(seq)), timeout=120)
    timings = browser.run("return window.sumServe.timings")[first:]
    assert len(timings) == 5, timings
    print("4000x3000 clicks (ms):", [{k: round(v) for k, v in t.items()} for t in timings])
    for t in timings:
        assert t["draw"] < 100, timings
    for t in timings[1:]:  # the first may still compile what warm-up did not (none expected)
        assert t["server"] < 1000, timings

    # The server got masks asked at most DISPLAY_SIDE px: SAM's post-processing at 1024x768,
    # which the page samples onto its canvas.
    body = bodies[-1]
    points = np.array([p[:2] for p in body["points"]])
    labels = np.array([p[2] for p in body["points"]])
    assert body["max_mask_side"] == DISPLAY_SIDE and len(points) == 5
    photo = np.asarray(Image.open(tmp_path / "big.jpg").convert("RGB"))
    predictor = SamPredictor(models["SUM"])
    predictor.set_image(photo)
    _, _, low_res = predictor.predict(points, labels, multimask_output=False)
    capped = preprocess_shape(3000, 4000, DISPLAY_SIDE)
    assert capped == (768, 1024)
    logits = sam_postprocess(low_res, (3000, 4000), predictor.config.img_size, capped)[0]
    assert 0.02 < (logits > 0).mean() < 0.98
    shown = shown_mask(browser, "SUM")
    # Between the masks of the logits clear of 0 and of those not clearly negative (float32
    # may put the few in between either side); sampling keeps a mask's subsets subsets.
    unclear = ~clear_of_zero(logits)
    surely = sampled((logits > 0) & ~unclear, *shown.shape)
    maybe = sampled((logits > 0) | unclear, *shown.shape)
    assert (maybe & ~surely).mean() < 1e-3
    assert not (surely & ~shown).any() and not (shown & ~maybe).any()

    # Committed, then exported: the label image is asked for at the photo's size.
    browser.run("window.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}));")
    labels_png = export_png(browser, "labels", "SUM", timeout=300)
    full, _, _ = predictor.predict(points, labels, multimask_output=False)
    assert labels_png.shape[:2] == (3000, 4000)
    np.testing.assert_array_equal(labels_png[..., 0], full[0].astype(np.uint8))
