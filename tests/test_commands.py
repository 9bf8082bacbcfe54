"""Every command that the README, docs/ and configs/ document runs: `--help` exits 0.

The commands are read from the documentation itself (every `python -m MODULE` in a code
span or block), so a renamed or moved stage that the docs still name fails here.
"""

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted(ROOT.glob("configs/**/*.py")),
]
# Modules that are not ours (the test runner) are not checked.
NOT_OURS = {"pytest", "pip"}

pytestmark = pytest.mark.integration


def documented_commands() -> dict[str, list[str]]:
    """`{module: [files that name it]}` for every `python -m module` in the docs."""
    found: dict[str, list[str]] = {}
    for path in DOCS:
        for module in re.findall(r"python -m ([\w.]+)", path.read_text()):
            # `python -m sum_jax.<stage>` (a pattern, not a command) leaves a trailing dot.
            if not module.endswith(".") and module.split(".")[0] not in NOT_OURS:
                found.setdefault(module, []).append(str(path.relative_to(ROOT)))
    return found


def test_the_docs_name_every_stage():
    stages = {p.parent.name for p in (ROOT / "sum_jax").glob("*/__main__.py")}
    named = {m.split(".")[1] for m in documented_commands() if m.startswith("sum_jax.")}
    assert stages <= named, f"stages without a documented command: {sorted(stages - named)}"


def test_every_documented_command_answers_help():
    commands = documented_commands()
    assert len(commands) >= 8, commands

    def run(module: str) -> tuple[str, subprocess.CompletedProcess]:
        proc = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        return module, proc

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, sorted(commands)))
    for module, proc in results:
        where = ", ".join(sorted(set(commands[module])))
        assert proc.returncode == 0, (
            f"python -m {module} --help (named in {where}):\n{proc.stderr[-2000:]}"
        )
        assert "--" in proc.stdout + proc.stderr, module  # it listed its flags
        assert "Traceback" not in proc.stderr, module
