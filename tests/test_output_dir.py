"""Output folders: one owning command, one writing process, plain model names, and a full
disk reported as one message."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sum_jax import cli, output_dir
from sum_jax.cli import InputError

ROOT = Path(__file__).resolve().parents[1]

# A second process that claims a folder, says so on stdout and holds it until its stdin ends.
HOLDER = """
import sys
from sum_jax import output_dir
with output_dir.claim(sys.argv[1], sys.argv[2], "--workdir", worker=sys.argv[3] or None):
    print("ready", flush=True)
    sys.stdin.read()
"""


def hold(folder: Path, command: str = "train", worker: str = "") -> subprocess.Popen:
    """Starts a process holding `folder`'s lock; returns once it holds it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), command, worker],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()  # blocks until the lock is held: no sleeps, no timing
    assert line.strip() == "ready", proc.stderr.read()
    return proc


def training_run(folder: Path) -> Path:
    """A training workdir as versions without owner records left it."""
    (folder / "checkpoints" / "10").mkdir(parents=True)
    (folder / "metrics.jsonl").write_text('{"step": 10, "loss": 0.5}\n')
    (folder / "summary.json").write_text('{"step": 10}\n')
    return folder


def test_a_folder_of_another_command_is_refused_naming_both(tmp_path):
    run = training_run(tmp_path / "run")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(InputError) as e, output_dir.claim(run, "evaluate", "--workdir"):
        pass
    text = str(e.value)
    for part in ("--workdir=", "sum_jax.train", "`evaluate`", "checkpoints/", "run_evaluate"):
        assert part in text, (part, text)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert not (run / output_dir.OWNER_FILE).exists() and not (run / output_dir.LOCK_FILE).exists()
    # The same command resumes there, and records itself as the owner.
    with output_dir.claim(run, "train", "--workdir"):
        pass
    assert json.loads((run / output_dir.OWNER_FILE).read_text()) == {"command": "train"}


def test_the_owner_record_decides_once_written(tmp_path):
    with output_dir.claim(tmp_path / "ev", "evaluate", "--workdir") as folder:
        (folder / "evaluate.log").write_text("started\n")
    assert output_dir.owner(folder) == ("evaluate", f"recorded in {output_dir.OWNER_FILE}")
    for command in ("train", "segment", "pseudo_labels", "prepare_data", "run_table"):
        with (
            pytest.raises(InputError, match=f"sum_jax.evaluate.*`{command}`"),
            output_dir.claim(folder, command, "--workdir"),
        ):
            pass
    # A command that stopped before writing anything owns nothing: a folder it made goes, one
    # that existed keeps only our records, and another command may use it.
    with output_dir.claim(tmp_path / "new", "evaluate", "--workdir"):
        pass
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    with output_dir.claim(tmp_path / "empty", "evaluate", "--workdir"):
        pass
    with output_dir.claim(tmp_path / "empty", "segment", "--output_dir"):
        pass


@pytest.mark.parametrize(
    "files, expected",
    [
        (["checkpoints/", "metrics.jsonl", "pretrain.json"], "pretrain"),
        (["checkpoints/", "metrics.jsonl", "scenes.png"], "pretrain"),
        (["checkpoints/", "cache/", "report.json"], "train_refiner"),
        (["progress.jsonl"], "evaluate"),
        (["records.jsonl", "summary.json"], "evaluate"),
        (["sum_segmentation/"], "prepare_data"),
        (["a.npz", "summary_0.json", "uncertainty_summary_0.json"], "pseudo_labels"),
        (["a.npz", "uncertainty_summary_0.json"], "uncertainty"),
        (["mask.png", "overlay.png", "result.json"], "segment"),
        (["table1.md", "table1.csv"], "run_table"),
        (["sam_config.json", "params.npz"], output_dir.MODEL),
        (["summary.json", "notes.txt"], None),
    ],
)
def test_older_folders_are_known_by_their_files(tmp_path, files, expected):
    for name in files:
        if name.endswith("/"):
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_text("x")
    assert output_dir.owner(tmp_path)[0] == expected


def test_uncertainty_adds_to_a_pseudo_label_folder_without_taking_it(tmp_path):
    labels = tmp_path / "labels"
    with output_dir.claim(labels, "pseudo_labels", "config.output_dir") as folder:
        (folder / "summary_0.json").write_text("{}")
    with output_dir.claim(labels, "uncertainty", "config.pseudo_labels", shares=["pseudo_labels"]):
        pass
    assert output_dir.owner(labels)[0] == "pseudo_labels"
    # A folder with no owner yet that uncertainty fills in place is recorded as pseudo-labels.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "a.npz").write_bytes(b"x")
    with output_dir.claim(bare, "uncertainty", "config.pseudo_labels", shares=["pseudo_labels"]):
        pass
    assert output_dir.owner(bare)[0] == "pseudo_labels"


def test_a_second_process_is_refused_with_the_first_ones_pid_and_host(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    first = hold(folder, "train")
    try:
        with pytest.raises(InputError) as e, output_dir.claim(folder, "train", "--workdir"):
            pass
        text = str(e.value)
        assert f"pid {first.pid}" in text and socket.gethostname() in text, text
        assert "is in use" in text and "`train`" in text and str(folder) in text
    finally:
        first.stdin.close()
        assert first.wait() == 0, first.stderr.read()
    # Its process ended and removed its lock file: the folder is free again.
    assert not (folder / output_dir.LOCK_FILE).exists()
    with output_dir.claim(folder, "train", "--workdir"):
        pass


def test_a_killed_process_does_not_block(tmp_path):
    folder = tmp_path / "data"
    first = hold(folder, "prepare_data")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    record = json.loads((folder / output_dir.LOCK_FILE).read_text())
    assert record["pid"] == first.pid  # the dead process's record is still there
    with output_dir.claim(folder, "prepare_data", "config.data_dir"):
        assert json.loads((folder / output_dir.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (folder / output_dir.LOCK_FILE).exists()


def test_workers_of_one_run_lock_separately(tmp_path):
    folder = tmp_path / "labels"
    other = hold(folder, "pseudo_labels", worker="1")
    try:
        with output_dir.claim(folder, "pseudo_labels", "config.output_dir", worker=0):
            pass  # shard 0 of 2 beside shard 1
        with (
            pytest.raises(InputError, match=f"pid {other.pid}"),
            output_dir.claim(folder, "pseudo_labels", "config.output_dir", worker=1),
        ):
            pass
    finally:
        other.stdin.close()
        other.wait()


def test_claims_nest_within_one_process(tmp_path):
    with (
        output_dir.claim(tmp_path / "o", "uncertainty", "config.output_dir") as a,
        output_dir.claim(tmp_path / "o", "uncertainty", "config.refined_labels_dir") as b,
    ):
        assert a == b
    with output_dir.claim(tmp_path / "o", "uncertainty", "config.output_dir"):
        pass  # released


@pytest.mark.parametrize(
    "spec, why",
    [
        ("..=/x", "outside"),
        (".=/x", "outside"),
        ("a/b=/x", "path separator"),
        ("../up=/x", "path separator"),
        (".hidden=/x", "starts with '.'"),
        ("=/x", "NAME=DIR"),
    ],
)
def test_model_names_must_be_plain(spec, why):
    from sum_jax.checkpointing import parse_checkpoint

    with pytest.raises(InputError, match="--checkpoint=") as e:
        parse_checkpoint(spec)
    assert why in str(e.value)


def test_a_bare_model_folder_is_named_after_the_folder(tmp_path, monkeypatch):
    from sum_jax.checkpointing import parse_checkpoint

    model = tmp_path / "sam_b"
    model.mkdir()
    (tmp_path / "theta=0.5").mkdir()
    monkeypatch.chdir(model)
    assert parse_checkpoint(".") == ("sam_b", ".")
    assert parse_checkpoint("..") == (tmp_path.name.lstrip(".") or "model", "..")
    assert parse_checkpoint(f"{tmp_path}/theta=0.5") == ("theta=0.5", f"{tmp_path}/theta=0.5")
    assert parse_checkpoint("SUM=random:tiny") == ("SUM", "random:tiny")


@pytest.mark.parametrize(
    "code, words",
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.EDQUOT, "the disk quota is used up"),
        (errno.EROFS, "the file system is read-only"),
    ],
)
def test_disk_errors_become_one_message(code, words):
    error = OSError(code, os.strerror(code), "/out/mask.png")
    assert cli.disk_message(error).startswith(f"cannot write /out/mask.png: {words}")
    try:  # wrapped by a library (e.g. a checkpoint writer): still recognised
        try:
            raise OSError(code, os.strerror(code))
        except OSError as inner:
            raise RuntimeError("save failed") from inner
    except RuntimeError as outer:
        assert words in cli.disk_message(outer)
    assert cli.disk_message(OSError(errno.EIO, "I/O error", "/out/x")) is None
    assert cli.disk_message(ValueError("bad")) is None


def test_a_full_disk_in_a_command_is_one_error_paragraph(tmp_path, monkeypatch):
    """prepare_data on a real folder dataset, its report's write failing with ENOSPC."""
    import numpy as np

    from tests.cli_harness import run_command
    from tests.data import fake_datasets as fake

    fake.make_folder_dataset(tmp_path / "src", np.random.default_rng(0), n=2, many=False)
    real_write_text = Path.write_text

    def full(self, data, *args, **kwargs):
        if "prepare_report.json" in self.name:  # atomic_write's temporary file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    options = [f"--config.options.{k}={','.join(v) if isinstance(v, list) else v}"
               for k, v in fake.FOLDER_OPTIONS.items()]  # fmt: skip
    result = run_command(
        "sum_jax.prepare_data",
        [
            "--config.dataset=toy",
            f"--config.source_dir={tmp_path / 'src'}",
            "--config.format=folder",
            "--config.task_id=1",
            f"--config.data_dir={tmp_path / 'data'}",
            *options,
        ],
    )
    assert result.code == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    message = result.stderr[result.stderr.index("error: ") :]
    assert message.count("error:") == 1
    assert "prepare_report.json: the disk is full" in message, message
    assert not list((tmp_path / "data").rglob(".prepare_report.json.*"))  # no temporary left


@pytest.fixture(scope="module")
def labelled_world(tmp_path_factory):
    """A prepared toy split and pseudo-labels for it, as `pseudo_labels` would leave them."""
    import numpy as np

    from sum_jax.data import builder, sources
    from sum_jax.data import pseudo_label_format as plf
    from tests.data import fake_datasets as fake

    root = tmp_path_factory.mktemp("labelled")
    fake.make_folder_dataset(root / "src", np.random.default_rng(1), n=2, many=False)
    config = {"dataset": "toy", "format": "folder", "task_id": 1, "source_dir": str(root / "src")}
    builder.prepare({**config, "options": fake.FOLDER_OPTIONS}, root / "data", progress=False)
    source = sources.open_source(root / "data", "toy", "train")
    with output_dir.claim(root / "labels", "pseudo_labels", "config.output_dir") as labels:
        for i in range(len(source)):
            record = sources.normalize_record(source[i])
            h, w = int(record["height"]), int(record["width"])
            plf.write(labels, record["image_id"], height=h, width=w,
                      masks=np.ones((1, h, w), bool), low_res_logits=np.ones((1, 64, 64), np.float32),
                      points=np.ones((1, 2), np.float32), predicted_iou=np.ones(1, np.float32),
                      stability_score=np.ones(1, np.float32))  # fmt: skip
    return root


def test_uncertainty_runs_in_place_and_into_a_copy(labelled_world, tmp_path):
    """The claims of a command that succeeds: owners recorded, no lock file left behind."""
    from tests.cli_harness import run_command

    root = labelled_world
    base = ["--config=configs/uncertainty.py", "--config.dataset=toy:train",
            f"--config.data_dir={root / 'data'}", "--config.source=confidence"]  # fmt: skip
    copy = tmp_path / "confidence"
    for _ in range(2):  # the second run resumes in its own folder
        result = run_command(
            "sum_jax.uncertainty", [*base, f"--config.pseudo_labels={root / 'labels'}",
                                    f"--config.output_dir={copy}"],
        )  # fmt: skip
        assert result.code in (0, None), result.stderr[-3000:]
    assert output_dir.owner(copy)[0] == "uncertainty"
    assert not list(copy.glob(".sum_jax.lock*"))
    assert len(list(copy.glob("*.npz"))) == 2
    # In place: the maps join the pseudo-labels, which stay the pseudo_labels command's.
    result = run_command(
        "sum_jax.uncertainty", [*base, f"--config.pseudo_labels={root / 'labels'}"]
    )
    assert result.code in (0, None), result.stderr[-3000:]
    assert output_dir.owner(root / "labels")[0] == "pseudo_labels"
    # The copy is uncertainty's: pseudo_labels refuses to write there.
    result = run_command(
        "sum_jax.pseudo_labels",
        ["--config=configs/pseudo_labels.py", "--config.dataset=toy:train",
         f"--config.data_dir={root / 'data'}", f"--config.output_dir={copy}",
         "--config.checkpoint=random:tiny"],
    )  # fmt: skip
    assert result.code == 2 and "sum_jax.uncertainty" in result.stderr, result.stderr[-2000:]


def test_convert_checks_what_overwrite_would_replace(tmp_path):
    from convert.sam_checkpoint import ConversionError, check_output

    model = tmp_path / "model"
    model.mkdir()
    (model / "sam_config.json").write_text("{}")
    check_output(str(model), overwrite=True, directory=True)  # a model directory: replaced
    check_output(str(tmp_path / "new"), overwrite=True, directory=True)
    with pytest.raises(ConversionError, match="sum_jax.train"):
        check_output(str(training_run(tmp_path / "run")), overwrite=True, directory=True)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    with pytest.raises(ConversionError, match="is no model directory"):
        check_output(str(tmp_path / "photos"), overwrite=True, directory=True)


@pytest.mark.slow
def test_convert_overwrites_a_model_directory_and_nothing_else(tmp_path):
    import torch

    from sum_jax.models.sam import VARIANTS
    from tests.corpus import run_convert
    from tests.torch_reference import torch_sam

    torch.save(torch_sam(VARIANTS["tiny"]).state_dict(), tmp_path / "tiny.pth")
    args = ["--input", str(tmp_path / "tiny.pth"), "--output", str(tmp_path / "model")]
    assert run_convert(args).code == 0
    again = run_convert([*args, "--overwrite"])
    assert again.code == 0, again.stderr  # a model directory is replaced
    run = training_run(tmp_path / "run")
    refused = run_convert(["--input", str(tmp_path / "tiny.pth"), "--output", str(run),
                           "--overwrite"])  # fmt: skip
    assert refused.code == 2 and "sum_jax.train" in refused.stderr, refused.stderr
    assert (run / "metrics.jsonl").exists() and (run / "checkpoints" / "10").is_dir()
