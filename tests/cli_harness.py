"""Runs a `python -m sum_jax.<stage>` command in-process, as a test harness.

    result = run_command("sum_jax.prepare_data", ["--config.dataset=x", ...])
    assert result.code == 2 and "x" in result.stderr

Each call executes the command module afresh as `__main__` (so its flags and `--config` are
defined from this `argv`, as in a real run), with stdout/stderr captured and the exit status
taken from `SystemExit`. The flags a previous call defined are removed first, so commands can
follow each other in one process: no jax import or JIT compilation is paid per case.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import runpy
import sys

from absl import flags

from sum_jax import cli


@dataclasses.dataclass
class Result:
    code: int | str | None
    stdout: str
    stderr: str


def _defined_by_commands(module: str, name: str) -> bool:
    """Whether a flag belongs to a command rather than a library: the command modules
    (`sum_jax/<stage>/__main__.py`, `experiments.run_table`), ml_collections' config
    overrides, and the per-command `--config` / `--shard` of sum_jax.cli's helpers."""
    return (
        "__main__" in module
        or module.startswith(("experiments.", "ml_collections"))
        or module == "absl.flags._flag"
        or (module == "sum_jax.cli" and name in ("config", "shard"))
    )


def _reset_flags() -> None:
    """Removes every command's flags, so the next command defines its own afresh. Library
    flags (absl's, Grain's, sum_jax.cli's `--verbose`) stay: a library is imported once per
    process and would not define them again."""
    fv = flags.FLAGS
    names = {  # collected first: deleting a flag edits absl's per-module lists
        flag.name
        for module, module_flags in fv.flags_by_module_dict().items()
        for flag in module_flags
        if _defined_by_commands(module, flag.name)
    }
    for name in names:
        if name in fv:
            delattr(fv, name)
    fv.unparse_flags()
    cli._CONFIG_FLAGS.clear()


def run_command(module: str, args: list[str]) -> Result:
    """Runs `python -m module *args` in this process; returns its exit status and output."""
    _reset_flags()
    out, err = io.StringIO(), io.StringIO()
    argv = [f"{module.replace('.', '/')}/__main__.py", *args]
    code: int | str | None = 0
    saved = sys.argv
    sys.argv = argv
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=False)
            except SystemExit as e:
                code = e.code
    finally:
        sys.argv = saved
        _reset_flags()
    return Result(code, out.getvalue(), err.getvalue())
