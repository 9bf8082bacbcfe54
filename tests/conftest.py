"""Shared pytest set-up: absl flags parsed (Grain needs it), float32 matmuls on CPU."""

import os

# Tests fake 8 CPU devices so sharding code runs; must be set before jax is imported.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
from absl import flags  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
flags.FLAGS.mark_as_parsed()

# Identical programs compiled again by later tests (every trainer run jits the same step)
# load from a per-session persistent cache instead of recompiling.
import tempfile  # noqa: E402

jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="sum_jax_xla_cache_"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
