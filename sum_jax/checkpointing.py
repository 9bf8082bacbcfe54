"""Saving and loading SAM models as Orbax checkpoints.

A model directory holds `sam_config.json` (the `SamConfig`) and `params/` (an Orbax
checkpoint of every variable of the NNX model: parameters and buffers). The converter, the
trainer's final export, the predictor and the evaluator all use this layout. A model the
SUM trainer exported also holds `tasks.json` (`TaskRecord`): the task ids its training data
carried and whether the task prompt was trained; a converted SAM has none.

An adapter directory (a LoRA run's export with `config.lora.export="separate"`) holds
`lora.json` (rank, alpha, targets, the base model directory and its `model_fingerprint`)
and `adapters/` (the trained tree: LoRA matrices and the base parameters that trained).
`load_sam` reads it as the merged plain SAM, after checking the base's fingerprint.

A packed model directory holds `params.npz` (every variable, `.`-joined paths as keys) in
place of `params/`: one file, for the models shipped inside the package. The spec
`pretrained:<name>` names such a directory, `sum_jax/pretrained/<name>/` (with its
`manifest.json`: the command, config, commit and seconds that made it), and is accepted
wherever a model directory is (`model_dir` resolves it).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from sum_jax.cloud import absolute
from sum_jax.fileio import as_path, atomic_dir, atomic_write, is_remote, rmtree, swap_in
from sum_jax.fingerprint import tree_hash
from sum_jax.models.lora import merge_state
from sum_jax.models.sam import Sam, SamConfig

CONFIG_FILE = "sam_config.json"
ADAPTER_FILE = "lora.json"
ADAPTERS_DIR = "adapters"
# How to make a model directory from an official SAM checkpoint (`.format(directory=...)`).
CONVERT_HINT = (
    "Convert an official SAM checkpoint with `python -m convert.sam_checkpoint "
    "--input sam_vit_h_4b8939.pth --output {directory}`"
)
PARAMS_DIR = "params"
PACKED_FILE = "params.npz"
TASKS_FILE = "tasks.json"
MANIFEST_FILE = "manifest.json"
PRETRAINED_ROOT = Path(__file__).parent / "pretrained"
PRETRAINED_PREFIX = "pretrained:"
# The command that (re)makes `pretrained:<name>` (`.format(name=...)`).
PRETRAIN_HINT = (
    "python -m sum_jax.pretrain --config=configs/pretrain_{name}.py --workdir=out/pretrain_{name}"
)

log = logging.getLogger("sum_jax.checkpointing")


@dataclasses.dataclass(frozen=True)
class TaskRecord:
    """The task prompts a model was trained with (`tasks.json` of an exported model).

    `task_ids`: the task ids its training data carried (0 unlabelled / SA-1B, 1 salient
    object, 2 entity, 3 part); `task_prompt`: whether training gave the task prompt (false
    for the Vanilla and Mask-Refinement baselines and "SUM w/o task prompt").
    """

    task_ids: tuple[int, ...]
    task_prompt: bool = True
    # Dataset families it was trained on that the paper's run was not (FT-Large's stand-ins,
    # `config.data.not_in_paper`): its numbers on their sets are not comparable.
    not_in_paper: tuple[str, ...] = ()

    @property
    def seen(self) -> frozenset[int]:
        """Task ids whose prompt was trained (none without `task_prompt`)."""
        return frozenset(self.task_ids) if self.task_prompt else frozenset()

    @property
    def default_task(self) -> int | None:
        """The predictor's task when none is asked for: 0, the paper's default (App. H.1),
        for a model trained with task prompts; None (no task prompt) otherwise."""
        return 0 if self.task_prompt else None

    def prompt_task(self, task: int, *, what: str = "") -> int:
        """`task` if its prompt was trained, else 0 with one log line (App. H.1)."""
        if task < 0 or task in self.seen:
            return task
        log.info(
            "task id %d%s was not in this model's training data (task ids %s%s): "
            "using task 0 (the paper's default, App. H.1)",
            task,
            f" ({what})" if what else "",
            sorted(self.task_ids),
            "" if self.task_prompt else ", trained without task prompts",
        )
        return 0

    def to_dict(self) -> dict[str, Any]:
        out = {"task_ids": sorted(int(t) for t in self.task_ids), "task_prompt": self.task_prompt}
        if self.not_in_paper:
            out["not_in_paper"] = sorted(self.not_in_paper)
        return out


def model_dir(spec: str | os.PathLike) -> str:
    """`spec` as a model directory path: `pretrained:<name>` becomes the shipped directory
    (FileNotFoundError naming the command that makes it when absent); any other spec is
    returned as it is."""
    spec = os.fspath(spec)
    if not spec.startswith(PRETRAINED_PREFIX):
        return spec
    name = spec[len(PRETRAINED_PREFIX) :]
    folder = PRETRAINED_ROOT / name
    if not name or not (folder / CONFIG_FILE).is_file():
        shipped = sorted(p.name for p in PRETRAINED_ROOT.glob("*") if (p / CONFIG_FILE).is_file())
        raise FileNotFoundError(
            f"{spec}: no such pretrained model in {PRETRAINED_ROOT} (shipped: "
            f"{', '.join(shipped) or 'none'}); make it with `{PRETRAIN_HINT.format(name=name)}`"
        )
    return str(folder)


def read_tasks(spec: str | os.PathLike) -> TaskRecord | None:
    """The `TaskRecord` of a model directory; None for a model without one (a converted
    SAM, a model exported before the record existed, `random:<variant>`)."""
    path = as_path(model_dir(spec)) / TASKS_FILE
    if str(spec).startswith("random:") or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return TaskRecord(
            tuple(int(t) for t in data["task_ids"]),
            bool(data["task_prompt"]),
            tuple(str(f) for f in data.get("not_in_paper", ())),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} is not a valid task record: {e}") from e


def _checkpointer(destination: Any = None) -> ocp.Checkpointer:
    """Orbax checkpointer that keeps at most ~1 GB in flight while writing or reading.

    Orbax's default (96 GB) lets it buffer a whole vit_h (2.4 GB) at once on top of the
    weights themselves. OCDBT off on local disks: its writer held another ~1.3 GB for vit_h
    (peak anonymous memory while saving 4.3 GB with it, 3.0 GB without, for 2.4 GB of
    weights); a model directory is written rarely, so one file per array costs nothing that
    matters there. On an object store (`destination` on gs://) it is on: each file is a
    request there, and OCDBT packs a model's arrays into a few (the tiny test model: 4x
    faster to save and 6x to load against the test server, docs/troubleshooting.md). Reads
    take either layout, whatever `destination`.
    """
    remote = destination is not None and is_remote(destination)
    return ocp.Checkpointer(
        ocp.StandardCheckpointHandler(
            save_concurrent_gb=1, restore_concurrent_gb=1, use_ocdbt=remote
        )
    )


def abstract_sam(config: SamConfig) -> Sam:
    """The model with `jax.ShapeDtypeStruct` leaves: shapes without memory. A new module
    each call, from the shapes traced once per config (`_abstract_parts`)."""
    graphdef, state = _abstract_parts(config)
    return nnx.merge(graphdef, jax.tree.map(lambda x: x, state))


@functools.cache
def _abstract_parts(config: SamConfig) -> tuple[nnx.GraphDef, nnx.State]:
    # Tracing the constructor takes 1-3 s however small the model (each of its ~440 random
    # draws updates a traced RNG counter, and nnx's check of that update walks the whole
    # trace so far), and a load traces it twice (the restore target and the array check).
    return nnx.split(nnx.eval_shape(lambda: Sam(config, rngs=nnx.Rngs(0))))


def save_state_dict(
    directory: str | os.PathLike,
    config: SamConfig,
    state: dict[str, Any],
    *,
    overwrite: bool = True,
    tasks: TaskRecord | None = None,
) -> None:
    """Writes a pure (nested dict) model state and its config as a model directory.

    The directory is built beside `directory` and swapped in when complete, so an existing
    model stays whole until then; `overwrite=False` refuses an existing one. `tasks`, if
    given, is written as `tasks.json`.
    """
    if jax.process_count() > 1:
        _save_state_dict_processes(absolute(directory), config, state, overwrite, tasks)
        return
    with atomic_dir(directory, overwrite=overwrite) as tmp:
        with _checkpointer(directory) as ckptr:
            ckptr.save(tmp / PARAMS_DIR, args=ocp.args.StandardSave(state), force=True)
        _write_tasks(tmp, tasks)
        # The config goes last: a directory with a config has complete parameters. It
        # records the architecture; compute dtype, remat and kernels are the reader's choice.
        config = config.architecture()
        atomic_write(tmp / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")


def _write_tasks(folder: Path, tasks: TaskRecord | None) -> None:
    if tasks is not None:
        atomic_write(folder / TASKS_FILE, json.dumps(tasks.to_dict()) + "\n")


def _save_state_dict_processes(
    directory: Path,
    config: SamConfig,
    state: dict[str, Any],
    overwrite: bool,
    tasks: TaskRecord | None = None,
) -> None:
    """`save_state_dict` of a multi-process run: Orbax writes the arrays from every process
    into one staging folder (the same path in every process: its save is collective), then
    process 0 writes the config and swaps the folder in, and everyone waits for that."""
    from jax.experimental import multihost_utils

    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{directory} is a file; expected a folder to write into")
    if directory.exists() and not overwrite:
        raise FileExistsError(f"{directory} already exists; pass the overwrite flag to replace it")
    staging = directory.parent / f".{directory.name}.partial"
    first = jax.process_index() == 0
    if first:
        rmtree(staging)
        staging.mkdir(parents=True)
    multihost_utils.sync_global_devices(f"sum_jax: staging {directory}")
    with _checkpointer(directory) as ckptr:
        ckptr.save(staging / PARAMS_DIR, args=ocp.args.StandardSave(state), force=True)
    if first:
        _write_tasks(staging, tasks)
        config = config.architecture()
        atomic_write(staging / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
        swap_in(staging, directory)
    multihost_utils.sync_global_devices(f"sum_jax: saved {directory}")


def save_sam(model: Sam, directory: str | os.PathLike, *, tasks: TaskRecord | None = None) -> None:
    """Saves `model` (all variables), its config and its `TaskRecord` to `directory`."""
    save_state_dict(directory, model.config, nnx.to_pure_dict(nnx.state(model)), tasks=tasks)


def save_packed(
    model: Sam,
    directory: str | os.PathLike,
    *,
    tasks: TaskRecord | None = None,
    extra: dict[str, str] | None = None,
) -> None:
    """Writes `model` as a packed model directory (`params.npz`, float32), with `tasks` and
    `extra` text files (name -> content, e.g. the manifest); swapped in when complete."""
    flat = {
        ".".join(str(k) for k in path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(
            nnx.to_pure_dict(nnx.state(model)), is_leaf=lambda x: not isinstance(x, dict)
        )[0]
        for path in [[getattr(k, "key", k) for k in path]]
    }
    with atomic_dir(directory, overwrite=True) as tmp:
        np.savez_compressed(tmp / PACKED_FILE, **flat)
        _write_tasks(tmp, tasks)
        for name, text in (extra or {}).items():
            atomic_write(tmp / name, text)
        config = model.config.architecture()
        atomic_write(tmp / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")


def _load_packed(path: Path, target: dict) -> dict:
    """The nested state of `params.npz`, checked key by key and shape by shape against
    `target` (the architecture's abstract state)."""
    try:
        with path.open("rb") as f, np.load(f) as arrays:
            stored = dict(arrays.items())
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DamagedModelError(damaged_message(path.parent, path, e)) from e
    problem = mismatch_message(_shapes(stored), _shapes(target), path)
    if problem:
        raise ValueError(problem)

    def fill(node, prefix):
        if isinstance(node, dict):
            return {k: fill(v, f"{prefix}{k}.") for k, v in node.items()}
        return stored[prefix[:-1]].astype(node.dtype)

    return fill(target, "")


class DamagedModelError(ValueError):
    """A model directory whose files do not read (truncated, corrupt): not the user's
    architecture, the copy on disk; the message says how to make it again."""


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    """`{'.'-joined path: shape}` of the leaves of a (nested or flat) tree of arrays or of
    Orbax's array metadata."""
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
    return {
        ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): tuple(leaf.shape)
        for path, leaf in leaves
    }


def _variant_of(shapes: dict[str, tuple[int, ...]]) -> str | None:
    """The `VARIANTS` name whose encoder width and depth stored arrays have, else None."""
    from sum_jax.models.sam import VARIANTS

    width = shapes.get("image_encoder.patch_embed.proj.bias", (None,))[-1]
    depth = len({k.split(".")[2] for k in shapes if k.startswith("image_encoder.blocks.")})
    for name, v in VARIANTS.items():
        if (v.encoder_embed_dim, v.encoder_depth) == (width, depth):
            return name
    return None


def mismatch_message(stored: dict, wanted: dict, where: Path) -> str | None:
    """One paragraph on how arrays stored in `where` differ from the `wanted` shapes (counts
    and the first of each kind), or None when every path and shape agrees."""
    differ = [k for k in wanted if k in stored and tuple(stored[k]) != tuple(wanted[k])]
    missing = [k for k in wanted if k not in stored]
    extra = [k for k in stored if k not in wanted]
    if not (differ or missing or extra):
        return None
    found = []
    if differ:
        k = differ[0]
        found.append(f"{len(differ)} of {len(wanted)} arrays differ in shape, first: {k} "
                     f"{list(stored[k])} stored vs {list(wanted[k])} needed")  # fmt: skip
    if missing:
        found.append(f"{len(missing)} arrays missing, first: {missing[0]}")
    if extra:
        found.append(f"{len(extra)} arrays the model lacks, first: {extra[0]}")
    stored_variant, wanted_variant = _variant_of(stored), _variant_of(wanted)
    what = f"the params of a {stored_variant} SAM" if stored_variant else "the params"
    model = f"the {wanted_variant} model" if wanted_variant else "the model"
    folder = where.parent
    return (
        f"{what} in {where} do not fit {model} that {folder / CONFIG_FILE} describes: "
        + "; ".join(found)
        + f". The {CONFIG_FILE} is not the one these params were saved with: put the right "
        f"one back, or make the directory again ({remake_hint(folder)})"
    )


def remake_hint(directory: str | os.PathLike) -> str:
    """How a model directory is made again: the pretraining command for a shipped one, else
    the converter or the training run that exported it."""
    folder = as_path(directory)
    if not is_remote(folder) and folder.resolve().parent == PRETRAINED_ROOT.resolve():
        return PRETRAIN_HINT.format(name=folder.name)
    return (
        "convert the official checkpoint again: python -m convert.sam_checkpoint --input "
        f"FILE.pth --output {directory} --overwrite; or rerun the training command that "
        "exported it (a finished run exports its last checkpoint again)"
    )


def damaged_message(directory: Path, where: Path, error: BaseException | str) -> str:
    """`where` (a file or the params folder of model directory `directory`) does not read."""
    text = str(error).split(" [tensorstore_spec=")[0].strip().splitlines()
    cause = (text[0] if text else type(error).__name__)[:300]
    return (
        f"model directory {directory} is damaged: {where} does not read ({cause}); a file "
        f"is truncated or corrupt (an interrupted copy or download?). Make it again: "
        f"{remake_hint(directory)}"
    )


def check_arrays(
    directory: str | os.PathLike, config: SamConfig | None = None, *, target: Any = None
) -> None:
    """Compares the array paths and shapes an Orbax model directory records (its metadata
    only, no array is read) with the architecture of its `sam_config.json`: a ValueError
    summarising the differences, or a DamagedModelError when the metadata does not read.
    `target`: the config's state tree when the caller has it already (not traced again)."""
    directory = absolute(model_dir(directory))
    params = directory / PARAMS_DIR
    if (directory / ADAPTER_FILE).is_file() or not params.is_dir():
        return
    config = config or read_config(directory)
    try:
        with _checkpointer() as ckptr:
            meta = ckptr.metadata(params)
        tree = getattr(meta, "item_metadata", meta)
        stored = _shapes(getattr(tree, "tree", tree))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DamagedModelError(damaged_message(directory, params, e)) from e
    if not stored:  # Orbax logs why and returns no tree
        why = "no array metadata: _METADATA, _sharding or an array's folder is unreadable"
        raise DamagedModelError(damaged_message(directory, params, why))
    if target is None:
        target = nnx.to_pure_dict(nnx.state(abstract_sam(config)))
    problem = mismatch_message(stored, _shapes(target), params)
    if problem:
        raise ValueError(problem)


def _quiet_closed_loop() -> None:
    """Installs (once) an unraisable-exception hook that drops `RuntimeError: Event loop is
    closed`: when one array of a restore fails, tensorstore's reads still in flight report
    to the event loop Orbax has closed, as dozens of tracebacks that say nothing about the
    failure. Anything else goes to the hook that was there."""
    previous = sys.unraisablehook
    if getattr(previous, "quiet_closed_loop", False):
        return

    def hook(unraisable) -> None:
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous(unraisable)

    hook.quiet_closed_loop = True
    sys.unraisablehook = hook


def read_config(directory: str | os.PathLike) -> SamConfig:
    directory = as_path(model_dir(directory))
    config_path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise FileNotFoundError(
            f"model directory {directory} does not exist. "
            + CONVERT_HINT.format(directory=directory)
        )
    # An adapter directory (LoRA, export "separate") has `adapters/` in place of `params/`.
    arrays = ADAPTERS_DIR if (directory / ADAPTER_FILE).is_file() else PARAMS_DIR
    complete = (directory / arrays).is_dir() or (directory / PACKED_FILE).is_file()
    if not config_path.is_file() or not complete:
        raise FileNotFoundError(
            f"{directory} is not a complete sum_jax model directory (needs {CONFIG_FILE} and "
            f"{PARAMS_DIR}/); it may be from an interrupted save. Convert or export it again."
        )
    try:
        return SamConfig.from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"{config_path} is not a valid SamConfig: {e}") from e


def load_state_dict(directory: str | os.PathLike, config: SamConfig | None = None) -> dict:
    """The pure state of a model directory as nested dicts of numpy arrays (host memory); of
    an adapter directory, the merged plain SAM's."""
    directory = absolute(model_dir(directory))
    if (directory / ADAPTER_FILE).is_file():
        return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(load_adapters(directory))))
    config = config or read_config(directory)
    target = nnx.to_pure_dict(nnx.state(abstract_sam(config)))
    target = jax.tree.map(lambda x: np.empty(x.shape, x.dtype), target)
    if (directory / PACKED_FILE).is_file():
        return _load_packed(directory / PACKED_FILE, target)
    # Paths and shapes first (metadata only): a mismatch is the config's, summarised; a
    # restore that fails after that is a damaged file.
    check_arrays(directory, config, target=target)
    _quiet_closed_loop()
    with _checkpointer() as ckptr:
        try:
            return ckptr.restore(directory / PARAMS_DIR, args=ocp.args.StandardRestore(target))
        except (OSError, ValueError, KeyError) as e:
            raise DamagedModelError(damaged_message(directory, directory / PARAMS_DIR, e)) from e


def load_sam(directory: str | os.PathLike, **config_overrides: Any) -> Sam:
    """Builds the model described in `directory` and restores its variables.

    `config_overrides` may change fields that do not affect parameter shapes (e.g.
    `dtype="bfloat16"` for bf16 compute with float32 parameters).
    """
    import dataclasses

    directory = model_dir(directory)
    if (as_path(directory) / ADAPTER_FILE).is_file():
        return load_adapters(directory, **config_overrides)
    config = read_config(directory)
    state = load_state_dict(directory, config)
    if config_overrides:
        config = dataclasses.replace(config, **config_overrides)
    model = abstract_sam(config)
    graphdef, abstract_state = nnx.split(model)
    nnx.replace_by_pure_dict(abstract_state, jax.tree.map(jax.numpy.asarray, state))
    return nnx.merge(graphdef, abstract_state)


def parse_checkpoint(spec: str) -> tuple[str, str]:
    """`NAME=DIR` (or `NAME=random:tiny`) -> (NAME, DIR); a bare `DIR` is named after its
    last folder. One parser for every command that takes `--checkpoint=NAME=DIR`. NAME
    must be a plain name (it becomes a folder of the output: `..` or `a/b` would write
    outside it)."""
    from sum_jax.cli import InputError
    from sum_jax.output_dir import check_name

    name, sep, path = spec.partition("=")
    if sep and "/" in name and Path(spec).expanduser().exists():
        sep = ""  # an existing folder whose path holds "=": a bare DIR
    if not sep:
        path = spec
        name = (
            spec.replace(PRETRAINED_PREFIX, "pretrained_")
            if spec.startswith(PRETRAINED_PREFIX)
            else Path(spec.rstrip("/")).name.replace("random:", "random_") or spec
        )
        if name.startswith(".") or "/" in name:  # ".", "..", "/": the folder's own name
            name = Path(spec).expanduser().resolve().name.lstrip(".") or "model"
    if not name or not path:
        raise InputError(f"--checkpoint={spec!r}: expected NAME=DIR, e.g. SAM=ckpt/sam_vit_h")
    check_name(name, f"--checkpoint={spec}", where="the model's folder in the output")
    return name, path


def model_fingerprint(spec: str | os.PathLike) -> str:
    """A content hash of a model directory (`blake2b` over every file's relative path and
    bytes, in sorted order, but for the files that hold only Orbax's save time: the same
    weights saved twice have one fingerprint), or of the spec itself for `random:<variant>` (the same seed
    always builds the same model). A LoRA run records it to refuse a different base; the
    resumable stages record it to refuse a rerun with another model (`sum_jax.fingerprint`)."""
    spec = os.fspath(spec)
    if spec.startswith("random:"):
        return hashlib.blake2b(spec.encode(), digest_size=16).hexdigest()
    return tree_hash(model_dir(spec))


def base_reference(spec: str | os.PathLike) -> dict[str, str]:
    """`{"base_model": absolute directory (or random:<variant>), "base_hash": fingerprint}`."""
    spec = os.fspath(spec)
    where = spec if spec.startswith("random:") else str(absolute(model_dir(spec)))
    return {"base_model": where, "base_hash": model_fingerprint(spec)}


def check_base(recorded: dict[str, str], current: dict[str, str], what: str, fix: str) -> None:
    """Raises unless `current` (a `base_reference`) has the fingerprint `recorded` for `what`
    (a LoRA checkpoint or adapter directory); the message names both directories and `fix`."""
    if recorded["base_hash"] != current["base_hash"]:
        raise ValueError(
            f"{what} holds LoRA adapters trained on the base model {recorded['base_model']} "
            f"(fingerprint {recorded['base_hash']}), but the base given is "
            f"{current['base_model']} (fingerprint {current['base_hash']}): {fix}"
        )


def save_adapters(
    directory: str | os.PathLike,
    config: SamConfig,
    trained: dict[str, Any],
    info: dict[str, Any],
    *,
    tasks: TaskRecord | None = None,
) -> None:
    """Writes an adapter directory: `trained` (pure nested dict: adapters and trained base
    parameters), `info` (`lora.json`: rank, alpha, targets, `base_reference` fields), the
    base's architecture (`sam_config.json`, so `read_config` works as for a model) and
    `tasks` (`tasks.json`) when given."""
    with atomic_dir(directory, overwrite=True) as tmp:
        with _checkpointer(directory) as ckptr:
            ckptr.save(tmp / ADAPTERS_DIR, args=ocp.args.StandardSave(trained), force=True)
        atomic_write(tmp / ADAPTER_FILE, json.dumps(info, indent=2) + "\n")
        _write_tasks(tmp, tasks)
        config = config.architecture()
        atomic_write(tmp / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")


def _deep_update(base: dict, update: dict) -> dict:
    """`base` with `update`'s leaves put in; Orbax gives list indices back as strings, so a
    key `"3"` lands on `base`'s key `3`."""
    out = dict(base)
    for k, v in update.items():
        if k not in out and isinstance(k, str) and k.isdigit() and int(k) in out:
            k = int(k)
        out[k] = _deep_update(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def load_adapters(directory: str | os.PathLike, **config_overrides: Any) -> Sam:
    """The plain SAM of an adapter directory: its base model (checked by fingerprint) with
    the trained parameters put in and the adapters merged into the kernels."""
    directory = absolute(directory)
    info = json.loads((directory / ADAPTER_FILE).read_text())
    base = info["base_model"]
    check_base(
        info,
        base_reference(base),
        str(directory),
        f"the adapters need the base model they were trained on; restore {base} or load "
        f"a merged export (config.lora.export='merged')",
    )
    base_model = load_model(base, field=f"{directory / ADAPTER_FILE}: base_model")
    state = nnx.to_pure_dict(nnx.state(base_model))
    with _checkpointer() as ckptr:
        trained = ckptr.restore(directory / ADAPTERS_DIR)
    merged = merge_state(_deep_update(state, trained), float(info["alpha"]) / int(info["rank"]))
    config = dataclasses.replace(base_model.config, **config_overrides)
    graphdef, abstract_state = nnx.split(abstract_sam(config))
    nnx.replace_by_pure_dict(abstract_state, jax.tree.map(jax.numpy.asarray, merged))
    return nnx.merge(graphdef, abstract_state)


def load_model(spec: str, *, field: str = "config.checkpoint", **config_overrides: Any) -> Sam:
    """A model directory, `pretrained:<name>` (a model shipped in the package), or
    `random:<variant>` for a randomly initialised `build_sam` (a pipeline check: its
    outputs mean nothing). An empty `spec` is an error that names the
    config `field` it came from and how to make a model directory."""
    if not spec:
        raise ValueError(
            f"{field} is not set. "
            + CONVERT_HINT.format(directory="ckpt/sam_vit_h")
            + f" and pass --{field}=ckpt/sam_vit_h (or random:tiny for a pipeline check)."
        )
    if spec.startswith("random:"):
        from sum_jax.models.sam import build_sam

        return build_sam(spec.split(":", 1)[1], rngs=nnx.Rngs(0), **config_overrides)
    return load_sam(spec, **config_overrides)


class TrainingCheckpoints:
    """Orbax checkpoints of one training run: a state pytree and, optionally, the Grain data
    iterator, saved together under `directory/<step>/`, the last `keep` kept.

    A checkpoint becomes visible only once complete (Orbax writes to a temporary directory
    and renames it), so a run killed mid-save resumes from the previous one. Used by the SUM
    trainer and the refinement module's trainer alike.
    """

    def __init__(self, directory: str | os.PathLike, keep: int, *, asynchronous: bool = True):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=int(keep), create=True, enable_async_checkpointing=asynchronous
        )
        self.directory = as_path(directory)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(
        self, step: int, state: Any, iterator: Any = None, metadata: dict | None = None
    ) -> None:
        """`metadata`: a JSON-able dict saved beside the state (a LoRA run's base model)."""
        items = {"state": ocp.args.StandardSave(state)}
        if metadata is not None:
            items["meta"] = ocp.args.JsonSave(metadata)
        if iterator is not None:
            import grain

            items["data"] = grain.checkpoint.CheckpointSave(iterator)
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, abstract_state: Any, iterator: Any = None, step: int | None = None):
        """`(state, step)` of checkpoint `step` (default: the latest), restored into the
        shapes, dtypes and shardings of `abstract_state`; `iterator` is restored in place."""
        step = self.latest_step() if step is None else step
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if iterator is not None:
            import grain

            items["data"] = grain.checkpoint.CheckpointRestore(iterator)
        _quiet_closed_loop()
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        except (ValueError, KeyError, OSError) as e:
            folder = self.directory / str(step)
            raise ValueError(
                f"{folder}: the checkpoint to resume from does not restore ({type(e).__name__}: "
                f"{str(e)[:300]}). A damaged copy, or a config whose model or optimizer differs "
                f"from the run that wrote it: move {folder} away to resume from the previous "
                "checkpoint, or use a new --workdir"
            ) from e
        return restored["state"], int(step)

    def metadata(self, step: int | None = None) -> dict | None:
        """The `metadata` saved with checkpoint `step` (default: the latest); None if none."""
        step = self.latest_step() if step is None else step
        if not (self.directory / str(step) / "meta").exists():
            return None
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def wait(self) -> None:
        """Blocks until an asynchronous save has been written."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> TrainingCheckpoints:  # noqa: PYI034 (py310 has no typing.Self)
        return self

    def __exit__(self, *exc) -> None:
        self.close()
