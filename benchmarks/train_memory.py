"""Per-device memory and FLOPs of the SUM training step, from XLA's analysis of the compiled
step at the config's real model size, on abstract inputs (no memory is allocated).

    python benchmarks/train_memory.py --config configs/ft_small.py
    python benchmarks/train_memory.py --config configs/ft_small.py --images 1 --microbatches 1 \
        --set remat=none
    python benchmarks/train_memory.py --config configs/ft_large.py --devices 8

Loads the config as `--config=...` does, builds the abstract model (`nnx.eval_shape`) with
the config's compute dtype, remat and attention, the abstract sharded state and batch, lowers
the jitted step and compiles it for the local backend (CPU here: `--devices N` fakes N host
devices, so FSDP sharding shows in the per-device numbers). `--images` sets the images per
device (the global batch is that times the device count; default: the config's own batch)
and `--microbatches` overrides `config.train.microbatches`; `--set key=value` overrides
`config.model.*` fields (`compute_dtype`, `remat`, `attention`, `scan_blocks`,
`mask_chunks`) and `--loss key=value` `config.loss.*` fields (e.g. `--loss resolution=full`).

`--rounds-only` compiles only the gradient of the 7 interactive rounds
(`train.rounds.training_rounds`, decoder and prompt encoder at the variant's size) from a
given image embedding of one image, with the config's dtype and remat: a compile of seconds
instead of minutes, for comparing what the rounds cost, e.g. per `config.loss.resolution`
(its `temp_gib` adds to a full step's; the encoder's part does not depend on the loss).

With `config.lora.targets` set (e.g. `--config configs/ablations.py:sum+lora_encoder,ft_small`)
the step is LoRA fine-tuning; `benchmarks/lora_memory.py` compares it with full fine-tuning.

Prints one JSON line per run, per device: trainable (`params`) and frozen (`model_state`,
LoRA's base) parameter counts and bytes, optimiser-state bytes, XLA's
arguments, outputs, aliased (donated) and temporary bytes, the total
`arguments + temporaries + outputs - aliased` in GiB, the step's FLOPs (XLA's cost
analysis; a loop body counts once, so compare FLOPs between runs with the same micro-batch
count) and the compile time. `--remat-overhead` compiles the same step again with
`remat=none` and adds `flops_no_remat` and `remat_flops_ratio`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = 2**30


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/ft_small.py", help="path[:arg]")
    parser.add_argument("--images", type=int, default=0, help="images per device (0: config)")
    parser.add_argument("--microbatches", type=int, default=None)
    parser.add_argument("--masks", type=int, default=0, help="masks per image (0: config)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds (0: config)")
    parser.add_argument("--devices", type=int, default=0, help="fake N CPU devices")
    parser.add_argument("--set", action="append", default=[], help="model.KEY=VALUE")
    parser.add_argument("--loss", action="append", default=[], help="loss.KEY=VALUE")
    parser.add_argument("--remat-overhead", action="store_true")
    parser.add_argument("--rounds-only", action="store_true", help="compile the rounds only")
    parser.add_argument(
        "--query-chunk", type=int, default=0, help="queries per global-attention chunk (CPU)"
    )
    return parser.parse_args()


def load_config(spec: str):
    from absl import flags
    from ml_collections import config_flags

    holder = flags.FlagValues()
    config_flags.DEFINE_config_file("benchmark_config", spec, flag_values=holder)
    holder(["prog"])
    return holder["benchmark_config"].value


def sharded_bytes(tree) -> int:
    """Bytes one device holds of a tree of sharded `ShapeDtypeStruct`s."""
    import jax
    import numpy as np

    total = 0
    for x in jax.tree.leaves(tree):
        shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
        total += int(np.prod(shape)) * np.dtype(x.dtype).itemsize
    return total


def compile_step(config):
    """`(compiled step, abstract state, setup, model config, compile seconds)`."""
    import dataclasses

    import jax
    import numpy as np

    from sum_jax.models.sam import VARIANTS, execution_overrides
    from sum_jax.train import adapters, sharding
    from sum_jax.train.step import abstract_batch, jit_train_step, train_setup

    model_config = dataclasses.replace(
        VARIANTS[config.model.variant], **execution_overrides(config.model)
    )
    mesh_shape = tuple(config.sharding.mesh_shape)
    if np.prod([d for d in mesh_shape if d != -1]) > len(jax.devices()):
        mesh_shape = (1, -1)
    mesh = sharding.make_mesh(mesh_shape)
    # With config.lora.targets set: the adapters on the abstract model (LoRA fine-tuning).
    setup, abstract = train_setup(adapters.abstract_model(model_config, config), config, mesh)
    batch = abstract_batch(config, setup, model_config)
    t0 = time.perf_counter()
    compiled = jit_train_step(setup).lower(abstract, batch).compile()
    return compiled, abstract, setup, model_config, time.perf_counter() - t0


def flops_of(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", float("nan")))


def measure(config) -> dict:
    import jax

    compiled, abstract, setup, model_config, seconds = compile_step(config)
    mem = compiled.memory_analysis()
    total = (
        mem.argument_size_in_bytes
        + mem.temp_size_in_bytes
        + mem.output_size_in_bytes
        - mem.alias_size_in_bytes
    )
    devices = len(jax.devices())
    return {
        "variant": config.model.variant,
        "compute_dtype": model_config.dtype,
        "remat": model_config.remat,
        "attention": model_config.attention,
        "scan_blocks": model_config.scan_blocks,
        "devices": f"{devices} x {jax.devices()[0].device_kind}",
        "mesh": dict(setup.mesh.shape),
        "batch_size": int(config.train.batch_size),
        "microbatches": setup.microbatches,
        "images_per_device_per_microbatch": int(config.train.batch_size)
        // setup.microbatches
        // devices,
        "masks_per_image": int(config.train.masks_per_image),
        "rounds": int(config.interactive.num_rounds),
        "lora_targets": list(setup.lora.targets) if setup.lora else [],
        "trainable_params": sum(x.size for x in jax.tree.leaves(abstract.params)),
        "frozen_params": sum(
            x.size for x in jax.tree.leaves(abstract.model_state) if x.dtype.kind == "f"
        ),
        "param_gib": round(sharded_bytes(abstract.params) / GIB, 3),
        "frozen_gib": round(sharded_bytes(abstract.model_state) / GIB, 3),
        "opt_state_bytes": sharded_bytes(abstract.opt_state),
        "opt_state_gib": round(sharded_bytes(abstract.opt_state) / GIB, 3),
        "argument_gib": round(mem.argument_size_in_bytes / GIB, 3),
        "output_gib": round(mem.output_size_in_bytes / GIB, 3),
        "alias_gib": round(mem.alias_size_in_bytes / GIB, 3),
        "temp_gib": round(mem.temp_size_in_bytes / GIB, 3),
        "total_gib": round(total / GIB, 3),
        "flops": flops_of(compiled),
        "compile_s": round(seconds, 1),
    }


def measure_rounds(config) -> dict:
    """XLA's memory analysis of the gradient of the interactive rounds alone (one image)."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from sum_jax.checkpointing import abstract_sam
    from sum_jax.models.sam import VARIANTS, execution_overrides
    from sum_jax.train.rounds import InteractiveSettings, training_rounds

    model_config = dataclasses.replace(
        VARIANTS[config.model.variant], **execution_overrides(config.model)
    )
    graphdef, state = nnx.split(abstract_sam(model_config))
    settings = InteractiveSettings.from_config(config)
    s, low, n = model_config.img_size, model_config.low_res_size, int(config.train.masks_per_image)
    grid = s // 16
    shapes = {
        "image_size": ((1, 2), jnp.int32),
        "masks": ((1, n, low, low), jnp.uint8),
        "mask_valid": ((1, n), jnp.bool_),
        "uncertainty": ((1, n, low, low), jnp.uint8),
        "is_pseudo": ((1,), jnp.bool_),
        "task_id": ((1,), jnp.int32),
    }
    if settings.loss_resolution != "low":
        shapes["masks_full"] = ((1, n, s, s), jnp.uint8)
    batch = {k: jax.ShapeDtypeStruct(shape, dt) for k, (shape, dt) in shapes.items()}
    embedding = jax.ShapeDtypeStruct((1, grid, grid, model_config.prompt_embed_dim), jnp.float32)
    key = jax.eval_shape(lambda: jax.random.key(0))

    def loss(st, emb, bt, k):
        return training_rounds(nnx.merge(graphdef, st), emb, bt, k, settings)[0]

    t0 = time.perf_counter()
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(state, embedding, batch, key).compile()
    seconds = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    return {
        "variant": config.model.variant,
        "what": "rounds only (gradient of training_rounds from an embedding), 1 image",
        "compute_dtype": model_config.dtype,
        "remat_rounds": settings.remat_rounds,
        "masks_per_image": n,
        "rounds": settings.num_rounds,
        "argument_gib": round(mem.argument_size_in_bytes / GIB, 3),
        "temp_gib": round(mem.temp_size_in_bytes / GIB, 3),
        "output_gib": round(mem.output_size_in_bytes / GIB, 3),
        "flops": flops_of(compiled),
        "compile_s": round(seconds, 1),
    }


def main() -> None:
    args = parse_args()
    if args.devices:
        flag = f"--xla_force_host_platform_device_count={args.devices}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    import jax

    from sum_jax.models import image_encoder

    if args.query_chunk:
        image_encoder.QUERY_CHUNK = args.query_chunk
    config = load_config(args.config)
    devices = len(jax.devices())
    if args.images:
        config.train.batch_size = args.images * devices
    if args.microbatches is not None:
        config.train.microbatches = args.microbatches
    if args.masks:
        config.train.masks_per_image = args.masks
    if args.rounds:
        config.interactive.num_rounds = args.rounds
    for item in args.set:
        key, value = item.split("=", 1)
        field = config.model[key]
        config.model[key] = type(field)(value == "True" if isinstance(field, bool) else value)
    for item in args.loss:
        key, value = item.split("=", 1)
        field = config.loss[key]
        config.loss[key] = type(field)(value == "True" if isinstance(field, bool) else value)
    if args.rounds_only:
        result = {"config": args.config, **measure_rounds(config)}
        result["loss_resolution"] = str(config.loss.get("resolution", "low"))
        print(json.dumps(result), flush=True)
        return
    result = {"config": args.config, **measure(config)}
    result["loss_resolution"] = str(config.loss.get("resolution", "low"))
    result["query_chunk"] = image_encoder.QUERY_CHUNK
    if args.remat_overhead:
        config.model.remat = "none"
        plain = measure(config)
        result["flops_no_remat"] = plain["flops"]
        result["total_gib_no_remat"] = plain["total_gib"]
        result["temp_gib_no_remat"] = plain["temp_gib"]
        result["remat_flops_ratio"] = round(result["flops"] / plain["flops"], 4)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
