"""Reproduce one of the paper's evaluation tables from checkpoints, in the paper's layout.

    python -m experiments.run_table --table=table1 --workdir=/results/table1 \\
        --config=configs/eval.py --config.data_dir=/data/prepared \\
        --checkpoint="SAM=/ckpt/sam_vit_h" --checkpoint="SUM=/ckpt/sum_ft_small" ...

Tables: `table1` (3-point mIoU/mBIoU, FT-Small models, the paper's numbers beside ours),
`fig11` (Table 1 as the paper's bar plot, `fig11.png`), `table4` (single-point mIoU of the
AugSeg variants, with the paper's), `table2` (ablation, 1 and 3 points), `table6` (SAM vs
SUM for ViT-B/L/H, 1 and 6 points; columns "SAM ViT-B", "SUM ViT-B", ...), `fig16` (theta
sweep; columns "theta=0.2", "theta=0.5", ...). Column names are listed by `--list`.

Models come from `--checkpoint=COLUMN=DIR` and, for the columns that name their training
run (`--list` shows them), from `--runs=RUNS`: `RUNS/<run>/model`, the model directory
`python -m sum_jax.train --config=configs/ablations.py:<run>,ft_small --workdir=RUNS/<run>`
exports. The Table 1 runs in one go:

    for v in vanilla augseg_mixed_prompt u2pl sum confidence_uncer discrepancy_uncer; do
      python -m sum_jax.train --config=configs/ablations.py:$v,ft_small --workdir=runs/$v ...
    done
    python -m experiments.run_table --table=table1 --runs=runs --workdir=results/table1 \
        --config.data_dir=/data/prepared --checkpoint="SAM=/ckpt/sam_vit_h"

Each model is evaluated into `<workdir>/<column>/` (skipped when its summary.json exists, so
an interrupted run resumes; `--overwrite` re-runs), with the columns' config overrides (e.g.
no task prompt for SAM). Then `<workdir>/<table>.md` and `.csv` are written and the Markdown
printed; columns without a model or summary show "–" and are listed under the table as
missing, with the run that would make them.
"""

from __future__ import annotations

import json
import os
import re

from absl import flags

from experiments import tables
from sum_jax import cli, config_checks, output_dir
from sum_jax.evaluate import reports, runner
from sum_jax.fileio import atomic_write

_CONFIG = cli.config_flag("eval.py", "Evaluation config.")
_TABLE = flags.DEFINE_enum("table", None, sorted(tables.TABLES), "Which table.")
_CHECKPOINT = flags.DEFINE_multi_string("checkpoint", [], "COLUMN=DIR (repeat).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Re-evaluate models with a summary.")
_LIST = flags.DEFINE_bool("list", False, "Print the tables' column names and exit.")
_RUNS = flags.DEFINE_string(
    "runs", None, "Folder of training runs: RUNS/<run>/model for the columns that name a run."
)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name)


def split_checkpoint(arg: str, spec: tables.TableSpec) -> tuple[str, str]:
    """`"COLUMN=DIR"` -> `(column, dir)`; column names may hold "=" (`theta=0.6=/ckpt`)."""
    for name in sorted((c.name for c in spec.columns), key=len, reverse=True):
        if arg.startswith(name + "="):
            return name, arg[len(name) + 1 :]
    raise ValueError(f"--checkpoint={arg!r} names no column of {spec.name}; see --list")


def model_variant(spec: str) -> str:
    """The SAM variant a model spec holds, as its directory records it (`sam_config.json`)
    or `random:<variant>` names it: what labels the model in a table, not its column."""
    from sum_jax import checkpointing

    if spec.startswith("random:"):
        return spec.split(":", 1)[1]
    return checkpointing.read_config(spec).variant


def run_models(spec: tables.TableSpec, runs: str) -> dict[str, str]:
    """`{column: RUNS/<run>/model}` for the columns whose run exported a model."""
    found = {}
    for column in spec.columns:
        model = os.path.join(runs, column.run, "model")
        if column.run and os.path.isdir(model):
            found[column.name] = model
    return found


def missing_note(spec: tables.TableSpec, summaries: dict) -> str:
    """The columns with no numbers, and how each would be made."""
    lines = []
    for c in spec.columns:
        if c.name in summaries:
            continue
        how = (
            f"train it: python -m sum_jax.train --config=configs/ablations.py:{c.run},ft_small "
            f"--workdir=RUNS/{c.run}, then --runs=RUNS"
            if c.run
            else f'pass --checkpoint="{c.name}=DIR"'
        )
        lines.append(f"- {c.name}: missing ({how})")
    return ("\nMissing models (shown as –):\n\n" + "\n".join(lines) + "\n") if lines else ""


def run_table(
    config,
    spec: tables.TableSpec,
    checkpoints: dict[str, str],
    workdir: str,
    *,
    overwrite: bool = False,
    runs: str | None = None,
) -> str:
    """Evaluates the given columns (resumable) and writes/returns the rendered table.

    `checkpoints`: `{column: model dir}`; `runs`: a folder of training runs, whose
    `<run>/model` fills the columns that name a run and have no explicit checkpoint.
    """
    known = {c.name: c for c in spec.columns}
    unknown = sorted(set(checkpoints) - set(known))
    if unknown:
        raise ValueError(f"{spec.name} has no columns {unknown}; columns: {sorted(known)}")
    if runs:
        checkpoints = {**run_models(spec, runs), **checkpoints}
    for column, model in checkpoints.items():
        cli.check_model_dir(model, f"--checkpoint={column}")
    summaries = {}
    for column in spec.columns:
        out = os.path.join(workdir, slug(column.name))
        done = os.path.exists(os.path.join(out, "summary.json"))
        model_file = os.path.join(out, "model.json")
        if column.name in checkpoints and (overwrite or not done):
            c = config.copy_and_resolve_references()
            c.protocols = spec.protocol
            c.num_rounds = spec.num_rounds
            c.noc_max_clicks = 0  # these tables report no NoC: simulate only num_rounds
            for key, val in column.overrides:
                c[key] = val
            # The model directory, not a loaded model: the evaluator reads its task record.
            summaries[column.name] = runner.evaluate(
                c,
                checkpoints[column.name],
                runner.read_examples(c),
                out,
                name=column.name,
                restart=overwrite,
            )
            model = {"checkpoint": checkpoints[column.name]}
            model["variant"] = model_variant(model["checkpoint"])
            atomic_write(model_file, json.dumps(model) + "\n")
        elif done:
            summaries[column.name] = reports.load_summary(out)
        if column.name in summaries and os.path.isfile(model_file):
            # The variant the model really is labels it (a tiny model in a ViT-H column).
            with open(model_file) as f:
                variant = json.load(f).get("variant")
            summaries[column.name] = {**summaries[column.name], "variant": variant}
    rows = spec.render(spec, summaries)
    md = tables.to_markdown(spec.title, rows) + tables.models_note(summaries)
    md += tables.footnote(summaries)
    md += missing_note(spec, summaries)
    atomic_write(os.path.join(workdir, f"{spec.name}.md"), md)
    atomic_write(os.path.join(workdir, f"{spec.name}.csv"), tables.to_csv(rows))
    if spec.name == "fig16":
        tables.plot_theta(summaries, os.path.join(workdir, "fig16.png"))
    if spec.name == "fig11":
        tables.plot_models_by_task(spec, summaries, os.path.join(workdir, "fig11.png"))
    if summaries:
        reports.plot_curves(summaries, workdir)
    return md


def main(argv: list[str]) -> None:
    del argv
    if _LIST.value:
        for spec in tables.TABLES.values():
            print(
                f"{spec.name}: "
                + ", ".join(
                    repr(c.name) + (f" (run {c.run})" if c.run else "") for c in spec.columns
                )
            )
        return
    if not _TABLE.value or not _WORKDIR.value:
        cli.fail("--table and --workdir are required (--list shows the tables)")
    config_checks.check(_CONFIG.value, "run_table")
    spec = tables.TABLES[_TABLE.value]
    checkpoints = dict(split_checkpoint(c, spec) for c in _CHECKPOINT.value)
    if _RUNS.value and not os.path.isdir(_RUNS.value):
        cli.fail(f"--runs={_RUNS.value}: no such folder of training runs")
    with output_dir.claim(_WORKDIR.value, "run_table", "--workdir"):
        table = run_table(
            _CONFIG.value,
            spec,
            checkpoints,
            _WORKDIR.value,
            overwrite=_OVERWRITE.value,
            runs=_RUNS.value,
        )
    print(table)


if __name__ == "__main__":
    cli.run(main)
