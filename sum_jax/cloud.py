"""Cloud storage paths (`gs://BUCKET/PATH`): what `sum_jax.fileio` does on an object store.

Every place a user names (a workdir, an output folder, a model or data directory) goes
through `fileio.as_path`: a local path becomes a `pathlib.Path`, `gs://` an `etils.epath`
path (what Orbax uses; `gcsfs` talks to Cloud Storage), and anything else that looks like a
URL (`s3://`, `http://`, a typo such as `gs:/bucket`) is refused naming the field, so no
command writes a local folder named `gs:`.

An object store has no rename and no folders, so the local guarantees change form:

- A file (`atomic_write`, `atomic_path`) is one object upload, which Cloud Storage makes
  visible only when complete: a reader sees the old object or the new one, as locally.
- A folder (`atomic_dir`, `swap_in`) is uploaded whole beside its place first
  (`.NAME.partial/`), then the old objects are deleted and the new ones copied in server-side,
  the files of the top level last in the order they were written (a model directory's
  `sam_config.json`, the mark of a complete one, goes last). A failing write leaves the old
  folder as it was; a reader during the copy can see it incomplete, and a process killed
  during the copy leaves the complete copy in `.NAME.partial/`.
- Appending (`metrics.jsonl`, the evaluation journal) rewrites the whole object.
- No lock: `flock` has no object-store form. A second process writing the same gs:// folder
  is not stopped (`sum_jax.output_dir` says so in its log).
- ArrayRecord reads local files only: a prepared dataset on gs:// is read from a local mirror
  (`local_copy`), refreshed object by object when a generation changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

PREFIX = "gs://"
SUPPORTED = "a local path or gs://BUCKET/PATH (Google Cloud Storage)"
# `gs://` and the like: a scheme of two or more letters before ':/' (one letter is a drive).
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_MIRROR_FILE = ".sum_jax_mirror.json"

log = logging.getLogger(__name__)


def is_remote(path: Any) -> bool:
    """Whether `path` (a string or path) names an object in Cloud Storage."""
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(PREFIX)


def as_path(value: str | os.PathLike, field: str = "path") -> Path:
    """`value` as a path: `pathlib.Path` for a local one, `epath.Path` for `gs://`; any
    other scheme (or a malformed gs:// path) is an InputError naming `field`."""
    from sum_jax.cli import InputError

    if is_remote(value) and not isinstance(value, str):
        return value  # an epath.Path already
    text = os.fspath(value)
    if text.startswith(PREFIX):
        bucket = text[len(PREFIX) :].split("/", 1)[0]
        if not _BUCKET.fullmatch(bucket):
            raise InputError(
                f"{field}={text}: {bucket!r} is not a Cloud Storage bucket name (3-222 "
                f"lowercase letters, digits, '-', '_', '.'); give {SUPPORTED}"
            )
        from etils import epath

        return epath.Path(text)
    scheme = _SCHEME.match(text)
    if scheme or text.lower().startswith("gs:"):
        name = scheme.group(1) if scheme else "gs"
        hint = ""
        if name.lower() == "gs":
            hint = (
                " (gs:// takes two slashes)" if text[3:5] != "//" else " (write gs:// in lowercase)"
            )
        raise InputError(f"{field}={text}: {name}: paths are not supported{hint}; give {SUPPORTED}")
    return Path(text)


def _fs():
    import fsspec

    # The instance etils.epath uses (fsspec caches file systems by their arguments).
    return fsspec.filesystem("gcs", finalize_on_close=True)


def _key(path: Any) -> str:
    return os.fspath(path)[len(PREFIX) :].rstrip("/")


def upload(local: str | os.PathLike, path: Any) -> None:
    """Copies the local file `local` to the object `path` (one upload: all or nothing)."""
    _fs().put_file(os.fspath(local), _key(path))


def files(root: Any) -> dict[str, dict]:
    """`{relative path: object info}` of every object under the gs:// folder `root`."""
    key = _key(root)
    try:
        found = _fs().find(key, detail=True)
    except FileNotFoundError:
        return {}
    return {name[len(key) + 1 :]: info for name, info in found.items() if name != key}


# The files whose presence marks a folder complete: a model directory's config, a prepared
# dataset's info (what `checkpointing.read_config` and `data.sources.open_source` look for).
_MARKS = ("sam_config.json", "dataset_info.json")


def _order(names: list[str], when: dict[str, Any]) -> list[str]:
    """Files in subfolders first, then the top level's in the order they were written, the
    marks of a complete folder (`_MARKS`) last."""

    def key(name: str) -> tuple:
        top = "/" not in name
        return (top, top and name in _MARKS, when.get(name, 0) if top else 0, name)

    return sorted(names, key=key)


def rmtree(path: Any) -> None:
    """Removes every object under `path` (nothing there: nothing to do)."""
    fs = _fs()
    names = [f"{_key(path)}/{n}" for n in files(path)]
    if names:
        fs.rm(names)
    fs.invalidate_cache(_key(path))


def upload_tree(local: str | os.PathLike, path: Any) -> None:
    """Uploads every file under the local folder `local` to the gs:// folder `path`."""
    local = Path(local)
    found = [p for p in local.rglob("*") if p.is_file() and p.name != _MIRROR_FILE]
    names = [p.relative_to(local).as_posix() for p in found]
    when = {p.relative_to(local).as_posix(): p.stat().st_mtime_ns for p in found}
    for name in _order(names, when):
        upload(local / name, f"{os.fspath(path).rstrip('/')}/{name}")


def copy_tree(source: Any, path: Any) -> None:
    """Copies every object of the gs:// folder `source` into `path` (server-side)."""
    fs, src, dst = _fs(), _key(source), _key(path)
    found = files(source)
    when = {n: int(info.get("generation") or 0) for n, info in found.items()}
    for name in _order(list(found), when):
        fs.copy(f"{src}/{name}", f"{dst}/{name}")
    fs.invalidate_cache(dst)


def swap_in(new: Any, path: Any) -> None:
    """Replaces the gs:// folder `path` with the folder `new` (local, or gs:// beside it):
    `new` complete in `.NAME.partial/` first, then the old objects deleted and the new ones
    copied in, the top level's files last (module docstring)."""
    staging = new
    if not is_remote(new):
        staging = as_path(path).parent / f".{as_path(path).name}.partial"
        rmtree(staging)
        upload_tree(new, staging)
    rmtree(path)
    copy_tree(staging, path)
    rmtree(staging)


def append(path: Any, data: bytes) -> None:
    """Appends `data` to the object `path`: an object cannot grow, so it is rewritten whole
    (old bytes, then the new), one upload."""
    try:
        old = as_path(path).read_bytes()
    except FileNotFoundError:
        old = b""
    as_path(path).write_bytes(old + data)


def local_copy(path: Any) -> Path:
    """A local mirror of the gs:// folder `path` (for readers of local files only: ArrayRecord),
    in `$SUM_JAX_CLOUD_CACHE` (default `~/.cache/sum_jax/gs`); objects whose generation
    changed are fetched again, files no longer there removed."""
    import json

    root = os.environ.get("SUM_JAX_CLOUD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sum_jax", "gs"
    )
    mirror = Path(root) / _key(path)
    mirror.mkdir(parents=True, exist_ok=True)
    record = mirror / _MIRROR_FILE
    try:
        had = json.loads(record.read_text())
    except (OSError, ValueError):
        had = {}
    found = files(path)
    now = {
        name: str(info.get("generation") or info.get("md5Hash") or "")
        for name, info in found.items()
    }
    fs = _fs()
    for name, generation in sorted(now.items()):
        target = mirror / name
        if had.get(name) != generation or not target.is_file() or not generation:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            os.close(fd)
            try:
                fs.get_file(f"{_key(path)}/{name}", tmp)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    for old in set(had) - set(now):
        (mirror / old).unlink(missing_ok=True)
    record.write_text(json.dumps(now))
    return mirror


def walk_files(root: Any) -> Iterator[tuple[str, Any]]:
    """`(relative path, path)` of every file under `root` (local or gs://), sorted."""
    if is_remote(root):
        for name in sorted(files(root), key=lambda n: n.split("/")):
            yield name, as_path(f"{os.fspath(root).rstrip('/')}/{name}")
        return
    root = Path(root)
    for p in sorted(p for p in root.rglob("*") if p.is_file()):  # by parts, as remote
        yield p.relative_to(root).as_posix(), p


def rmtree_any(path: Any) -> None:
    """Removes the folder `path`, local or gs://, if it is there."""
    if is_remote(path):
        rmtree(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: Any) -> Iterator[Path]:
    """`fileio.atomic_path` for an object: a local temporary file, uploaded on success."""
    path = as_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        upload(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: Any, *, overwrite: bool = True) -> Iterator[Path]:
    """`fileio.atomic_dir` for a gs:// folder: a local temporary folder, swapped in
    (`swap_in`) on success."""
    path = as_path(path)
    if _is_object(path):
        raise NotADirectoryError(f"{path} is a file; expected a folder to write into")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass the overwrite flag to replace it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial"))
    try:
        yield tmp
        swap_in(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_files(folder: Any, replaces: Iterable[str] = ()) -> Iterator[Path]:
    """`fileio.atomic_files` for a gs:// folder: files staged locally, then each uploaded (an
    object each, whole or not at all; not the set together), then the leftovers removed."""
    folder = as_path(folder)
    staging = Path(tempfile.mkdtemp(prefix=".staging.", suffix=".partial"))
    try:
        yield staging
        written = sorted(p.name for p in staging.iterdir())
        for name in written:
            upload(staging / name, folder / name)
        for name in sorted(set(replaces) - set(written)):
            (folder / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def info(path: Any) -> dict:
    """Cloud Storage's record of the object `path` (size, generation, ...);
    FileNotFoundError when there is none."""
    found = _fs().info(_key(path))
    if found.get("type") != "file":
        raise FileNotFoundError(f"{path}: no such file")
    return found


def _is_object(path: Any) -> bool:
    """Whether an object (a file, not a folder prefix) is at `path`."""
    try:
        return _fs().info(_key(path)).get("type") == "file"
    except FileNotFoundError:
        return False


def check_output_dir(path: Any, field: str) -> Path:
    """`fileio.check_output_dir` for gs://: refuses a file there or above it, or a bucket
    that does not exist, naming `field`. (Permissions show at the first write.)"""
    path = as_path(path, field)
    for p in (path, *path.parents):
        if os.fspath(p).rstrip("/") in ("gs:", "gs:/"):
            break
        if _is_object(p):
            raise NotADirectoryError(
                f"{field}={path}: {p} is a file, not a folder; give a folder path "
                "(it is created if missing)"
            )
    bucket = _key(path).split("/", 1)[0]
    try:
        exists = _fs().exists(bucket)
    except OSError:
        exists = True  # no right to look: the first write says
    if not exists:
        raise FileNotFoundError(
            f"{field}={path}: the bucket gs://{bucket} does not exist (or is not visible "
            "with these credentials); create it, or give another bucket"
        )
    return path


def size(path: Any) -> int:
    """The size in bytes of the file `path`, local or gs:// (epath's stat has no st_size)."""
    return int(info(path)["size"]) if is_remote(path) else os.path.getsize(path)


class _ObjectLogHandler(logging.Handler):
    """A log file on gs://: lines collect in memory and the object is rewritten whole (what
    it held before, then this run's lines) at most every `every` seconds and at close."""

    def __init__(self, path: Any, every: float = 30.0):
        super().__init__()
        self.path, self.every = as_path(path), every
        try:
            self._before = self.path.read_text()
        except FileNotFoundError:
            self._before = ""
        self._lines: list[str] = []
        self._written = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record) + "\n")
            if time.monotonic() - self._written >= self.every:
                self.flush()
        except Exception:  # noqa: BLE001 - logging's contract: report, never raise
            self.handleError(record)

    def flush(self) -> None:
        if self._lines:
            self.path.write_text(self._before + "".join(self._lines))
        self._written = time.monotonic()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            super().close()


def log_handler(path: Any) -> logging.Handler:
    """A logging handler appending to the log file `path`: a `FileHandler` for a local one;
    on gs:// one that rewrites the object (every 30 s and at close)."""
    if is_remote(path):
        return _ObjectLogHandler(path)
    return logging.FileHandler(path, mode="a")


def require_local(value: str | os.PathLike | None, field: str, why: str) -> None:
    """An InputError naming `field` when `value` is a gs:// path: for the places whose
    readers need local files (`why` says which)."""
    if value and is_remote(value):
        from sum_jax.cli import InputError

        raise InputError(f"{field}={value}: a gs:// path is not supported here: {why}")


def absolute(value: str | os.PathLike, field: str = "path") -> Path:
    """`as_path(value).absolute()`, but a gs:// path as it is (pathlib's `absolute` would put
    the working folder in front of it)."""
    path = as_path(value, field)
    return path if is_remote(path) else path.absolute()
