"""Evaluation reports: summaries, JSON/CSV files, metric-vs-clicks plots and example images.

Aggregation follows §4.1 and Table 5 of the paper: a dataset's mIoU / mBIoU after round `r`
is the mean over its objects (GT masks); a task's value is the mean over the datasets of that
task; the overall average is the mean over all datasets (not over the three task means).
NoC@t is averaged the same way; NoF@t (failures) is summed. The paper's means are over its
14 sets (`sum_jax.data.registry.PAPER_EVAL_SETS`); `summary["paper_sets"]` says whether a
run's means are over the same sets (`complete`) and, per task, which are `missing` or
`extra`, since a task mean over fewer sets is not comparable with the paper's. A model
trained on a family of sets that the paper's run did not train on (FT-Large's public
stand-ins, `TaskRecord.not_in_paper`) gets `summary["not_comparable"]`: `{dataset: reason}`
for its sets of those families (experiments/ tables mark them and the task means that
include them with a dagger).

Files written by `write_reports(records, summary, workdir)` (all atomically):
- `records.jsonl`: one JSON object per (protocol, mode, object), see
  `sum_jax.evaluate.runner.evaluate_examples`;
- `records.csv`: the same, one row each, with `iou_1..iou_R`, `biou_1..biou_R`, `noc_85`, ...;
- `summary.json`: `{"name", "num_images", "num_objects", "settings", "protocols": {protocol:
  {mode: {"datasets": {...}, "tasks": {...}, "overall": {...}}}}}`;
- `summary.csv`: long format `protocol, mode, level, name, task, count, metric, round, value`.
`plot_curves` writes `curves_<protocol>_<mode>.png` (mIoU and mBIoU against clicks, a column
per task, a line per model); `save_example_images` writes `examples/*.png`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sum_jax.fileio import as_path, atomic_write

TASK_NAMES = {0: "unspecified", 1: "salient_object", 2: "entity", 3: "part"}
TASK_TITLES = {0: "Unspecified", 1: "Salient Object", 2: "Entity", 3: "Part"}
MODES = ("oracle", "single")


# ----------------------------------------------------------------------------------------
# Atomic files.


def _save_figure(fig, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write(path, buf.getvalue())


# ----------------------------------------------------------------------------------------
# Aggregation.


def _mean(rows: Sequence[Sequence[float]]) -> list[float]:
    return [float(v) for v in np.mean(np.asarray(rows, np.float64), axis=0)]


def _aggregate(group: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means of dataset entries (`miou`, `mbiou`, `noc`) and the summed failures."""
    out: dict[str, Any] = {
        "num_datasets": len(group),
        "num_objects": int(sum(g["num_objects"] for g in group)),
        "miou": _mean([g["miou"] for g in group]),
        "mbiou": _mean([g["mbiou"] for g in group]),
    }
    if group and "noc" in group[0]:
        out["noc"] = {k: float(np.mean([g["noc"][k] for g in group])) for k in group[0]["noc"]}
        out["nof"] = {k: int(sum(g["nof"][k] for g in group)) for k in group[0]["nof"]}
    return out


def summarize_records(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-dataset, per-task and overall numbers for the records of one protocol and mode."""
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        by_dataset[rec["dataset"]].append(rec)
    datasets: dict[str, dict[str, Any]] = {}
    for name in sorted(by_dataset):
        recs = by_dataset[name]
        # A dataset belongs to one task; should a reader mix them, the majority names it.
        task = Counter(r["task"] for r in recs).most_common(1)[0][0]
        entry: dict[str, Any] = {
            "task": int(task),
            "num_objects": len(recs),
            "num_images": len({r["image_id"] for r in recs}),
            "miou": _mean([r["iou"] for r in recs]),
            "mbiou": _mean([r["biou"] for r in recs]),
        }
        if "noc" in recs[0]:
            entry["noc"] = {k: float(np.mean([r["noc"][k] for r in recs])) for k in recs[0]["noc"]}
            entry["nof"] = {k: int(sum(r["failed"][k] for r in recs)) for k in recs[0]["failed"]}
        datasets[name] = entry
    tasks: dict[str, dict[str, Any]] = {}
    for task in sorted({d["task"] for d in datasets.values()}):
        members = [n for n, d in datasets.items() if d["task"] == task]
        tasks[TASK_NAMES.get(task, f"task_{task}")] = {
            "task": task,
            "datasets": members,
            **_aggregate([datasets[n] for n in members]),
        }
    overall = _aggregate(list(datasets.values())) if datasets else {}
    return {"datasets": datasets, "tasks": tasks, "overall": overall}


def summarize(
    records: Mapping[str, Sequence[dict[str, Any]]], settings: Any, *, name: str
) -> dict[str, Any]:
    """The summary of `{protocol: records}` (see the module docstring)."""
    protocols = {}
    images, objects = set(), 0
    for protocol, recs in records.items():
        protocols[protocol] = {
            mode: summarize_records([r for r in recs if r["mode"] == mode]) for mode in MODES
        }
        images |= {(r["dataset"], r["image_id"]) for r in recs}
        objects = max(objects, sum(r["mode"] == MODES[0] for r in recs))
    settings_dict = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else {}
    return {
        "name": name,
        "num_images": len(images),
        "num_objects": objects,
        "settings": settings_dict,
        "paper_sets": paper_set_coverage({d for d, _ in images}),
        "protocols": protocols,
    }


def not_comparable(summary: Mapping[str, Any], families: Sequence[str]) -> dict[str, str]:
    """`{dataset: reason}` for the summary's sets whose images come from a family the model
    was trained on and the paper's run was not (`TaskRecord.not_in_paper`)."""
    from sum_jax.data import registry

    names = {
        d for modes in summary["protocols"].values() for s in modes.values() for d in s["datasets"]
    }
    return {
        d: f"trained on {registry.family(d)}'s train split, which the paper's run did not use"
        for d in sorted(names)
        if registry.family(d) in set(families)
    }


def paper_set_coverage(datasets: set[str]) -> dict[str, Any]:
    """Whether `datasets` (names as in records) are the paper's 14 evaluation sets:
    `{"complete": bool, "tasks": {task name: {"missing": [...], "extra": [...]}}}`."""
    from sum_jax.data import registry

    paper = registry.paper_dataset_names()
    tasks = {}
    for task in sorted(set(registry.PAPER_EVAL_SETS)):
        expected = {n for n, t in paper.items() if t == task}
        tasks[TASK_NAMES[task]] = {"missing": sorted(expected - datasets), "extra": []}
    for extra in sorted(datasets - set(paper)):
        tasks.setdefault("other", {"missing": [], "extra": []})["extra"].append(extra)
    complete = not any(v["missing"] or v["extra"] for v in tasks.values())
    return {"complete": complete, "tasks": tasks}


# ----------------------------------------------------------------------------------------
# Files.


def records_csv(records: Mapping[str, Sequence[dict[str, Any]]]) -> str:
    rows = [r for recs in records.values() for r in recs]
    num_rounds = max((len(r["iou"]) for r in rows), default=0)
    noc_keys = sorted({k for r in rows for k in r.get("noc", {})})
    fields = [
        "protocol",
        "mode",
        "dataset",
        "task",
        "image_id",
        "mask_index",
        "height",
        "width",
        "area",
        "oracle_index",
    ]
    header = (
        fields
        + [f"iou_{i + 1}" for i in range(num_rounds)]
        + [f"biou_{i + 1}" for i in range(num_rounds)]
        + [f"noc_{k}" for k in noc_keys]
        + [f"failed_{k}" for k in noc_keys]
    )
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(
            [r[f] for f in fields]
            + [repr(v) for v in r["iou"]]
            + [repr(v) for v in r["biou"]]
            + [r["noc"][k] for k in noc_keys]
            + [int(r["failed"][k]) for k in noc_keys]
        )
    return buf.getvalue()


def overall_numbers(
    summary: Mapping[str, Any], keys: Sequence[str] = ("miou", "mbiou")
) -> dict[str, dict[str, Any]]:
    """`{"protocol/mode": {key: value}}` of a summary's overall averages (modes with none
    left out); `keys` absent from a mode are skipped."""
    out = {}
    for protocol, modes in summary["protocols"].items():
        for mode, s in modes.items():
            if s["overall"]:
                out[f"{protocol}/{mode}"] = {k: s["overall"][k] for k in keys if k in s["overall"]}
    return out


def summary_rows(summary: Mapping[str, Any]) -> list[list[Any]]:
    """Long-format rows `protocol, mode, level, name, task, count, metric, round, value`."""
    rows = []
    for protocol, modes in summary["protocols"].items():
        for mode, s in modes.items():
            levels = [("dataset", n, d, d["num_objects"]) for n, d in s["datasets"].items()]
            levels += [("task", n, d, d["num_datasets"]) for n, d in s["tasks"].items()]
            if s["overall"]:
                levels.append(("overall", "all", s["overall"], s["overall"]["num_datasets"]))
            for level, name, d, count in levels:
                task = d.get("task", "")
                for metric in ("miou", "mbiou"):
                    for i, v in enumerate(d[metric]):
                        rows.append([protocol, mode, level, name, task, count, metric, i + 1, v])
                for metric in ("noc", "nof"):
                    for k, v in d.get(metric, {}).items():
                        rows.append(
                            [protocol, mode, level, name, task, count, f"{metric}@{k}", "", v]
                        )
    return rows


def write_reports(
    records: Mapping[str, Sequence[dict[str, Any]]],
    summary: Mapping[str, Any],
    workdir: str | os.PathLike,
) -> None:
    """Writes records and summary as JSON and CSV into `workdir` (see the module docstring)."""
    workdir = os.fspath(workdir)
    lines = [json.dumps(r, sort_keys=True) for recs in records.values() for r in recs]
    atomic_write(os.path.join(workdir, "records.jsonl"), "\n".join(lines) + "\n")
    atomic_write(os.path.join(workdir, "records.csv"), records_csv(records))
    atomic_write(
        os.path.join(workdir, "summary.json"), json.dumps(summary, indent=1, sort_keys=True) + "\n"
    )
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["protocol", "mode", "level", "name", "task", "count", "metric", "round", "value"])
    w.writerows(summary_rows(summary))
    atomic_write(os.path.join(workdir, "summary.csv"), buf.getvalue())


def load_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a `summary.json` (a file, or the workdir holding it)."""
    path = as_path(path)
    if path.is_dir():
        path = path / "summary.json"
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------------------
# Plots.


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    summaries: Mapping[str, Mapping[str, Any]],
    outdir: str | os.PathLike,
    *,
    prefix: str = "curves",
) -> list[str]:
    """mIoU and mBIoU (x100) against the number of clicks, one figure per protocol and mode,
    one column per task (and the overall average), one line per model.

    Args:
      summaries: `{model name: summary}`; models may cover different protocols.
      outdir: where `<prefix>_<protocol>_<mode>.png` go.

    Returns:
      The paths written.
    """
    plt = _pyplot()
    outdir = os.fspath(outdir)
    paths = []
    protocols = sorted({p for s in summaries.values() for p in s["protocols"]})
    for protocol in protocols:
        for mode in MODES:
            entries = {
                n: s["protocols"][protocol][mode]
                for n, s in summaries.items()
                if protocol in s["protocols"] and mode in s["protocols"][protocol]
            }
            entries = {n: e for n, e in entries.items() if e["overall"]}
            if not entries:
                continue
            tasks = sorted(
                {(t["task"], name) for e in entries.values() for name, t in e["tasks"].items()}
            )
            columns = [(TASK_TITLES.get(t, name), name) for t, name in tasks]
            columns.append(("Overall average", None))
            fig, axes = plt.subplots(
                2, len(columns), figsize=(3.2 * len(columns), 5.6), squeeze=False, sharex=True
            )
            for row, (metric, label) in enumerate((("miou", "mIoU"), ("mbiou", "mBIoU"))):
                for col, (title, key) in enumerate(columns):
                    ax = axes[row, col]
                    for model, e in entries.items():
                        d = e["overall"] if key is None else e["tasks"].get(key)
                        if d is None:
                            continue
                        ys = 100 * np.asarray(d[metric])
                        ax.plot(np.arange(1, len(ys) + 1), ys, marker="o", ms=3, label=model)
                    if row == 0:
                        ax.set_title(title)
                    if col == 0:
                        ax.set_ylabel(label)
                    if row == 1:
                        first = "box + clicks" if protocol == "box" else "clicks"
                        ax.set_xlabel(f"number of prompts ({first})")
                    ax.grid(alpha=0.3)
            axes[0, 0].legend(fontsize=8)
            fig.suptitle(f"{protocol} protocol, {mode} output in round 1")
            path = os.path.join(outdir, f"{prefix}_{protocol}_{mode}.png")
            _save_figure(fig, path)
            plt.close(fig)
            paths.append(path)
    return paths


def upscale_logits(context: Mapping[str, Any], logits: np.ndarray, hw: tuple[int, int]):
    """The evaluator's upscaling (`context["taps"]`, SAM's postprocessing), cropped to `hw`."""
    from sum_jax.ops import transforms

    up = transforms.apply_postprocess(np.asarray(logits, np.float32), context["taps"])
    return np.asarray(up)[..., : hw[0], : hw[1]]


def save_example_images(
    item: Mapping[str, Any],
    outdir: str | os.PathLike,
    settings: Any,
    *,
    masks_per_image: int = 2,
) -> list[str]:
    """Images with the GT outline, the chosen mask and the clicks after a few rounds.

    `item` is what `evaluate_examples` hands to `on_example_images`: the example, the
    protocol, the chunks' logits `[R, 2, Q, l, l]` and the image's context (resize taps).
    One PNG per (image, mask, mode): rounds 1, 3 and the last reported one side by side.
    """
    plt = _pyplot()
    from skimage.segmentation import find_boundaries

    ex = item["example"]
    image = np.asarray(ex["image"])
    h, w = image.shape[:2]
    rounds = sorted({1, min(3, settings.num_rounds), settings.num_rounds})
    this = (str(ex.get("dataset", "")), str(ex.get("image_id", "")))
    records = {
        (r["mask_index"], r["mode"]): r
        for r in item["records"]
        if (r["dataset"], r["image_id"]) == this
    }
    paths = []
    done = 0
    for _, idx, logits in item["chunks"]:
        for j, k in enumerate(idx):
            if done >= masks_per_image:
                return paths
            done += 1
            gt = np.asarray(ex["masks"][k]).astype(bool)
            for m, mode in enumerate(MODES):
                rec = records[(int(k), mode)]
                fig, axes = plt.subplots(
                    1, len(rounds), figsize=(4 * len(rounds), 4 * h / w + 0.6), squeeze=False
                )
                for ax, r in zip(axes[0], rounds):
                    pred = upscale_logits(item["context"], logits[r - 1, m, j], (h, w)) > 0
                    overlay = image.astype(np.float32) / 255.0
                    overlay[pred] = 0.45 * overlay[pred] + 0.55 * np.array([0.1, 0.4, 1.0])
                    overlay[find_boundaries(gt, mode="inner")] = (1.0, 0.9, 0.0)
                    ax.imshow(overlay)
                    for y, x, label in rec["clicks"][:r]:
                        if label >= 0:
                            ax.scatter(
                                [x],
                                [y],
                                s=40,
                                c="lime" if label == 1 else "red",
                                marker="o" if label == 1 else "X",
                                edgecolors="black",
                            )
                    if "box" in rec:
                        x0, y0, x1, y1 = rec["box"]
                        ax.add_patch(
                            plt.Rectangle(
                                (x0, y0), x1 - x0, y1 - y0, fill=False, color="cyan", lw=1.5
                            )
                        )
                    ax.set_title(
                        f"round {r}: IoU {100 * rec['iou'][r - 1]:.1f}, "
                        f"BIoU {100 * rec['biou'][r - 1]:.1f}",
                        fontsize=9,
                    )
                    ax.axis("off")
                name = f"{ex.get('dataset', '')}_{ex.get('image_id', '')}_{k}"
                fig.suptitle(f"{name} ({item['protocol']}, {mode})", fontsize=9)
                safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
                path = os.path.join(os.fspath(outdir), f"{item['protocol']}_{mode}_{safe}.png")
                _save_figure(fig, path)
                plt.close(fig)
                paths.append(path)
    return paths
