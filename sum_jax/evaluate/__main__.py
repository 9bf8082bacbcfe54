"""Interactive-segmentation evaluation of one or more checkpoints.

    python -m sum_jax.evaluate --config=configs/eval.py --checkpoint=DIR --workdir=OUT \\
        --config.data_dir=/data/prepared

See configs/eval.py for the settings and what is written; the library side is
`sum_jax.runner.evaluate_checkpoints`.
"""

from __future__ import annotations

import json

from absl import flags

from sum_jax import checkpointing, cli, config_checks, output_dir, runtime
from sum_jax.evaluate import reports, runner

_CONFIG = cli.config_flag("eval.py", "Evaluation config.")
_CHECKPOINT = flags.DEFINE_multi_string(
    "checkpoint", None, "Model directory, NAME=DIR, or random:<variant>; repeat to compare."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where reports are written.")
flags.mark_flags_as_required(["checkpoint", "workdir"])


def main(argv: list[str]) -> None:
    del argv
    config = _CONFIG.value
    config_checks.check(config, "evaluate")
    # Everything that needs no model is checked before the first one loads.
    cli.check_output_dir(_WORKDIR.value, "--workdir")
    refs = [ref for ref, _ in runner.parse_eval_sets(config.eval_sets)]
    cli.check_prepared(config.data_dir, refs, "config.eval_sets")
    models = [checkpointing.parse_checkpoint(spec)[1] for spec in _CHECKPOINT.value]
    for model in models:
        cli.check_model_dir(model, "--checkpoint")
    variant = runtime.largest([runtime.model_variant(m) for m in models])
    runtime.report("evaluate", config_name=runtime.config_name(), variant=variant)
    with output_dir.claim(_WORKDIR.value, "evaluate", "--workdir"):
        summaries = runner.evaluate_checkpoints(config, _CHECKPOINT.value, _WORKDIR.value)
    for name, summary in summaries.items():
        numbers = reports.overall_numbers(summary, ("miou", "mbiou", "noc", "nof"))
        for mode, line in numbers.items():
            print(f"{name} {mode} overall: {json.dumps(line)}")
        for dataset, why in summary.get("not_comparable", {}).items():
            print(f"{name}: {dataset} is not comparable with the paper ({why})")
    print(f"reports in {_WORKDIR.value}")


if __name__ == "__main__":
    cli.run(main)
