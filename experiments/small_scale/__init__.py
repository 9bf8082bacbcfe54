"""SUM's central effect at small scale: SAM vs Vanilla vs SUM, from `pretrained:small`.

    python -m experiments.small_scale --workdir=out/small_scale [--seeds=0,1,2] [--jobs=2]

The paper's claim (§1, §4.2): fine-tuning SAM on high-quality human labels of intricate
structures alone (Vanilla) gains on that kind and loses on others; SUM (the same human
labels plus uncertainty-weighted pseudo-labels of unlabelled generic images, with task
prompts) gains without losing. Here, at toy scale, with scenes made by
`sum_jax.pretrain.scenes` and real photos:

    human-labelled   intricate:train       48 scenes of thin, branching, meshed and holed
                                           objects only (scenes.INTRICATE), task 1
    unlabelled       unlabelled:train      48 scenes of every kind, no masks (SA-1B-like)
    evaluation       intricate:validation  24 new intricate scenes
                     generic:validation    24 scenes of real cut-outs and compact forms
                                           (scenes.GENERIC), task 2
                     heldout_<photo>       the real photos of the pretraining check
                                           (sum_jax/pretrain/heldout.py): three salient
                                           objects (task 1), VOC and coins (task 2)

Stages, each skipped when its output exists (run the command again to resume):

    data/, prepared/   the scenes written as folder / SA-1B-style datasets, prepared
    pseudo_labels/     pretrained:small's automatic masks of the unlabelled scenes, the
                       mask-refinement module trained on intricate:train (refiner/), and
                       the uncertainty maps it gives (configs/demo.py's stage settings)
    runs/<method>_<seed>/  `python -m sum_jax.train --config=configs/small_scale.py:<method>`
                       for vanilla and sum, one run per seed (the seed draws the batches,
                       prompts and clicks)
    eval/<model>/      the interactive evaluator: point and box-first protocols, 5 rounds
    RESULTS.md, results.json, results.png
                       mIoU after 1 and 5 clicks / box + 4 clicks, mean and spread (sample
                       standard deviation) over the seeds, per set

Trainings and evaluations run as separate processes, `--jobs` at a time, each pinned to one
CPU core where `taskset` exists (one XLA:CPU process per core is faster on 2 cores than one
process on both). About 40 minutes on a 2-core CPU with the defaults.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from sum_jax.data import folder_writer
from sum_jax.fileio import atomic_write

log = logging.getLogger("experiments.small_scale")
ROOT = Path(__file__).resolve().parents[2]
METHODS = ("vanilla", "sum")
# (dataset, split, scene seed, count, objects, task id); None objects: no masks written.
SCENE_SETS = (
    ("intricate", "train", 101, 48, "intricate", 1),
    ("intricate", "validation", 102, 24, "intricate", 1),
    ("generic", "validation", 103, 24, "generic", 2),
)
UNLABELLED = ("unlabelled", 104, 48)
SCENE_SIDE = 256  # px of the written scenes (the small SAM reads them at its 128)
# The first 8 scenes of each scene set (about 30 objects each): an evaluation of all 24 took
# about 6 minutes per model here, 8 take 2.
EVAL_SETS = ("intricate:validation@8", "generic:validation@8", "heldout_hopper:validation",
             "heldout_motorcycle:validation", "heldout_flower:validation",
             "heldout_voc:validation", "heldout_coins:validation")  # fmt: skip
SET_LABELS = {"intricate": "intricate scenes (fine-tuning kind)", "generic": "generic scenes",
              "heldout_hopper": "real photo: portrait (salient)",
              "heldout_motorcycle": "real photo: motorcycle (salient)",
              "heldout_flower": "real photo: dahlia (salient)",
              "heldout_voc": "real photo: VOC", "heldout_coins": "real photo: coins"}  # fmt: skip


def write_data(workdir: Path) -> None:
    """The scene datasets and the held-out photos, written and prepared."""
    from sum_jax.data import builder
    from sum_jax.pretrain import heldout, scenes

    data, prepared = workdir / "data", workdir / "prepared"
    for name, split, seed, count, objects, _ in SCENE_SETS:
        for index in range(count):
            image, masks = scenes.make_scene(seed, index, SCENE_SIDE, objects=objects)
            folder_writer.write_item(
                data / name, split, f"{name}_{split}_{index:03d}", image, masks
            )
    name, seed, count = UNLABELLED
    folder = data / name
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, _ = scenes.make_scene(seed, index, SCENE_SIDE)
        folder_writer.save_png(folder / f"sa_{index + 1}.png", image)
        h, w = image.shape[:2]
        info = {"image_id": index + 1, "height": h, "width": w, "file_name": f"sa_{index + 1}.png"}
        meta = folder / f"sa_{index + 1}.json"
        if not meta.exists():
            atomic_write(meta, json.dumps({"image": info, "annotations": []}))
    specs = []
    for name in ("intricate", "generic"):
        splits = ",".join(f"{s}:{s}" for n, s, *_ in SCENE_SETS if n == name)
        task = next(t for n, *_, t in SCENE_SETS if n == name)
        specs.append(folder_writer.folder_spec(name, data / name, task, splits))
    specs.append({"dataset": UNLABELLED[0], "format": "sa1b", "task_id": 0,
                  "source_dir": str(folder),
                  "options": {"keep_masks": False, "image_globs": ["sa_*.png"]}})  # fmt: skip
    for spec in specs:
        builder.prepare(spec, prepared, progress=False)
    heldout.write_heldout(data / "heldout")
    heldout.prepare_heldout(data / "heldout", prepared)


def make_pseudo_labels(workdir: Path) -> None:
    """Pseudo-labels, refiner and uncertainty maps, with the demo's stage settings."""
    from configs import demo
    from sum_jax.pseudo_labels.generation import generate_pseudo_labels
    from sum_jax.train_refiner.training import train_refiner
    from sum_jax.uncertainty.maps import compute_uncertainty

    stages = demo.get_config().demo
    prepared, out = workdir / "prepared", workdir / "pseudo_labels"
    pl = ml_collections.ConfigDict(stages.pseudo_labels.to_dict())
    pl.checkpoint, pl.data_dir = "pretrained:small", str(prepared)
    pl.dataset, pl.output_dir = "unlabelled:train", str(out)
    generate_pseudo_labels(pl, progress=False)
    rc = ml_collections.ConfigDict(stages.refiner.to_dict())
    rc.checkpoint, rc.data_dir, rc.dataset = "pretrained:small", str(prepared), "intricate:train"
    report = train_refiner(rc, workdir / "refiner", progress=False)
    uc = ml_collections.ConfigDict(stages.uncertainty.to_dict())
    uc.refiner = str(report.get("output") or workdir / "refiner" / "refiner")
    uc.data_dir, uc.dataset, uc.pseudo_labels = str(prepared), "unlabelled:train", str(out)
    compute_uncertainty(uc, progress=False)


def _pinned(command: list[str], core: int | None) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(core), *command]


def run_jobs(jobs: list[tuple[str, list[str], Path]], parallel: int) -> None:
    """Runs `(name, command, log file)` jobs, `parallel` at a time, each on its own core;
    raises naming the job and its log when one fails."""
    cores = list(range(min(parallel, os.cpu_count() or 1)))
    pending, running = list(jobs), {}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    while pending or running:
        while pending and len(running) < len(cores):
            name, command, logfile = pending.pop(0)
            core = next(c for c in cores if c not in running.values())
            logfile.parent.mkdir(parents=True, exist_ok=True)
            with open(logfile, "w") as f:
                proc = subprocess.Popen(_pinned(command, core if parallel > 1 else None),
                                        cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)  # fmt: skip
            running[(name, proc, logfile)] = core
            log.info("started %s on core %d (log: %s)", name, core, logfile)
        time.sleep(2)
        for key in [k for k in running if k[1].poll() is not None]:
            name, proc, logfile = key
            del running[key]
            if proc.returncode:
                for other in running:
                    other[1].kill()
                raise RuntimeError(f"{name} failed (exit {proc.returncode}); see {logfile}")
            log.info("finished %s", name)


def train_jobs(workdir: Path, seeds: list[int], steps: int | None) -> list:
    jobs = []
    for seed in seeds:
        for method in METHODS:
            run = workdir / "runs" / f"{method}_{seed}"
            if (run / "model" / "sam_config.json").is_file():
                continue
            command = [sys.executable, "-m", "sum_jax.train",
                       f"--config=configs/small_scale.py:{method}", f"--workdir={run}",
                       f"--config.data.data_dir={workdir / 'prepared'}",
                       f"--config.data.pseudo_label_dir={workdir / 'pseudo_labels'}",
                       f"--config.seed={seed}"]  # fmt: skip
            if steps:
                command.append(f"--config.train.num_steps={steps}")
            jobs.append(
                (f"train {method} seed {seed}", command, workdir / "logs" / f"{run.name}.log")
            )
    return jobs


def models(workdir: Path, seeds: list[int]) -> dict[str, str]:
    out = {"SAM": "pretrained:small"}
    for method in METHODS:
        for seed in seeds:
            out[f"{method}_{seed}"] = str(workdir / "runs" / f"{method}_{seed}" / "model")
    return out


def eval_jobs(workdir: Path, seeds: list[int]) -> list:
    jobs = []
    for name, spec in models(workdir, seeds).items():
        out = workdir / "eval" / name
        if (out / "summary.json").is_file():
            continue
        command = [sys.executable, "-m", "sum_jax.evaluate", "--config=configs/eval.py",
                   f"--checkpoint={name}={spec}", f"--workdir={out}",
                   f"--config.data_dir={workdir / 'prepared'}",
                   f"--config.eval_sets={','.join(EVAL_SETS)}", "--config.protocols=point,box",
                   "--config.num_rounds=5", "--config.noc_max_clicks=0",
                   "--config.bucket_sizes=512", "--config.num_examples=2"]  # fmt: skip
        jobs.append((f"evaluate {name}", command, workdir / "logs" / f"eval_{name}.log"))
    return jobs


def collect(workdir: Path, seeds: list[int]) -> dict[str, Any]:
    """`{group: {set: {protocol: {"click1"|"click5": [one value per model]}}}}` of the
    evaluators' summaries (mode `single`: the fixed round-1 output)."""
    groups: dict[str, Any] = {}
    for name in models(workdir, seeds):
        summary = json.loads((workdir / "eval" / name / "summary.json").read_text())
        group = "SAM" if name == "SAM" else {"vanilla": "Vanilla", "sum": "SUM"}[name.split("_")[0]]
        for protocol, modes in summary["protocols"].items():
            for dataset, numbers in modes["single"]["datasets"].items():
                name_only = dataset.split(":")[0]
                cell = (
                    groups.setdefault(group, {})
                    .setdefault(name_only, {})
                    .setdefault(protocol, {"click1": [], "click5": []})
                )
                cell["click1"].append(numbers["miou"][0])
                cell["click5"].append(numbers["miou"][4])
    return groups


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def render(results: dict[str, Any], seeds: list[int], seconds: float, steps: int) -> str:
    lines = [
        "# SUM at small scale: SAM vs Vanilla vs SUM",
        "",
        (
            f"From `pretrained:small`; Vanilla and SUM fine-tuned for {steps} steps, seeds "
            f"{', '.join(map(str, seeds))} (mean ± sample std over seeds; SAM is one model). "
            "mIoU of the evaluator's fixed single output after 1 and 5 interactions "
            "(point: 1 / 5 clicks; box: the box / box + 4 clicks). "
            f"Made by `python -m experiments.small_scale` in {seconds / 60:.0f} min."
        ),
        "",
    ]
    for protocol in ("point", "box"):
        lines += [f"## {protocol} protocol", "",
                  "| set | SAM @1 | Vanilla @1 | SUM @1 | SAM @5 | Vanilla @5 | SUM @5 |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for dataset, label in SET_LABELS.items():
            row = [label]
            for click in ("click1", "click5"):
                for group in ("SAM", "Vanilla", "SUM"):
                    row.append(_cell(results[group][dataset][protocol][click]))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += ["![mIoU after 5 interactions](results.png)", ""]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    sets = list(SET_LABELS)
    for ax, protocol in zip(axes, ("point", "box")):
        for i, group in enumerate(("SAM", "Vanilla", "SUM")):
            values = [results[group][s][protocol]["click5"] for s in sets]
            means = [np.mean(v) for v in values]
            spread = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values]
            ax.bar(np.arange(len(sets)) + (i - 1) * 0.27, means, 0.27, yerr=spread, label=group,
                   capsize=3)  # fmt: skip
        ax.set_xticks(np.arange(len(sets)), [SET_LABELS[s] for s in sets], rotation=15, fontsize=8)
        ax.set_title(f"{protocol} protocol, mIoU after 5 interactions")
        ax.set_ylim(0, 1)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(workdir: Path, seeds: list[int], jobs: int, steps: int | None) -> str:
    """Every stage (each skipped when its output exists); returns RESULTS.md's text."""
    start = time.perf_counter()
    log.info("== data")
    write_data(workdir)
    if (
        not any((workdir / "pseudo_labels").glob("*.npz"))
        or not (workdir / "refiner" / "refiner" / "sam_config.json").is_file()
    ):
        log.info("== pseudo-labels, refiner, uncertainty")
        make_pseudo_labels(workdir)
    log.info("== training (%d runs)", 2 * len(seeds))
    run_jobs(train_jobs(workdir, seeds, steps), jobs)
    log.info("== evaluation")
    run_jobs(eval_jobs(workdir, seeds), jobs)
    results = collect(workdir, seeds)
    from configs import small_scale

    steps = steps or small_scale.get_config().train.num_steps
    seconds = time.perf_counter() - start
    atomic_write(workdir / "results.json", json.dumps(
        {"seeds": seeds, "steps": steps, "seconds": round(seconds), "miou": results}, indent=2))  # fmt: skip
    plot(results, workdir / "results.png")
    text = render(results, seeds, seconds, steps)
    atomic_write(workdir / "RESULTS.md", text)
    return text
