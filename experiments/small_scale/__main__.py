"""`python -m experiments.small_scale`: the command line of the small-scale experiment.

The flags live here, not in the package, so that importing `experiments.small_scale` (as the
tests do, next to `experiments.run_table`) defines no absl flags.
"""

from __future__ import annotations

import logging
from pathlib import Path

from absl import flags

from experiments import small_scale
from sum_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", "out/small_scale", "Where everything is written.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Fine-tuning seeds.")
_JOBS = flags.DEFINE_integer("jobs", 2, "Trainings / evaluations run at once (one per core).")
_STEPS = flags.DEFINE_integer("steps", None, "Training steps (default: configs/small_scale.py).")


def main(argv: list[str]) -> None:
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    seeds = [int(s) for s in _SEEDS.value]
    print(small_scale.run(Path(_WORKDIR.value).absolute(), seeds, _JOBS.value, _STEPS.value))


if __name__ == "__main__":
    cli.run(main)
