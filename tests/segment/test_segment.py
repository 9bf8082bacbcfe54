"""The segmentation CLI on a real photo: outputs exist and agree with the predictor."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

from sum_jax.checkpointing import save_sam
from sum_jax.inference.predictor import SamPredictor
from sum_jax.models.sam import build_sam
from sum_jax.segment import segmentation


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    from flax import nnx

    save_sam(build_sam("tiny", rngs=nnx.Rngs(11)), path)
    return path


@pytest.mark.integration
def test_segment_writes_mask_overlay_and_scores(tmp_path, model_dir):
    image = skimage.data.chelsea()
    Image.fromarray(image).save(tmp_path / "cat.jpg", quality=95)
    out = tmp_path / "out"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sum_jax.segment",
            f"--checkpoint={model_dir}",
            f"--image={tmp_path / 'cat.jpg'}",
            "--point=200,150",
            "--point=30,20:0",
            "--box=100,50,400,290",
            "--task=salient",
            f"--output_dir={out}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads((out / "result.json").read_text())
    mask = np.asarray(Image.open(out / "mask.png"))
    overlay = np.asarray(Image.open(out / "overlay.png"))
    assert mask.shape == image.shape[:2] and set(np.unique(mask)) <= {0, 255}
    assert overlay.shape == image.shape
    assert np.asarray(Image.open(out / "candidates.png")).shape == (300, 3 * 451, 3)
    # The CLI's mask is the predictor's best mask for the same prompt on the decoded JPEG.
    predictor = SamPredictor.from_checkpoint(str(model_dir))
    predictor.set_image(np.asarray(Image.open(tmp_path / "cat.jpg").convert("RGB")))
    masks, scores, _ = predictor.predict(
        np.array([[200.0, 150.0], [30.0, 20.0]]),
        np.array([1, 0]),
        np.array([100.0, 50.0, 400.0, 290.0]),
        task="salient",
    )
    np.testing.assert_allclose(result["scores"], scores, rtol=1e-4, atol=1e-5)
    assert result["best"] == int(np.argmax(scores))
    assert np.mean((mask > 0) == masks[result["best"]]) > 0.999


def test_segment_bad_inputs(tmp_path, model_dir):
    """In-process through the command harness (one real subprocess run is in
    tests/test_bad_input_corpus.py, which also covers more inputs)."""
    from tests.cli_harness import run_command

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    for args, message in [
        ([f"--image={bad}"], "broken.jpg is not a readable image"),
        ([f"--image={tmp_path / 'missing.png'}"], "missing.png: no such image file"),
        (["--point=1,2,3"], "expected 'x,y' or 'x,y:0'"),
        (["--box=1,2,3"], "expected 4 numbers"),
        (["--point=5000,10"], "outside the image"),
        ([f"--checkpoint={tmp_path / 'nope'}"], "convert.sam_checkpoint"),
    ]:
        result = run_command("sum_jax.segment", [f"--output_dir={tmp_path / 'o'}", *args])
        assert result.code == 2, args
        assert message in result.stderr, (args, result.stderr[-500:])
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_parse_point():
    assert segmentation.parse_point("3,4") == (3.0, 4.0, 1)
    assert segmentation.parse_point("3.5,4:0") == (3.5, 4.0, 0)


class _Predictor:
    """Three square candidate masks at the first click: enough to drive segment()'s writing."""

    def set_image(self, image):
        self.shape = image.shape[:2]

    def predict(self, coords, labels, box, *, multimask_output, task):
        x, y = (int(v) for v in coords[0]) if coords is not None else (0, 0)
        masks = np.zeros((3, *self.shape), bool)
        for k in range(3):
            masks[k, y : y + 4 * (k + 1), x : x + 4 * (k + 1)] = True  # squares at the click
        return masks, np.array([0.2, 0.9, 0.5]), None

    def task_id(self, task):
        return -1


def test_a_failed_write_leaves_the_old_result_whole(tmp_path, monkeypatch):
    """A full disk at the third file: the old mask, overlay, candidates and scores all stay
    (before, a new mask.png sat beside the old overlay and result.json)."""
    image = np.full((24, 32, 3), 128, np.uint8)
    out = tmp_path / "out"
    segmentation.segment(_Predictor(), image, [(5.0, 5.0, 1)], None, str(out))
    (out / "notes.txt").write_text("the user's own file\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {*segmentation.OUTPUTS, "notes.txt"}

    real_save = segmentation.save_png
    calls = []

    def third_fails(path, image):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_save(path, image)

    monkeypatch.setattr(segmentation, "save_png", third_fails)
    with pytest.raises(OSError, match="No space left"):
        segmentation.segment(_Predictor(), image, [(20.0, 10.0, 1)], None, str(out))
    assert len(calls) == 3
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging left either

    # Written whole, the new result replaces every file; the user's file stays.
    monkeypatch.setattr(segmentation, "save_png", real_save)
    result = segmentation.segment(_Predictor(), image, [(20.0, 10.0, 1)], None, str(out))
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(after) == set(before) and after["notes.txt"] == before["notes.txt"]
    assert all(after[name] != before[name] for name in segmentation.OUTPUTS)
    assert json.loads(after["result.json"])["points"] == result["points"] == [[20.0, 10.0, 1]]


def test_a_single_mask_run_removes_old_candidates(tmp_path):
    class One(_Predictor):
        def predict(self, *args, **kwargs):
            masks, scores, _ = super().predict(*args, **kwargs)
            return masks[:1], scores[:1], None

    image = np.full((24, 32, 3), 128, np.uint8)
    out = tmp_path / "out"
    segmentation.segment(_Predictor(), image, [], None, str(out))
    assert (out / "candidates.png").exists()
    segmentation.segment(One(), image, [], None, str(out), multimask_output=False)
    assert sorted(p.name for p in out.iterdir()) == ["mask.png", "overlay.png", "result.json"]
    assert json.loads((out / "result.json").read_text())["scores"] == [0.2]
