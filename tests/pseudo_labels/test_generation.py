"""The pseudo-label command: what it writes, resuming after a kill, sharding, errors."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from flax import nnx

from configs import pseudo_labels as pseudo_label_config
from sum_jax import output_dir, preemption
from sum_jax.checkpointing import save_sam
from sum_jax.data import builder
from sum_jax.data import pseudo_label_format as plf
from sum_jax.inference.mask_generator import GeneratorSettings, MaskGenerator
from sum_jax.inference.predictor import SamPredictor
from sum_jax.models.sam import build_sam
from sum_jax.pseudo_labels.generation import generate_pseudo_labels
from tests.data import fake_datasets as fake

# Permissive filters: the random tiny model's scores are low, and the test wants masks kept.
GENERATOR = {
    "points_per_side": 4,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "stability_score_offset": 0.05,
    "box_nms_thresh": 0.9,
}

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pl")
    truth = fake.make_sa1b_dataset(root / "src", np.random.default_rng(0), n=3)
    builder.prepare(
        {"dataset": "sa1b", "source_dir": str(root / "src")}, root / "data", progress=False
    )
    model = build_sam("tiny", rngs=nnx.Rngs(5))
    save_sam(model, root / "model")
    return root, truth, SamPredictor(model)


def _config(root, out, **overrides):
    c = pseudo_label_config.get_config()
    c.checkpoint = str(root / "model")
    c.data_dir = str(root / "data")
    c.output_dir = str(out)
    c.generator.update(GENERATOR)
    c.update(overrides)
    return c


def _contents(directory):
    out = {}
    for path in sorted(directory.glob("*.npz")):
        labels = plf.read(directory, path.stem)
        out[path.stem] = (
            labels.decode_masks(),
            labels.logits_quantized(),
            labels.points,
            labels.predicted_iou,
            labels.stability_score,
        )
    return out


def _assert_same_contents(a, b):
    assert a.keys() == b.keys()
    for k in a:
        for x, y in zip(a[k], b[k]):
            np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def uninterrupted(setup):
    root, _, predictor = setup
    out = root / "full"
    summary = generate_pseudo_labels(_config(root, out), predictor, progress=False)
    return out, summary


def test_files_hold_what_the_generator_returns(setup, uninterrupted):
    root, truth, predictor = setup
    out, summary = uninterrupted
    assert summary["images"] == summary["written"] == len(truth) == 4
    stages = summary["masks_after_stage"]
    assert stages["candidates"] == 4 * 16 * 3
    assert stages["candidates"] >= stages["area"] >= stages["box_nms"] > 0
    assert 0 < summary["bytes_per_image"] < 200_000
    image = fake.decode_file(next((root / "src").rglob("sa_99.jpg")))
    expected = MaskGenerator(predictor, GeneratorSettings(**GENERATOR)).generate(image)
    labels = plf.read(out, "sa_99")
    assert labels.num_masks == len(expected) > 0
    assert (labels.height, labels.width) == image.shape[:2]
    np.testing.assert_array_equal(labels.decode_masks(), [m["segmentation"] for m in expected])
    np.testing.assert_allclose(labels.points, [m["point_coords"][0] for m in expected], atol=1e-4)
    np.testing.assert_allclose(
        labels.predicted_iou, [m["predicted_iou"] for m in expected], rtol=1e-6
    )
    q = plf.quantize_logits(np.stack([m["low_res_logits"] for m in expected]))
    np.testing.assert_array_equal(labels.logits_quantized(), q)
    assert labels.map_size == predictor.config.low_res_size


def test_interrupted_run_resumes_to_the_same_files(setup, uninterrupted):
    root, _, predictor = setup
    out = root / "resumed"
    first = generate_pseudo_labels(_config(root, out, max_images=2), predictor, progress=False)
    assert first["written"] == 2
    second = generate_pseudo_labels(_config(root, out), predictor, progress=False)
    assert (second["written"], second["skipped_existing"]) == (2, 2)
    _assert_same_contents(_contents(out), _contents(uninterrupted[0]))


def test_damaged_file_is_named_and_redone(setup, uninterrupted):
    root, _, predictor = setup
    out = root / "damaged"
    shutil.copytree(uninterrupted[0], out)
    victim = min(out.glob("*.npz"))
    victim.write_bytes(victim.read_bytes()[:100])  # a copy cut short
    summary = generate_pseudo_labels(_config(root, out), predictor, progress=False)
    assert summary["written"] == 1 and len(summary["redone"]) == 1
    assert victim.name in summary["redone"][0]
    _assert_same_contents(_contents(out), _contents(uninterrupted[0]))


def test_processes_write_disjoint_shards(setup, uninterrupted):
    root, _, predictor = setup
    out = root / "sharded"
    counts = [
        generate_pseudo_labels(
            _config(root, out), predictor, process_index=i, process_count=2, progress=False
        )["written"]
        for i in range(2)
    ]
    assert counts == [2, 2]
    _assert_same_contents(_contents(out), _contents(uninterrupted[0]))


def test_killed_command_reruns_to_the_same_output(setup, uninterrupted):
    root, _, _ = setup
    out = root / "killed"
    args = [
        sys.executable,
        "-m",
        "sum_jax.pseudo_labels",
        "--config=configs/pseudo_labels.py",
        f"--config.checkpoint={root / 'model'}",
        f"--config.data_dir={root / 'data'}",
        f"--config.output_dir={out}",
    ]
    args += [f"--config.generator.{k}={v}" for k, v in GENERATOR.items()]
    cwd = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("*.npz")) and proc.poll() is None:
        time.sleep(0.005)  # kill within ~5 ms of the first file: 3 images still to go
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(list(out.glob("*.npz")))
    assert partial < 4, "the run finished before it could be killed"
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)
    _assert_same_contents(_contents(out), _contents(uninterrupted[0]))
    # No temporary leftovers (the owner record and lock file of sum_jax.output_dir stay).
    hidden = {p.name for p in out.iterdir() if p.name.startswith(".")}
    assert hidden <= {output_dir.OWNER_FILE, output_dir.LOCK_FILE}, hidden


def test_sigterm_finishes_the_image_in_progress_and_the_rerun_completes(
    setup, uninterrupted, monkeypatch
):
    root, _, predictor = setup
    out = root / "preempted"
    generate, calls = MaskGenerator.generate, []

    def sigterm_during_second_image(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # for real, while image 2 is in progress
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(MaskGenerator, "generate", sigterm_during_second_image)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(preemption.Preempted, match=r"stopped after .*\.npz \(2 files written"):
        generate_pseudo_labels(_config(root, out), predictor, progress=False)
    assert signal.getsignal(signal.SIGTERM) is handler
    assert len(list(out.glob("*.npz"))) == 2 and not list(out.glob("summary_*.json"))
    monkeypatch.undo()
    summary = generate_pseudo_labels(_config(root, out), predictor, progress=False)
    assert (summary["written"], summary["skipped_existing"]) == (2, 2)
    _assert_same_contents(_contents(out), _contents(uninterrupted[0]))


def test_errors_name_the_fix(setup, tmp_path):
    root, _, predictor = setup
    with pytest.raises(ValueError, match="crop_n_layers must be 0"):
        c = _config(root, tmp_path / "o")
        c.generator.crop_n_layers = 1
        generate_pseudo_labels(c, predictor, progress=False)
    with pytest.raises(ValueError, match="convert.sam_checkpoint"):
        generate_pseudo_labels(_config(root, tmp_path / "o", checkpoint=""), progress=False)
    with pytest.raises(FileNotFoundError, match="prepare_data"):
        generate_pseudo_labels(
            _config(root, tmp_path / "o", dataset="sa1b_missing:train"), predictor, progress=False
        )
    with pytest.raises(ValueError, match="unknown generator settings"):
        c = _config(root, tmp_path / "o")
        c.generator.points_per_sid = 3
        generate_pseudo_labels(c, predictor, progress=False)


# Uncertainty maps ------------------------------------------------------------------------


@pytest.fixture()
def labelled_copy(uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "pl"
    shutil.copytree(uninterrupted[0], out)
    return out


def _uncertainty_config(root, pseudo_dir, **overrides):
    from configs import uncertainty as uncertainty_config

    c = uncertainty_config.get_config()
    c.refiner = str(root / "model")
    c.data_dir = str(root / "data")
    c.pseudo_labels = str(pseudo_dir)
    c.update(overrides)
    return c


def test_uncertainty_equals_the_formula(setup, labelled_copy):
    """u is |sigmoid(s) - sigmoid(r)| with r from the predictor given s, the box and the point."""
    from sum_jax.uncertainty.maps import Refiner, compute_uncertainty

    root, _, predictor = setup
    refiner = Refiner(predictor.model)  # the random tiny SAM stands in for a trained refiner
    refined_dir = labelled_copy.parent / "refined"
    config = _uncertainty_config(root, labelled_copy, refined_labels_dir=str(refined_dir))
    summary = compute_uncertainty(config, refiner, progress=False)
    assert summary["images_written"] == 4 and summary["masks"] > 0
    labels = plf.read(labelled_copy, "sa_99")
    u = labels.uncertainty() / 255.0
    assert u.shape == (labels.num_masks, 32, 32) and 0.0 <= u.min() and u.max() <= 1.0
    assert u.max() > 0.05  # the maps are not trivially zero
    from PIL import Image

    pic = np.asarray(Image.open(labelled_copy / "pictures" / "sa_99.png"))
    assert pic.shape == (labels.height, 3 * labels.width + 8, 3)

    image = fake.decode_file(next((root / "src").rglob("sa_99.jpg")))
    predictor.set_image(image)
    sam = labels.logits().astype(np.float64)
    masks = labels.decode_masks()
    for k in range(labels.num_masks):
        ys, xs = np.nonzero(masks[k])
        box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float64)
        _, _, refined = predictor.predict(
            labels.points[k][None], np.array([1]), box, labels.logits([k]), multimask_output=False
        )
        expected = np.abs(1 / (1 + np.exp(-sam[k])) - 1 / (1 + np.exp(-refined[0].astype(float))))
        # Stored as round(255 u): within half a step, plus float32 rounding of the decoder.
        assert np.abs(u[k] - expected).max() <= 0.5 / 255 + 1e-4
        # The refined-labels file holds the refiner's mask (the official upscaling of r > 0),
        # the same point and scores.
        refined_labels = plf.read(refined_dir, "sa_99")
        full, _, _ = predictor.predict(
            labels.points[k][None], np.array([1]), box, labels.logits([k]), multimask_output=False
        )
        agree = (refined_labels.decode_masks([k])[0] == full[0]).mean()
        assert agree >= 0.999, agree
        np.testing.assert_array_equal(refined_labels.points[k], labels.points[k])
        assert not refined_labels.has_uncertainty


def test_uncertainty_resumes_and_skips_done_files(setup, labelled_copy, tmp_path):
    import shutil

    from sum_jax.uncertainty.maps import Refiner, compute_uncertainty

    root, _, predictor = setup
    refiner = Refiner(predictor.model)
    whole = tmp_path / "whole"
    shutil.copytree(labelled_copy, whole)
    compute_uncertainty(_uncertainty_config(root, whole), refiner, progress=False)
    first = compute_uncertainty(
        _uncertainty_config(root, labelled_copy, max_images=2), refiner, progress=False
    )
    second = compute_uncertainty(_uncertainty_config(root, labelled_copy), refiner, progress=False)
    assert (first["images_written"], second["images_written"], second["skipped_existing"]) == (
        2,
        2,
        2,
    )
    for path in whole.glob("*.npz"):
        np.testing.assert_array_equal(
            plf.read(whole, path.stem).uncertainty(),
            plf.read(labelled_copy, path.stem).uncertainty(),
        )


def test_uncertainty_errors(setup, tmp_path):
    from sum_jax.uncertainty.maps import compute_uncertainty

    root, _, _ = setup
    with pytest.raises(ValueError, match="train_refiner"):
        compute_uncertainty(_uncertainty_config(root, tmp_path, refiner=""), progress=False)
    with pytest.raises(FileNotFoundError, match="sum_jax.pseudo_labels"):
        compute_uncertainty(_uncertainty_config(root, tmp_path / "none"), progress=False)


def test_shard_flag_parsing():
    from sum_jax.data.sources import parse_shard

    assert parse_shard("3/8") == (3, 8)
    assert parse_shard(None) == parse_shard("") == (None, None)
    for bad in ("8/8", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(ValueError, match="INDEX/COUNT"):
            parse_shard(bad)


def test_confidence_uncertainty_is_the_formula_on_the_stored_logits(setup, labelled_copy, tmp_path):
    """ "SUM Confidence-Uncer" (§4.3): u = 1 - |2 sigmoid(s) - 1| of SAM's stored logits,
    written into a copy (originals untouched), no model needed; the folder refuses a second
    source."""
    from sum_jax.uncertainty.maps import compute_uncertainty

    root, _, _ = setup
    dest = tmp_path / "confidence"
    config = _uncertainty_config(
        root, labelled_copy, refiner="", source="confidence", output_dir=str(dest)
    )
    summary = compute_uncertainty(config, progress=False)
    assert summary["images_written"] == 4 and summary["source"] == "confidence"
    for path in labelled_copy.glob("*.npz"):
        original = plf.read(labelled_copy, path.stem)
        assert not original.has_uncertainty
        copy = plf.read(dest, path.stem)
        np.testing.assert_array_equal(copy.logits_quantized(), original.logits_quantized())
        # Independent float64 reference: sigmoid of the logits rebuilt from the stored
        # q = round(255 sigmoid(s / T)), then the distance of p from its binarisation, x2.
        q = np.clip(original.logits_quantized().astype(np.float64), 0.5, 254.5) / 255.0
        s = original.logit_temperature * np.log(q / (1.0 - q))
        p = 1.0 / (1.0 + np.exp(-s))
        expected = 2.0 * np.minimum(p, 1.0 - p)
        u = copy.uncertainty() / 255.0
        assert np.abs(u - expected).max() <= 0.5 / 255 + 1e-6
        assert u.max() > 0.5  # the random model's logits are far from saturated
    again = compute_uncertainty(config, progress=False)
    assert (again["images_written"], again["skipped_existing"]) == (0, 4)
    with pytest.raises(ValueError, match="source: 'confidence' then, 'refiner' now"):
        compute_uncertainty(
            _uncertainty_config(root, labelled_copy, output_dir=str(dest)), progress=False
        )


# Stale results: a rerun into the same folder with another model or settings ---------------


def _files(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_rerun_with_another_model_or_settings_is_refused_naming_the_change(
    setup, uninterrupted, tmp_path
):
    from sum_jax.cli import InputError

    root, _, predictor = setup
    out = tmp_path / "pl"
    shutil.copytree(uninterrupted[0], out)
    before = _files(out)
    # Another model under config.checkpoint: refused before it loads, files untouched.
    with pytest.raises(InputError, match=r"model: .*/model \(fingerprint \w+\) then, "
                                         r"random:tiny \(fingerprint \w+\) now"):  # fmt: skip
        generate_pseudo_labels(_config(root, out, checkpoint="random:tiny"), progress=False)
    # The same model directory with other weights in it: its content changed.
    other = tmp_path / "model"
    shutil.copytree(root / "model", other)
    victim = max((p for p in (other / "params").rglob("*") if p.is_file()), key=os.path.getsize)
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(InputError, match="model: "):
        generate_pseudo_labels(_config(root, out, checkpoint=str(other)), predictor, progress=False)
    # A generator setting that changes which masks are kept.
    c = _config(root, out)
    c.generator.pred_iou_thresh = 0.5
    with pytest.raises(InputError, match=r"generator.pred_iou_thresh: 0.0 then, 0.5 now"):
        generate_pseudo_labels(c, predictor, progress=False)
    assert _files(out) == before
    # Nothing that changes a file: every image is skipped, as before.
    again = generate_pseudo_labels(_config(root, out, max_images=3), predictor, progress=False)
    assert (again["written"], again["skipped_existing"]) == (0, 3)
    # Files from before records existed (or copied by hand): not taken as this run's.
    (out / "made_from.json").unlink()
    with pytest.raises(InputError, match="no made_from.json"):
        generate_pseudo_labels(_config(root, out), predictor, progress=False)


def test_uncertainty_rerun_with_another_refiner_is_refused(setup, labelled_copy):
    from sum_jax.cli import InputError
    from sum_jax.uncertainty.maps import Refiner, compute_uncertainty

    root, _, predictor = setup
    refiner = Refiner(predictor.model)
    first = compute_uncertainty(
        _uncertainty_config(root, labelled_copy, max_images=1, pictures=0), refiner, progress=False
    )
    assert first["images_written"] == 1
    before = _files(labelled_copy)
    with pytest.raises(InputError, match=r"refiner: .*/model \(fingerprint \w+\) then, "
                                         r"random:tiny \(fingerprint \w+\) now"):  # fmt: skip
        compute_uncertainty(
            _uncertainty_config(root, labelled_copy, refiner="random:tiny"), progress=False
        )
    with pytest.raises(InputError, match="source: 'refiner' then, 'confidence' now"):
        compute_uncertainty(
            _uncertainty_config(root, labelled_copy, source="confidence"), progress=False
        )
    assert _files(labelled_copy) == before
    again = compute_uncertainty(
        _uncertainty_config(root, labelled_copy, max_images=1), refiner, progress=False
    )
    assert (again["images_written"], again["skipped_existing"]) == (0, 1)
