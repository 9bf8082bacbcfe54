"""Who writes an output folder: one command owns it, and one process writes it at a time.

    with output_dir.claim(workdir, "evaluate", "--workdir"):
        runner.evaluate_checkpoints(config, checkpoints, workdir)

`claim` is called by every command that writes a folder (`--workdir`, `--output_dir`,
`--config.output_dir`, `--config.data_dir`) once its inputs are checked and before it writes:

- A folder that holds another command's outputs is refused, naming both commands: `evaluate`
  into a training workdir would replace the run's `summary.json`. The owner is recorded in
  `.sum_jax_command.json` when a command first writes a folder; folders made before that
  record are recognised by their characteristic files (`SIGNS`).
- The folder's lock (`.sum_jax.lock`, held with `flock` for the life of the block) stops a
  second process of the same run, naming the first one's pid and host: two `prepare_data`
  or two `train` in one folder would delete each other's unfinished files or interleave
  `metrics.jsonl`. The lock file is removed when the command ends; the kernel releases the
  lock when its process ends, however it ends, so the file a killed run leaves behind never
  blocks. The pid and host in it only serve the message. A gs:// folder has no lock (an
  object store has no `flock`, and the Cloud Storage emulators the tests run lack the
  generation preconditions a lock object would need): the owner record still refuses another
  command's folder, but a second process of the same run is not stopped; a log line says so.

Workers that share one folder by design (the shards of `pseudo_labels` and `uncertainty`, the
processes of a multi-host training run, `prepare_data` runs of different datasets) pass their
shard, process or dataset as `worker` and lock separately.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from sum_jax import fileio

OWNER_FILE = ".sum_jax_command.json"
LOCK_FILE = ".sum_jax.lock"

# What each command writes into its folder, for the message that refuses to mix two.
COMMANDS = {
    "prepare_data": "prepared datasets (sum_segmentation/)",
    "pseudo_labels": "pseudo-label files (*.npz, summary_*.json)",
    "uncertainty": "pseudo-label files with uncertainty maps (*.npz, uncertainty_summary_*.json)",
    "train": "a training run (checkpoints/, metrics.jsonl, model/, summary.json)",
    "pretrain": "a pretraining run (checkpoints/, metrics.jsonl, model/, pretrain.json)",
    "train_refiner": "a refiner training run (cache/, checkpoints/, refiner/, report.json)",
    "evaluate": "evaluation reports (progress.jsonl, records.jsonl, summary.json)",
    "segment": "a segmentation (mask.png, overlay.png, result.json)",
    "run_table": "a paper table's evaluations (one folder per column, the table's .md/.csv)",
}
# Not a command: a model directory (what train exports, convert.sam_checkpoint writes).
MODEL = "model"
_DESCRIBE = {**COMMANDS, MODEL: "a model directory (sam_config.json, parameters)"}

# Files that mark a folder written before owner records existed: the first owner whose
# patterns all match wins, so the more specific come first ("name/" is a folder).
SIGNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pretrain", ("pretrain.json",)),
    ("pretrain", ("scenes.png", "checkpoints/")),  # an unfinished one
    ("train_refiner", ("checkpoints/", "cache/")),
    ("train", ("checkpoints/", "metrics.jsonl")),
    ("evaluate", ("progress.jsonl",)),
    ("evaluate", ("records.jsonl", "summary.json")),
    ("prepare_data", ("sum_segmentation/",)),
    ("pseudo_labels", ("summary_*.json",)),
    ("uncertainty", ("uncertainty_summary_*.json",)),
    ("segment", ("mask.png", "result.json")),
    ("run_table", ("table[0-9]*.md",)),
    ("run_table", ("fig[0-9]*.md",)),
    (MODEL, ("sam_config.json",)),
)

log = logging.getLogger(__name__)
_HELD: dict[str, int] = {}  # lock files this process holds -> depth (claims may nest)


def _matches(folder: Path, pattern: str) -> bool:
    if pattern.endswith("/"):
        return (folder / pattern[:-1]).is_dir()
    if not any(c in pattern for c in "*?["):
        return (folder / pattern).is_file()
    return any(p.is_file() for p in folder.glob(pattern))


def _only_metadata(folder: Path) -> bool:
    """Whether `folder` holds nothing but owner records and lock files."""
    return all(p.name == OWNER_FILE or p.name.startswith(LOCK_FILE) for p in folder.iterdir())


def owner(folder: str | os.PathLike) -> tuple[str | None, str]:
    """The command whose outputs `folder` holds (None if none is known), and how that was
    found: its owner record, or the characteristic files of an older folder."""
    folder = fileio.as_path(folder)
    if not folder.is_dir() or _only_metadata(folder):
        return None, ""  # a command that stopped before writing anything owns nothing
    record = folder / OWNER_FILE
    try:
        command = json.loads(record.read_text()).get("command")
        if isinstance(command, str) and command:
            return command, f"recorded in {OWNER_FILE}"
    except (OSError, ValueError, AttributeError):
        pass  # no record, or a damaged one: the files tell
    for command, patterns in SIGNS:
        if all(_matches(folder, p) for p in patterns):
            return command, f"it has {', '.join(patterns)}"
    return None, ""


def describe(found: str) -> str:
    """What a folder of owner `found` holds, and which command wrote it, in words."""
    if found in COMMANDS:
        package = "experiments" if found == "run_table" else "sum_jax"
        return f"{COMMANDS[found]}, written by `python -m {package}.{found}`"
    return _DESCRIBE.get(found, f"the outputs of {found!r}")


def check_owner(
    folder: str | os.PathLike, command: str, field: str, *, shares: Iterable[str] = ()
) -> str | None:
    """Refuses (InputError) a folder that holds outputs of a command other than `command` or
    those in `shares` (folders it may add to: `uncertainty` adds maps to `pseudo_labels`'
    files); returns the owner found."""
    from sum_jax.cli import InputError

    found, how = owner(folder)
    if found is None or found == command or found in set(shares):
        return found
    path = fileio.as_path(folder)
    suggestion = path.parent / f"{path.name}_{command}"
    raise InputError(
        f"{field}={folder}: this folder holds {describe(found)} ({how}); `{command}` writing there "
        f"would overwrite or mix with them. Give `{command}` a folder of its own, e.g. "
        f"{field}={suggestion}"
    )


def check_name(name: str, field: str, *, where: str = "a folder name") -> str:
    """`name` if it is a plain name (it becomes `where`: one folder inside an output folder),
    else an InputError naming `field`: an empty name, `.`/`..`, a hidden name or one with a
    path separator would write outside the output folder or over it."""
    from sum_jax.cli import InputError

    why = None
    if not name:
        why = "is empty"
    elif name in (".", ".."):
        why = "names a folder outside (or the whole of) the output folder"
    elif re.search(r"[/\\]", name):
        why = "holds a path separator"
    elif name.startswith("."):
        why = "starts with '.'"
    elif re.search(r"[\x00-\x1f]", name):
        why = "holds a control character"
    elif len(name.encode()) > 200:
        why = "is longer than 200 bytes"
    if why:
        raise InputError(
            f"{field}: the name {name!r} {why}; it becomes {where}, so it must be a plain "
            "name such as SUM or sam_vit_b (letters, digits, '-', '_', '.', not starting with '.')"
        )
    return name


def _lock_name(worker: object) -> str:
    if worker is None or str(worker) == "0":
        return LOCK_FILE
    return f"{LOCK_FILE}.{re.sub(r'[^A-Za-z0-9_.-]+', '_', str(worker))}"


def _holder(fd: int) -> str:
    """The pid and host a held lock file records, as words for the message."""
    try:
        data = os.pread(fd, 4096, 0)
        info = json.loads(data.decode())
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["started"])))
        return f"`{info['command']}` (pid {info['pid']} on host {info['host']}, started {started})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not recorded its pid yet)"


def _open_locked(path: Path) -> tuple[int, bool]:
    """A descriptor of `path` and whether it holds the file's exclusive flock (False: another
    process holds it). The file is removed by the holder that releases it, so a lock taken
    on a file just removed is given up and taken again on the new one."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # 0666 minus the umask, as open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return fd, False
        except BaseException:
            os.close(fd)
            raise
        try:
            now, mine = os.stat(path), os.fstat(fd)
            if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                return fd, True
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def lock(folder: str | os.PathLike, command: str, field: str, worker: object = None):
    """Holds `folder`'s lock file for the block; a lock held by another process is an
    InputError naming that process's pid and host. Nests within one process; the file is
    removed when the block ends (a killed process leaves it, and it does not block)."""
    from sum_jax.cli import InputError

    if fileio.is_remote(folder):
        log.warning("%s: a gs:// folder has no lock; not guarding against a second run of "
                    "the same command writing it", folder)  # fmt: skip
        yield fileio.as_path(folder) / _lock_name(worker)
        return
    path = Path(folder) / _lock_name(worker)
    key = os.path.realpath(path)
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield path
        finally:
            _HELD[key] -= 1
        return
    try:
        fd, held = _open_locked(path)
    except ImportError:  # not on POSIX: no locks
        yield path
        return
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
            raise
        log.warning("%s: this file system has no locks; not guarding against a second run", path)
        yield path
        return
    if not held:
        holder = _holder(fd)
        os.close(fd)
        raise InputError(
            f"{field}={folder} is in use: {holder} is writing it (lock {path}). Wait for it "
            "to finish or stop it, or give this run another folder; the lock ends with its "
            "process, so a run that was killed does not block."
        )
    try:
        me = {
            "command": command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode() + b"\n", 0)
        _HELD[key] = 1
        try:
            yield path
        finally:
            del _HELD[key]
            path.unlink(missing_ok=True)  # while still held: see _open_locked
    finally:
        os.close(fd)  # releases the flock


@contextlib.contextmanager
def claim(
    path: str | os.PathLike | None,
    command: str,
    field: str,
    *,
    worker: object = None,
    shares: Iterable[str] = (),
) -> Iterator[Path]:
    """Makes `path` the output folder of `command` for the block: refuses a file there, a
    folder that holds another command's outputs (`check_owner`) or one another process is
    writing (`lock`); then creates it, records the owner and yields it as a Path. A folder
    it created and the block wrote nothing into is removed again.

    `shares`: the commands whose folders this one adds to (the first is recorded as the
    owner of a folder that has none yet); `worker`: see the module docstring.
    """
    from sum_jax import cli

    folder = fileio.as_path(cli.check_output_dir(None if path is None else str(path), field))
    shares = tuple(shares)
    check_owner(folder, command, field, shares=shares)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    with lock(folder, command, field, worker) as lock_file:
        found = check_owner(folder, command, field, shares=shares)  # under the lock: final
        if found is None or (found == command and not (folder / OWNER_FILE).is_file()):
            # A folder this command adds to (`shares`) keeps its kind: pseudo-label files
            # with maps added in place are still the pseudo_labels command's folder.
            record = {"command": shares[0] if found is None and shares else command}
            fileio.atomic_write(folder / OWNER_FILE, json.dumps(record) + "\n")
        try:
            yield folder
        except OSError as e:
            if e.errno in fileio.DISK_ERRORS and not (e.filename or e.filename2):
                e.filename = str(folder)  # a full disk's message names at least the folder
            raise
        finally:
            if created and _only_metadata(folder):  # failed before writing: leave no folder
                with contextlib.suppress(OSError):
                    (folder / OWNER_FILE).unlink(missing_ok=True)
                    lock_file.unlink(missing_ok=True)
                    folder.rmdir()  # fails, and keeps it, if another worker's lock is there
