"""`pretrain(config, workdir)`: train a SAM on generated scenes, check it, ship it."""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from sum_jax import checkpointing, cloud
from sum_jax.fileio import atomic_path, atomic_write
from sum_jax.pretrain import heldout, scenes
from sum_jax.train import loop

log = logging.getLogger("sum_jax.pretrain")
TITLE = "SAM pretraining"


def git_commit() -> dict[str, Any]:
    """`{"commit": sha or "unknown", "dirty": bool}` of the checkout this package runs from."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=root, capture_output=True, text=True, check=True).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": False}
    return {"commit": sha, "dirty": bool(status.strip())}


def training_seconds(workdir: Path) -> float:
    """Seconds spent in training steps, from the logged step rates (a resumed run's parts
    added up; compilation and checkpoint writes are not in it)."""
    records = loop.read_metrics(workdir)
    total, previous = 0.0, 0
    for step in sorted(records):
        rate = records[step].get("steps_per_sec", 0.0)
        if rate > 0:
            total += (step - previous) / rate
        previous = step
    return total


def save_scene_sheet(path: Path, config: ml_collections.ConfigDict, count: int = 8) -> None:
    """A picture of the first `count` training scenes with their masks drawn over them."""
    import imgviz
    from PIL import Image

    if path.exists():
        return
    side = int(config.get("scene_sheet_side", 256))
    tiles = []
    for index in range(count):
        image, masks = scenes.make_scene(
            int(config.seed), index, side, composites=float(config.data.get("composites", 0.0))
        )
        overlay = image
        if len(masks):
            overlay = imgviz.instances2rgb(image, labels=list(range(1, len(masks) + 1)),
                                           masks=masks, alpha=0.5)  # fmt: skip
        pad = ((0, side - image.shape[0]), (0, side - image.shape[1]), (0, 0))
        tiles.append(np.concatenate([np.pad(image, pad), np.pad(overlay, pad)], axis=0))
    sheet = np.concatenate(tiles, axis=1)
    with atomic_path(path) as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")


def sincos_position_embedding(grid: int, dim: int) -> np.ndarray:
    """f32[1, grid, grid, dim]: MAE's fixed 2-D sin-cos position embedding (half the
    channels encode the row, half the column; each half is sin and cos of the position
    times `1 / 10000^(2i / (dim / 2))`), the start MAE gives the ViT that SAM's encoder
    grows from."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    pos = np.arange(grid, dtype=np.float64)
    angles = pos[:, None] * omega[None, :]  # [grid, quarter]
    code = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)  # [grid, dim / 2]
    rows = np.broadcast_to(code[:, None, :], (grid, grid, dim // 2))
    cols = np.broadcast_to(code[None, :, :], (grid, grid, dim // 2))
    return np.concatenate([rows, cols], axis=-1)[None].astype(np.float32)


def initial_model(config: ml_collections.ConfigDict, workdir: Path) -> str:
    """The model pretraining starts from, as a spec for `config.model.checkpoint`.

    A `random:<variant>` start gets the encoder's absolute position embedding set to MAE's
    2-D sin-cos code (`sincos_position_embedding`) instead of SAM's zeros, and is saved
    once as `workdir/init` (a resumed run starts from the same one). With zeros, no
    position reaches the decoder's image features except through prompt-to-image attention,
    and training from scratch stalled: every run we tried (lr 1.5e-4 to 1e-3; focal:Dice
    20:1, 1:1 and 0:1) stayed at the all-background or all-foreground answer, mIoU <= 0.08
    for 50-70 steps. Any other spec is returned as it is."""
    spec = str(config.model.checkpoint)
    if not spec.startswith("random:"):
        return spec
    folder = workdir / "init"
    if not (folder / checkpointing.CONFIG_FILE).is_file():
        model = checkpointing.load_model(spec)
        _, grid, _, dim = model.image_encoder.pos_embed[...].shape
        model.image_encoder.pos_embed[...] = jax.numpy.asarray(sincos_position_embedding(grid, dim))
        checkpointing.save_sam(model, folder)
    return str(folder)


def pretrain(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike, *, on_step=None
) -> dict[str, Any]:
    """Trains (or resumes) in `workdir`, evaluates on the held-out photos, writes
    `pretrain.json` and, with `config.pretrain.ship`, ships the model as
    `pretrained:<config.pretrain.name>`. Returns the manifest."""
    started = time.perf_counter()
    cloud.require_local(workdir, "workdir", "pretraining writes local files (CLI: --workdir)")
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        save_scene_sheet(workdir / "scenes.png", config)
        train_config = ml_collections.ConfigDict(config.to_dict())
        train_config.model.checkpoint = initial_model(config, workdir)
        summary = loop.train_and_evaluate(
            train_config,
            workdir,
            on_step=on_step,
            make_dataset=scenes.make_scene_dataset,
            title=TITLE,
        )
        model_dir = summary["model"]
        numbers: dict[str, Any] = {}
        if config.pretrain.heldout:
            log.info("held-out check: %s on %s", model_dir, heldout.EVAL_SETS)
            numbers = heldout.evaluate_heldout(
                [f"untrained=random:{config.model.variant}", f"pretrained={model_dir}"],
                workdir / "heldout",
                clicks=int(config.pretrain.heldout_clicks),
            )
        previous = float(config.pretrain.get("previous_seconds_training", 0.0))
        manifest = {
            "name": f"{checkpointing.PRETRAINED_PREFIX}{config.pretrain.name}",
            "command": "python -m sum_jax.pretrain " + " ".join(sys.argv[1:]),
            **git_commit(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            # This run's seconds in training steps, plus those of the stages before it
            # (`pretrain.previous_seconds_training`: a run that starts from another's model).
            "seconds_training": round(previous + training_seconds(workdir), 1),
            "seconds_training_earlier_stages": previous,
            "seconds_this_call": round(time.perf_counter() - started, 1),
            "steps": int(summary["step"]),
            "scenes_seen": int(summary["step"]) * int(config.train.batch_size),
            "last_metrics": {k: summary["metrics"].get(k) for k in ("loss", "iou")},
            "heldout": {
                "sets": heldout.EVAL_SETS,
                "groups": {group: list(photos) for group, photos in heldout.GROUPS.items()},
                "clicks": int(config.pretrain.heldout_clicks),
                "miou": numbers,
            },
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "devices": [str(d) for d in jax.devices()],
                "jax": jax.__version__,
            },
            "config": json.loads(config.to_json_best_effort()),
        }
        text = json.dumps(manifest, indent=2) + "\n"
        atomic_write(workdir / "pretrain.json", text)
        for name, groups in numbers.items():
            for group, protocols in groups.items():
                for protocol, values in protocols.items():
                    log.info("held-out %s, %s, %s: mIoU per click %s", name, group, protocol,
                             " ".join(f"{v:.3f}" for v in values["miou"]))  # fmt: skip
        if config.pretrain.ship:
            target = checkpointing.PRETRAINED_ROOT / str(config.pretrain.name)
            model = checkpointing.load_sam(model_dir)
            checkpointing.save_packed(
                model, target, tasks=checkpointing.read_tasks(model_dir),
                extra={checkpointing.MANIFEST_FILE: text},
            )  # fmt: skip
            log.info("shipped %s as %s", target, manifest["name"])
        return manifest
    finally:
        log.removeHandler(handler)
