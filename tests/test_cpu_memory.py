"""`cpu_memory.keep_freed_memory`: XLA:CPU's per-call buffers stop page-faulting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sum_jax import cpu_memory

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]

# A jitted attention-like program (`softmax(x @ x) @ w`: 64 MiB intermediates, 16384 pages
# of 4 KiB each, and a small output), called three times; prints the minor page faults of
# the third call.
_PROBE = """
import json, resource, sys
from sum_jax import cpu_memory
applied = cpu_memory.keep_freed_memory()
import jax, jax.numpy as jnp
x = jnp.ones((4096, 4096), jnp.float32) * 1e-3
w = jnp.ones((4096, 8), jnp.float32)
f = jax.jit(lambda x, w: jax.nn.softmax(x @ x, axis=-1) @ w)
for _ in range(2):
    f(x, w).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
y = f(x, w).block_until_ready()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults, "value": float(y[0, 0])}))
"""


def _probe(setting: str) -> dict:
    env = {**os.environ, cpu_memory.ENV: setting, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_buffers_are_reused_without_page_faults():
    default, kept = _probe("0"), _probe("1")
    assert not default["applied"] and kept["applied"]
    # glibc's default maps the 64 MiB intermediates afresh: a fault per 4 KiB page at least.
    assert default["faults"] > 16384 * 0.9
    assert kept["faults"] < default["faults"] / 10
    assert kept["value"] == default["value"]
