"""Interactive-segmentation evaluation on the host: examples in, records and reports out.

`evaluate(config, model, examples, workdir)` runs every ground-truth mask of every example
through `R` interactive rounds (`sum_jax.evaluate.protocol`, on device) and writes per-object
records, per-dataset / per-task / overall means, NoC@85/90, plots and example images
(`sum_jax.evaluate.reports`). The image is encoded once; each chunk of at most
`masks_per_batch` masks (padded to a power of two: an image with one object runs one slot)
runs all rounds of both modes in one call. Only pixel counts and clicks come back; the ratios
are formed in float64 here. Empty ground-truth masks are skipped (and counted) since no prompt
can be derived.

Resuming: each image's records are appended to `workdir/progress.jsonl` as one line, written
and fsynced in one go, as soon as the image is done. A killed evaluation restarted with the
same settings skips the images found there (a torn last line is dropped) and the reports are
rebuilt from all records. On SIGTERM (a preemption notice) the image in progress is
recorded, then the run stops (`sum_jax.preemption`) and the rerun continues. Progress (images per second, ETA) goes to the log and the bar.
The journal's first line records what its records were made from (`journal_header`: the
model's fingerprint, the settings that change a record, each prepared set's fingerprint); a
rerun into the same workdir with anything else is refused, naming what changed.
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

from sum_jax import cloud, fingerprint, preemption
from sum_jax.checkpointing import (
    TaskRecord,
    load_model,
    model_fingerprint,
    parse_checkpoint,
    read_tasks,
)
from sum_jax.cli import InputError
from sum_jax.evaluate.protocol import (
    FRAME_BUCKETS,
    PROTOCOLS,
    Decoder,
    ProtocolSettings,
    RoundOutputs,
    bucket,
    compiled_rounds,
    sam_decoder,
    sam_encoder,
    slot_bucket,
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
    bucket_sizes: tuple[int, ...] = FRAME_BUCKETS
    num_examples: int = 4
    max_images: int | None = None  # the first N images; None: every image

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
    """Runs an NNX `Sam`: the image encoded once per image with a jitted encoder.

    `tasks` (the model directory's `TaskRecord`, None for a plain SAM): a set's task id the
    model never trained on is replaced by 0 in the prompt (App. H.1), logged once per id;
    records keep the set's own task for the per-task means.
    """

    def __init__(self, model, tasks: TaskRecord | None = None):
        self.config = model.config
        self.tasks = tasks
        self._logged_tasks: set[int] = set()
        graphdef, self.params = nnx.split(model)
        self.decoder = sam_decoder(graphdef)
        self._encode = sam_encoder(graphdef)

    def prompt_task(self, task: int, dataset: str = "") -> int:
        """The task id given to the model for a set of task `task` (see the class)."""
        if self.tasks is None or task < 0 or task in self.tasks.seen:
            return task
        if task not in self._logged_tasks:
            self._logged_tasks.add(task)
            return self.tasks.prompt_task(task, what=f"evaluation set {dataset}")
        return 0

    def prepare(self, example: Mapping[str, Any], padded: tuple[int, int]) -> dict[str, Array]:
        image = np.asarray(example["image"])
        h, w = image.shape[:2]
        s = self.config.img_size
        pre, _ = transforms.preprocess(image, s)
        embedding = self._encode(self.params, jnp.asarray(pre))
        taps = transforms.postprocess_taps((h, w), s, self.config.low_res_size, padded)
        rh, rw = preprocess_shape(h, w, s)
        return {
            "embedding": embedding,
            "taps": jax.tree.map(jnp.asarray, taps),
            "scale": jnp.asarray([rh / h, rw / w], jnp.float32),
        }


def image_key(index: int, example: Mapping[str, Any]) -> str:
    """An example's identity in `progress.jsonl`: its position in the stream and its ids."""
    return f"{index}:{example.get('dataset', '')}:{example.get('image_id', '')}"


class Progress:
    """Images per second and ETA over the images evaluated in this run, logged every
    `every_s` seconds (and on the bar when there is one)."""

    def __init__(self, total: int | None, bar=None, every_s: float = 30.0):
        self.total, self.bar, self.every_s = total, bar, every_s
        self.t0 = self.last = time.perf_counter()
        self.done = self.resumed = 0

    def update(self, resumed: bool = False) -> None:
        if resumed:
            self.resumed += 1
        else:
            self.done += 1
        now = time.perf_counter()
        rate = self.done / max(now - self.t0, 1e-9)
        finished = self.done + self.resumed
        eta = ""
        if self.total is not None and rate > 0:
            eta = f", ETA {_duration(max(self.total - finished, 0) / rate)}"
        line = f"{finished}{'/' + str(self.total) if self.total else ''} images"
        line += f" ({self.resumed} from progress.jsonl), " if self.resumed else ", "
        line += f"{rate:.3f} images/s{eta}"
        if self.bar is not None:
            self.bar.set_postfix_str(f"{rate:.2f} img/s{eta}", refresh=False)
        if not resumed and (now - self.last >= self.every_s or finished == self.total):
            self.last = now
            log.info(line)


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def evaluate_examples(
    runner: ImageRunner,
    examples: Iterable[Mapping[str, Any]],
    settings: EvalSettings,
    *,
    progress: bool = False,
    on_example_images: Callable[[dict[str, Any]], None] | None = None,
    done: Mapping[str, Mapping[str, list[dict[str, Any]]]] | None = None,
    on_image: Callable[[str, dict[str, list[dict[str, Any]]]], None] | None = None,
    total: int | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Runs every protocol on every mask; returns `{protocol: [record, ...]}`.

    A record is one (object, mode): `dataset, task, image_id, mask_index, mode, height,
    width, area, iou [R], biou [R], clicks [[y, x, label], ...], noc {"85": n, ...},
    failed {"85": bool, ...}`, plus `oracle_index` / `first_ious` in round 1.
    `on_example_images` receives the chosen masks of the first `settings.num_examples`
    images (for the example PNGs). `done` maps `image_key`s already evaluated to their
    records (taken as they are, the image is not run again); `on_image(key, records)` is
    called after each image that was run. `total` (the number of examples, if known) gives
    the ETA.
    """
    records: dict[str, list[dict[str, Any]]] = {p: [] for p in settings.protocols}
    done = done or {}
    n_images = 0
    skipped = 0
    it = examples
    if total is None and hasattr(examples, "__len__"):
        total = len(examples)  # type: ignore[arg-type]
    if total is not None and settings.max_images is not None:
        total = min(total, settings.max_images)
    bar = None
    if progress:
        from tqdm import tqdm

        it = bar = tqdm(examples, desc="evaluate", unit="img", total=total)
    meter = Progress(total, bar)
    for index, ex in enumerate(it):
        if settings.max_images is not None and n_images >= settings.max_images:
            break
        key = image_key(index, ex)
        if key in done:
            for proto_name in settings.protocols:
                records[proto_name].extend(done[key].get(proto_name, []))
            n_images += 1
            meter.update(resumed=True)
            continue
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
        # The prompt's task: an id the model never trained on becomes 0 (SamRunner).
        prompt_task = getattr(runner, "prompt_task", None)
        prompt_task = task if prompt_task is None else prompt_task(task, str(ex.get("dataset")))
        want_logits = n_images < settings.num_examples and on_example_images is not None
        image_records: dict[str, list[dict[str, Any]]] = {}
        for proto_name in settings.protocols:
            fn = compiled_rounds(runner.decoder, settings.protocol(proto_name), want_logits)
            chunk = settings.masks_per_batch
            shown: list[tuple[int, np.ndarray, np.ndarray]] = []
            image_records[proto_name] = []
            for start in range(0, keep.size, chunk):
                idx = keep[start : start + chunk]
                gt = np.zeros((slot_bucket(idx.size, chunk),) + padded, bool)
                gt[: idx.size, :h, :w] = masks[idx]
                out = fn(
                    runner.params,
                    context,
                    jnp.asarray(gt),
                    jnp.int32(dilation),
                    jnp.int32(prompt_task),
                )
                out = jax.device_get(out)
                image_records[proto_name].extend(
                    _records(out, ex, idx, masks, task, settings, proto_name)
                )
                if want_logits:
                    shown.append((start, idx, out.logits[:, :, : idx.size]))
            records[proto_name].extend(image_records[proto_name])
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
        if on_image is not None:
            on_image(key, image_records)
        n_images += 1
        meter.update()
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


class Journal:
    """`progress.jsonl`: a header line (the settings and model name), then one line per
    image, `{"key": ..., "records": {protocol: [record, ...]}}`, appended in one write and
    fsynced, so a killed run leaves whole lines and at most one torn last line."""

    def __init__(self, path: str | os.PathLike, header: dict[str, Any]):
        self.path = os.fspath(path)
        self.done: dict[str, dict[str, list[dict[str, Any]]]] = {}
        good = 0  # bytes of whole, parsable lines
        data = b""
        if cloud.as_path(self.path).exists():
            with cloud.as_path(self.path).open("rb") as f:
                data = f.read()
            for raw in data.splitlines(keepends=True):
                try:
                    if not raw.endswith(b"\n"):
                        raise ValueError("torn line")
                    entry = json.loads(raw)
                except ValueError:
                    break  # the line being written when the run was killed
                if good == 0:
                    _check_header(self.path, entry, header)
                else:
                    self.done[entry["key"]] = entry["records"]
                good += len(raw)
        if cloud.is_remote(self.path):  # an object is rewritten, not truncated
            if good < len(data) or not data:
                cloud.as_path(self.path).write_bytes(data[:good])
        else:
            with open(self.path, "ab") as f:
                f.truncate(good)
        if good == 0:
            self._append(header)

    def _append(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry) + "\n").encode()
        if cloud.is_remote(self.path):  # the object rewritten whole: `sum_jax.cloud`
            cloud.append(self.path, line)
            return
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def add(self, key: str, records: dict[str, list[dict[str, Any]]]) -> None:
        self._append({"key": key, "records": records})


def _check_header(path: str, old: Any, header: dict[str, Any]) -> None:
    """Raises unless `old` (a journal's first line) is `header`, naming what changed: the
    records in `path` were made by another model or with settings that change them."""
    same = ("name", "made_from")
    if isinstance(old, dict) and all(old.get(k) == header[k] for k in same):
        return  # the paths shown may differ: a model moved elsewhere is the same model
    if not isinstance(old, dict) or "made_from" not in old:
        changed = ["its header records no model fingerprint (an older version wrote it)"]
    else:
        changed = fingerprint.changes(old["made_from"], header["made_from"],
                                      header.get("shown"), old.get("shown"))  # fmt: skip
        if old.get("name") != header["name"]:
            changed.insert(0, f"name: {old.get('name')!r} then, {header['name']!r} now")
    raise InputError(
        f"{path} holds records made from another model or with other settings "
        f"({'; '.join(changed)}). It is kept as it is; use another --workdir for this "
        "evaluation, or delete that file to evaluate from scratch"
    )


def check_journal(path: str | os.PathLike, header: dict[str, Any]) -> None:
    """`_check_header` on the journal at `path` if there is one (a torn first line, the
    header being written when a run was killed, counts as no journal)."""
    try:
        with cloud.as_path(path).open("rb") as f:
            first = f.readline()
    except FileNotFoundError:
        return
    if first.endswith(b"\n"):
        try:
            old = json.loads(first)
        except ValueError:
            return
        _check_header(os.fspath(path), old, header)


# Settings that choose how many images or pictures, or how masks are batched: a rerun that
# changes only these resumes.
_NOT_IN_RECORDS = ("max_images", "num_examples", "masks_per_batch")


def journal_header(
    config: Mapping[str, Any], settings: EvalSettings, name: str, model: Any, runner: Any
) -> dict[str, Any]:
    """The first line of `progress.jsonl`: the model's name and what its records are made
    from (`made_from`): the model's fingerprint (its directory's content, or the in-memory
    model's parameters), the settings that change a record (not `max_images`, the number
    of example pictures or the batch of masks per call) and each prepared set's
    fingerprint."""
    shown = {}
    if isinstance(model, (str, os.PathLike)):
        model_fp = model_fingerprint(model)
        shown["model"] = os.fspath(model)
    elif model is not None and runner is None:
        model_fp = fingerprint.arrays_hash(nnx.to_pure_dict(nnx.state(model)))
        shown["model"] = "the model given"
    else:
        model_fp = None  # a stand-in runner (tests): its name and settings only
    data = {}
    if config.get("data_dir") and config.get("eval_sets"):
        from sum_jax.data import builder, sources

        for ref, _ in parse_eval_sets(config["eval_sets"]):
            data[ref] = builder.prepared_fingerprint(config["data_dir"], sources.parse_ref(ref)[0])
    record = {k: v for k, v in dataclasses.asdict(settings).items() if k not in _NOT_IN_RECORDS}
    made_from = {"model": model_fp, "settings": record, "data": data}
    return json.loads(json.dumps({"name": name, "made_from": made_from, "shown": shown}))


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
    total: int | None = None,
    restart: bool = False,
) -> dict[str, Any]:
    """Evaluates one model and writes its reports to `workdir`; returns the summary.

    Args:
      config: the evaluation config (`configs/eval.py`), or a plain mapping of its fields.
      model_or_checkpoint: an NNX `Sam` or a model directory (`sum_jax.checkpointing`).
      examples: dicts as yielded by `sum_jax.data.eval_sets.read_eval_set`.
      workdir: output directory (created); see `sum_jax.evaluate.reports.write_reports`.
      name: the model's name in reports and plots (default: the checkpoint's basename).
      runner: overrides the model (tests pass a stand-in predictor here).
      total: the number of examples, for the ETA (default: `len(examples)` if it has one).
      restart: a journal made from another model or settings is started afresh instead of
        refused (for a folder the caller owns: a training run's evaluation of its export).

    Images already in `workdir/progress.jsonl` (same model, settings, sets and name) are not
    evaluated again; another model or settings are refused (see the module docstring).
    """
    from sum_jax.evaluate import reports

    cloud.as_path(workdir, "--workdir").mkdir(parents=True, exist_ok=True)
    settings = EvalSettings.from_config(config)
    tasks = None
    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        name = name or os.path.basename(os.path.normpath(os.fspath(model_or_checkpoint)))
    name = name or "model"
    journal_path = os.path.join(workdir, "progress.jsonl")
    header = journal_header(config, settings, name, model_or_checkpoint, runner)
    try:
        check_journal(journal_path, header)  # before the model loads
    except InputError as e:
        if not restart:
            raise
        log.warning("%s; evaluating from scratch", str(e).split(". It is kept")[0])
        cloud.as_path(journal_path).unlink()
    if runner is None:
        model = model_or_checkpoint
        if isinstance(model, (str, os.PathLike)):
            tasks = read_tasks(model)
            model = load_model(os.fspath(model))
        if getattr(model.config, "hq", False) and settings.single_output_token > 1:
            raise ValueError(
                f"single_output_token={settings.single_output_token}: an HQ-SAM model has one "
                f"output (its HQ mask; docs/training.md, HQ-SAM's architecture); use 0"
            )
        runner = SamRunner(model, tasks)
    log_path = os.path.join(workdir, "evaluate.log")
    handler = cloud.log_handler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("sum_jax").addHandler(handler)
    logging.getLogger("sum_jax").setLevel(logging.INFO)
    try:
        log.info("evaluating %s: %s", name, json.dumps(dataclasses.asdict(settings)))
        example_dir = os.path.join(workdir, "examples")
        journal = Journal(journal_path, header)
        if journal.done:
            log.info("resuming: %d images already in progress.jsonl", len(journal.done))
        t0 = time.perf_counter()
        # SIGTERM (a preemption notice): the image in progress is recorded, then a stop.
        with preemption.watch() as stop:
            recorded = len(journal.done)

            def on_image(key: str, image_records: dict[str, list[dict[str, Any]]]) -> None:
                nonlocal recorded
                journal.add(key, image_records)
                recorded += 1
                if stop.requested:
                    raise preemption.Preempted(
                        f"preemption notice (SIGTERM): stopped after image {key!r}, with "
                        f"{recorded} images of {name} recorded in {journal_path}; the rerun "
                        f"evaluates the rest and writes the reports."
                    )

            records = evaluate_examples(
                runner,
                examples,
                settings,
                progress=progress,
                on_example_images=lambda item: reports.save_example_images(
                    item, example_dir, settings
                ),
                done=journal.done,
                on_image=on_image,
                total=total,
            )
        seconds = time.perf_counter() - t0
        summary = reports.summarize(records, settings, name=name)
        summary["seconds"] = seconds
        if tasks is not None and tasks.not_in_paper:
            summary["not_comparable"] = reports.not_comparable(summary, tasks.not_in_paper)
            for dataset, why in summary["not_comparable"].items():
                log.warning("%s: not comparable with the paper: %s", dataset, why)
        reports.write_reports(records, summary, workdir)
        reports.plot_curves({name: summary}, workdir)
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


def count_examples(config: Mapping[str, Any]) -> int | None:
    """How many examples `read_examples(config)` yields (None if a set cannot be opened)."""
    from sum_jax.data import sources

    n = 0
    try:
        for ref, limit in parse_eval_sets(config["eval_sets"]):
            size = len(sources.open_source(config["data_dir"], *sources.parse_ref(ref)))
            n += size if limit is None else min(size, limit)
    except (OSError, ValueError, KeyError):
        return None
    return n


def evaluate_checkpoints(
    config: Mapping[str, Any],
    checkpoints: list[str],
    workdir: str | os.PathLike,
    *,
    examples: Callable[[], Iterable[dict[str, Any]]] | None = None,
    restart: bool = False,
) -> dict[str, dict[str, Any]]:
    """Evaluates each `NAME=DIR` checkpoint; with several, into `workdir/NAME/` and with
    comparison plots in `workdir`. Returns `{name: summary}`.

    `examples` makes a fresh example iterator per model (default: `read_examples(config)`);
    `restart`: see `evaluate`.
    """
    from sum_jax.evaluate import reports

    if not checkpoints:
        raise ValueError("give at least one --checkpoint")
    specs = [parse_checkpoint(c) for c in checkpoints]
    names = [n for n, _ in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"checkpoint names must differ, got {names}; use NAME=DIR")
    make = examples or (lambda: read_examples(config))
    total = None if examples else count_examples(config)
    summaries = {}
    for name, path in specs:
        out = workdir if len(specs) == 1 else os.path.join(workdir, name)
        summaries[name] = evaluate(
            config, path, make(), out, name=name, total=total, restart=restart
        )
    if len(specs) > 1:
        reports.plot_curves(summaries, workdir)
    return summaries
