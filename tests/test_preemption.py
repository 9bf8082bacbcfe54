"""SIGTERM handling (sum_jax.preemption).

The stages' own SIGTERM tests (save, stop, rerun to the uninterrupted result) are beside
their other resume tests: tests/train/test_loop.py, tests/pseudo_labels/test_generation.py,
tests/evaluate/test_evaluation.py. Here: the handler's life cycle, two real processes that
must stop at the same step, and a command's exit status and message."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from sum_jax import preemption
from tests.cli_harness import run_command

ROOT = Path(__file__).resolve().parents[1]


def test_sigterm_in_the_block_is_a_stop_and_the_handler_before_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with preemption.watch() as outer:
        with preemption.watch() as inner:
            assert not inner.requested and not inner.reached(1)
            os.kill(os.getpid(), signal.SIGTERM)  # handled before os.kill returns
            assert inner.requested and inner.reached(1)
            assert inner.received == signal.SIGTERM
        assert not outer.requested  # the inner block's signal was the inner block's
        os.kill(os.getpid(), signal.SIGTERM)
        assert outer.requested
    assert signal.getsignal(signal.SIGTERM) is before


def test_outside_the_main_thread_nothing_is_installed():
    before, seen = signal.getsignal(signal.SIGTERM), []

    def body():
        with preemption.watch() as stop:
            seen.append((signal.getsignal(signal.SIGTERM), stop.requested))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [(before, False)]


_TWO_PROCESSES = textwrap.dedent(
    """
    import os, signal, sys, time
    import jax
    index, port = int(sys.argv[1]), sys.argv[2]
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=index)
    from jax.experimental import multihost_utils
    from sum_jax import preemption
    multihost_utils.sync_global_devices("start")
    with preemption.watch(synced=True) as stop:
        for step in range(1, 3000):
            if index == 1 and step == 5:
                os.kill(os.getpid(), signal.SIGTERM)  # only process 1 gets the notice
            time.sleep(0.01)
            if stop.reached(step):
                print(f"stop at {step}", flush=True)
                break
    jax.distributed.shutdown()
    """
)


@pytest.mark.integration
def test_two_processes_stop_at_the_same_step_when_one_gets_sigterm(tmp_path):
    """JAX's preemption service (what the trainer's `watch(synced=True)` asks): a SIGTERM
    to one process stops both, after the same step."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    script = tmp_path / "two.py"
    script.write_text(_TWO_PROCESSES)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), port],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
    stops = [
        [line for line in out.splitlines() if line.startswith("stop at")] for out, _ in outputs
    ]
    assert stops[0] == stops[1] and len(stops[0]) == 1, stops
    assert int(stops[0][0].split()[-1]) >= 5


_STAGE = textwrap.dedent(
    """
    import os, signal
    from absl import flags
    from sum_jax import cli, preemption

    _ITEMS = flags.DEFINE_integer("items", 3, "Items to make.")

    def main(argv):
        with preemption.watch() as stop:
            for item in range(1, _ITEMS.value + 1):
                if item == 2:
                    os.kill(os.getpid(), signal.SIGTERM)
                print(f"made item {item}")
                if stop.requested:
                    raise preemption.Preempted(f"saved item {item} of {_ITEMS.value}.")

    if __name__ == "__main__":
        cli.run(main)
    """
)


def test_a_command_stopped_by_sigterm_says_how_to_resume_and_exits_75(tmp_path, monkeypatch):
    (tmp_path / "preempted_stage").mkdir()
    (tmp_path / "preempted_stage" / "__main__.py").write_text(_STAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = signal.getsignal(signal.SIGTERM)
    result = run_command("preempted_stage", ["--items=3"])
    assert result.code == preemption.EXIT_PREEMPTED == 75
    assert result.stdout == "made item 1\nmade item 2\n"
    assert result.stderr == (
        "stopped: saved item 2 of 3. Run the same command again to resume:\n"
        "  python -m sum_jax.preempted_stage --items=3\n"
    )
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
@pytest.mark.integration
def test_command_stopped_by_sigterm_exits_75_and_the_same_command_resumes(
    data_dir, tmp_path, monkeypatch
):
    from sum_jax.evaluate import runner

    workdir = tmp_path / "eval"
    args = [
        "--checkpoint=random:tiny",
        f"--workdir={workdir}",
        f"--config.data_dir={data_dir}",
        "--config.eval_sets=toy_salient:train@3",
        "--config.num_rounds=2",
        "--config.noc_max_clicks=0",
        "--config.num_examples=0",
    ]
    prepare, images = runner.SamRunner.prepare, []

    def sigterm_during_second_image(self, example, padded):
        images.append(example["image_id"])
        if len(images) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return prepare(self, example, padded)

    monkeypatch.setattr(runner.SamRunner, "prepare", sigterm_during_second_image)
    stopped = run_command("sum_jax.evaluate", args)
    assert stopped.code == preemption.EXIT_PREEMPTED == 75, stopped.stderr
    assert "backend cpu" in stopped.stdout and "warning" not in stopped.stderr
    assert "stopped: preemption notice (SIGTERM): stopped after image" in stopped.stderr
    assert "with 2 images of random_tiny recorded" in stopped.stderr
    assert "Run the same command again to resume:\n  python -m sum_jax.evaluate " in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert not (workdir / "summary.json").exists()
    monkeypatch.undo()
    finished = run_command("sum_jax.evaluate", args)
    assert finished.code in (0, None), finished.stderr
    assert (workdir / "summary.json").is_file()
    journal = (workdir / "progress.jsonl").read_text().splitlines()
    assert len(journal) == 1 + 3  # the header and one line per image, none twice
