"""Dataset preparation: a source folder on disk -> ArrayRecord files via a TFDS builder.

One TFDS builder, `sum_segmentation`, with one builder config per dataset, prepares any source
format (`sum_jax.data.formats`) into the schema of `sum_jax.data.records`:

    <data_dir>/sum_segmentation/<dataset>/1.0.0/sum_segmentation-<split>.array_record-*
                                                dataset_info.json, features.json,
                                                prepare_report.json

The source folder is TFDS's "manual download" folder; nothing is downloaded. Records keep the
source order (file names sorted; COCO: the JSON's image order): shuffling is the loader's job,
and ordered records let an evaluation use "the first N images".

Atomicity: TFDS writes into `incomplete.*` next to the final folder and renames it when every
split is done, so an interrupted run leaves no half-written dataset; a rerun removes stale
`incomplete.*` folders and starts that dataset again. A finished dataset is reused unless
`overwrite` is set, and only if it was prepared from the same source and settings: each
dataset keeps a `source.json` (the resolved spec and the content hash of every source file)
and a rerun that asks for something else, or finds a source file changed, stops and names
what changed. With
`overwrite` the new copy is built in a folder beside the old one and swapped in only when
complete, so a failing rebuild (a typo in `source_dir`) leaves the old dataset as it was.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from sum_jax import cloud, fingerprint
from sum_jax.data import formats, registry
from sum_jax.data.records import TASK_NAMES, DataError, IssueLog, features
from sum_jax.fileio import as_path, aside_path, atomic_write, check_output_dir, swap_in

log_module = logging.getLogger("sum_jax.data")

BUILDER_NAME = "sum_segmentation"
DATASET_VERSION = "1.0.0"


@dataclasses.dataclass
class ResolvedSpec:
    """A dataset's spec after registry defaults and config overrides are applied."""

    name: str
    format: str
    task_id: int
    splits: dict[str, str]
    options: dict[str, Any]
    source_dir: Path
    max_images: int | None = None


@dataclasses.dataclass
class SplitStats:
    images: int = 0
    masks: int = 0
    found: int = 0
    masks_per_image: list[int] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        mpi = np.asarray(self.masks_per_image or [0])
        return {
            "items_found": self.found,
            "images_written": self.images,
            "masks_written": self.masks,
            "masks_per_image": {
                "min": int(mpi.min()),
                "mean": float(mpi.mean()),
                "max": int(mpi.max()),
            },
        }


@dataclasses.dataclass
class PrepareReport:
    """What a preparation found and wrote; `str()` is the summary the CLI prints."""

    dataset: str
    task_id: int
    path: str
    reused: bool
    splits: dict[str, dict[str, Any]]
    issue_counts: dict[str, int]
    issues: list[str]
    # One line per split whose image count differs from the paper's (registry.count_warning).
    warnings: list[str] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"dataset {self.dataset!r} (task {self.task_id}: {TASK_NAMES.get(self.task_id, '?')})"
            f" -> {self.path}" + (" [already prepared, reused]" if self.reused else "")
        ]
        for split, s in self.splits.items():
            mpi = s["masks_per_image"]
            lines.append(
                f"  {split}: {s['images_written']} images written of {s['items_found']} found, "
                f"{s['masks_written']} masks (per image min {mpi['min']}, mean {mpi['mean']:.1f},"
                f" max {mpi['max']})"
            )
        if self.issue_counts:
            lines.append(f"  skipped problems: {sum(self.issue_counts.values())}")
            lines += [f"    {n} x {kind}" for kind, n in sorted(self.issue_counts.items())]
            lines += [f"    {msg}" for msg in self.issues[:20]]
            if len(self.issues) > 20:
                lines.append(f"    ... {len(self.issues) - 20} more in prepare_report.json")
        else:
            lines.append("  no problems found")
        lines += [f"  WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def parse_splits(value: str | Mapping[str, str] | None) -> dict[str, str] | None:
    """`"train:DIS-TR,validation:DIS-VD"` (or a mapping) -> {split: tag}; a bare name -> tag ""."""
    if value is None or value == "":
        return None
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    out = {}
    for part in str(value).split(","):
        name, _, tag = part.strip().partition(":")
        out[name.strip()] = tag.strip()
    return out


def resolve_spec(config: Mapping[str, Any]) -> ResolvedSpec:
    """Registry entry (if any) + config overrides -> the spec to prepare."""
    name = str(config["dataset"]).lower()
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"dataset name {name!r} must match [a-z][a-z0-9_]* (a TFDS config name)")
    known = registry.lookup(name)
    fmt = config.get("format") or (known.format if known else None)
    if fmt is None:
        raise ValueError(
            f"{name!r} is not a known dataset ({sorted(registry.KNOWN)}): set "
            f"--config.format (one of {sorted(formats.FORMATS)}) and --config.task_id"
        )
    task_id = config.get("task_id")
    if task_id is None:
        if known is None:
            raise ValueError(f"{name!r} is not a known dataset: set task_id (0-3)")
        task_id = known.task_id
    splits = parse_splits(config.get("splits")) or (dict(known.splits) if known else {"train": ""})
    raw = config.get("options") or {}
    user_options = raw.to_dict() if hasattr(raw, "to_dict") else dict(raw)
    options = formats.merge_options(
        fmt, known.options if known and known.format == fmt else None, user_options
    )
    if not config.get("source_dir"):
        raise ValueError(
            "config.source_dir (the folder holding the dataset) is not set: pass "
            "--config.source_dir=/path/to/the/downloaded/dataset"
        )
    cloud.require_local(
        config["source_dir"], "config.source_dir", "a dataset's files are read as local "
        "files; copy it to a local disk first (gcloud storage cp -r ...)",
    )  # fmt: skip
    source_dir = as_path(config["source_dir"], "config.source_dir").expanduser()
    if not source_dir.is_dir():
        what = "is a file, not a folder" if source_dir.exists() else "does not exist"
        raise FileNotFoundError(
            f"config.source_dir={source_dir} {what}; pass the folder holding the downloaded "
            f"dataset (--config.source_dir=...)"
        )
    return ResolvedSpec(
        name=name,
        format=fmt,
        task_id=int(task_id),
        splits=splits,
        options=options,
        source_dir=Path(config["source_dir"]).expanduser().resolve(),
        max_images=config.get("max_images") or None,
    )


class SumSegmentation(tfds.core.GeneratorBasedBuilder):
    """Images + COCO-RLE masks + task id of one segmentation dataset (see module docstring)."""

    VERSION = tfds.core.Version(DATASET_VERSION)
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        DATASET_VERSION: "Images as encoded bytes, masks as COCO RLE, task id."
    }

    # Nothing is downloaded, so there are no URL checksums to look up. (TFDS's default lookup
    # locates this module through `importlib_resources`, which is not installed here.)
    @tfds.core.utils.classproperty
    @classmethod
    def url_infos(cls):
        return None

    def __init__(self, *, spec: ResolvedSpec, log: IssueLog, progress: bool = True, **kwargs):
        self._spec = spec
        self._log = log
        self._progress = progress
        self.stats: dict[str, SplitStats] = {}
        super().__init__(
            config=tfds.core.BuilderConfig(name=spec.name, description=spec.format), **kwargs
        )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self._spec.name}: {self._spec.format} source, task {self._spec.task_id}",
            features=features(),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(
                dataset=self._spec.name,
                task_id=self._spec.task_id,
                format=self._spec.format,
                source_dir=str(self._spec.source_dir),
                splits=self._spec.splits,
                options=self._spec.options,
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # The source folder is given directly; nothing is downloaded.
        return {
            split: self._generate_examples(split, tag) for split, tag in self._spec.splits.items()
        }

    def _generate_examples(self, split: str, tag: str):
        spec, log = self._spec, self._log
        fmt = formats.get_format(spec.format)
        items = fmt.list_items(spec.source_dir, tag, spec.options, log)
        if spec.max_images:
            items = items[: spec.max_images]
        stats = self.stats.setdefault(split, SplitStats())
        stats.found = len(items)
        bar = tqdm(items, desc=f"{spec.name}/{split}", unit="img", disable=not self._progress)
        for key, item in enumerate(bar):
            example = fmt.load_item(item, spec.options, log, require_masks=spec.task_id != 0)
            if example is None:
                bar.set_postfix(skipped=len(log.issues), refresh=False)
                continue
            stats.images += 1
            stats.masks += len(example.masks)
            stats.masks_per_image.append(len(example.masks))
            # Integer keys + disable_shuffling: records stay in source order.
            yield key, example.as_features(spec.name, spec.task_id)
        if stats.images == 0:
            # The skipped problems say why; without them the message only says "nothing".
            why = "; ".join(str(e) for e in log.issues[:3])
            more = f" (and {len(log.issues) - 3} more)" if len(log.issues) > 3 else ""
            raise DataError(
                str(spec.source_dir),
                f"no usable image for split {split!r} (tag {tag!r}, {len(items)} candidates; "
                f"options {spec.options})"
                + (f"; every candidate was skipped: {why}{more}" if why else ""),
                "empty split",
            )


def dataset_dir(data_dir: str | os.PathLike, name: str) -> Path:
    """Folder of a prepared dataset (where `tfds.builder_from_directory` reads it)."""
    return as_path(data_dir) / BUILDER_NAME / name.lower() / DATASET_VERSION


def _remove_stale_incomplete(data_dir: Path, name: str) -> list[Path]:
    """Removes what an interrupted run left (TFDS's `incomplete.*`, our `.rebuild.*`); an old
    copy set aside by a rebuild killed mid-swap is put back."""
    parent = data_dir / BUILDER_NAME / name
    if not parent.is_dir():
        return []
    final = parent / DATASET_VERSION
    aside = aside_path(final)
    if aside.is_dir() and not final.exists():
        os.replace(aside, final)
    stale = sorted(
        [*parent.glob("incomplete.*"), *parent.glob(".rebuild.*"), *parent.glob(".*.old")]
    )
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def dry_run(config: Mapping[str, Any], samples: int = 5) -> str:
    """Lists what would be prepared and validates the first `samples` items of each split."""
    spec = resolve_spec(config)
    log = IssueLog("skip")
    fmt = formats.get_format(spec.format)
    lines = [f"{spec.name}: format {spec.format}, task {spec.task_id}, source {spec.source_dir}"]
    for split, tag in spec.splits.items():
        items = fmt.list_items(spec.source_dir, tag, spec.options, log)
        if spec.max_images:
            items = items[: spec.max_images]
        checked = [fmt.load_item(i, spec.options, log, spec.task_id != 0) for i in items[:samples]]
        masks = [len(e.masks) for e in checked if e is not None]
        lines.append(
            f"  {split} (tag {tag!r}): {len(items)} images found; first {len(checked)}: "
            f"{len(masks)} ok, masks {masks}"
        )
    lines.append("  " + log.summary().replace("\n", "\n  "))
    return "\n".join(lines)


def prepare(
    config: Mapping[str, Any], data_dir: str | os.PathLike | None = None, *, progress: bool = True
) -> PrepareReport:
    """Prepares one dataset into ArrayRecord files and returns what was found.

    Args:
      config: `dataset` (registry name or a new name), `source_dir`; optional `format`,
        `task_id`, `splits`, `options`, `max_images`, `on_error` ("skip" or "raise"),
        `overwrite`, and `data_dir` (if not passed as an argument).
      data_dir: root of prepared datasets.
      progress: show a progress bar per split.
    """
    spec = resolve_spec(config)
    if not (data_dir or config.get("data_dir")):
        raise ValueError(
            "config.data_dir (where prepared datasets go) is not set: pass "
            "--config.data_dir=/path/to/prepared"
        )
    data_dir = check_output_dir(data_dir or config["data_dir"], "config.data_dir")
    if cloud.is_remote(data_dir):
        return _prepare_remote(config, data_dir, progress)
    data_dir = data_dir.resolve()
    on_error = config.get("on_error") or "skip"
    if on_error not in ("skip", "raise"):
        raise ValueError(f"config.on_error must be 'skip' or 'raise', got {on_error!r}")
    log = IssueLog(on_error)
    stale = _remove_stale_incomplete(data_dir, spec.name)
    if stale and progress:
        print(
            f"removed {len(stale)} unfinished earlier run(s): {[p.name for p in stale]}",
            file=sys.stderr,
        )
    out_dir = dataset_dir(data_dir, spec.name)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} is a file; config.data_dir must hold folders only")
    made_from = source_fingerprint(spec)
    finished = (out_dir / "dataset_info.json").exists()
    if finished and not config.get("overwrite"):
        _check_same_source(out_dir, spec, made_from)
        reused = True
        builder = _build(spec, log, data_dir, progress)
    elif finished:
        reused = False
        builder = _rebuild_beside(spec, log, data_dir, progress)
    else:
        reused = False
        builder = _build(spec, log, data_dir, progress)
        atomic_write(out_dir / SOURCE_FILE, json.dumps(made_from, indent=2))
    if reused:
        previous = out_dir / "prepare_report.json"
        if previous.exists():
            old = json.loads(previous.read_text())
            return _warn_counts(PrepareReport(**{**old, "reused": True}))
    report = PrepareReport(
        dataset=spec.name,
        task_id=spec.task_id,
        path=str(out_dir),
        reused=reused,
        splits={k: v.as_dict() for k, v in builder.stats.items()},
        issue_counts=log.counts(),
        issues=[str(e) for e in log.issues],
    )
    report = _warn_counts(report)
    atomic_write(out_dir / "prepare_report.json", json.dumps(dataclasses.asdict(report), indent=2))
    return report


def _prepare_remote(config: Mapping[str, Any], data_dir: Path, progress: bool) -> PrepareReport:
    """`prepare` into gs://: TFDS writes ArrayRecord shards to local files only, so the
    dataset is prepared in a local mirror of its gs:// folder (a prepared copy there is
    fetched first, to be checked and reused as locally) and, when made anew, swapped into
    gs:// complete (`fileio.swap_in`: the old copy stays until then)."""
    name = resolve_spec(config).name
    remote = dataset_dir(data_dir, name)
    local = cloud.local_copy(remote)
    local_root = local.parents[2]  # the mirror of data_dir: <data_dir>/<builder>/<name>/<version>
    if not (local / "dataset_info.json").is_file():
        shutil.rmtree(local)  # not prepared there: TFDS takes an existing folder as done
    report = prepare({**config, "data_dir": str(local_root)}, local_root, progress=progress)
    report = dataclasses.replace(report, path=str(remote))
    if not report.reused:
        text = json.dumps(dataclasses.asdict(report), indent=2)
        atomic_write(local / "prepare_report.json", text)
        swap_in(local, remote)
    return report


def _warn_counts(report: PrepareReport) -> PrepareReport:
    """Adds (and logs) one line per split whose image count differs from the paper's."""
    lines = []
    for split, stats in report.splits.items():
        line = registry.count_warning(report.dataset, split, int(stats["images_written"]))
        if line:
            log_module.warning("%s", line)
            lines.append(line)
    return dataclasses.replace(report, warnings=lines)


SOURCE_FILE = "source.json"


# Up to this many source files, source.json keeps each file's hash, so that a refusal can
# name the files that changed; above it, one hash of them all (SA-1B has millions of files).
NAMED_FILES_LIMIT = 20_000


def source_fingerprint(spec: ResolvedSpec) -> dict[str, Any]:
    """What a prepared dataset was made from: the resolved spec and the source folder's
    files by content (`sum_jax.fingerprint.folder_hashes`: a swapped mask of the same size
    changes it as much as an added or removed file)."""
    hashes = fingerprint.folder_hashes(spec.source_dir)
    size = sum(os.path.getsize(spec.source_dir / name) for name in hashes)
    out = {
        "format": spec.format,
        "task_id": spec.task_id,
        "splits": spec.splits,
        "options": spec.options,
        "max_images": spec.max_images,
        "source_dir": str(spec.source_dir),
        "source_files": len(hashes),
        "source_bytes": size,
        "source_hash": fingerprint.stable_hash(hashes),
    }
    if len(hashes) <= NAMED_FILES_LIMIT:
        out["file_hashes"] = hashes
    return out


def prepared_fingerprint(data_dir: str | os.PathLike, name: str) -> str | None:
    """A content fingerprint of a prepared dataset: the hash of its `source.json` (the spec
    and the source files' hashes it was made from), or of its `dataset_info.json` when it
    was prepared before that record existed; None when it is not prepared."""
    folder = dataset_dir(data_dir, name)
    for record in (SOURCE_FILE, "dataset_info.json"):
        if (folder / record).is_file():
            return fingerprint.file_hash(folder / record)
    return None


def _check_same_source(out_dir: Path, spec: ResolvedSpec, made_from: dict[str, Any]) -> None:
    """Raises when the prepared dataset in `out_dir` was made from another source or spec,
    or from source files whose contents have changed since (each changed file named)."""
    path = out_dir / SOURCE_FILE
    if not path.is_file():
        return  # prepared before fingerprints existed: nothing to compare with
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    new = json.loads(json.dumps(made_from))
    changed = []
    if "source_hash" not in old:
        changed.append("source.json has no content hashes (prepared by an older version)")
    elif old["source_hash"] != new["source_hash"]:
        before, now = old.get("file_hashes"), new.get("file_hashes")
        if isinstance(before, dict) and isinstance(now, dict):
            names = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            for k in names[:8]:
                how = "removed" if k not in now else "changed" if k in before else "added"
                changed.append(f"{spec.source_dir / k}: {how}")
            if len(names) > 8:
                changed.append(f"... and {len(names) - 8} more files")
        else:
            changed.append("the source files' contents changed")
    skip = {"source_hash", "file_hashes", "source_bytes"}
    changed += [
        f"{k}: {old.get(k)!r} then, {v!r} now"
        for k, v in new.items()
        if k not in skip and old.get(k) != v
    ]
    if changed:
        raise FileExistsError(
            f"dataset {spec.name!r} in {out_dir} was prepared from another source or with "
            f"other settings ({'; '.join(changed)}). It is kept as it is. Pass "
            "--config.overwrite=true to prepare it again (the old copy stays until the new one "
            "is complete), or choose another --config.dataset name."
        )


def _build(spec: ResolvedSpec, log: IssueLog, data_dir: Path, progress: bool):
    builder = SumSegmentation(
        spec=spec, log=log, progress=progress, data_dir=str(data_dir), file_format="array_record"
    )
    # Our own progress bar and summary replace TFDS's per-stage bars.
    tfds.display_progress_bar(False)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(spec.source_dir),
            download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS,
        )
    )
    return builder


def _rebuild_beside(spec: ResolvedSpec, log: IssueLog, data_dir: Path, progress: bool):
    """Builds the dataset under a temporary root beside `data_dir`'s copy and swaps it in when
    complete; the old copy is untouched if anything fails before that."""
    final = dataset_dir(data_dir, spec.name)
    final.parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(dir=final.parent, prefix=".rebuild."))
    try:
        builder = _build(spec, log, root, progress)
        built = Path(builder.data_dir)
        (built / SOURCE_FILE).write_text(json.dumps(source_fingerprint(spec), indent=2))
        swap_in(built, final)
        return builder
    finally:
        shutil.rmtree(root, ignore_errors=True)
