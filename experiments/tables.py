"""The paper's evaluation tables as specs: which models, which evaluation settings, what layout.

Each `TableSpec` names its columns (models) with the evaluation-config overrides they need
(e.g. SAM and "SUM w/o Task Prompt" run without the task prompt, "SUM Continuous TP" with it
in every round) and renders the models' `summary.json`s in the paper's layout as Markdown and
CSV. `experiments/run_table.py` runs the evaluator for the given checkpoints and calls these.

Values are the point protocol's `oracle` mode (the paper: "we generally select the output
mask that most closely aligns with the provided ground truth"), x100, one decimal.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

TASKS = (("salient_object", "Salient object"), ("entity", "Entity"), ("part", "Part"))
ROW_TASKS = TASKS + (("overall", "Overall average"),)
METRICS = (("miou", "mIoU"), ("mbiou", "mBIoU"))


@dataclasses.dataclass(frozen=True)
class Column:
    """One model of a table: its name and the evaluation-config overrides it needs."""

    name: str
    overrides: tuple[tuple[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    columns: tuple[Column, ...]
    num_rounds: int  # rounds the evaluator must simulate
    render: Callable[[TableSpec, Mapping[str, Mapping[str, Any]]], list[list[str]]]
    protocol: str = "point"
    mode: str = "oracle"


def value(
    summary: Mapping[str, Any] | None,
    task: str,
    metric: str,
    rnd: int,
    protocol: str = "point",
    mode: str = "oracle",
) -> float | None:
    """`summary`'s `metric` after round `rnd` for `task` (or "overall"), x100; None if absent."""
    if summary is None:
        return None
    try:
        s = summary["protocols"][protocol][mode]
        entry = s["overall"] if task == "overall" else s["tasks"][task]
        return 100.0 * entry[metric][rnd - 1]
    except (KeyError, IndexError):
        return None


def fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def _models_by_task(
    spec: TableSpec,
    summaries,
    rounds: Sequence[int],
    metrics=METRICS,
    round_label: str | None = None,
) -> list[list[str]]:
    """Rows `metric, [round,] task` x columns `models` (Tables 1 and 2)."""
    head = ["Metrics"] + ([round_label] if round_label else []) + ["Task"]
    rows = [head + [c.name for c in spec.columns]]
    for metric, metric_name in metrics:
        for rnd in rounds:
            for task, task_name in ROW_TASKS:
                cells = [
                    fmt(value(summaries.get(c.name), task, metric, rnd, spec.protocol, spec.mode))
                    for c in spec.columns
                ]
                rows.append(
                    [metric_name] + ([str(rnd)] if round_label else []) + [task_name] + cells
                )
    return rows


def render_table1(spec: TableSpec, summaries) -> list[list[str]]:
    return _models_by_task(spec, summaries, rounds=(3,))


def render_table2(spec: TableSpec, summaries) -> list[list[str]]:
    # The paper's Table 2 shows mIoU; mBIoU (its Fig. 15) follows below it.
    return _models_by_task(spec, summaries, rounds=(1, 3), round_label="Point Number")


BACKBONES = ("ViT-B", "ViT-L", "ViT-H")


def render_table6(spec: TableSpec, summaries) -> list[list[str]]:
    """Rows `backbone, metric, points` x columns `task x (SAM, SUM)`."""
    head = ["Backbone", "Metrics", "Points"]
    for _, task_name in TASKS:
        head += [f"{task_name} SAM", f"{task_name} SUM"]
    rows = [head]
    for backbone in BACKBONES:
        for metric, metric_name in METRICS:
            for rnd in (1, 6):
                cells = []
                for task, _ in TASKS:
                    for model in ("SAM", "SUM"):
                        s = summaries.get(f"{model} {backbone}")
                        cells.append(fmt(value(s, task, metric, rnd, spec.protocol, spec.mode)))
                rows.append([backbone, metric_name, str(rnd)] + cells)
    return rows


THETAS = ("0.2", "0.5", "0.6", "0.8")


def render_theta(spec: TableSpec, summaries) -> list[list[str]]:
    """Fig. 16 as a table: rows `metric, points, theta` x columns tasks."""
    rows = [["Metrics", "Points", "Theta"] + [t for _, t in TASKS]]
    for metric, metric_name in METRICS:
        for rnd in (1, 6):
            for theta in THETAS:
                s = summaries.get(f"theta={theta}")
                rows.append(
                    [metric_name, str(rnd), theta]
                    + [fmt(value(s, t, metric, rnd, spec.protocol, spec.mode)) for t, _ in TASKS]
                )
    return rows


_NO_TP = (("use_task_prompt", False),)

TABLES: dict[str, TableSpec] = {
    "table1": TableSpec(
        "table1",
        "Table 1: 3-point-prompt segmentation, mIoU and mBIoU of models fine-tuned on FT-Small",
        (
            Column("SAM", _NO_TP),
            Column("Vanilla", _NO_TP),
            Column("AugSeg Mixed-Prompt", _NO_TP),
            Column("UP2L", _NO_TP),
            Column("SUM"),
            Column("SUM Confidence-Uncer"),
            Column("SUM Discrepancy-Uncer"),
        ),
        num_rounds=3,
        render=render_table1,
    ),
    "table2": TableSpec(
        "table2",
        "Table 2: ablation, interactive mIoU (and mBIoU) after 1 and 3 points (FT-Medium)",
        (
            Column("SAM", _NO_TP),
            Column("Vanilla", _NO_TP),
            Column("Mask Refinement", _NO_TP),
            Column("SUM w/o Task Prompt", _NO_TP),
            Column("SUM"),
            Column("SUM Continuous TP", (("continuous_task_prompt", True),)),
        ),
        num_rounds=3,
        render=render_table2,
    ),
    "table6": TableSpec(
        "table6",
        "Table 6: SAM vs SUM with ViT-B/L/H backbones, mIoU and mBIoU after 1 and 6 points",
        tuple(
            Column(f"{m} {b}", _NO_TP if m == "SAM" else ())
            for b in BACKBONES
            for m in ("SAM", "SUM")
        ),
        num_rounds=6,
        render=render_table6,
    ),
    "fig16": TableSpec(
        "fig16",
        "Fig. 16: uncertainty-aware Dice threshold theta, mIoU and mBIoU after 1 and 6 points",
        tuple(Column(f"theta={t}") for t in THETAS),
        num_rounds=6,
        render=render_theta,
    ),
}


def to_markdown(title: str, rows: list[list[str]]) -> str:
    lines = [
        f"### {title}",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "|".join("---" for _ in rows[0]) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def plot_theta(summaries: Mapping[str, Mapping[str, Any]], path: str) -> None:
    """Fig. 16's layout: grouped bars per task, one bar per theta; mIoU and mBIoU after 1
    and 6 points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from sum_jax.evaluate.reports import _save_figure

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), squeeze=False)
    x = np.arange(len(TASKS))
    width = 0.8 / len(THETAS)
    for i, (metric, metric_name) in enumerate(METRICS):
        for j, rnd in enumerate((1, 6)):
            ax = axes[i, j]
            for k, theta in enumerate(THETAS):
                vals = [value(summaries.get(f"theta={theta}"), t, metric, rnd) for t, _ in TASKS]
                ax.bar(
                    x + (k - (len(THETAS) - 1) / 2) * width,
                    [np.nan if v is None else v for v in vals],
                    width,
                    label=theta,
                )
            ax.set_xticks(x, [n for _, n in TASKS])
            ax.set_ylabel(metric_name)
            ax.set_title(f"Number of point prompts: {rnd}")
    axes[0, 0].legend(title="Theta Value", fontsize=8)
    _save_figure(fig, path)
    plt.close(fig)
