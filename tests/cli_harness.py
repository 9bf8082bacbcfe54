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


_BASE_FLAGS: set[str] | None = None


def _reset_flags() -> None:
    global _BASE_FLAGS
    fv = flags.FLAGS
    if _BASE_FLAGS is None:
        _BASE_FLAGS = set(fv)  # absl's and cli's own flags stay
    # Only the flags a command defined (its module runs as `__main__`; `--config` and
    # `--shard` come from sum_jax.cli's helpers, ml_collections adds the config overrides).
    # Flags of libraries a command imported first (Grain's, say) stay: the library is
    # imported once per process and would not define them again.
    by_module = fv.flags_by_module_dict()
    defined_by_commands = {
        flag.name
        for module, module_flags in by_module.items()
        if "__main__" in module
        or module in ("sum_jax.cli", "absl.flags._flag")
        or module.startswith("ml_collections")
        for flag in module_flags
    }
    for name in (set(fv) - _BASE_FLAGS) & defined_by_commands:
        delattr(fv, name)
    for name in set(fv) - _BASE_FLAGS - defined_by_commands:
        _BASE_FLAGS.add(name)
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
