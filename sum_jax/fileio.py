"""Atomic file output: a reader sees the old file or the complete new one, never a half.

Every stage writes through these helpers, so a job killed mid-write leaves nothing partial,
and a failing run never costs what an earlier run wrote. Files and folders get the user's
normal permissions (the umask), not `tempfile`'s private 0600 / 0700.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from sum_jax import cloud
from sum_jax.cloud import as_path, is_remote  # every entry point's path helper

# Writes that fail for the disk, not the data: what each errno means, for the message.
DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
}


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back (one syscall pair).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """Permissions a plain `open()` / `mkdir()` would give: 0666 / 0777 minus the umask."""
    return (0o777 if directory else 0o666) & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success renames it to `path`.

    For writers that want a file name (PIL, torch.save, savefig). The data is fsynced before
    the rename, so a crash leaves the old file or the new one. On error the temporary file
    is removed and `path` is untouched. The file gets the umask's permissions. On gs:// the
    temporary file is local and uploaded as one object (`sum_jax.cloud`).
    """
    if is_remote(path):
        with cloud.atomic_path(path) as tmp:
            yield tmp
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; expected a file path to write")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, default_mode())  # mkstemp creates 0600
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno in DISK_ERRORS and (not e.filename or str(e.filename) == tmp):
            e.filename = str(path)  # the file the user knows, not our temporary one
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Writes text or bytes to `path` atomically (on gs://: one object upload)."""
    if is_remote(path):
        path = as_path(path)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yields an empty folder beside `path`; on success swaps it in for `path`.

    An existing `path` stays untouched until the new folder is complete: it is then renamed
    aside, the new one renamed in, and the old one removed. On error the new folder is
    removed and `path` is as it was. `overwrite=False` refuses an existing `path`
    (FileExistsError) before anything is written. On gs:// the folder is built locally and
    swapped in object by object (`sum_jax.cloud.swap_in` says what a reader can see).
    """
    if is_remote(path):
        with cloud.atomic_dir(path, overwrite=overwrite) as tmp:
            yield tmp
        return
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file; expected a folder to write into")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass the overwrite flag to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
    os.chmod(tmp, default_mode(directory=True))  # mkdtemp creates 0700
    try:
        yield tmp
        swap_in(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def aside_path(path: str | os.PathLike) -> Path:
    """Where `swap_in` keeps the old copy of `path` while the new one is renamed in."""
    path = as_path(path)
    return path.parent / f".{path.name}.old"


def swap_in(new: str | os.PathLike, path: str | os.PathLike) -> None:
    """Replaces the folder `path` (if any) with the complete folder `new`, beside it on the
    same file system: the old copy is renamed to `aside_path(path)`, `new` renamed in, and the
    old copy removed. If renaming `new` in fails, the old copy is put back; a process killed
    between the two renames leaves the old copy at `aside_path(path)`, where a rerun finds it.
    A gs:// `path` has no renames: `sum_jax.cloud.swap_in`.
    """
    if is_remote(path):
        cloud.swap_in(new, path)
        return
    path, aside = Path(path), aside_path(path)
    shutil.rmtree(aside, ignore_errors=True)
    if path.exists():
        os.replace(path, aside)
    try:
        os.replace(new, path)
    except BaseException:
        if aside.exists() and not path.exists():
            os.replace(aside, path)
        raise
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def atomic_files(folder: str | os.PathLike, *, replaces: Iterable[str] = ()) -> Iterator[Path]:
    """Yields an empty staging folder inside `folder`; when the block ends, the files written
    there are moved into `folder` together and the files named in `replaces` that the block
    did not write are removed (an older result's leftovers). On error `folder` is untouched.

    For a result of several files (segment's mask, overlay and scores) in a folder that may
    hold other files: a full disk fails while the staging folder is written, before any file
    of `folder` changes. What follows writes no data: renames within one file system.
    On gs:// each file is one object upload; the set is not replaced together.
    """
    if is_remote(folder):
        with cloud.atomic_files(folder, replaces) as staging:
            yield staging
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".staging.", suffix=".partial"))
    try:
        yield staging
        written = sorted(p.name for p in staging.iterdir())
        for name in written:
            with open(staging / name, "rb") as f:
                os.fsync(f.fileno())
        for name in written:
            os.replace(staging / name, folder / name)
        for name in sorted(set(replaces) - set(written)):
            (folder / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_output_dir(path: str | os.PathLike, field: str) -> Path:
    """`path` as a folder to write into (existing or not); a file there is refused, naming
    `field` (the flag or config field it came from). Call it before any model is loaded.
    `path` may be gs://BUCKET/PATH; another scheme is an InputError (`as_path`)."""
    if is_remote(as_path(path, field)):
        return cloud.check_output_dir(path, field)
    path = Path(path).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise NotADirectoryError(
                    f"{field}={path}: {p} is a file, not a folder; give a folder path "
                    "(it is created if missing)"
                )
            if not os.access(p, os.W_OK):
                raise PermissionError(f"{field}={path}: cannot write in {p} (permissions)")
            break
    return path


def append_text(path: str | os.PathLike, text: str, *, sync: bool = False) -> None:
    """Appends `text` to the file `path` (created if missing); `sync`: fsynced before it
    returns. On gs:// the object is rewritten whole (`sum_jax.cloud.append`)."""
    if is_remote(path):
        cloud.append(path, text.encode())
        return
    with open(path, "a") as f:
        f.write(text)
        if sync:
            f.flush()
            os.fsync(f.fileno())


def rmtree(path: str | os.PathLike) -> None:
    """Removes the folder `path` (local or gs://) and all it holds, if it is there."""
    cloud.rmtree_any(path)
