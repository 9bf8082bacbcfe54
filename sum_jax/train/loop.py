"""SUM fine-tuning: the training loop behind `python -m sum_jax.train`.

`train_and_evaluate(config, workdir)` loads the SAM named in `config.model.checkpoint`, lays
the training state out on a `('data', 'fsdp')` mesh, streams the mixed human / pseudo-label
Grain pipeline into the jitted interactive step (`sum_jax.train.step`), and writes to
`workdir`:

    config.json              the resolved config of the run
    train.log                the progress lines (step, loss terms, lr, steps/s, ETA)
    metrics.jsonl            every logged step's numbers, one JSON object per line
    tensorboard/             event files: loss terms per round and per data source, lr, ...
    checkpoints/<step>/      Orbax: `state` (parameters, optimiser, step, rng) and `data`
                             (the Grain iterator of every process), the last K kept
    model/                   the final model directory (predictor, evaluator, converter)
    loss.png                 the loss curve, per data source
    eval/                    with `config.eval.eval_sets`: the evaluator's reports

Started again in the same workdir, a run resumes from its last checkpoint: the restored
iterator yields exactly the next batches and the step's PRNG key is `fold_in(seed, step)`,
so the resumed run computes the same losses as an uninterrupted one. A non-finite loss or
gradient stops the run before the next checkpoint is written, so the last checkpoint on
disk is always a good one. On SIGTERM (a preemption notice) the run saves a checkpoint of
the step in progress, on every process the same step, and stops with
`preemption.Preempted` (`sum_jax.preemption`; the command exits with status 75).

Multi-host: every process runs this function (after `jax.distributed.initialize()`); each
reads its own shard of the data, Orbax coordinates the checkpoints, and only process 0
writes logs, TensorBoard files and pictures.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from sum_jax import cloud, preemption
from sum_jax.checkpointing import (
    TaskRecord,
    TrainingCheckpoints,
    base_reference,
    check_base,
    load_model,
    save_adapters,
    save_sam,
    save_state_dict,
)
from sum_jax.cli import InputError
from sum_jax.data import pipeline
from sum_jax.data import pseudo_label_format as plf
from sum_jax.fileio import append_text, as_path, atomic_write
from sum_jax.models import hq
from sum_jax.models.lora import merge_state
from sum_jax.models.sam import execution_overrides
from sum_jax.train import adapters, sharding
from sum_jax.train.step import (
    TrainSetup,
    TrainState,
    describe_params,
    initial_state,
    jit_train_step,
    train_setup,
)
from sum_jax.visualize import plot_curves

log = logging.getLogger("sum_jax.train")

LOSS_TERMS = ("loss", "focal", "dice", "iou_mse", "iou")


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradient norm stopped being finite; the message says what to do."""


def data_config(config: ml_collections.ConfigDict, model_config: Any, process_count: int):
    """`config.data` with the fields the trainer owns filled in (see configs/base.py)."""
    data = ml_collections.ConfigDict(config.data.to_dict())
    global_batch = int(config.train.batch_size)
    if global_batch % process_count:
        raise ValueError(
            f"train.batch_size={global_batch} does not split over {process_count} processes; "
            f"use a multiple of {process_count}"
        )
    data.batch_size = global_batch // process_count
    data.image_size = int(model_config.img_size)
    data.mask_size = int(model_config.low_res_size)
    data.max_masks = int(config.train.masks_per_image)
    data.seed = int(config.seed)
    data.require_uncertainty = needs_uncertainty(config)
    # "full" and "points" losses read the targets at the input frame too.
    data.full_res_masks = bool(data.get("full_res_masks", False)) or (
        str(config.loss.get("resolution", "low")) != "low"
    )
    return data


def needs_uncertainty(config: ml_collections.ConfigDict) -> bool:
    """Whether the config's losses, prompt sampling or contrastive loss read uncertainty
    maps (SUM's configs; U2PL, whose plain losses train on the pseudo-labels but whose
    reliable / unreliable split comes from the maps); the semi-supervised variants compute
    their own in the step, or use none. Without maps the pipeline gives `u = 0`, which
    would silently make every pseudo-label pixel "reliable"."""
    if float(config.loss.get("contrastive_weight", 0.0)):
        return True
    if str(config.get("semi", {}).get("method", "none")) != "none":
        return False
    return bool(config.loss.uncertainty_aware or config.interactive.uncertainty_sampling)


def load_initial_model(config: ml_collections.ConfigDict):
    """The SAM to fine-tune; errors name the missing file and the command that makes it."""
    spec = str(config.model.checkpoint)
    # Compute dtype, remat and attention kernel come from the training config.
    model = load_model(spec, field="config.model.checkpoint", **execution_overrides(config.model))
    variant = config.model.get("variant")
    if variant and model.config.variant != variant:
        raise ValueError(
            f"{spec} holds a {model.config.variant} SAM but config.model.variant is "
            f"{variant!r}: point model.checkpoint at a {variant} model directory or set "
            f"--config.model.variant={model.config.variant}"
        )
    return with_hq_parts(model, config)


def with_hq_parts(model, config: ml_collections.ConfigDict):
    """`model` as `config.model.hq` asks: a plain SAM gets fresh HQ-SAM parts (HQ-SAM trains
    them from scratch on a frozen SAM), an HQ model keeps its own; `hq_token_only` from the
    config either way. An HQ checkpoint without `config.model.hq` is an error."""
    want = bool(config.model.get("hq", False))
    only = bool(config.model.get("hq_token_only", True))
    if not want:
        if model.config.hq:
            raise ValueError(
                f"{config.model.checkpoint} is an HQ-SAM model but config.model.hq is False: "
                f"set --config.model.hq=True (and param groups that train its parts, e.g. "
                f"configs/base.py:hq_groups), or start from a plain SAM"
            )
        return model
    if not model.config.hq:
        return hq.add_hq_parts(
            model, hq_token_only=only, rngs=nnx.Rngs(params=int(config.seed) + 3)
        )
    model.config = dataclasses.replace(model.config, hq_token_only=only)
    return model


def check_pseudo_labels(config: ml_collections.ConfigDict, data: ml_collections.ConfigDict) -> None:
    """Fails early, naming the folder and the command, when the unlabelled set's
    pseudo-labels (or, for SUM's uncertainty-aware training, their maps) are not there."""
    if not data.unlabelled:
        return
    field = "config.data.pseudo_label_dir"
    folder = as_path(data.pseudo_label_dir, field) if data.pseudo_label_dir else None
    files = sorted(folder.glob("*.npz"))[:1] if folder is not None and folder.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"{folder or 'config.data.pseudo_label_dir (unset)'}: no pseudo-label files for "
            f"{data.unlabelled}. Make them with `python -m sum_jax.pseudo_labels "
            f"--config=configs/pseudo_labels.py --config.checkpoint={config.model.checkpoint} "
            f"--config.data_dir={data.data_dir} --config.dataset={data.unlabelled} "
            f"--config.output_dir={folder or 'DIR'}` and pass --config.data.pseudo_label_dir"
        )
    # The first file, before any compilation; the pipeline checks every file as it reads it.
    if needs_uncertainty(config) and not plf.read(folder, files[0].stem).has_uncertainty:
        raise FileNotFoundError(
            f"{files[0]}: pseudo-labels without uncertainty maps, which SUM's losses and "
            f"sampling need. Add them with `python -m sum_jax.uncertainty "
            f"--config=configs/uncertainty.py --config.refiner=REFINER_DIR "
            f"--config.data_dir={data.data_dir} --config.dataset={data.unlabelled} "
            f"--config.pseudo_labels={folder}` (train REFINER_DIR with python -m "
            f"sum_jax.train_refiner), or train without them: configs/ablations.py:vanilla"
        )


def _check_batch_layout(config, mesh) -> None:
    devices = mesh.devices.size
    if int(config.train.batch_size) % devices:
        raise ValueError(
            f"train.batch_size={config.train.batch_size} images do not split over the mesh's "
            f"{devices} devices (one image or more per device): use a multiple of {devices}"
        )


def _setup_logging(workdir: Path, is_main: bool) -> list[logging.Handler]:
    handlers: list[logging.Handler] = []
    if is_main:
        file_handler = cloud.log_handler(workdir / "train.log")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        stream = logging.StreamHandler(sys.stdout)
        stream.setFormatter(logging.Formatter("%(message)s"))
        handlers = [file_handler, stream]
    for h in handlers:
        log.addHandler(h)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handlers


def _format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def summarize_step(metrics: Mapping[str, np.ndarray]) -> dict[str, float]:
    """One step's device metrics (fetched) -> flat floats: means over rounds, per-round
    values (`round{r}/<term>`), per-source losses where that source had masks."""
    out: dict[str, float] = {"loss": float(metrics["loss"])}
    for term in LOSS_TERMS[1:]:
        out[term] = float(np.mean(metrics[f"round_{term}"]))
    for term in LOSS_TERMS:
        for r, v in enumerate(np.asarray(metrics[f"round_{term}"]).reshape(-1)):
            out[f"round{r + 1}/{term}"] = float(v)
    for source in ("human", "pseudo"):
        if int(metrics[f"masks_{source}"]) > 0:
            out[f"loss_{source}"] = float(np.mean(metrics[f"round_loss_{source}"]))
        out[f"masks_{source}"] = float(metrics[f"masks_{source}"])
        out[f"images_{source}"] = float(metrics[f"images_{source}"])
    if "contrastive" in metrics:  # U2PL's contrastive loss, unweighted
        out["contrastive"] = float(metrics["contrastive"])
    out["grad_norm"] = float(metrics["grad_norm"])
    out["update_norm"] = float(metrics["update_norm"])
    if "lr" in metrics:
        out["lr"] = float(metrics["lr"])
    return out


class MetricsLog:
    """Progress lines, `metrics.jsonl`, TensorBoard and the loss curve (process 0 only)."""

    def __init__(
        self, workdir: Path, num_steps: int, enabled: bool, title: str = "SUM fine-tuning"
    ):
        self.workdir, self.num_steps, self.enabled, self.title = workdir, num_steps, enabled, title
        self.writer = None
        self._events: tuple[Path, Path] | None = None  # (local folder, its gs:// copy)
        if enabled:
            from tensorboardX import SummaryWriter

            logdir = workdir / "tensorboard"
            if cloud.is_remote(logdir):  # written locally, uploaded at each flush
                import tempfile

                self._events = (Path(tempfile.mkdtemp(prefix="sum_jax_events_")), logdir)
                logdir = self._events[0]
            self.writer = SummaryWriter(str(logdir))

    def write(self, step: int, values: dict[str, float], steps_per_sec: float) -> None:
        if not self.enabled:
            return
        eta = (self.num_steps - step) / steps_per_sec if steps_per_sec > 0 else float("inf")
        sources = " ".join(
            f"{s} {values[f'loss_{s}']:.4f}" for s in ("human", "pseudo") if f"loss_{s}" in values
        )
        log.info(
            "step %d/%d | loss %.4f (focal %.4f dice %.4f iou_mse %.4f, mIoU %.3f) | %s | "
            "lr %.3g | %.2f steps/s | ETA %s",
            step, self.num_steps, values["loss"], values["focal"], values["dice"],
            values["iou_mse"], values["iou"], sources or "-", values.get("lr", float("nan")),
            steps_per_sec, _format_duration(eta),
        )  # fmt: skip
        record = {"step": step, "steps_per_sec": steps_per_sec, **values}
        append_text(self.workdir / "metrics.jsonl", json.dumps(record) + "\n")
        for k, v in values.items():
            tag = k if "/" in k else f"train/{k}"
            if k.startswith("loss_"):
                tag = f"source/{k[5:]}_loss"
            self.writer.add_scalar(tag, v, step)
        self.writer.add_scalar("train/steps_per_sec", steps_per_sec, step)
        self.writer.flush()
        if self._events is not None:
            cloud.upload_tree(*self._events)

    def plot(self) -> None:
        """`loss.png` from `metrics.jsonl` (the last record of each step wins: a resumed
        run logs the steps after its checkpoint again)."""
        if not self.enabled:
            return
        records = read_metrics(self.workdir)
        steps = sorted(records)
        curves = {}
        for key, label in (("loss", "all"), ("loss_human", "human"), ("loss_pseudo", "pseudo")):
            points = [(step, records[step][key]) for step in steps if key in records[step]]
            if points:
                curves[label] = tuple(zip(*points))
        if curves:
            plot_curves(
                self.workdir / "loss.png", curves, ylabel="loss (mean of rounds)",
                title=self.title,
            )  # fmt: skip

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._events is not None:
            cloud.upload_tree(*self._events)
            cloud.rmtree_any(self._events[0])
            self._events = None


def read_metrics(workdir: str | os.PathLike) -> dict[int, dict[str, float]]:
    """`metrics.jsonl` as `{step: record}`, the last record of a step winning."""
    records: dict[int, dict[str, float]] = {}
    path = as_path(workdir) / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                records[int(rec["step"])] = rec
    return records


def _latest_step(workdir: Path) -> int:
    steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    return max(steps, default=0)


def _config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """`field: old -> new` for every config field that differs (nested dicts flattened)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


BASE_FILE = "base_model.json"


def _check_resumed_base(config, workdir: Path, is_main: bool) -> None:
    """Refuses to resume a full fine-tuning run from another base model than it started
    from: every parameter comes from the checkpoint, so the run would go on from the old
    base while its summary named the new one. (LoRA runs check theirs in the checkpoint.)
    A run started before `base_model.json` existed gets one now."""
    current = base_reference(config.model.checkpoint)
    path = workdir / BASE_FILE
    if not path.is_file():
        if is_main:
            atomic_write(path, json.dumps(current))
        return
    recorded = json.loads(path.read_text())
    if recorded.get("base_hash") != current["base_hash"]:
        raise InputError(
            f"{workdir} holds a run that started from the model {recorded.get('base_model')} "
            f"(fingerprint {recorded.get('base_hash')}), not {current['base_model']} "
            f"(fingerprint {current['base_hash']}): its checkpoints would go on from the old "
            f"model. Pass --config.model.checkpoint={recorded.get('base_model')} to resume it, "
            "or use a new --workdir to train from the new model"
        )


def export_model(
    state: TrainState,
    setup: TrainSetup,
    directory: Path,
    tasks: TaskRecord | None = None,
    base: dict | None = None,
) -> None:
    """The trained model as a model directory (`sum_jax.checkpointing` layout), with the
    task ids of its training data (`tasks.json`) when given. LoRA runs: the adapters merged
    into the kernels (a plain SAM), or with `config.lora.export = "separate"` an adapter
    directory referring to `base` (`checkpointing.base_reference`)."""
    model = setup.model_def.merge(state.params, state.model_state)
    if setup.lora is None:
        save_sam(model, directory, tasks=tasks)
    elif setup.lora.export == "merged":
        merged = merge_state(nnx.to_pure_dict(nnx.state(model)), setup.lora.scale)
        save_state_dict(directory, model.config, merged, tasks=tasks)
    else:
        info = {**setup.lora.to_dict(), **base}
        save_adapters(directory, model.config, state.params, info, tasks=tasks)


def task_record(config: ml_collections.ConfigDict, data_cfg) -> TaskRecord:
    """What the exported model records of its task prompts: the task ids its training data
    carried, whether the task prompt was given (`interactive.use_task_prompt`), and the
    dataset families it trained on that the paper's run did not (`data.not_in_paper`)."""
    return TaskRecord(
        tuple(pipeline.training_task_ids(data_cfg)),
        task_prompt=bool(config.interactive.get("use_task_prompt", True)),
        not_in_paper=tuple(str(f) for f in data_cfg.get("not_in_paper", ())),
    )


def _check_finite(pending: list[tuple[int, dict]], last_good: int, workdir: Path) -> None:
    """Raises on the first step whose loss, gradient or update is not finite."""
    for step, m in pending:
        values = {k: float(m[k]) for k in ("loss", "grad_norm", "update_norm")}
        if not all(math.isfinite(v) for v in values.values()):
            where = (
                f"the last good checkpoint is step {last_good} in {workdir / 'checkpoints'}"
                if last_good
                else "no checkpoint was written yet"
            )
            shown = ", ".join(f"{k} {v:.6g}" for k, v in values.items())
            raise NonFiniteLossError(
                f"step {step}: not finite ({shown}); stopping before this state is saved "
                f"({where}). Lower --config.optimizer.lr, check the data (e.g. empty or "
                f"all-uncertain masks), and run the same command again to resume."
            )


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    on_step: Callable[[int], None] | None = None,
    make_dataset: Callable[[ml_collections.ConfigDict], Any] = pipeline.make_train_dataset,
    title: str = "SUM fine-tuning",
) -> dict[str, Any]:
    """Trains (or resumes) in `workdir`; returns a summary (final step, last metrics,
    paths). `on_step(step)` is called after each step (tests use it to stop a run).
    `make_dataset(data_cfg)` gives the batched, checkpointable stream (default: the human +
    pseudo-label pipeline; pretraining passes `sum_jax.pretrain.scenes.make_scene_dataset`);
    `title` names the run in the log and the loss curve."""
    workdir = cloud.absolute(workdir, "--workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0
    handlers = _setup_logging(workdir, is_main)
    try:
        return _train(config, workdir, is_main, on_step, make_dataset, title)
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()


def _train(config, workdir: Path, is_main: bool, on_step, make_dataset, title) -> dict[str, Any]:
    num_steps = int(config.train.num_steps)
    resuming = (workdir / "checkpoints").is_dir() and _latest_step(workdir) > 0
    if resuming and adapters.LoraSettings.from_config(config) is None:
        _check_resumed_base(config, workdir, is_main)  # before anything is written
    if is_main:
        text = config.to_json_best_effort(indent=2) + "\n"
        previous = workdir / "config.json"
        if previous.is_file() and (workdir / "checkpoints").is_dir():
            try:
                changed = _config_changes(json.loads(previous.read_text()), json.loads(text))
            except ValueError:
                changed = ["config.json unreadable"]
            if changed:  # resuming with other settings: say so (train.log keeps it)
                log.warning("resuming in %s (checkpoint step %d) with a changed config: %s",
                            workdir, _latest_step(workdir), "; ".join(changed[:12]))  # fmt: skip
        atomic_write(previous, text)
    model = adapters.adapt(load_initial_model(config), config)
    model_config = model.config
    data_cfg = data_config(config, model_config, jax.process_count())
    check_pseudo_labels(config, data_cfg)
    mesh = sharding.make_mesh(config.sharding.mesh_shape)
    _check_batch_layout(config, mesh)
    dataset = make_dataset(data_cfg)

    setup, abstract = train_setup(model, config, mesh)
    checkpoints = TrainingCheckpoints(workdir / "checkpoints", config.train.keep_checkpoints)
    iterator = iter(dataset)
    # LoRA: checkpoints hold the trained tree only, and name the base model they need.
    base = base_reference(config.model.checkpoint) if setup.lora else None
    if checkpoints.latest_step() is None:
        state, start = initial_state(model, setup, config.seed), 0
        if is_main:
            atomic_write(workdir / BASE_FILE, json.dumps(base_reference(config.model.checkpoint)))
    elif setup.lora is None:  # restored straight into its shardings: no second copy
        state, start = checkpoints.restore(abstract, iterator)
    else:  # the frozen base from config.model.checkpoint, the rest from the checkpoint
        folder = workdir / "checkpoints" / str(checkpoints.latest_step())
        recorded = checkpoints.metadata()
        if recorded is None:
            raise ValueError(
                f"{folder} holds no LoRA base model reference: it is not a LoRA run's "
                f"checkpoint (config.lora.targets changed?); use a new --workdir"
            )
        check_base(
            recorded,
            base,
            str(folder),
            f"pass --config.model.checkpoint={recorded['base_model']} to resume (or use a "
            f"new --workdir to train on the new base)",
        )
        state = initial_state(model, setup, config.seed)
        restored, start = checkpoints.restore(adapters.checkpoint_view(abstract), iterator)
        state = state.replace(**restored)
    if start:
        log.info("resumed from %s at step %d", workdir / "checkpoints", start)
    del model
    log.info(
        "%s %s from %s: %d steps of %d images (%d per process, %d processes), "
        "%d masks per image, mesh %s",
        title, model_config.variant, config.model.checkpoint, num_steps, config.train.batch_size,
        data_cfg.batch_size, jax.process_count(), data_cfg.max_masks, dict(mesh.shape),
    )  # fmt: skip
    if is_main:
        description = describe_params(state, setup.plan)
        arrays = jax.tree.leaves(state.params)
        split = sum(sharding.is_sharded(x.sharding) for x in arrays)
        log.info("%s; %d of %d parameter arrays sharded over the mesh (all in %s)",
                 description.splitlines()[0], split, len(arrays),
                 workdir / "parameters.txt")  # fmt: skip
        atomic_write(workdir / "parameters.txt", description + "\n")

    step_fn = jit_train_step(setup)
    metrics_log = MetricsLog(workdir, num_steps, is_main, title)
    log_every = max(int(config.train.log_every), 1)
    ckpt_every = max(int(config.train.checkpoint_every), 1)
    pending: list[tuple[int, dict]] = []
    # A finished run started again only exports; its summary keeps the last logged step.
    last_values: dict[str, float] = read_metrics(workdir).get(start, {}) if is_main else {}
    last_good = start
    t_last, steps_since = time.perf_counter(), 0

    def log_pending(done: int) -> None:
        nonlocal pending, last_values, t_last, steps_since
        pending = [(s, jax.device_get(m)) for s, m in pending]
        _check_finite(pending, last_good, workdir)
        now = time.perf_counter()
        rate = steps_since / max(now - t_last, 1e-9)
        last_values = summarize_step(pending[-1][1])
        metrics_log.write(done, last_values, rate)
        pending, t_last, steps_since = [], now, 0

    def save(done: int) -> None:
        nonlocal last_good
        if setup.lora is None:
            checkpoints.save(done, state, iterator)
        else:
            checkpoints.save(done, adapters.checkpoint_view(state), iterator, base)
        last_good = done
        metrics_log.plot()

    # SIGTERM (a preemption notice): a checkpoint of the step in progress, then a stop; on
    # several processes JAX's preemption service picks one step for all (sum_jax.preemption).
    with preemption.watch(synced=True) as stop:
        try:
            for step in range(start, num_steps):
                batch = sharding.shard_batch(next(iterator), mesh)
                state, metrics = step_fn(state, batch)
                done = step + 1
                pending.append((done, metrics))
                steps_since += 1
                is_ckpt = done % ckpt_every == 0 or done == num_steps
                if done % log_every == 0 or is_ckpt:
                    log_pending(done)
                if is_ckpt:
                    save(done)
                if on_step is not None:
                    on_step(done)
                if stop.reached(done):
                    if pending:
                        log_pending(done)  # the NaN guard first: never save a bad state
                    if last_good != done:
                        save(done)
                    checkpoints.wait()
                    where = workdir / "checkpoints"
                    message = (
                        f"preemption notice (SIGTERM): saved the checkpoint of step {done} of "
                        f"{num_steps} in {where}."
                    )
                    log.warning("%s Run the same command again to resume.", message)
                    raise preemption.Preempted(message)
        finally:
            checkpoints.wait()
            checkpoints.close()
            metrics_log.close()

    summary: dict[str, Any] = {"step": num_steps, "workdir": str(workdir), "metrics": last_values}
    if config.train.export:
        export_dir = workdir / "model"
        export_model(state, setup, export_dir, task_record(config, data_cfg), base)
        summary["model"] = str(export_dir)
        log.info("exported the model to %s", export_dir)
        eval_sets = config.eval.get("eval_sets", "")
        if eval_sets and jax.process_count() == 1:
            summary["eval"] = evaluate_export(config, export_dir, workdir / "eval")
        elif eval_sets:
            log.info("multi-host run: evaluate with python -m sum_jax.evaluate "
                     "--checkpoint=%s", export_dir)  # fmt: skip
    if is_main:
        metrics_log.plot()
        atomic_write(workdir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def evaluate_export(config, model_dir: Path, out: Path) -> dict[str, Any]:
    """Runs the evaluator (`config.eval`) on the exported model; returns overall numbers."""
    from sum_jax.evaluate import reports, runner

    eval_cfg = ml_collections.ConfigDict(config.eval.to_dict())
    if not eval_cfg.data_dir:
        eval_cfg.data_dir = config.data.data_dir
    log.info("evaluating %s on %s", model_dir, eval_cfg.eval_sets)
    # The run's own folder: records of an earlier export of this run are redone, not refused.
    summaries = runner.evaluate_checkpoints(eval_cfg, [f"model={model_dir}"], out, restart=True)
    overall = reports.overall_numbers(summaries["model"])
    log.info("evaluation: %s", json.dumps(overall))
    return overall
