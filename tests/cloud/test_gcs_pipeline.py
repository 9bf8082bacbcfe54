"""The demo's stages with every place on gs://, against a real Cloud Storage server (the
emulator of tests/gcs_emulator.py): prepare_data, pseudo_labels, uncertainty, train,
evaluate and segment run as commands (in-process, tests/cli_harness.py) from a scratch
working folder, and each reads what the one before wrote to gs://. Then: a training run
stopped by SIGTERM resumes from its gs:// checkpoint to the same model, bit for bit; an
evaluation stopped the same way resumes from its gs:// journal to the same records; and no
command leaves a local folder named `gs:` (what `pathlib.Path("gs://...")` would make).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sum_jax import checkpointing, preemption
from tests.cli_harness import run_command
from tests.data import fake_datasets as fake
from tests.pseudo_labels.test_generation import GENERATOR  # permissive: masks are kept

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _local_gs_folders(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.name.lower().startswith("gs:")]


class Stages:
    """Runs commands from the scratch folder `cwd` and keeps what each printed."""

    def __init__(self, gcs, cwd: Path):
        self.gcs, self.cwd = gcs, cwd
        self.data = gcs.path("prepared")
        self.labels = gcs.path("pseudo_labels")
        self.results: dict[str, object] = {}
        self.seconds: dict[str, float] = {}  # per command, shown when a test fails

    def run(self, key: str, module: str, args: list[str], code: int | None = 0):
        before, start = os.getcwd(), time.perf_counter()
        os.chdir(self.cwd)
        try:
            result = run_command(module, args)
        finally:
            os.chdir(before)
        self.seconds[key] = round(time.perf_counter() - start, 1)
        assert result.code in ((0, None) if code in (0, None) else (code,)), (
            f"{module}: exit {result.code} (seconds so far: {self.seconds})\n"
            f"{result.stderr[-3000:]}"
        )
        assert not _local_gs_folders(self.cwd, ROOT), f"{module} wrote a local gs: folder"
        self.results[key] = result
        return result

    def train_args(self, workdir: str) -> list[str]:
        return [
            f"--config={ROOT / 'tests' / 'tiny_train_config.py'}",
            f"--config.data.data_dir={self.data}",
            "--config.train.batch_size=8",  # one image per fake CPU device (tests/conftest.py)
            f"--workdir={workdir}",
        ]

    def eval_args(self, workdir: str) -> list[str]:
        return [
            f"--config={ROOT / 'configs' / 'eval.py'}",
            f"--checkpoint={self.gcs.path('run', 'model')}",
            f"--workdir={workdir}",
            f"--config.data_dir={self.data}",
            "--config.eval_sets=toy_salient:train",
            "--config.num_rounds=2",
            "--config.noc_max_clicks=0",
            "--config.num_examples=0",
        ]


@contextlib.contextmanager
def _sigterm_at_step(n: int):
    """SIGTERM (a preemption notice) to this process while training step `n` runs."""
    from sum_jax.train import loop

    jit_train_step, calls = loop.jit_train_step, []

    def counting(setup):
        step = jit_train_step(setup)

        def counted(state, batch):
            calls.append(1)
            if len(calls) == n:
                os.kill(os.getpid(), signal.SIGTERM)
            return step(state, batch)

        return counted

    loop.jit_train_step = counting
    try:
        yield
    finally:
        loop.jit_train_step = jit_train_step


@contextlib.contextmanager
def _sigterm_at_image(n: int):
    """SIGTERM to this process while the evaluator prepares image `n`."""
    from sum_jax.evaluate import runner

    prepare, images = runner.SamRunner.prepare, []

    def counted(self, example, padded):
        images.append(example["image_id"])
        if len(images) == n:
            os.kill(os.getpid(), signal.SIGTERM)
        return prepare(self, example, padded)

    runner.SamRunner.prepare = counted
    try:
        yield
    finally:
        runner.SamRunner.prepare = prepare


@pytest.fixture(scope="module")
def stages(gcs, tmp_path_factory):
    """Every stage once, each from gs:// to gs://; train and evaluate stopped by SIGTERM
    and run again, as after a preemption."""
    from etils import epath

    root = tmp_path_factory.mktemp("cloud")
    src, cwd = root / "src", root / "cwd"
    cwd.mkdir()
    fake.make_folder_dataset(src, np.random.default_rng(3), n=3, many=False)
    photo = epath.Path(gcs.path("inputs", "photo.png"))
    photo.write_bytes((src / "images" / "img00.png").read_bytes())
    s = Stages(gcs, cwd)
    s.run("prepare", "sum_jax.prepare_data", [
        "--config.dataset=toy_salient", "--config.format=folder", "--config.task_id=1",
        f"--config.source_dir={src}", f"--config.data_dir={s.data}",
        "--config.options.image_dir=images", "--config.options.mask_dir=masks",
        "--config.options.image_globs=*.png", "--config.options.mask_globs={stem}.png",
    ])  # fmt: skip
    s.run("pseudo_labels", "sum_jax.pseudo_labels", [
        f"--config={ROOT / 'configs' / 'pseudo_labels.py'}", "--config.checkpoint=random:tiny",
        f"--config.data_dir={s.data}", "--config.dataset=toy_salient:train",
        f"--config.output_dir={s.labels}",
        *[f"--config.generator.{k}={v}" for k, v in GENERATOR.items()],
    ])  # fmt: skip
    s.run("uncertainty", "sum_jax.uncertainty", [
        f"--config={ROOT / 'configs' / 'uncertainty.py'}", "--config.source=confidence",
        f"--config.data_dir={s.data}", "--config.dataset=toy_salient:train",
        f"--config.pseudo_labels={s.labels}",
    ])  # fmt: skip
    with _sigterm_at_step(2):
        s.run("train_stopped", "sum_jax.train", s.train_args(gcs.path("run")), code=75)
    s.run("train", "sum_jax.train", s.train_args(gcs.path("run")))
    with _sigterm_at_image(2):
        s.run("evaluate_stopped", "sum_jax.evaluate", s.eval_args(gcs.path("eval")), code=75)
    s.run("evaluate", "sum_jax.evaluate", s.eval_args(gcs.path("eval")))
    s.run("segment", "sum_jax.segment", [
        f"--checkpoint={gcs.path('run', 'model')}", f"--image={photo}", "--point=20,20",
        f"--output_dir={gcs.path('seg')}",
    ])  # fmt: skip
    print(f"seconds per command: {s.seconds}")  # shown with -s
    return s


def _gs(gcs, *parts):
    from etils import epath

    return epath.Path(gcs.path(*parts))


def test_every_stage_reads_and_writes_gs(stages, gcs):
    from sum_jax.data import pseudo_label_format as plf
    from sum_jax.data import sources

    prepared = _gs(gcs, "prepared", "sum_segmentation", "toy_salient", "1.0.0")
    assert (prepared / "dataset_info.json").is_file()
    assert json.loads((prepared / "prepare_report.json").read_text())["path"] == str(prepared)
    assert len(sources.open_source(stages.data, "toy_salient", "train")) == 3
    labels = sorted(p.stem for p in _gs(gcs, "pseudo_labels").glob("*.npz"))
    assert len(labels) == 3
    assert all(plf.read(stages.labels, stem).has_uncertainty for stem in labels)
    run = _gs(gcs, "run")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 4 and summary["model"] == str(run / "model")
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
    assert checkpointing.read_config(str(run / "model")).variant == "tiny"
    assert (run / "model" / "params" / "manifest.ocdbt").is_file()  # packed on gs://
    events = [p.name for p in (run / "tensorboard").iterdir()]
    assert len(events) == 2 and all(n.startswith("events.") for n in events)  # one per run
    evaluation = json.loads(_gs(gcs, "eval", "summary.json").read_text())
    assert evaluation["num_images"] == 3
    result = json.loads(_gs(gcs, "seg", "result.json").read_text())
    assert result["mask_area_px"] > 0 and (_gs(gcs, "seg") / "mask.png").is_file()
    assert json.loads((run / ".sum_jax_command.json").read_text()) == {"command": "train"}


def test_training_stopped_by_sigterm_resumed_from_its_gs_checkpoint(stages, gcs):
    stopped = stages.results["train_stopped"].stderr
    where = gcs.path("run", "checkpoints")
    assert f"saved the checkpoint of step 2 of 4 in {where}" in stopped
    log = _gs(gcs, "run", "train.log").read_text()
    assert f"resumed from {where} at step 2" in log and "step 4/4" in log
    steps = [
        json.loads(line)["step"]
        for line in _gs(gcs, "run", "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4]  # the first run's two lines kept, the rerun's appended


def test_evaluation_stopped_by_sigterm_resumed_from_its_gs_journal(stages, gcs):
    assert "with 2 images of model recorded" in stages.results["evaluate_stopped"].stderr
    lines = _gs(gcs, "eval", "progress.jsonl").read_text().splitlines()
    keys = [json.loads(line)["key"] for line in lines[1:]]
    assert len(lines) == 1 + 3 and len(set(keys)) == 3  # the header, each image once
    assert (
        "resuming: 2 images already in progress.jsonl"
        in _gs(gcs, "eval", "evaluate.log").read_text()
    )


@pytest.mark.slow
def test_resumed_training_and_evaluation_match_uninterrupted_ones(stages, gcs):
    """The same commands without a SIGTERM: the same model, bit for bit, and the same
    records."""
    import jax

    stages.run("train_whole", "sum_jax.train", stages.train_args(gcs.path("run_whole")))
    a = checkpointing.load_state_dict(gcs.path("run_whole", "model"))
    b = checkpointing.load_state_dict(gcs.path("run", "model"))
    assert jax.tree.structure(a) == jax.tree.structure(b)
    same = jax.tree.leaves(jax.tree.map(np.array_equal, a, b))
    assert all(same), f"{same.count(False)} of {len(same)} arrays differ after the resume"
    stages.run("evaluate_whole", "sum_jax.evaluate", stages.eval_args(gcs.path("eval_whole")))
    records = _gs(gcs, "eval", "records.jsonl").read_text()
    assert records == _gs(gcs, "eval_whole", "records.jsonl").read_text()


def _two_processes(gcs, data: str, workdir: str) -> list[subprocess.Popen]:
    """`python -m sum_jax.train` as two processes of one run (jax.distributed over loopback,
    one CPU device each), both on the gs:// workdir."""
    from tests.xla_flags import FAST_COMPILE

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    env = {**os.environ, **gcs.env, "PYTHONPATH": str(ROOT)}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count=1 {FAST_COMPILE}"
    command = [
        sys.executable, "-m", "sum_jax.train", "--config=tests/tiny_train_config.py",
        f"--config.data.data_dir={data}", f"--workdir={workdir}",
        "--config.train.num_steps=30", "--config.train.checkpoint_every=10",
        f"--coordinator_address={address}", "--num_processes=2",
    ]  # fmt: skip
    return [
        subprocess.Popen(
            [*command, f"--process_id={i}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]


@pytest.mark.slow
def test_two_processes_checkpoint_to_gs_and_resume_after_sigterm(stages, gcs):
    """The issue's multi-host run: two processes train into one gs:// workdir; SIGTERM to
    one of them stops both after the same step with its checkpoint in the bucket (exit 75);
    the same two commands resume from it to the model two uninterrupted processes make."""
    metrics = _gs(gcs, "two", "metrics.jsonl")
    procs = _two_processes(gcs, stages.data, gcs.path("two"))
    deadline = time.time() + 600
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            procs[1].send_signal(signal.SIGTERM)  # a preemption notice to one host
            break
        time.sleep(0.2)
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [preemption.EXIT_PREEMPTED] * 2, outputs[0][-3000:]
    stopped = max(json.loads(line)["step"] for line in metrics.read_text().splitlines())
    assert stopped < 30, "the run ended before the notice"
    procs = _two_processes(gcs, stages.data, gcs.path("two"))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:]
    assert f"at step {stopped}" in outputs[0]
    procs = _two_processes(gcs, stages.data, gcs.path("two_whole"))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:]
    import jax

    a = checkpointing.load_state_dict(gcs.path("two_whole", "model"))
    b = checkpointing.load_state_dict(gcs.path("two", "model"))
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))
