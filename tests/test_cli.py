"""The persistent compilation cache that every command turns on (`cli.compilation_cache`)."""

from __future__ import annotations

import jax

from sum_jax import cli


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
