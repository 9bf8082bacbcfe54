"""Memory of LoRA fine-tuning against full fine-tuning: the same SUM training step compiled
for ViT-H at full size, with no adapters, with LoRA on the encoder and with LoRA on encoder
and decoder (configs/ablations.py's `lora_encoder`, `lora_encoder_decoder`).

    python benchmarks/lora_memory.py --config configs/ft_small.py
    python benchmarks/lora_memory.py --config configs/ft_small.py --images 1 --microbatches 1
    python benchmarks/lora_memory.py --config configs/ft_large.py --devices 8 --only lora_encoder

Uses `benchmarks/train_memory.py`'s helpers: XLA's memory analysis of the step compiled on
abstract inputs (`nnx.eval_shape`, no memory allocated), per device. Prints one JSON line per
setting (trainable and frozen parameter counts, optimiser-state bytes, arguments,
temporaries, total per device, compile seconds) and then a Markdown table of the three.
Each ViT-H compile takes minutes on a loaded 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_memory

SETTINGS = ("full", "lora_encoder", "lora_encoder_decoder")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/ft_small.py", help="path[:arg]")
    parser.add_argument("--images", type=int, default=0, help="images per device (0: config)")
    parser.add_argument("--microbatches", type=int, default=None)
    parser.add_argument("--devices", type=int, default=0, help="fake N CPU devices")
    parser.add_argument("--only", action="append", choices=SETTINGS, help="settings to run")
    parser.add_argument("--rank", type=int, default=0, help="LoRA rank (0: config's)")
    return parser.parse_args()


def table(rows: list[dict]) -> str:
    head = ("| setting | trainable params | frozen params (and buffers) | optimiser state | arguments | "
            "temporaries | total per device |\n|---|---|---|---|---|---|---|")  # fmt: skip
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['trainable_params']:,} | {r['frozen_params']:,} | "
            f"{r['opt_state_bytes'] / 2**20:,.1f} MiB | {r['argument_gib']:.2f} GiB | "
            f"{r['temp_gib']:.2f} GiB | **{r['total_gib']:.2f} GiB** |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.devices:
        flag = f"--xla_force_host_platform_device_count={args.devices}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    import jax

    from configs import ablations

    rows = []
    for setting in args.only or SETTINGS:
        config = train_memory.load_config(args.config)
        if args.images:
            config.train.batch_size = args.images * len(jax.devices())
        if args.microbatches is not None:
            config.train.microbatches = args.microbatches
        if setting != "full":
            lr = config.optimizer.lr
            ablations.apply(config, setting)
            config.optimizer.lr = lr  # a scalar: no effect on memory
            if args.rank:
                config.lora.rank = args.rank
        assert bool(config.lora.targets) == (setting != "full")
        row = {"setting": setting, "config": args.config, **train_memory.measure(config)}
        if setting != "full":
            row["rank"] = int(config.lora.rank)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(table(rows))


if __name__ == "__main__":
    main()
