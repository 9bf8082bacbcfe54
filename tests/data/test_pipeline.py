"""The Grain training pipeline: layout, content, mixing, sharding, determinism, checkpoints."""

from __future__ import annotations

import hashlib
import itertools

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sum_jax.data import builder, image_ops, pipeline, sources
from sum_jax.data import pseudo_label_format as plf
from tests.data import fake_datasets as fake

S, L, N = 64, 16, 4


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory, prepared_folder):
    """SA-1B-format images prepared next to the folder set, with pseudo-label files; the first
    half of the images also has uncertainty maps."""
    data_dir, _, _ = prepared_folder
    root = tmp_path_factory.mktemp("sa1b_src")
    pl_dir = tmp_path_factory.mktemp("pseudo_labels")
    rng = np.random.default_rng(3)
    truth = fake.make_sa1b_dataset(root, rng, n=5)
    builder.prepare({"dataset": "sa1b", "source_dir": str(root)}, data_dir, progress=False)
    stored = {}
    for j, (image_id, (image, _, _)) in enumerate(sorted(truth.items())):
        h, w = image.shape[:2]
        k = int(rng.integers(2, 7))  # Some above N (subsampled), some below (padded).
        masks = fake.random_masks(rng, h, w, k)
        logits = rng.normal(0, 5, (k, 256, 256)).astype(np.float32)
        u = rng.integers(0, 256, (k, 256, 256), dtype=np.uint8) if j % 2 == 0 else None
        plf.write(
            pl_dir,
            image_id,
            height=h,
            width=w,
            masks=list(masks),
            low_res_logits=logits,
            points=np.zeros((k, 2)),
            predicted_iou=np.ones(k),
            stability_score=np.ones(k),
            uncertainty=u,
        )
        stored[image_id] = (image, masks, logits, u)
    return data_dir, pl_dir, stored


def make_config(data_dir, **overrides):
    from configs.data import pipeline as pipeline_config

    cfg = pipeline_config.get_config()
    cfg.data_dir = str(data_dir)
    cfg.labelled = ["toy_salient:train"]
    cfg.image_size, cfg.mask_size, cfg.max_masks = S, L, N
    cfg.batch_size = 4
    cfg.read_threads = 2
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def with_unlabelled(unlabelled, **overrides):
    data_dir, pl_dir, _ = unlabelled
    overrides = {"unlabelled": "sa1b:train", "pseudo_label_dir": str(pl_dir), **overrides}
    return make_config(data_dir, **overrides)


def take(cfg, n, **kwargs):
    it = iter(
        pipeline.make_train_dataset(
            cfg, process_index=kwargs.get("pi", 0), process_count=kwargs.get("pc", 1)
        )
    )
    return [next(it) for _ in range(n)]


def image_key(image: np.ndarray) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


def test_batch_layout(unlabelled):
    cfg = with_unlabelled(unlabelled, full_res_masks=True, sam_logits=True)
    batch = take(cfg, 1)[0]
    expected = {
        "image": ((4, S, S, 3), np.uint8),
        "image_size": ((4, 2), np.int32),
        "masks": ((4, N, L, L), np.uint8),
        "mask_valid": ((4, N), np.bool_),
        "uncertainty": ((4, N, L, L), np.uint8),
        "is_pseudo": ((4,), np.bool_),
        "task_id": ((4,), np.int32),
        "masks_full": ((4, N, S, S), np.uint8),
        "sam_logits": ((4, N, L, L), np.float32),
    }
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
    assert set(np.unique(batch["masks"])) <= {0, 1}
    # Padding slots are empty; valid slots are not.
    valid = batch["mask_valid"]
    assert not batch["masks"][~valid].any() and all(m.any() for m in batch["masks"][valid])
    # Human labels: task 1, u = 0; pseudo-labels: task 0.
    assert (batch["task_id"][~batch["is_pseudo"]] == 1).all() and (
        batch["task_id"][batch["is_pseudo"]] == 0
    ).all()
    assert not batch["uncertainty"][~batch["is_pseudo"]].any()
    assert not batch["sam_logits"][~batch["is_pseudo"]].any()


def test_labelled_elements_hold_the_source_masks(prepared_folder):
    data_dir, truth, _ = prepared_folder
    cfg = make_config(data_dir, full_res_masks=True)
    src = sources.open_sources(data_dir, ["toy_salient:train"])
    for index in range(len(src)):
        record = src[index]
        image, masks, _ = truth[record["image_id"]]
        out = pipeline.labelled_element(record, np.random.default_rng(index), cfg)
        padded, size = image_ops.resize_longest_side_and_pad(image, S)
        np.testing.assert_array_equal(out["image"], padded)
        np.testing.assert_array_equal(out["image_size"], size)
        n = min(len(masks), N)
        assert out["mask_valid"].sum() == n and out["mask_valid"][:n].all()
        frames = [
            image_ops.mask_to_frame(m, S, L).tobytes() + image_ops.mask_to_frame(m, S, S).tobytes()
            for m in masks
        ]
        # Each slot holds one source mask at both resolutions, drawn without replacement.
        picked = [
            frames.index(low.tobytes() + full.tobytes())
            for low, full in zip(out["masks"][:n], out["masks_full"][:n])
        ]
        assert len(set(picked)) == n


def test_unlabelled_elements_read_pseudo_labels_and_uncertainty(unlabelled):
    data_dir, _, stored = unlabelled
    cfg = with_unlabelled(unlabelled, mask_size=256, sam_logits=True)
    src = sources.open_sources(data_dir, ["sa1b:train"])
    for index in range(len(src)):
        record = src[index]
        _, masks, logits, u = stored[record["image_id"]]
        out = pipeline.unlabelled_element(record, np.random.default_rng(index), cfg)
        assert out["is_pseudo"] and out["task_id"] == 0
        n = min(len(masks), N)
        frames = [image_ops.mask_to_frame(m, S, 256).tobytes() for m in masks]
        for j in range(n):
            k = frames.index(out["masks"][j].tobytes())
            expected_u = (
                np.zeros((256, 256), np.uint8) if u is None else u[k]
            )  # u = 0 before the stage.
            np.testing.assert_array_equal(out["uncertainty"][j], expected_u)
            np.testing.assert_allclose(
                out["sam_logits"][j], plf.dequantize_logits(plf.quantize_logits(logits[k]))
            )


@pytest.mark.parametrize("mix, batch_size", [((1, 1), 4), ((2, 1), 6), ((2, 1), 4)])
def test_mixing_ratio(unlabelled, mix, batch_size):
    cfg = with_unlabelled(unlabelled, mix=mix, batch_size=batch_size)
    batches = take(cfg, 24)
    pseudo = np.stack([b["is_pseudo"] for b in batches])
    share = mix[1] / sum(mix)
    assert abs(pseudo.mean() - share) <= 1 / pseudo.size * 2
    if batch_size % sum(mix) == 0:  # Then every single batch holds the ratio exactly.
        assert (pseudo.sum(axis=1) == batch_size * share).all()


def test_processes_see_disjoint_shards_covering_each_epoch(prepared_folder):
    data_dir, truth, _ = prepared_folder
    cfg = make_config(data_dir, batch_size=2)
    seen = []
    for pi in range(2):
        batches = take(cfg, len(truth) // 4, pi=pi, pc=2)  # Half an epoch each.
        seen.append({image_key(im) for b in batches for im in b["image"]})
    assert not seen[0] & seen[1]
    every = {image_key(image_ops.resize_longest_side_and_pad(t[0], S)[0]) for t in truth.values()}
    assert seen[0] | seen[1] == every


def test_deterministic_given_the_seed_and_reshuffled_each_epoch(prepared_folder):
    data_dir, truth, _ = prepared_folder
    cfg = make_config(data_dir, batch_size=len(truth))
    a, b = take(cfg, 2), take(cfg, 2)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    epoch0 = [image_key(im) for im in a[0]["image"]]
    epoch1 = [image_key(im) for im in a[1]["image"]]
    assert sorted(epoch0) == sorted(epoch1) and epoch0 != epoch1  # Same images, new order.
    other = take(make_config(data_dir, batch_size=len(truth), seed=5), 1)[0]
    assert [image_key(im) for im in other["image"]] != epoch0


def assert_same_batches(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_iterator_state_restores_exactly(unlabelled, tmp_path):
    cfg = with_unlabelled(unlabelled, mix=(2, 1), batch_size=3)
    it = iter(pipeline.make_train_dataset(cfg, process_index=0, process_count=1))
    for _ in range(5):
        next(it)
    manager = ocp.CheckpointManager(tmp_path / "ckpt")
    manager.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
    state = it.get_state()
    expected = [next(it) for _ in range(4)]

    # Restored through Orbax into a freshly built pipeline.
    fresh = iter(pipeline.make_train_dataset(cfg, process_index=0, process_count=1))
    manager.restore(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    assert_same_batches([next(fresh) for _ in range(4)], expected)
    # And through the plain state dict.
    again = iter(pipeline.make_train_dataset(cfg, process_index=0, process_count=1))
    again.set_state(state)
    assert_same_batches([next(again) for _ in range(4)], expected)


def test_missing_pseudo_labels(unlabelled, tmp_path):
    cfg = with_unlabelled(unlabelled, pseudo_label_dir=str(tmp_path), mix=(1, 1), batch_size=2)
    with pytest.raises(FileNotFoundError, match=r"sa_\d+\.npz: no pseudo-labels"):
        take(cfg, 1)
    cfg.missing_pseudo_labels = "empty"
    batch = take(cfg, 1)[0]
    assert batch["is_pseudo"].any() and not batch["mask_valid"][batch["is_pseudo"]].any()


def test_every_pseudo_label_file_needs_uncertainty_maps_for_sum(unlabelled):
    """With `require_uncertainty` (the trainer sets it for SUM configs), a pseudo-label
    file without maps is an error naming that file, whichever file it is; the fixture gives
    maps to every other image only, so reading the set hits one."""
    stored = unlabelled[2]
    without = sorted(k for k, (_, _, _, u) in stored.items() if u is None)
    assert without and len(without) < len(stored)
    cfg = with_unlabelled(unlabelled, labelled=[], batch_size=1, require_uncertainty=True)
    it = iter(pipeline.make_train_dataset(cfg, process_index=0, process_count=1))
    with pytest.raises(FileNotFoundError, match="without uncertainty maps") as info:
        for _ in range(3 * len(stored)):  # every image, several epochs' worth
            next(it)
    assert any(f"{image_id}.npz" in str(info.value) for image_id in without)
    # Without the requirement the same files give u = 0 (the earlier behaviour).
    cfg.require_uncertainty = False
    assert len(take(cfg, len(stored))) == len(stored)


def test_trainer_requires_maps_for_sum_configs_only():
    from configs import ablations
    from sum_jax.models.sam import VARIANTS
    from sum_jax.train import loop

    def required(variant):
        config = ablations.get_config(variant)
        return loop.data_config(config, VARIANTS["tiny"], 1).require_uncertainty

    assert required("sum") and required("no_uncertainty_sampling")
    assert not required("vanilla") and not required("refined_labels")


def test_task_override_by_dataset(prepared_folder):
    data_dir, _, _ = prepared_folder
    cfg = make_config(data_dir)
    cfg.task_ids = {"toy_salient": 3}
    assert (take(cfg, 1)[0]["task_id"] == 3).all()


def test_labelled_only_and_worker_count_in_config(prepared_folder):
    data_dir, _, _ = prepared_folder
    cfg = make_config(data_dir)
    assert cfg.worker_count == 0  # Tests decode in threads; workers are a config switch.
    ds = pipeline.make_train_dataset(cfg, process_index=0, process_count=1)
    assert not next(iter(ds))["is_pseudo"].any()
    with pytest.raises(ValueError, match="process_index"):
        pipeline.make_train_dataset(cfg, process_index=2, process_count=2)
    # The first items of the stream are a permutation of the source (no repeats in an epoch).
    batches = list(itertools.islice(iter(ds), 2))
    keys = [image_key(im) for b in batches for im in b["image"]]
    assert len(set(keys)) == len(keys)
