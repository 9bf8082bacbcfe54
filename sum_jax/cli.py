"""The one command-line wrapper of every `python -m sum_jax.<stage>` command.

    from sum_jax import cli

    _CONFIG = cli.config_flag("pseudo_labels.py", "Pseudo-label config file.")

    def main(argv):
        ...

    if __name__ == "__main__":
        cli.run(main)

`run` parses the flags and calls `main` with one error path for every command: a known
failure (missing or wrong input, wrong model, config typo, unparsable value, an output path
that is a file) prints one short paragraph naming the file or field and what fixes it, and
the command exits with status 2; with `--verbose` the traceback follows. Anything else is a
bug and keeps Python's traceback (exit 1). A run stopped by SIGTERM after saving
(`sum_jax.preemption.Preempted`) says what it saved and the command that resumes, and
exits with status 75. Every command also keeps XLA's compiled programs
in a persistent cache (`compilation_cache`), so its second run starts without recompiling,
and keeps freed host memory for reuse (`cpu_memory.keep_freed_memory`: XLA:CPU's buffers
stop page-faulting on every call).
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from sum_jax import cpu_memory, preemption

EXIT_USAGE = 2
CONFIGS = Path(__file__).resolve().parents[1] / "configs"

flags.DEFINE_bool("verbose", False, "Show the traceback of a failed command.")
_CACHE_ENV = "SUM_JAX_COMPILATION_CACHE"
_CACHE = flags.DEFINE_string(
    "compilation_cache",
    None,
    f"Folder of XLA's persistent compilation cache (default: ${_CACHE_ENV}, else "
    "~/.cache/sum_jax/xla); 'none' turns it off.",
)


def compilation_cache(path: str | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache in `path`, else `$SUM_JAX_COMPILATION_CACHE`,
    else `$XDG_CACHE_HOME/sum_jax/xla` (`~/.cache/sum_jax/xla`); `none` turns it off.
    Programs that took at least 0.5 s to compile are kept. Returns the folder used."""
    path = path or os.environ.get(_CACHE_ENV)
    if path is None:
        cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        path = os.path.join(cache_home, "sum_jax", "xla")
    if path.strip().lower() in ("", "none", "off", "0"):
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path


class InputError(ValueError):
    """A failure the user fixes: the message names the file or field, what was expected and
    the command or flag that fixes it."""


# Raised by the library for problems in what the user gave (files, folders, settings).
KNOWN_ERRORS = (
    InputError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    ValueError,
    KeyError,
)


_CONFIG_FLAGS: list[flags.FlagHolder] = []
_CONFIG_HELP = (
    "Set config fields as --config.FIELD=VALUE, with FIELD defined in the config file's "
    "get_config(); a list field cannot be set on the command line: copy the config file, "
    "edit the list and pass --config=YOUR_COPY.py."
)


def config_flag(default: str | None, help_text: str, **kwargs) -> flags.FlagHolder:
    """`--config`: an ml_collections config file, default `configs/<default>` of this
    checkout (None: required)."""
    path = str(CONFIGS / default) if default else None
    try:
        # With a default file, ml_collections reads the overrides in sys.argv right here.
        holder = config_flags.DEFINE_config_file("config", path, help_text, **kwargs)
    except (KeyError, AttributeError, ValueError, TypeError) as e:
        fail(f"{_config_message(e, sys.argv)}\n{_CONFIG_HELP}")
    if default is None:
        flags.mark_flags_as_required(["config"])
    _CONFIG_FLAGS.append(holder)
    return holder


def shard_flag() -> flags.FlagHolder:
    """`--shard=INDEX/COUNT`: this worker's share of a per-image stage (one process per GPU
    of a machine); default: JAX's process index and count."""
    return flags.DEFINE_string(
        "shard",
        None,
        "INDEX/COUNT: this worker's share, e.g. one process per GPU (default: JAX's).",
    )


def check_output_dir(path: str | None, field: str) -> str:
    """`path` as a folder to write into; unset or a file there is an InputError naming `field`
    (the flag or config field). Run it before any model is loaded."""
    if not path:
        raise InputError(f"{field} is not set: the folder where this command writes")
    from sum_jax.fileio import check_output_dir as check

    return str(check(path, field))


# How each kind of model directory is made, for the message when one is missing.
MAKES = {
    "sam": "convert an official SAM checkpoint: python -m convert.sam_checkpoint "
    "--input sam_vit_h_4b8939.pth --output {path} (or train one: python -m sum_jax.train "
    "exports WORKDIR/model)",
    "demo": "run the demo first: python -m sum_jax.train --config=configs/demo.py "
    "--workdir=DIR (its SUM model is DIR/sum/model)",
    "refiner": "train the mask-refinement module: python -m sum_jax.train_refiner "
    "--config=configs/refine.py --workdir=WORKDIR (it writes WORKDIR/refiner)",
}


def check_model_dir(spec: str | None, field: str, kind: str = "sam") -> None:
    """A model given in `field` in the one grammar of every command: a model directory,
    `pretrained:<name>` (shipped in the package) or `random:<variant>` (a pipeline check).
    The directory must exist and be complete, the variant be known; else an InputError
    saying which command makes one. Reads only its small config file."""
    if spec and str(spec).startswith("random:"):
        from sum_jax.models.sam import VARIANTS

        variant = str(spec).split(":", 1)[1]
        if variant not in VARIANTS:
            raise InputError(
                f"{field}={spec}: no SAM variant {variant!r}; random:<variant> takes one of "
                f"{', '.join(sorted(VARIANTS))} (or give a model directory or pretrained:small)"
            )
        return
    how = MAKES[kind].format(path=spec or "DIR")
    if not spec:
        raise InputError(f"{field} is not set; {how}, and pass {field}=DIR")
    from sum_jax import checkpointing
    from sum_jax.fileio import as_path

    try:
        path = as_path(checkpointing.model_dir(spec), field).expanduser()
    except FileNotFoundError as e:
        raise InputError(f"{field}={spec}: {message(e)}") from e
    if not path.is_dir():
        what = "is a file, not a model directory" if path.exists() else "does not exist"
        raise InputError(f"{field}={spec}: {what}; {how}")
    try:
        checkpointing.read_config(path)
        checkpointing.check_arrays(path)  # paths and shapes, from the metadata only
    except (OSError, ValueError) as e:
        raise InputError(f"{field}={spec}: {message(e)}") from e


def check_prepared(data_dir: str | None, refs, field: str) -> None:
    """Every `name:split` in `refs` (a comma-separated string or a list) is a prepared split
    under `data_dir`; else an InputError naming `field` and the prepare_data command."""
    if not data_dir:
        raise InputError(
            f"{field.rsplit('.', 1)[0]}.data_dir is not set: the root of the prepared datasets "
            "(python -m sum_jax.prepare_data --config.data_dir=...)"
        )
    from sum_jax.fileio import as_path

    if not as_path(data_dir, field.rsplit(".", 1)[0] + ".data_dir").expanduser().is_dir():
        raise InputError(
            f"data_dir={data_dir} does not exist; prepare datasets into it with python -m "
            "sum_jax.prepare_data --config.dataset=NAME --config.source_dir=... "
            f"--config.data_dir={data_dir}"
        )
    from sum_jax.data import sources

    items = refs.split(",") if isinstance(refs, str) else list(refs)
    for ref in [str(r).strip() for r in items if str(r).strip()]:
        ref = ref.split("@", 1)[0]  # "name:split@N" (first N images) in eval sets
        try:
            name, split = sources.parse_ref(ref)
            sources.open_source(data_dir, name, split)
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{field}: {message(e)}") from e


def print_json(value) -> None:
    """A command's summary on stdout, as indented JSON."""
    print(json.dumps(value, indent=2))


def message(error: BaseException) -> str:
    while error.args and isinstance(error.args[0], BaseException):  # ml_collections wraps
        error = error.args[0]
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    if isinstance(error, KeyError) and text.startswith("'") and "\n" in text:
        name, _, hint = text.partition("\n")  # "'trian'\nDid you mean ..."
        text = f"no config field {name}. {hint}"
    elif isinstance(error, KeyError) and text.startswith("'") and text.endswith("'"):
        text = f"no config field {text}"
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{text}: {error.filename}"
    return text.strip() or type(error).__name__


def fail(message: str) -> None:
    """Prints `error: message` to stderr and exits with status 2."""
    print(f"error: {message}", file=sys.stderr)
    if "--verbose" in sys.argv:
        traceback.print_exc()
    sys.exit(EXIT_USAGE)


def stopped(preempted: BaseException) -> None:
    """After SIGTERM (`sum_jax.preemption`): what was saved, the command that resumes, and
    exit status `preemption.EXIT_PREEMPTED` (75)."""
    import shlex

    again = shlex.join(["python", "-m", _command_name(sys.argv), *sys.argv[1:]])
    print(f"stopped: {preempted} Run the same command again to resume:\n  {again}",
          file=sys.stderr)  # fmt: skip
    sys.exit(preemption.EXIT_PREEMPTED)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with config typos and bad values as one short message."""
    try:
        try:
            rest = flags.FLAGS(argv)
        except SystemExit as e:  # absl exits with 1 after printing --help
            asked = {"--help", "-h", "--helpfull", "--helpshort", "-?"} & set(argv[1:])
            raise SystemExit(0 if asked and e.code == 1 else e.code) from None
        for holder in _CONFIG_FLAGS:
            # A config file that failed to load raises on first use: say so here.
            holder.value.get  # noqa: B018 - the access is the check
        return rest
    except flags.Error as e:
        listed = re.search(r"Type <class '(\w+)'> of field (\S+) is not supported", str(e))
        if listed:
            fail(
                f"--{listed.group(2)}: a {listed.group(1)} field cannot be set on the command "
                "line; copy the config file, edit the list there and pass --config=YOUR_COPY.py"
            )
        text = _config_file_error(str(e))
        fail(f"{text}\n(see `python -m {_command_name(argv)} --help` for the flags)")
    except (KeyError, AttributeError, ValueError, TypeError, OSError) as e:
        # ml_collections raises these for an unknown field (`--config.trian.num_steps`), a
        # value of the wrong type, a list field given on the command line, or a config file
        # that is missing or does not load.
        fail(f"{_config_message(e, argv)}\n{_CONFIG_HELP}")
    return []  # unreachable


def _config_file_error(text: str) -> str:
    """ml_collections puts the whole traceback of a config file's `get_config` in its error
    (`flag --config=F: Error whilst parsing config file: Traceback ...`): keep the flag and
    the exception's own line (e.g. an unknown ablation name and the known ones)."""
    head, sep, trace = text.partition("Error whilst parsing config file:")
    lines = [line for line in trace.splitlines() if line.strip()]
    if not sep or not lines:
        return text
    last = re.sub(r"^[\w.]+(Error|Exception): ", "", lines[-1].strip())
    return f"{head.removeprefix('flag ').strip()} {last}".strip()


def _config_message(error: BaseException, argv: list[str]) -> str:
    """`message(error)`, naming the `--config.` flag it came from when one matches."""
    text = _config_file_error(message(error))
    missing = re.search(r"Attempted \[.*?\]:\s+(\S+)\s+\[Errno 2\]", text)
    if missing:
        known = ", ".join(sorted(p.name for p in CONFIGS.glob("*.py")))
        return f"--config={missing.group(1)}: no such config file (configs/ has {known})"
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    if isinstance(error, KeyError) and error.args and not text.startswith("no config field"):
        text = f"no config field {error.args[0]!r}"
    if isinstance(error, KeyError) and error.args:
        name = str(error.args[0]).split("\n")[0].strip("'\"")
        given = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.") and name in a]
        if given:
            text = f"{given[0]}: {text}"
    return text


def _command_name(argv: list[str]) -> str:
    if argv and argv[0].endswith("__main__.py"):
        return f"sum_jax.{Path(argv[0]).parent.name}"
    return "sum_jax.<command>"


def disk_message(error: BaseException) -> str | None:
    """The message for a write that failed because the disk is full, over quota or
    read-only (`fileio.DISK_ERRORS`, also when wrapped in another error), else None."""
    from sum_jax import fileio

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in fileio.DISK_ERRORS:
            where = error.filename or error.filename2
            what = f"cannot write {where}" if where else "a write failed"
            fix = (
                "make it writable, or give the command an output folder on another disk"
                if error.errno == errno.EROFS
                else "free space on that disk, or give the command an output folder on another one, "
                "and run it again"
            )
            return f"{what}: {fileio.DISK_ERRORS[error.errno]} ({error.strerror}); {fix}"
        error = error.__cause__ or error.__context__
    return None


def run(main: Callable[[list[str]], object]) -> None:
    """`absl.app.run(main)` with the one error path of the module docstring."""

    def guarded(argv: list[str]) -> None:
        if len(argv) > 1:
            fail(f"unexpected arguments: {argv[1:]} (flags take the form --name=value)")
        compilation_cache(_CACHE.value)
        cpu_memory.keep_freed_memory()
        try:
            main(argv)
        except preemption.Preempted as e:
            stopped(e)
        except KNOWN_ERRORS as e:
            fail(disk_message(e) or message(e))
        except Exception as e:
            disk = disk_message(e)
            if disk is None:
                raise
            fail(disk)

    app.run(guarded, flags_parser=_parse_flags)
