"""Interactive-segmentation evaluation on the host: examples in, records and reports out.

`evaluate(config, model, examples, workdir)` runs every ground-truth mask of every example
through `R` interactive rounds (`sum_jax.evaluate.protocol`, on device) and writes per-object
records, per-dataset / per-task / overall means, NoC@85/90, plots and example images
(`sum_jax.evaluate.reports`). The image is encoded once; each chunk of `masks_per_batch`
masks runs all rounds of both modes in one call. Only pixel counts and clicks come back;
the ratios are formed in float64 here. Empty ground-truth masks are skipped (and counted)
since no prompt can be derived.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sum_jax.checkpointing import load_model
from sum_jax.evaluate.protocol import (
    PROTOCOLS,
    Decoder,
    ProtocolSettings,
    RoundOutputs,
    bucket,
    compiled_rounds,
    postprocess_matrices,
    sam_decoder,
    sam_encoder,
)
from sum_jax.ops import metrics, transforms
from sum_jax.ops.masks import iou_from_counts
from sum_jax.ops.transforms import preprocess_shape

Array = jax.Array
MODES = ("oracle", "single")
TASK_NAMES = {0: "unspecified", 1: "salient_object", 2: "entity", 3: "part"}

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EvalSettings:
    """Host-side settings read from the config (see `configs/eval.py`)."""

    protocols: tuple[str, ...] = ("point",)
    num_rounds: int = 6
    noc_max_clicks: int = 20
    noc_thresholds: tuple[float, ...] = (0.85, 0.90)
    single_output_token: int = 0
    use_task_prompt: bool = True
    continuous_task_prompt: bool = False
    boundary_band: float = 10.0
    dilation_ratio: float = 0.02
    masks_per_batch: int = 8
    bucket_sizes: tuple[int, ...] = (256, 512, 768, 1024, 1536, 2048, 3072, 4096)
    num_examples: int = 4
    max_images: int = -1

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EvalSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: config[k] for k in known if k in config}
        if isinstance(values.get("protocols"), str):
            values["protocols"] = tuple(p.strip() for p in values["protocols"].split(",") if p)
        for k in ("protocols", "noc_thresholds", "bucket_sizes"):
            if k in values:
                values[k] = tuple(values[k])
        unknown = set(values.get("protocols", ())) - set(PROTOCOLS)
        if unknown:
            raise ValueError(f"unknown protocols {sorted(unknown)}; choose from {PROTOCOLS}")
        return cls(**values)

    @property
    def simulated_rounds(self) -> int:
        return max(self.num_rounds, self.noc_max_clicks if self.noc_thresholds else 0)

    def protocol(self, first_prompt: str) -> ProtocolSettings:
        return ProtocolSettings(
            first_prompt=first_prompt,
            num_rounds=self.simulated_rounds,
            single_output_token=self.single_output_token,
            use_task_prompt=self.use_task_prompt,
            continuous_task_prompt=self.continuous_task_prompt,
            boundary_band=self.boundary_band,
        )


class ImageRunner(typing.Protocol):
    """A model as the host loop sees it: `decoder` + `params` for `evaluation_rounds`, and
    `prepare(example, padded (Hb, Wb)) -> context`, called once per image (SAM encodes the
    image there; a stand-in predictor may read the example's masks)."""

    decoder: Decoder
    params: Any

    def prepare(self, example: Mapping[str, Any], padded: tuple[int, int]) -> Any: ...


class SamRunner:
    """Runs an NNX `Sam`: the image encoded once per image with a jitted encoder."""

    def __init__(self, model):
        self.config = model.config
        graphdef, self.params = nnx.split(model)
        self.decoder = sam_decoder(graphdef)
        self._encode = sam_encoder(graphdef)

    def prepare(self, example: Mapping[str, Any], padded: tuple[int, int]) -> dict[str, Array]:
        image = np.asarray(example["image"])
        h, w = image.shape[:2]
        s = self.config.img_size
        pre, _ = transforms.preprocess(image, s)
        embedding = self._encode(self.params, jnp.asarray(pre))
        ay, ax = postprocess_matrices(h, w, s, self.config.low_res_size, padded)
        rh, rw = preprocess_shape(h, w, s)
        return {
            "embedding": embedding,
            "ay": jnp.asarray(ay),
            "ax": jnp.asarray(ax),
            "scale": jnp.asarray([rh / h, rw / w], jnp.float32),
        }


def evaluate_examples(
    runner: ImageRunner,
    examples: Iterable[Mapping[str, Any]],
    settings: EvalSettings,
    *,
    progress: bool = False,
    on_example_images: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Runs every protocol on every mask; returns `{protocol: [record, ...]}`.

    A record is one (object, mode): `dataset, task, image_id, mask_index, mode, height,
    width, area, iou [R], biou [R], clicks [[y, x, label], ...], noc {"85": n, ...},
    failed {"85": bool, ...}`, plus `oracle_index` / `first_ious` in round 1.
    `on_example_images` receives the chosen masks of the first `settings.num_examples`
    images (for the example PNGs).
    """
    records: dict[str, list[dict[str, Any]]] = {p: [] for p in settings.protocols}
    n_images = 0
    skipped = 0
    it = examples
    if progress:
        from tqdm import tqdm

        it = tqdm(examples, desc="evaluate", unit="img")
    for ex in it:
        if 0 <= settings.max_images <= n_images:
            break
        image = np.asarray(ex["image"])
        masks = np.asarray(ex["masks"]).astype(bool)
        h, w = image.shape[:2]
        if masks.shape[1:] != (h, w):
            raise ValueError(f"{ex['image_id']}: masks {masks.shape} vs image {image.shape}")
        keep = np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1))
        skipped += len(masks) - len(keep)
        if keep.size == 0:
            continue
        padded = (bucket(h, settings.bucket_sizes), bucket(w, settings.bucket_sizes))
        context = runner.prepare(ex, padded)
        dilation = metrics.boundary_dilation(h, w, settings.dilation_ratio)
        task = int(ex.get("task", 0))
        want_logits = n_images < settings.num_examples and on_example_images is not None
        for proto_name in settings.protocols:
            fn = compiled_rounds(runner.decoder, settings.protocol(proto_name), want_logits)
            chunk = settings.masks_per_batch
            shown: list[tuple[int, np.ndarray, np.ndarray]] = []
            for start in range(0, keep.size, chunk):
                idx = keep[start : start + chunk]
                gt = np.zeros((chunk,) + padded, bool)
                gt[: idx.size, :h, :w] = masks[idx]
                out = fn(
                    runner.params, context, jnp.asarray(gt), jnp.int32(dilation), jnp.int32(task)
                )
                out = jax.device_get(out)
                records[proto_name].extend(
                    _records(out, ex, idx, masks, task, settings, proto_name)
                )
                if want_logits:
                    shown.append((start, idx, out.logits[:, :, : idx.size]))
            if want_logits and shown:
                on_example_images(
                    {
                        "example": ex,
                        "protocol": proto_name,
                        "chunks": shown,
                        "context": context,
                        "records": records[proto_name],
                    }
                )
        n_images += 1
    if skipped:
        log.warning("skipped %d empty ground-truth masks", skipped)
    return records


def _records(out: RoundOutputs, ex, idx, masks, task, settings: EvalSettings, protocol: str):
    iou = iou_from_counts(out.inter, out.union)  # [R, 2, Q]
    biou = iou_from_counts(out.b_inter, out.b_union)
    h, w = masks.shape[1:]
    recs = []
    for j, k in enumerate(idx):
        for m, mode in enumerate(MODES):
            ious = iou[:, m, j]
            clicks = [
                [
                    int(out.click_yx[r, m, j, 0]),
                    int(out.click_yx[r, m, j, 1]),
                    int(out.click_label[r, m, j]),
                ]
                for r in range(iou.shape[0])
            ]
            rec = {
                "dataset": str(ex.get("dataset", "")),
                "task": task,
                "image_id": str(ex.get("image_id", "")),
                "mask_index": int(k),
                "protocol": protocol,
                "mode": mode,
                "height": int(h),
                "width": int(w),
                "area": int(masks[k].sum()),
                "iou": [float(v) for v in ious[: settings.num_rounds]],
                "biou": [float(v) for v in biou[: settings.num_rounds, m, j]],
                "clicks": clicks,
                "oracle_index": int(out.oracle_index[j]),
                "first_ious": [float(v) for v in out.first_ious[j]],
            }
            if protocol == "box":
                rec["box"] = [int(v) for v in out.boxes[j]]
            if settings.noc_thresholds:
                rec["noc"], rec["failed"] = {}, {}
                for t in settings.noc_thresholds:
                    n, failed = metrics.number_of_clicks(ious, t, settings.noc_max_clicks)
                    rec["noc"][threshold_key(t)] = n
                    rec["failed"][threshold_key(t)] = failed
            recs.append(rec)
    return recs


def threshold_key(t: float) -> str:
    """`0.85` -> `"85"` (the NoC@85 naming)."""
    return f"{round(t * 100):d}"


def evaluate(
    config: Mapping[str, Any],
    model_or_checkpoint: Any,
    examples: Iterable[Mapping[str, Any]],
    workdir: str | os.PathLike,
    *,
    name: str | None = None,
    runner: ImageRunner | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluates one model and writes its reports to `workdir`; returns the summary.

    Args:
      config: the evaluation config (`configs/eval.py`), or a plain mapping of its fields.
      model_or_checkpoint: an NNX `Sam` or a model directory (`sum_jax.checkpointing`).
      examples: dicts as yielded by `sum_jax.data.eval_sets.read_eval_set`.
      workdir: output directory (created); see `sum_jax.reports.write_reports`.
      name: the model's name in reports and plots (default: the checkpoint's basename).
      runner: overrides the model (tests pass a stand-in predictor here).
    """
    from sum_jax.evaluate import reports

    os.makedirs(workdir, exist_ok=True)
    settings = EvalSettings.from_config(config)
    if runner is None:
        model = model_or_checkpoint
        if isinstance(model, (str, os.PathLike)):
            name = name or os.path.basename(os.path.normpath(os.fspath(model)))
            model = load_model(os.fspath(model))
        runner = SamRunner(model)
    name = name or "model"
    log_path = os.path.join(workdir, "evaluate.log")
    handler = logging.FileHandler(log_path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("sum_jax").addHandler(handler)
    logging.getLogger("sum_jax").setLevel(logging.INFO)
    try:
        log.info("evaluating %s: %s", name, json.dumps(dataclasses.asdict(settings)))
        example_dir = os.path.join(workdir, "examples")
        shown: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        records = evaluate_examples(
            runner, examples, settings, progress=progress, on_example_images=shown.append
        )
        seconds = time.perf_counter() - t0
        summary = reports.summarize(records, settings, name=name)
        summary["seconds"] = seconds
        reports.write_reports(records, summary, workdir)
        reports.plot_curves({name: summary}, workdir)
        for item in shown:
            reports.save_example_images(item, example_dir, settings)
        n_img = summary["num_images"]
        log.info("done: %d images, %d objects in %.1f s", n_img, summary["num_objects"], seconds)
    finally:
        logging.getLogger("sum_jax").removeHandler(handler)
        handler.close()
    return summary


# ----------------------------------------------------------------------------------------
# Configured runs (the CLI's library side).


def parse_eval_sets(spec: str) -> list[tuple[str, int | None]]:
    """`"coift:validation,mhp:validation@1000"` -> `[("coift:validation", None), ...]`."""
    out = []
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        ref, _, limit = item.partition("@")
        out.append((ref, int(limit) if limit else None))
    return out


def read_examples(config: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """Every example of the configured evaluation sets, set after set."""
    from sum_jax.data.eval_sets import read_eval_set

    if not config["data_dir"]:
        raise ValueError("set --config.data_dir to the root of the prepared evaluation sets")
    for ref, limit in parse_eval_sets(config["eval_sets"]):
        log.info("reading %s (first %s images)", ref, limit if limit else "all")
        yield from read_eval_set(ref, data_dir=config["data_dir"], max_images=limit)


def parse_checkpoint(spec: str) -> tuple[str, str]:
    """`"NAME=DIR"` or `"DIR"` -> `(name, dir)`; the name defaults to the directory's name."""
    name, sep, path = spec.partition("=")
    if not sep:
        path = spec
        name = os.path.basename(os.path.normpath(spec)).replace("random:", "random_")
    return name, path


def evaluate_checkpoints(
    config: Mapping[str, Any],
    checkpoints: list[str],
    workdir: str | os.PathLike,
    *,
    examples: Callable[[], Iterable[dict[str, Any]]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluates each `NAME=DIR` checkpoint; with several, into `workdir/NAME/` and with
    comparison plots in `workdir`. Returns `{name: summary}`.

    `examples` makes a fresh example iterator per model (default: `read_examples(config)`).
    """
    from sum_jax.evaluate import reports

    if not checkpoints:
        raise ValueError("give at least one --checkpoint")
    specs = [parse_checkpoint(c) for c in checkpoints]
    names = [n for n, _ in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"checkpoint names must differ, got {names}; use NAME=DIR")
    make = examples or (lambda: read_examples(config))
    summaries = {}
    for name, path in specs:
        out = workdir if len(specs) == 1 else os.path.join(workdir, name)
        summaries[name] = evaluate(config, load_model(path), make(), out, name=name)
    if len(specs) > 1:
        reports.plot_curves(summaries, workdir)
    return summaries
