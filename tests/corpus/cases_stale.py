"""Stale results presented as new: a rerun into an output that was made from something else.

Each case's `prepare` leaves an output as an earlier run made it (with its record of what it
was made from, `sum_jax.fingerprint`), then the case reruns the command into it with another
model, refiner or setting, or after a source file was swapped for another of the same size
and time. The rerun must refuse, naming what changed, and leave the output as it was; it
must not skip the old files as if they were the new run's.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from configs import eval as eval_config
from configs import pseudo_labels as pseudo_label_config
from configs import uncertainty as uncertainty_config
from sum_jax import fingerprint
from sum_jax.data import pseudo_label_format as plf
from sum_jax.evaluate import runner
from sum_jax.pseudo_labels import generation
from sum_jax.uncertainty import maps
from tests.cli_harness import run_command
from tests.corpus import EVAL, PL, UNC, Case

PREP = "sum_jax.prepare_data"


def _labels_copy(w, folder: Path) -> None:
    """The world's readable pseudo-label files (its first one is cut short) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(w.labels.glob(f"*{plf.SUFFIX}")):
        if plf.problem(w.labels, path.stem) is None:
            shutil.copy(path, folder / path.name)


def _pseudo_labels(checkpoint: str, **generator):
    """`prepare`: `t/pl` as a pseudo-label run of `checkpoint` with `generator` left it."""

    def prepare(w, t: Path) -> None:
        c = pseudo_label_config.get_config()
        c.update(checkpoint=checkpoint.format(w=w, t=t), data_dir=str(w.data),
                 dataset="toy:train", output_dir=str(t / "pl"))  # fmt: skip
        c.generator.update(generator)
        generation.check_output(c)  # the record the run writes before its first file
        _labels_copy(w, t / "pl")

    return prepare


def _changed_model(w, t: Path) -> None:
    """Pseudo-labels of a copy of the world's model, whose weights were then replaced in
    place (a checkpoint exported again into the same folder)."""
    shutil.copytree(w.model, t / "m")
    _pseudo_labels(str(t / "m"))(w, t)
    biggest = max((p for p in (t / "m").rglob("*") if p.is_file()), key=os.path.getsize)
    data = bytearray(biggest.read_bytes())
    data[-1] ^= 0xFF
    biggest.write_bytes(bytes(data))


def _maps(refiner: str, source: str = "refiner"):
    """`prepare`: `t/pl`, pseudo-labels to which a run of `source` (`refiner`) added maps."""

    def prepare(w, t: Path) -> None:
        _labels_copy(w, t / "pl")
        c = uncertainty_config.get_config()
        c.update(refiner=refiner.format(w=w), data_dir=str(w.data), dataset="toy:train",
                 pseudo_labels=str(t / "pl"), source=source)  # fmt: skip
        record, shown = maps.made_from(c)
        fingerprint.check_or_record(t / "pl", maps.RECORD_FILE, record, shown=shown,
                                    what="uncertainty maps", fix="")  # fmt: skip

    return prepare


def _evaluation(checkpoint: str, **settings):
    """`prepare`: `t/ev`, an evaluation of `checkpoint` under the name `model` (the world's
    model directory's name) with `settings`, killed after its journal's header."""

    def prepare(w, t: Path) -> None:
        c = eval_config.get_config()
        c.update(data_dir=str(w.data), eval_sets="toy:train", **settings)
        spec = checkpoint.format(w=w)
        header = runner.journal_header(c, runner.EvalSettings.from_config(c), "model", spec, None)
        (t / "ev").mkdir()
        runner.Journal(t / "ev" / "progress.jsonl", header)

    return prepare


def _prep_args(t: Path, *extra: str) -> list[str]:
    return [f"--config.data_dir={t}/data", "--config.dataset=swapped", f"--config.source_dir={t}/src",
            "--config.format=folder", "--config.task_id=1", "--config.options.image_dir=images",
            "--config.options.mask_dir=masks", "--config.options.image_globs=*.png", *extra]  # fmt: skip


def _swap(path: Path, pixels: np.ndarray) -> None:
    """`path` (an uncompressed PNG) rewritten with `pixels` at its byte size and mtime."""
    st = path.stat()
    Image.fromarray(pixels).save(path, compress_level=0)
    assert path.stat().st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _prepared_then(change):
    """`prepare`: a folder dataset (uncompressed PNGs: their size depends on the shape only)
    prepared by the command, then `change(src)` applied to its source folder."""

    def prepare(w, t: Path) -> None:
        rng = np.random.default_rng(1)
        for name in ("a", "b"):
            pixels = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            mask = np.zeros((12, 16), np.uint8)
            mask[2:8, 3:11] = 255
            (t / "src" / "images").mkdir(parents=True, exist_ok=True)
            (t / "src" / "masks").mkdir(exist_ok=True)
            Image.fromarray(pixels).save(t / "src" / "images" / f"{name}.png", compress_level=0)
            Image.fromarray(mask).save(t / "src" / "masks" / f"{name}.png", compress_level=0)
        result = run_command(PREP, _prep_args(t))
        assert result.code in (0, None), result.stderr[-2000:]
        change(t / "src")

    return prepare


def _swap_mask(src: Path) -> None:
    mask = src / "masks" / "a.png"
    _swap(mask, 255 - np.asarray(Image.open(mask)))


def _swap_image(src: Path) -> None:
    image = src / "images" / "b.png"
    _swap(image, np.asarray(Image.open(image))[::-1].copy())


def _add_image(src: Path) -> None:
    shutil.copy(src / "images" / "a.png", src / "images" / "c.png")
    shutil.copy(src / "masks" / "a.png", src / "masks" / "c.png")


def _pl(w, t: Path, *extra: str) -> list[str]:
    return [*PL, f"--config.data_dir={w.data}", f"--config.output_dir={t}/pl", *extra]


def _unc(w, t: Path, *extra: str) -> list[str]:
    return [*UNC, f"--config.data_dir={w.data}", f"--config.pseudo_labels={t}/pl", *extra]


def _ev(w, t: Path, *extra: str) -> list[str]:
    return [*EVAL, f"--config.data_dir={w.data}", f"--workdir={t}/ev", f"--checkpoint={w.model}",
            *extra]  # fmt: skip


CASES = [
    Case("pseudo_labels: rerun into the same folder with another model", "sum_jax.pseudo_labels",
         lambda w, t: _pl(w, t, f"--config.checkpoint={w.model}"),
         ("pl holds pseudo-labels", "model: random:tiny (fingerprint", "model (fingerprint",
          "--config.output_dir"),
         _pseudo_labels("random:tiny")),
    Case("pseudo_labels: rerun with another generator setting", "sum_jax.pseudo_labels",
         lambda w, t: _pl(w, t, f"--config.checkpoint={w.model}"),
         ("generator.points_per_side: 8 then, 32 now", "--config.output_dir"),
         _pseudo_labels("{w.model}", points_per_side=8)),
    Case("pseudo_labels: model's weights replaced in the same folder", "sum_jax.pseudo_labels",
         lambda w, t: _pl(w, t, f"--config.checkpoint={t}/m"),
         ("model: ", "/m (fingerprint", "then,"),
         _changed_model),
    Case("pseudo_labels: files with no record of what made them", "sum_jax.pseudo_labels",
         lambda w, t: _pl(w, t, f"--config.checkpoint={w.model}"),
         ("pl holds pseudo-labels", "no made_from.json", "--config.output_dir"),
         lambda w, t: _labels_copy(w, t / "pl")),
    Case("uncertainty: rerun with another refiner", "sum_jax.uncertainty",
         lambda w, t: _unc(w, t, f"--config.refiner={w.model}"),
         ("uncertainty maps", "refiner: random:tiny (fingerprint", "--config.output_dir"),
         _maps("random:tiny")),
    Case("uncertainty: refiner maps into a folder of confidence maps", "sum_jax.uncertainty",
         lambda w, t: _unc(w, t, f"--config.refiner={w.model}"),
         ("source: 'confidence' then, 'refiner' now", "--config.output_dir"),
         _maps("", source="confidence")),
    Case("evaluate: old workdir, same name, another model", "sum_jax.evaluate",
         lambda w, t: _ev(w, t),
         ("progress.jsonl", "model: random:tiny (fingerprint", "model (fingerprint",
          "--workdir"),
         _evaluation("random:tiny")),
    Case("evaluate: old workdir, other number of rounds", "sum_jax.evaluate",
         lambda w, t: _ev(w, t),
         ("progress.jsonl", "settings.num_rounds: 3 then, 6 now", "--workdir"),
         _evaluation("{w.model}", num_rounds=3)),
    Case("prepare: a mask swapped for one of the same size and time", PREP,
         lambda w, t: _prep_args(t),
         ("masks/a.png: changed", "--config.overwrite=true"), _prepared_then(_swap_mask)),
    Case("prepare: an image swapped for one of the same size and time", PREP,
         lambda w, t: _prep_args(t),
         ("images/b.png: changed", "--config.overwrite=true"), _prepared_then(_swap_image)),
    Case("prepare: an image added to the source", PREP,
         lambda w, t: _prep_args(t),
         ("images/c.png: added", "masks/c.png: added", "--config.overwrite=true"),
         _prepared_then(_add_image)),
]  # fmt: skip
