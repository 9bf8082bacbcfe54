"""Random-access readers of prepared datasets (`tfds` ArrayRecord data sources).

`open_source(data_dir, "dis5k", "train")` opens one prepared split without TensorFlow
(`tfds.builder_from_directory(...).as_data_source`), and `ConcatSource` joins several splits
into one random-access source (HQSeg-44K is six datasets) that Grain can shuffle and shard.
Records come back as dicts with `str` ids and `bytes` images/masks.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from sum_jax import cloud
from sum_jax.data import rle
from sum_jax.data.builder import dataset_dir


def parse_ref(ref: str) -> tuple[str, str]:
    """`"dis5k:train"` -> ("dis5k", "train"); a bare name means its `train` split."""
    name, _, split = ref.partition(":")
    return name.strip().lower(), (split.strip() or "train")


def open_source(data_dir: str | os.PathLike, name: str, split: str):
    """Random-access data source of one prepared split (`len`, `[i]`)."""
    path = dataset_dir(data_dir, name)
    if not (path / "dataset_info.json").exists():
        raise FileNotFoundError(
            f"{path}: dataset {name!r} is not prepared; run python -m sum_jax.prepare_data "
            f"--config.dataset={name} --config.source_dir=... --config.data_dir={data_dir}"
        )
    if cloud.is_remote(path):  # ArrayRecord reads local files only: a local mirror
        path = cloud.local_copy(path)
    builder = tfds.builder_from_directory(str(path))
    if split not in builder.info.splits:
        raise KeyError(f"{path}: no split {split!r}; has {sorted(builder.info.splits)}")
    source = builder.as_data_source(split=split)
    _verify_shards(path, name, builder.info.splits[split], source)
    return source


def _verify_shards(path: Path, name: str, info, source) -> None:
    """Every shard file of the split is there and its last record reads (a truncated or
    missing shard names its file, instead of failing mid-training)."""
    redo = (
        f"; prepare {name!r} again: python -m sum_jax.prepare_data --config.dataset={name} "
        "--config.source_dir=... --config.overwrite=true"
    )
    end = 0
    for filename, length in zip(info.filenames, info.shard_lengths):
        shard = path / filename
        if not shard.is_file() or shard.stat().st_size == 0:
            raise FileNotFoundError(
                f"{shard}: shard of a prepared dataset is missing or empty{redo}"
            )
        end += int(length)
        try:
            normalize_record(source[end - 1])
        except Exception as e:  # array_record and TFDS raise many types on damage
            raise ValueError(
                f"{shard}: damaged shard (record {end - 1} unreadable: {e}){redo}"
            ) from e


def normalize_record(record: dict[str, Any]) -> dict[str, Any]:
    """TFDS numpy record -> plain Python types (str ids, list of bytes masks, int sizes)."""

    def text(v):
        return v.decode() if isinstance(v, bytes) else str(v)

    return {
        "image": record["image"],
        "image_id": text(record["image_id"]),
        "dataset": text(record["dataset"]),
        "task_id": int(record["task_id"]),
        "height": int(record["height"]),
        "width": int(record["width"]),
        "masks": list(record["masks"]),
        "mask_labels": [int(v) for v in np.asarray(record["mask_labels"]).reshape(-1)],
    }


def decode_masks(record: dict[str, Any], indices: Sequence[int] | None = None) -> np.ndarray:
    """bool[K, H, W] masks of a normalised record (all, or those at `indices`)."""
    counts = record["masks"] if indices is None else [record["masks"][i] for i in indices]
    return rle.decode_many(counts, record["height"], record["width"])


class ConcatSource:
    """Several data sources end to end, behind one index, with per-source task overrides."""

    def __init__(self, sources: Sequence[Any], task_overrides: Sequence[int | None] | None = None):
        if not sources:
            raise ValueError("ConcatSource needs at least one source")
        self._sources = list(sources)
        self._overrides = list(task_overrides or [None] * len(sources))
        self._starts = list(np.cumsum([0] + [len(s) for s in sources[:-1]]))
        self._len = int(sum(len(s) for s in sources))

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self._len:
            raise IndexError(index)
        k = bisect.bisect_right(self._starts, index) - 1
        record = normalize_record(self._sources[k][index - self._starts[k]])
        if self._overrides[k] is not None:
            record["task_id"] = int(self._overrides[k])
        return record

    def task_ids(self) -> set[int]:
        """The task ids of the joined sources: each one's override, else the task id of its
        first record (`prepare_data` gives every record of a dataset its dataset's task)."""
        out = set()
        for source, override in zip(self._sources, self._overrides):
            if override is not None:
                out.add(int(override))
            elif len(source):
                out.add(int(normalize_record(source[0])["task_id"]))
        return out

    def __repr__(self) -> str:
        return f"ConcatSource({len(self._sources)} sources, {self._len} records)"


def open_sources(
    data_dir: str | os.PathLike, refs: Sequence[str], task_ids: dict[str, int] | None = None
) -> ConcatSource:
    """ConcatSource of `"name:split"` refs, overriding task ids by dataset name if given."""
    task_ids = {k.lower(): int(v) for k, v in (task_ids or {}).items()}
    sources, overrides = [], []
    for ref in refs:
        name, split = parse_ref(ref)
        sources.append(open_source(data_dir, name, split))
        overrides.append(task_ids.get(name))
    return ConcatSource(sources, overrides)


def parse_shard(spec: str | None) -> tuple[int | None, int | None]:
    """`"3/8"` -> `(3, 8)`: this worker's share of a split (image `i` goes to worker
    `i % 8`); `None` or `""` -> `(None, None)`, i.e. JAX's process index and count."""
    if not spec:
        return None, None
    index, sep, count = spec.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = -1
    if not sep or not 0 <= i < n:
        raise ValueError(f"--shard must be INDEX/COUNT with 0 <= INDEX < COUNT, got {spec!r}")
    return i, n
