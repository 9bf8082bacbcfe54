"""The persistent compilation cache that every command turns on (`cli.compilation_cache`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax

from sum_jax import cli

ROOT = Path(__file__).resolve().parents[1]


def test_compilation_cache_folder(tmp_path, monkeypatch):
    before = jax.config.jax_compilation_cache_dir
    try:
        monkeypatch.delenv("SUM_JAX_COMPILATION_CACHE", raising=False)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
        default = str(tmp_path / "home" / "sum_jax" / "xla")
        assert cli.compilation_cache() == default
        assert jax.config.jax_compilation_cache_dir == default
        monkeypatch.setenv("SUM_JAX_COMPILATION_CACHE", str(tmp_path / "env"))
        assert cli.compilation_cache() == str(tmp_path / "env")
        assert cli.compilation_cache(str(tmp_path / "flag")) == str(tmp_path / "flag")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "flag")
        assert cli.compilation_cache("none") is None
        monkeypatch.setenv("SUM_JAX_COMPILATION_CACHE", "off")
        assert cli.compilation_cache() is None
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


# A fresh process: turns the cache on as every command does, compiles one program and
# prints how many persistent-cache hits and misses JAX reported.
_PROGRAM = """
import sys
import jax, jax.numpy as jnp
from sum_jax import cli
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
cli.compilation_cache(sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + 3.0)
f(jnp.ones((64, 64))).block_until_ready()
hits = sum(e.endswith("/cache_hits") for e in events)
misses = sum(e.endswith("/cache_misses") for e in events)
print(hits, misses)
"""


def test_second_process_loads_its_program_from_the_cache(tmp_path):
    """Run twice: the first process compiles and stores the program, the second loads it
    (a cache hit, no miss)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}

    def run():
        out = subprocess.run(
            [sys.executable, "-c", _PROGRAM, str(tmp_path / "xla")],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return tuple(int(x) for x in out.stdout.split()[-2:])

    first_hits, first_misses = run()
    assert first_hits == 0 and first_misses >= 1
    entries = sorted(p.name for p in (tmp_path / "xla").iterdir())
    assert any(e.endswith("-cache") for e in entries)
    hits, misses = run()
    assert hits >= 1 and misses == 0
