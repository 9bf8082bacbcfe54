"""The Cloud Storage emulator of tests/cloud (tests/gcs_emulator.py), once per test session;
its tests skip, saying why, where the emulator or gcsfs is not installed."""

from __future__ import annotations

import importlib.util

import pytest

_MISSING = {
    "gcp_storage_emulator": "the Cloud Storage emulator is in the test extra: pip install -e .[test]",
    "gcsfs": "gs:// paths need gcsfs: pip install -e .",
}


@pytest.fixture(scope="session")
def gcs():
    """A running emulator (`tests.gcs_emulator.Server`): gs://<gcs.bucket>/... reaches it."""
    # Looked up, not imported: gcsfs must first be imported with the emulator's settings.
    for module, why in _MISSING.items():
        if importlib.util.find_spec(module) is None:
            pytest.skip(why)
    from tests import gcs_emulator

    with gcs_emulator.running() as server:
        yield server
