"""Converts official PyTorch SAM checkpoints to sum_jax model directories, and back.

    # PyTorch .pth (a plain state_dict) -> Orbax model directory
    python -m convert.sam_checkpoint --input sam_vit_h_4b8939.pth --output ckpt/sam_vit_h

    # sum_jax model directory -> .pth that `segment_anything.sam_model_registry[...]` loads
    python -m convert.sam_checkpoint --to-pytorch --input ckpt/sam_vit_h --output sam_ft.pth

The variant (vit_b / vit_l / vit_h / tiny) is inferred from tensor shapes; `--variant` forces
one. Every tensor is accounted for both ways: a missing, extra or mis-shaped tensor stops the
conversion with its name. Reading is memory-mapped and tensors are converted one at a time,
so peak memory stays near one copy of the weights. Needs `torch` (pip install torch).
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from flax import nnx
from tqdm import tqdm

from convert import key_map
from sum_jax import checkpointing
from sum_jax.fileio import atomic_path
from sum_jax.models.sam import VARIANTS, SamConfig


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the file and the problem."""


def _import_torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConversionError(
            "reading or writing PyTorch checkpoints needs torch: pip install torch"
        ) from e
    return torch


def flax_shapes(config: SamConfig) -> dict[str, tuple[int, ...]]:
    """{dotted Flax path: shape} of every variable of the model `config` describes."""
    state = nnx.to_pure_dict(nnx.state(checkpointing.abstract_sam(config)))
    return {k: tuple(v.shape) for k, v in key_map.flatten(state).items()}


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Opens a `.pth` memory-mapped; returns {key: torch.Tensor}. Clear errors for bad files."""
    torch = _import_torch()
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        # Old-style (non-zip) files cannot be memory-mapped; try once more without mmap.
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - reported with the first, more telling error
            raise ConversionError(
                f"{path} is not a readable PyTorch checkpoint (truncated or corrupt download?): "
                f"{type(e).__name__}: {e}. Download it again and compare its size/checksum."
            ) from e
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ConversionError(
            f"{path} holds a {type(obj).__name__}, not a state_dict of tensors; SAM checkpoints "
            "are plain state_dicts (sam_vit_{b,l,h}_*.pth)."
        )
    return dict(obj)


def infer_config(path: str, torch_shapes: Mapping[str, tuple[int, ...]], variant: str | None):
    """The `SamConfig` whose tensors match `torch_shapes` exactly, or a ConversionError."""
    candidates = [variant] if variant else list(VARIANTS)
    if variant and variant not in VARIANTS:
        raise ConversionError(f"unknown --variant {variant!r}; choose from {sorted(VARIANTS)}")
    reports = {}
    for name in candidates:
        problems = key_map.check_keys(flax_shapes(VARIANTS[name]), torch_shapes)
        if not problems:
            return name, VARIANTS[name]
        reports[name] = problems
    best = min(reports, key=lambda n: len(reports[n]))
    lines = reports[best]
    shown = "\n  ".join(lines[:20]) + (
        f"\n  ... and {len(lines) - 20} more" if len(lines) > 20 else ""
    )
    what = f"the {best} architecture" if variant else f"any SAM variant (closest: {best})"
    raise ConversionError(
        f"{path} does not match {what}; {len(lines)} problem(s):\n  {shown}\n"
        "Is this an official SAM (v1) checkpoint? SAM 2, HQ-SAM and MobileSAM checkpoints have "
        "other tensors."
    )


def _float32_numpy(tensor) -> np.ndarray:
    """A float32 numpy view of a tensor (a copy only if it is stored in another dtype)."""
    torch = _import_torch()
    tensor = tensor.detach()
    return (tensor if tensor.dtype == torch.float32 else tensor.float()).numpy()


def pth_to_orbax(input_path: str, output_dir: str, variant: str | None = None) -> SamConfig:
    """Converts a PyTorch SAM state_dict file to a model directory; returns its config."""
    tensors = read_torch_state_dict(input_path)
    torch_shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    name, config = infer_config(input_path, torch_shapes, variant)
    shapes = flax_shapes(config)
    total = sum(int(np.prod(s)) * 4 for s in torch_shapes.values())
    print(f"{input_path}: SAM {name}, {len(tensors)} tensors, {total / 2**20:.0f} MiB", flush=True)
    with tqdm(total=total, unit="B", unit_scale=True, desc="converting", file=sys.stdout) as bar:
        flat = key_map.convert_torch_to_flax(
            tensors,
            shapes,
            to_numpy=_float32_numpy,
            on_tensor=lambda k: bar.update(int(np.prod(torch_shapes[k])) * 4),
        )
    del tensors
    like = nnx.to_pure_dict(nnx.state(checkpointing.abstract_sam(config)))
    print(f"writing {output_dir}", flush=True)
    checkpointing.save_state_dict(output_dir, config, key_map.unflatten(flat, like))
    return config


def orbax_to_pth(input_dir: str, output_path: str) -> dict[str, Any]:
    """Writes a model directory as a PyTorch state_dict file loadable with `strict=True`."""
    torch = _import_torch()
    config = checkpointing.read_config(input_dir)
    flat = key_map.flatten(checkpointing.load_state_dict(input_dir, config))
    state_dict = {}
    # Pop as we go: each array is freed once its tensor exists, so memory stays near one copy.
    for path in tqdm(list(flat), desc="converting", file=sys.stdout):
        array = flat.pop(path)
        key = key_map.torch_key(path)
        if key is None:
            if np.any(np.asarray(array) != 0):
                print(
                    f"note: {path} (SUM task prompt) is not part of SAM's PyTorch model and is "
                    "not exported; the PyTorch model behaves as with no task prompt.",
                    flush=True,
                )
            continue
        state_dict[key] = torch.from_numpy(
            np.ascontiguousarray(key_map.to_torch_layout(path, array))
        )
    with atomic_path(output_path) as tmp:
        torch.save(state_dict, tmp)
    print(f"wrote {output_path}: {len(state_dict)} tensors", flush=True)
    return state_dict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help=".pth file (or model dir with --to-pytorch)")
    parser.add_argument("--output", required=True, help="model dir (or .pth with --to-pytorch)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="force the architecture")
    parser.add_argument("--to-pytorch", action="store_true", help="model dir -> .pth")
    args = parser.parse_args(argv)
    try:
        if args.to_pytorch:
            orbax_to_pth(args.input, args.output)
        else:
            pth_to_orbax(args.input, args.output, args.variant)
    except (ConversionError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2  # sum_jax.cli.EXIT_USAGE: a known failure, explained in one paragraph
    return 0


if __name__ == "__main__":
    sys.exit(main())
