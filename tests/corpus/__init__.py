"""The bad-input corpus's shared pieces: the world every case runs in, `Case`, and the
case lists of each area (`tests/corpus/cases_*.py`, collected by `more_cases`).

The corpus itself (tests/test_bad_input_corpus.py): wrong or unusual input to every command,
and what it must get back.

Each case runs a command in-process (`tests.cli_harness`, no subprocess per case) on a small
world made once per module (a prepared toy dataset, a tiny model directory, a `.pth`, a
pseudo-label folder) and asserts: exit status 2, a message naming the file or field, no
traceback, and every file that existed before byte-identical afterwards (nothing removed).
The predictor API cases assert the ValueError message instead of an exit status. A few real
subprocess runs prove the end-to-end path (`python -m ...`).
"""

from __future__ import annotations

import dataclasses
import io
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from sum_jax.data import builder
from sum_jax.data import pseudo_label_format as plf
from tests.cli_harness import Result
from tests.data import fake_datasets as fake

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class World:
    root: Path
    data: Path  # prepared datasets: toy (train split)
    src: Path  # toy's source folder
    model: Path  # tiny SAM model directory
    pth: Path  # the tiny SAM as a PyTorch state dict
    labels: Path  # pseudo-labels of toy, the first file truncated
    afile: Path  # a plain file, where folders are expected
    image: Path  # a small RGB PNG


class contextlib_quiet:
    """Silences stdout (the converter's progress) inside the fixture."""

    def __enter__(self):
        self._saved, sys.stdout = sys.stdout, io.StringIO()

    def __exit__(self, *exc):
        sys.stdout = self._saved


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_convert(args: list[str]) -> Result:
    from convert import sam_checkpoint

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        code = sam_checkpoint.main(args)
    finally:
        sys.stdout, sys.stderr = saved
    return Result(code, out.getvalue(), err.getvalue())


@dataclasses.dataclass
class Case:
    """One bad input: `args(world)` for `command`, the texts the message must hold, and an
    optional `prepare(world, tmp)` that makes the extra input files of this case."""

    name: str
    command: str
    args: Callable[[World, Path], list[str]]
    expect: tuple[str, ...]
    prepare: Callable[[World, Path], None] | None = None


W = World  # short alias for the lambdas below
EVAL = ["--config=configs/eval.py", "--config.eval_sets=toy:train"]
PL = ["--config=configs/pseudo_labels.py", "--config.dataset=toy:train"]
UNC = ["--config=configs/uncertainty.py", "--config.dataset=toy:train"]
TR = ["--config=configs/refine.py", "--config.dataset=toy:train"]
FT = ["--config=configs/ft_small.py"]
SEG = "sum_jax.segment"


def empty_masks(w: W, tmp: Path) -> None:
    fake.save_png(tmp / "empty" / "images" / "a.png", np.zeros((8, 8, 3), np.uint8))
    fake.save_png(tmp / "empty" / "masks" / "a.png", np.zeros((8, 8), np.uint8))


def float_tiff(w: W, tmp: Path) -> None:
    Image.fromarray(np.ones((8, 8), np.float32)).save(tmp / "depth.tif")


def resnet(w: W, tmp: Path) -> None:
    import torch

    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(2, 4)},
               tmp / "resnet.pth")  # fmt: skip


def truncated_pth(w: W, tmp: Path) -> None:
    data = w.pth.read_bytes()
    (tmp / "cut.pth").write_bytes(data[: len(data) // 2])


def own_train_config(w: W, tmp: Path) -> None:
    """What the list-field message tells a user to do: a copy of the config with the list."""
    (tmp / "mine.py").write_text(
        "from configs import ft_small\n\n\ndef get_config():\n"
        "    c = ft_small.get_config()\n    c.data.labelled = ['toy:train']\n    return c\n"
    )


def prep(w: W, *extra: str) -> list[str]:
    return [f"--config.data_dir={w.data}", "--config.dataset=toy", *extra]


def make_world(root: Path) -> World:
    """The shared inputs of every case, made under `root`."""
    import torch

    from convert import sam_checkpoint
    from sum_jax.data import sources
    from sum_jax.models.sam import VARIANTS
    from tests.torch_reference import torch_sam

    rng = np.random.default_rng(0)
    src, data = root / "src", root / "data"
    fake.make_folder_dataset(src, rng, n=2, many=False)
    config = {"dataset": "toy", "format": "folder", "task_id": 1, "source_dir": str(src)}
    builder.prepare({**config, "options": fake.FOLDER_OPTIONS}, data, progress=False)
    # A PyTorch tiny SAM converted: no Flax initialisation (slow on a busy CPU) needed.
    torch.save(torch_sam(VARIANTS["tiny"]).state_dict(), root / "tiny.pth")
    with contextlib_quiet():
        sam_checkpoint.pth_to_orbax(str(root / "tiny.pth"), str(root / "model"))
    labels = root / "labels"
    source = sources.open_source(data, "toy", "train")
    for i in range(len(source)):
        record = sources.normalize_record(source[i])
        h, w = int(record["height"]), int(record["width"])
        mask = np.zeros((1, h, w), bool)
        mask[0, : h // 2, : w // 2] = True
        plf.write(
            labels,
            record["image_id"],
            height=h,
            width=w,
            masks=mask,
            low_res_logits=np.zeros((1, 64, 64), np.float32),
            points=np.array([[1.0, 1.0]], np.float32),
            predicted_iou=np.ones(1, np.float32),
            stability_score=np.ones(1, np.float32),
        )
    first = plf.path_for(labels, sources.normalize_record(source[0])["image_id"])
    first.write_bytes(first.read_bytes()[:200])
    (root / "afile").write_text("not a folder\n")
    fake.save_png(root / "photo.png", fake.random_image(rng, 40, 60))
    return World(root, data, src, root / "model", root / "tiny.pth", labels, root / "afile",
                 root / "photo.png")  # fmt: skip


def more_cases() -> list[Case]:
    """The cases of every `tests/corpus/cases_*.py` module (its `CASES` list), by file name."""
    import importlib
    import pkgutil

    found: list[Case] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("cases_"):
            found += importlib.import_module(f"{__name__}.{info.name}").CASES
    return found
