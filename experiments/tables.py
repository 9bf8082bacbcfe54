"""The paper's evaluation tables as specs: which models, which evaluation settings, what layout.

Each `TableSpec` names its columns (models) with the evaluation-config overrides they need
(e.g. SAM and "SUM w/o Task Prompt" run without the task prompt, "SUM Continuous TP" with it
in every round) and renders the models' `summary.json`s in the paper's layout as Markdown and
CSV. `experiments/run_table.py` runs the evaluator for the given checkpoints and calls these.

Values are the point protocol's `oracle` mode (the paper: "we generally select the output
mask that most closely aligns with the provided ground truth"), x100, one decimal.

Tables with the paper's numbers (`PAPER`: Table 1, Table 4 and Fig. 11, transcribed from
the paper) print them beside ours: each model has its column and a "<model> (paper)" column.
Each column may name the training run that makes its model (`Column.run`, an ablation
variant of configs/ablations.py), so `run_table --runs=DIR` finds `DIR/<run>/model`.
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
    # The ablation variant (configs/ablations.py) whose run directory holds this model.
    run: str = ""


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


def fmt(v: float | None, flagged: bool = False) -> str:
    """One cell; `flagged`: not comparable with the paper (a dagger, see `footnote`)."""
    return "–" if v is None else f"{v:.1f}" + ("†" if flagged else "")


def flagged(summary: Mapping[str, Any] | None, task: str, protocol: str, mode: str) -> bool:
    """Whether `summary`'s value for `task` ("overall", a task, or a set's name) includes a
    set marked not comparable with the paper (`summary["not_comparable"]`)."""
    bad = set((summary or {}).get("not_comparable", {}))
    if not bad:
        return False
    if task in bad:
        return True
    try:
        s = summary["protocols"][protocol][mode]
    except KeyError:
        return False
    members = s["datasets"] if task == "overall" else s["tasks"].get(task, {}).get("datasets", ())
    return bool(bad & set(members))


def footnote(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """The dagger's explanation, one line per model with sets not comparable with the paper."""
    lines = [
        f"- {name}: {', '.join(sorted(s['not_comparable']))} "
        f"({next(iter(s['not_comparable'].values()))})"
        for name, s in summaries.items()
        if s.get("not_comparable")
    ]
    if not lines:
        return ""
    return "\n† Not comparable with the paper: the model trained on these sets' families:\n\n" + (
        "\n".join(lines) + "\n"
    )


def _models_by_task(
    spec: TableSpec,
    summaries,
    rounds: Sequence[int],
    metrics=METRICS,
    round_label: str | None = None,
) -> list[list[str]]:
    """Rows `metric, [round,] task` x columns `models` (Tables 1, 2 and 4); where the paper's
    numbers are known (`PAPER[spec.name]`), each model's column is followed by the paper's."""
    paper = PAPER.get(spec.name)
    head = ["Metrics"] + ([round_label] if round_label else []) + ["Task"]
    names = []
    for c in spec.columns:
        names += [c.name] + ([f"{c.name} (paper)"] if paper is not None else [])
    rows = [head + names]
    for metric, metric_name in metrics:
        for rnd in rounds:
            for task, task_name in ROW_TASKS:
                cells = []
                for c in spec.columns:
                    s = summaries.get(c.name)
                    cells.append(fmt(value(s, task, metric, rnd, spec.protocol, spec.mode),
                                     flagged(s, task, spec.protocol, spec.mode)))  # fmt: skip
                    if paper is not None:
                        cells.append(fmt(paper.get(c.name, {}).get((metric, rnd, task))))
                rows.append(
                    [metric_name] + ([str(rnd)] if round_label else []) + [task_name] + cells
                )
    return rows


def render_table1(spec: TableSpec, summaries) -> list[list[str]]:
    return _models_by_task(spec, summaries, rounds=(3,))


def render_table4(spec: TableSpec, summaries) -> list[list[str]]:
    """Table 4: single-point mIoU (the paper shows no mBIoU here)."""
    return _models_by_task(spec, summaries, rounds=(1,), metrics=METRICS[:1])


def render_table2(spec: TableSpec, summaries) -> list[list[str]]:
    # The paper's Table 2 shows mIoU; mBIoU (its Fig. 15) follows below it.
    return _models_by_task(spec, summaries, rounds=(1, 3), round_label="Point Number")


BACKBONES = ("ViT-B", "ViT-L", "ViT-H")
# How a table names `sum_jax.models.sam.VARIANTS`.
VARIANT_NAMES = {"vit_b": "ViT-B", "vit_l": "ViT-L", "vit_h": "ViT-H", "tiny": "tiny",
                 "small": "small"}  # fmt: skip


def backbone_label(backbone: str, summaries) -> str:
    """Table 6's row label: `backbone`, unless the models evaluated in its columns record
    another variant (`summary["variant"]`, run_table's `model.json`): then what they are."""
    ran = sorted({
        VARIANT_NAMES.get(s["variant"], s["variant"])
        for name, s in summaries.items()
        if name.endswith(f" {backbone}") and s.get("variant")
    })  # fmt: skip
    if not ran or ran == [backbone]:
        return backbone
    return f"{'/'.join(ran)} (in the {backbone} columns)"


def models_note(summaries) -> str:
    """One line naming each evaluated model's variant, as its directory records it."""
    known = {n: s["variant"] for n, s in summaries.items() if s.get("variant")}
    if not known:
        return ""
    names = ", ".join(f"{n}: {VARIANT_NAMES.get(v, v)}" for n, v in known.items())
    return f"\nModels: {names}\n"


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
                        cells.append(fmt(value(s, task, metric, rnd, spec.protocol, spec.mode),
                                         flagged(s, task, spec.protocol, spec.mode)))  # fmt: skip
                rows.append([backbone_label(backbone, summaries), metric_name, str(rnd)] + cells)
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
                    + [
                        fmt(
                            value(s, t, metric, rnd, spec.protocol, spec.mode),
                            flagged(s, t, spec.protocol, spec.mode),
                        )
                        for t, _ in TASKS
                    ]
                )
    return rows


_NO_TP = (("use_task_prompt", False),)

# Table 1's and Fig. 11's models (FT-Small, §4.3 and App. E), with the runs that train them
# (`python -m sum_jax.train --config=configs/ablations.py:<run>,ft_small`). SUM's baselines
# of "the standard SAM training protocol" (Vanilla, AugSeg) are evaluated without the task
# prompt; U2PL has SUM's task prompts (App. E). The dual-decoder Discrepancy-Uncer (App. E:
# worse than the teacher-student one, which is the paper's column) is not in the paper's
# table: it is our last column, with no paper numbers.
SEMI_SUPERVISED = (
    Column("SAM", _NO_TP),
    Column("Vanilla", _NO_TP, run="vanilla"),
    Column("AugSeg Mixed-Prompt", _NO_TP, run="augseg_mixed_prompt"),
    Column("U2PL", run="u2pl"),  # "UP2L" in the paper's Table 1 header
    Column("SUM", run="sum"),
    Column("SUM Confidence-Uncer", run="confidence_uncer"),
    Column("SUM Discrepancy-Uncer", run="discrepancy_uncer"),
    Column("SUM Discrepancy-Uncer (dual decoder)", run="discrepancy_dual_decoder"),
)


def _paper_table(rows: Mapping[tuple[str, str], Sequence[float]], columns, rnd: int):
    """`{column: {(metric, rnd, task): value}}` from the paper's rows, one value per column."""
    out: dict[str, dict[tuple[str, int, str], float]] = {c: {} for c in columns}
    for (metric, task), values in rows.items():
        assert len(values) == len(columns), (metric, task)
        for c, v in zip(columns, values):
            out[c][(metric, rnd, task)] = v
    return out


_TABLE1_COLUMNS = ("SAM", "Vanilla", "AugSeg Mixed-Prompt", "U2PL", "SUM",
                   "SUM Confidence-Uncer", "SUM Discrepancy-Uncer")  # fmt: skip
# The paper's Table 1 (3 point prompts, FT-Small), row by row as printed.
_TABLE1 = _paper_table(
    {
        ("miou", "salient_object"): (86.1, 89.2, 90.6, 89.1, 91.2, 89.1, 89.1),
        ("miou", "entity"): (82.7, 81.2, 82.9, 83.4, 83.4, 82.1, 83.4),
        ("miou", "part"): (63.2, 61.8, 59.9, 64.2, 67.2, 59.3, 62.4),
        ("miou", "overall"): (77.2, 77.7, 78.0, 79.0, 81.0, 77.0, 78.4),
        ("mbiou", "salient_object"): (77.0, 81.0, 82.5, 81.0, 83.2, 81.0, 81.0),
        ("mbiou", "entity"): (76.6, 74.6, 77.0, 77.2, 77.2, 76.0, 76.5),
        ("mbiou", "part"): (59.4, 57.5, 55.8, 60.2, 63.3, 55.2, 58.1),
        ("mbiou", "overall"): (70.6, 71.3, 71.8, 72.8, 74.8, 70.7, 71.9),
    },
    _TABLE1_COLUMNS,
    rnd=3,
)
# The paper's Table 4 (single point prompt, mIoU, FT-Small, App. E.1).
AUGSEG = (
    Column("AugSeg Mixed-Prompt", _NO_TP, run="augseg_mixed_prompt"),
    Column("AugSeg Mixed-Prompt (multi-consistency)", _NO_TP, run="augseg_multi_consistency"),
    Column("AugSeg Box-Prompt", _NO_TP, run="augseg_box_prompt"),
    Column("AugSeg Uniform Point-Prompt", _NO_TP, run="augseg_uniform_point"),
)
_TABLE4 = _paper_table(
    {
        ("miou", "salient_object"): (82.3, 81.4, 83.2, 82.5),
        ("miou", "entity"): (75.9, 74.6, 73.9, 71.6),
        ("miou", "part"): (48.4, 44.6, 43.5, 37.8),
        ("miou", "overall"): (68.8, 66.8, 67.0, 64.2),
    },
    tuple(c.name for c in AUGSEG),
    rnd=1,
)
# Fig. 5 (left): lightweight fine-tuning strategies on HQSeg-44K's human labels (FT-Small's
# human-labelled sets, no task prompt) against SUM on FT-Small; single point, mIoU.
LIGHTWEIGHT = (
    Column("SAM", _NO_TP),
    Column("Adapter FT", _NO_TP, run="adapter"),
    Column("LoRA FT", _NO_TP, run="lora_samed"),
    Column("Decoder+Prompt-Encoder FT", _NO_TP, run="decoder_prompt_encoder"),
    Column("SUM", run="sum"),
)
# Fig. 5 (right): Table 1's models with AugSeg Box-Prompt, single point, mIoU.
SEMI_SUPERVISED_1PT = SEMI_SUPERVISED[:3] + (AUGSEG[2],) + SEMI_SUPERVISED[3:]
# Fig. 4 and Tables 10-13 (§4.2, App. G.3): HQ-SAM's lightweight scheme and architecture.
# HQ-SAM is "fine-tuned following the Human-Annotation-Only baseline approach"; Vanilla
# "utilizes all of FT-Small" (SAM's pseudo-labels as labels: `vanilla` applied to the
# HQ-SAM-architecture SUM config); models compared with HQ-SAM use "a single output ...
# fixed beforehand" (App. B.3): the `single` mode.
HQ_ARCH = (
    Column("HQ-SAM", _NO_TP, run="hq_sam"),
    Column("Vanilla (HQ-SAM arch.)", _NO_TP, run="sum_hq+vanilla"),
    Column("SUM (HQ-SAM arch.)", run="sum_hq"),
)
# Fig. 12 (App. F.1): SUM's three architectures on FT-Small.
SUM_ARCHITECTURES = (
    Column("SAM", _NO_TP),
    Column("SUM (Encoder Adapter arch.)", run="sum_adapter"),
    Column("SUM (HQ-SAM arch.)", run="sum_hq"),
    Column("SUM (Full Fine-tuning arch.)", run="sum"),
)


def render_curves(spec: TableSpec, summaries) -> list[list[str]]:
    """Fig. 4 / Fig. 12 as a table: mIoU and mBIoU after 1..6 prompts, per task."""
    return _models_by_task(spec, summaries, rounds=tuple(range(1, 7)), round_label="Prompts")


def render_fig5(spec: TableSpec, summaries) -> list[list[str]]:
    """Fig. 5: single-prompt mIoU per task (the paper plots no mBIoU there)."""
    return _models_by_task(spec, summaries, rounds=(1,), metrics=METRICS[:1])


def dataset_value(summary, dataset: str, metric: str, rnd: int, protocol: str, mode: str):
    """`summary`'s `metric` after round `rnd` on one evaluation set, x100; None if absent."""
    try:
        entry = summary["protocols"][protocol][mode]["datasets"][dataset]
        return 100.0 * entry[metric][rnd - 1]
    except (KeyError, IndexError, TypeError):
        return None


def _dataset_wise(spec: TableSpec, summaries, rnd: int) -> list[list[str]]:
    """Tables 10-13's layout: rows `metric, task, dataset` (then the task's average) x the
    models; the sets are those any model's summary has, grouped by task."""
    by_task: dict[str, set[str]] = {}
    for summary in summaries.values():
        for task, _ in TASKS:
            entry = summary["protocols"][spec.protocol][spec.mode]["tasks"].get(task, {})
            by_task.setdefault(task, set()).update(entry.get("datasets", ()))
    rows = [["Metrics", "Task", "Dataset"] + [c.name for c in spec.columns]]
    for metric, metric_name in METRICS:
        for task, task_name in TASKS:
            for dataset in sorted(by_task.get(task, ())):
                rows.append([metric_name, task_name, dataset] + [
                    fmt(dataset_value(summaries.get(c.name), dataset, metric, rnd,
                                      spec.protocol, spec.mode),
                        flagged(summaries.get(c.name), dataset, spec.protocol, spec.mode))
                    for c in spec.columns
                ])  # fmt: skip
            rows.append([metric_name, task_name, "Average"] + [
                fmt(value(summaries.get(c.name), task, metric, rnd, spec.protocol, spec.mode),
                    flagged(summaries.get(c.name), task, spec.protocol, spec.mode))
                for c in spec.columns
            ])  # fmt: skip
    return rows


def render_table10(spec: TableSpec, summaries) -> list[list[str]]:
    return _dataset_wise(spec, summaries, rnd=1)


def render_table11(spec: TableSpec, summaries) -> list[list[str]]:
    return _dataset_wise(spec, summaries, rnd=6)


# Paper numbers per table: `{column: {(metric, round, task): value}}`. Fig. 11 plots Table 1.
PAPER: dict[str, dict[str, dict[tuple[str, int, str], float]]] = {
    "table1": _TABLE1,
    "fig11": _TABLE1,
    "table4": _TABLE4,
}

TABLES: dict[str, TableSpec] = {
    "table1": TableSpec(
        "table1",
        "Table 1: 3-point-prompt segmentation, mIoU and mBIoU of models fine-tuned on FT-Small",
        SEMI_SUPERVISED,
        num_rounds=3,
        render=render_table1,
    ),
    "table4": TableSpec(
        "table4",
        "Table 4: single-point-prompt mIoU of the AugSeg variants fine-tuned on FT-Small",
        AUGSEG,
        num_rounds=1,
        render=render_table4,
    ),
    "fig11": TableSpec(
        "fig11",
        "Fig. 11: 3-point-prompt mIoU and mBIoU of models fine-tuned on FT-Small (Table 1)",
        SEMI_SUPERVISED,
        num_rounds=3,
        render=render_table1,
    ),
    "fig5_left": TableSpec(
        "fig5_left",
        "Fig. 5 (left): single-point mIoU, lightweight fine-tuning on HQSeg-44K vs SUM (FT-Small)",
        LIGHTWEIGHT,
        num_rounds=1,
        render=render_fig5,
    ),
    "fig5_right": TableSpec(
        "fig5_right",
        "Fig. 5 (right): single-point mIoU of models fine-tuned on FT-Small",
        SEMI_SUPERVISED_1PT,
        num_rounds=1,
        render=render_fig5,
    ),
    "fig4": TableSpec(
        "fig4",
        "Fig. 4: HQ-SAM vs Vanilla and SUM with HQ-SAM's architecture, mIoU and mBIoU after "
        "1-6 point prompts (single output)",
        HQ_ARCH,
        num_rounds=6,
        render=render_curves,
        mode="single",
    ),
    **{
        name: TableSpec(
            name,
            f"{title}: HQ-SAM vs Vanilla and SUM with HQ-SAM's architecture, per dataset "
            f"(single output)",
            HQ_ARCH,
            num_rounds=rounds,
            render=render_table10 if rounds == 1 else render_table11,
            protocol=protocol,
            mode="single",
        )
        for name, title, protocol, rounds in (
            ("table10", "Table 10: single point", "point", 1),
            ("table11", "Table 11: six points", "point", 6),
            ("table12", "Table 12: single box", "box", 1),
            ("table13", "Table 13: a box and five points", "box", 6),
        )
    },
    "fig12": TableSpec(
        "fig12",
        "Fig. 12: SUM with the Encoder Adapter, HQ-SAM and full fine-tuning architectures "
        "(FT-Small), mIoU and mBIoU after 1-6 point prompts",
        SUM_ARCHITECTURES,
        num_rounds=6,
        render=render_curves,
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


def plot_models_by_task(
    spec: TableSpec, summaries: Mapping[str, Mapping[str, Any]], path: str, rnd: int = 3
) -> None:
    """Fig. 11's layout: for mIoU and mBIoU, grouped bars per task (and the overall
    average), one bar per model (ours); the paper's value of each bar as a black tick over
    it. Models without a summary have no bar (their paper tick stays)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from sum_jax.evaluate.reports import _save_figure

    paper = PAPER.get(spec.name, {})
    fig, axes = plt.subplots(1, len(METRICS), figsize=(7 * len(METRICS), 4.5), squeeze=False)
    x = np.arange(len(ROW_TASKS))
    width = 0.85 / len(spec.columns)
    for ax, (metric, metric_name) in zip(axes[0], METRICS):
        for k, column in enumerate(spec.columns):
            pos = x + (k - (len(spec.columns) - 1) / 2) * width
            ours = [
                value(summaries.get(column.name), t, metric, rnd, spec.protocol, spec.mode)
                for t, _ in ROW_TASKS
            ]
            ax.bar(pos, [np.nan if v is None else v for v in ours], width, label=column.name)
            theirs = [paper.get(column.name, {}).get((metric, rnd, t)) for t, _ in ROW_TASKS]
            ax.scatter(pos, [np.nan if v is None else v for v in theirs], marker="_", s=80,
                       color="black", zorder=3)  # fmt: skip
        ax.set_xticks(x, [n for _, n in ROW_TASKS])
        ax.set_ylabel(metric_name)
        ax.set_ylim(40, 100)
        ax.set_title(f"{metric_name}, {rnd} point prompts (black ticks: the paper)")
    axes[0, -1].legend(fontsize=7, loc="lower left")
    _save_figure(fig, path)
    plt.close(fig)
