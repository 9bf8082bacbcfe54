"""The page in a real headless Chromium: clicks on a photo, the masks it shows and the pixels
on screen, checked against `SamPredictor.predict` for the same prompts.

Needs Debian's `chromium` and `chromium-driver` (installed by .ci/run); skipped without them.
"""

from __future__ import annotations

import io
import urllib.request

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from sum_jax.inference.predictor import SamPredictor
from sum_jax.serve.app import create_app
from sum_jax.serve.server import BackgroundServer
from tests.serve import webdriver
from tests.serve.conftest import make_catalogue, make_sessions

pytestmark = pytest.mark.integration

BANNER = "Random weights: these masks are meaningless."
COLOURS = {"SAM": (30, 144, 255), "SUM": (255, 99, 71)}  # app.js COLOURS, in model order
MASK_ALPHA = 115 / 255  # app.js MASK_ALPHA

# The mask layer of a panel as row-major run lengths of alpha > 0 (0-runs first).
READ_MASK = """
const canvas = document.querySelector(`.panel[data-model="${arguments[0]}"] canvas.mask`);
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


def shown_mask(browser, name: str) -> np.ndarray:
    got = browser.run(READ_MASK, name)
    values = np.arange(len(got["runs"])) % 2
    return np.repeat(values, got["runs"]).reshape(got["height"], got["width"]).astype(bool)


@pytest.fixture(scope="module")
def page(models, photo_dir):
    """(browser, url) of the page served over both tiny models, opened and embedded."""
    if webdriver.find_browser() is None:
        pytest.skip(webdriver.MISSING)
    app = create_app(make_sessions(models), make_catalogue(photo_dir), BANNER)
    with BackgroundServer(app) as url, webdriver.Chromium(width=1400, height=1000) as browser:
        browser.open(url)
        browser.wait_for("return document.getElementById('status').textContent"
                         ".includes('embedded')", timeout=120)  # fmt: skip
        yield browser, url


def test_clicks_show_each_models_mask_equal_to_the_predictor(page, models, tmp_path):
    browser, url = page
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
    browser, _ = page
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
    left, top = browser.run(PHOTO_RECT, "SUM")[:2]
    seq = browser.run("return window.sumServe.seq")
    browser.click(round(left + 300), round(top + 100))
    browser.wait_for(ANSWER_SHOWN.replace("arguments[0]", str(seq)), timeout=60)
    (point,) = browser.run("return window.sumServe.prompts")
    predictor = SamPredictor(models["SUM"])
    predictor.set_image(photo)
    masks, scores, _ = predictor.predict(np.array([[point["x"], point["y"]]]), np.array([1]))
    np.testing.assert_array_equal(shown_mask(browser, "SUM"), masks[np.argmax(scores)])
