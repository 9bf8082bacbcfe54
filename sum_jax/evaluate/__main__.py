"""Interactive-segmentation evaluation of one or more checkpoints.

    python -m sum_jax.evaluate --config=configs/eval.py --checkpoint=DIR --workdir=OUT \\
        --config.data_dir=/data/prepared

See configs/eval.py for the settings and what is written; the library side is
`sum_jax.runner.evaluate_checkpoints`.
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from sum_jax.evaluate import reports, runner

_DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "eval.py"
_CONFIG = config_flags.DEFINE_config_file("config", str(_DEFAULT_CONFIG), "Evaluation config.")
_CHECKPOINT = flags.DEFINE_multi_string(
    "checkpoint", None, "Model directory, NAME=DIR, or random:<variant>; repeat to compare."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where reports are written.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _CHECKPOINT.value or not _WORKDIR.value:
        raise app.UsageError("--checkpoint and --workdir are required")
    summaries = runner.evaluate_checkpoints(_CONFIG.value, _CHECKPOINT.value, _WORKDIR.value)
    for name, summary in summaries.items():
        numbers = reports.overall_numbers(summary, ("miou", "mbiou", "noc", "nof"))
        for mode, line in numbers.items():
            print(f"{name} {mode} overall: {json.dumps(line)}")
    print(f"reports in {_WORKDIR.value}")


if __name__ == "__main__":
    app.run(main)
