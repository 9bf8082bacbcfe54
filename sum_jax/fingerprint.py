"""What an output was made from, and the check that a rerun into it matches.

Every stage that resumes into a folder (prepare_data, pseudo_labels, uncertainty, evaluate)
records there what its output was made from: content fingerprints of the model and of the
input data, and the settings that change the output (not progress bars, limits such as
`max_images`, shards or worker counts). A rerun into the same folder compares its own record
with the stored one: the same, and it resumes (skips what is done); anything else, and it
refuses with a message naming each change, leaving the folder as it is. Stale results are
never kept under new settings and never silently replaced.

Identity is content: a file's hash is of its bytes, never of its size or time. The cache
keyed by (path, size, mtime, ctime, inode) only spares hashing a file twice in one process.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sum_jax import cloud
from sum_jax.fileio import as_path, atomic_write

_CHUNK = 1 << 24
_FILE_CACHE: dict[tuple, str] = {}


def stable_hash(value: Any) -> str:
    """A short hex digest of a JSON-able value (keys sorted: the same value, the same hash)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def file_hash(path: str | os.PathLike) -> str:
    """The content hash (`blake2b`, 128 bits) of one file (local or gs://: an object's bytes,
    keyed in the cache by its generation)."""
    if cloud.is_remote(path):
        return _remote_hash(path)
    path = os.path.abspath(path)
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _FILE_CACHE:
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _FILE_CACHE[key] = h.hexdigest()
    return _FILE_CACHE[key]


def _remote_hash(path: str | os.PathLike) -> str:
    info = cloud.info(path)
    key = (os.fspath(path), info.get("generation"), info.get("size"))
    if key not in _FILE_CACHE or not info.get("generation"):
        h = hashlib.blake2b(digest_size=16)
        with as_path(path).open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _FILE_CACHE[key] = h.hexdigest()
    return _FILE_CACHE[key]


def folder_hashes(root: str | os.PathLike) -> dict[str, str]:
    """`{relative path: file_hash}` of every file under `root` (links to files followed,
    links to folders not: a link loop cannot make it walk forever)."""
    if cloud.is_remote(root):
        return {name: file_hash(path) for name, path in cloud.walk_files(root)}
    root = os.fspath(root)
    out = {}
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                out[os.path.relpath(path, root).replace(os.sep, "/")] = file_hash(path)
    return out


# Files Orbax writes beside the arrays that hold only the time of the save: the same weights
# saved twice differ there and nowhere else.
SAVE_TIME_FILES = ("_CHECKPOINT_METADATA", "commit_success.txt")


def tree_hash(root: str | os.PathLike) -> str:
    """One content hash of a folder: `blake2b` over each file's relative path and bytes, in
    sorted order, leaving out `SAVE_TIME_FILES` (the model fingerprint,
    `checkpointing.model_fingerprint`)."""
    h = hashlib.blake2b(digest_size=16)
    files = [(n, p) for n, p in cloud.walk_files(root) if p.name not in SAVE_TIME_FILES]
    for name, path in files:  # local or gs://: the same bytes, the same hash
        h.update(name.encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def arrays_hash(tree: Any) -> str:
    """A content hash of a pytree of arrays (an in-memory model's state): paths, dtypes,
    shapes and bytes."""
    import jax
    import numpy as np

    h = hashlib.blake2b(digest_size=16)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}:{array.dtype}:{array.shape}\0".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def changes(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    shown: Mapping[str, str] | None = None,
    old_shown: Mapping[str, str] | None = None,
    limit: int = 8,
) -> list[str]:
    """`"field: X then, Y now"` for each leaf (dotted path) that differs between two records.

    `shown` / `old_shown` name what a fingerprint stands for (`{"model": "ckpt/a"}`): such a
    field reads `model: ckpt/a (fingerprint 1f2e...) then, ckpt/b (fingerprint 9ab0...) now`.
    At most `limit` lines, then one that counts the rest.
    """
    a, b = _flatten(json.loads(json.dumps(old))), _flatten(json.loads(json.dumps(new)))

    def show(side: dict[str, Any], key: str, names: Mapping[str, str] | None) -> str:
        if key not in side:
            return "absent"
        if names and key in names:
            return f"{names[key]} (fingerprint {side[key]})"
        return repr(side[key])

    lines = [
        f"{k}: {show(a, k, old_shown)} then, {show(b, k, shown)} now"
        for k in sorted(set(a) | set(b))
        if a.get(k, ()) != b.get(k, ())
    ]
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
    return lines


def check_or_record(
    folder: str | os.PathLike,
    record_file: str,
    made_from: Mapping[str, Any],
    *,
    shown: Mapping[str, str] | None = None,
    outputs: Iterable[Path] = (),
    what: str,
    fix: str,
) -> None:
    """Resume or refuse: compares `made_from` with `folder/record_file`.

    The same record: returns (the caller resumes). Another record: raises `InputError` naming
    every changed field, then `fix`. No record yet: with no `outputs` (the paths of results
    already in the folder) the record is written and the run starts; with outputs (made
    before records existed, or by hand) it refuses, since nothing says what made them.
    `what` names the results (`"pseudo-labels"`); `shown` names fingerprinted inputs.
    """
    from sum_jax.cli import InputError

    folder = as_path(folder)
    path = folder / record_file
    record = {"made_from": made_from, "shown": dict(shown or {})}
    record = json.loads(json.dumps(record))
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            old_made, old_shown = old["made_from"], old.get("shown", {})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise InputError(
                f"{path}: the record of what {folder} holds is unreadable ({e}); {fix}"
            ) from e
        if old_made == record["made_from"]:
            return
        lines = changes(old_made, record["made_from"], record["shown"], old_shown)
        raise InputError(
            f"{folder} holds {what} made from other inputs or settings than this run's "
            f"({'; '.join(lines)}). It is kept as it is; {fix}"
        )
    found = sorted(outputs)
    if found:
        raise InputError(
            f"{folder} holds {what} ({found[0].name}, {len(found)} files) but no {record_file} "
            f"saying what they were made from (made by an older version or by hand), so they "
            f"cannot be resumed as this run's. It is kept as it is; {fix}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(record, indent=2) + "\n")
