"""Every library module imports next to every other in one process.

Command-line flags belong to the `__main__` modules (and the few every command shares, in
`sum_jax.cli`); any other library module that defines an absl flag at import collides with
any other that defines the same name (CI failed this way when a worker imported
`experiments.small_scale` and then `experiments.run_table`, both defining --workdir).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Scripts that are commands themselves (flags at module level), not libraries.
COMMANDS = {"experiments.run_table"}


def library_modules() -> list[str]:
    names = []
    for package in ("sum_jax", "experiments"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__":
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if name not in COMMANDS:
                names.append(name)
    return names


def test_library_modules_define_no_flags_and_import_together():
    modules = library_modules()
    assert "experiments.small_scale" in modules and "sum_jax.train.loop" in modules
    code = (
        "import importlib, sys\n"
        "from absl import flags\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "owners = {m: [f.name for f in fl] for m, fl in flags.FLAGS.flags_by_module_dict().items()\n"
        "          if m.startswith(('sum_jax', 'experiments')) and m != 'sum_jax.cli'}\n"
        "print(owners)\n"
        "sys.exit(1 if owners else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
