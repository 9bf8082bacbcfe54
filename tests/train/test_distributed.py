"""Two real processes (`jax.distributed` over loopback, CPU collectives) train the tiny
model with `python -m sum_jax.train` and get what one process with the same two devices
gets: the same batches, losses and final parameters."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from sum_jax.checkpointing import load_state_dict
from sum_jax.train import loop, optim
from tests.xla_flags import FAST_COMPILE

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(data: str, workdir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "sum_jax.train",
        f"--config=tests/tiny_train_config.py:{data}", f"--workdir={workdir}", *extra,
    ]  # fmt: skip


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    single = tmp_path_factory.mktemp("one_process")
    subprocess.run(
        _command(data_dir, single), cwd=ROOT, env=_env(2), check=True, capture_output=True,
        timeout=600,
    )  # fmt: skip
    multi = tmp_path_factory.mktemp("two_processes")
    address = f"127.0.0.1:{_free_port()}"
    procs = [
        subprocess.Popen(
            _command(
                data_dir,
                multi,
                f"--coordinator_address={address}",
                "--num_processes=2",
                f"--process_id={i}",
            ),
            cwd=ROOT,
            env=_env(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    return single, multi, outputs


def test_two_processes_match_one(runs):
    single, multi, outputs = runs
    a, b = loop.read_metrics(single), loop.read_metrics(multi)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    # Same batches, prompts and program; a reduction over two devices adds two numbers, in
    # whichever order, so the results are bit-identical (measured: they are).
    for step in a:
        assert b[step]["loss"] == a[step]["loss"], step
        assert b[step]["masks_human"] == a[step]["masks_human"]
    pa, pb = load_state_dict(single / "model"), load_state_dict(multi / "model")
    for (kp, x), y in zip(jax.tree.leaves_with_path(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_array_equal(y, x, err_msg=optim.path_str(kp))
    assert "2 processes" in outputs[0] or "2 processes" in (multi / "train.log").read_text()


def test_only_process_zero_logs_and_both_checkpoint(runs):
    _, multi, outputs = runs
    assert "step 4/4" in outputs[0]
    assert "step 4/4" not in outputs[1]  # process 1 prints no progress lines
    data_states = sorted(p.name for p in (multi / "checkpoints" / "4" / "data").iterdir())
    assert len([n for n in data_states if "process_0" in n]) == 1
    assert len([n for n in data_states if "process_1" in n]) == 1
