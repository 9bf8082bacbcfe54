"""Converts official PyTorch SAM checkpoints to sum_jax model directories, and back.

    # PyTorch .pth (a plain state_dict) -> Orbax model directory
    python -m convert.sam_checkpoint --input sam_vit_h_4b8939.pth --output ckpt/sam_vit_h

    # sum_jax model directory -> .pth that `segment_anything.sam_model_registry[...]` loads
    python -m convert.sam_checkpoint --to-pytorch --input ckpt/sam_vit_h --output sam_ft.pth

The variant (vit_b / vit_l / vit_h / tiny) is inferred from tensor shapes; `--variant` forces
one. HQ-SAM checkpoints (`sam_hq_vit_{b,l,h}.pth` of `segment_anything_hq`, recognised by
their `mask_decoder.hf_token`) become HQ models (`SamConfig.hq`), and convert back to files
that `segment_anything_hq.sam_model_registry[...]` loads. Every tensor is accounted for both ways: a missing, extra or mis-shaped tensor stops the
conversion with its name. Reading is memory-mapped and tensors are converted one at a time,
so peak memory stays near one copy of the weights. Needs `torch` (pip install torch).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx
from tqdm import tqdm

from convert import key_map
from sum_jax import checkpointing, output_dir
from sum_jax.cli import disk_message
from sum_jax.cli import message as cli_message
from sum_jax.fileio import atomic_path, check_output_dir
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
    if path.is_dir():
        raise ConversionError(
            f"--input={path} is a folder; expected a .pth file (a model directory is converted "
            "back with --to-pytorch)"
        )
    if not path.is_file():
        raise ConversionError(f"--input={path}: no such file")
    if path.stat().st_size == 0:
        raise ConversionError(
            f"--input={path} is empty (0 bytes): an interrupted download? Download it again."
        )
    try:
        obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        # Old-style (non-zip) files cannot be memory-mapped; try once more without mmap.
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - reported with the first, more telling error
            raise ConversionError(
                f"{path} is not a readable PyTorch checkpoint (truncated or corrupt download?): "
                f"{type(e).__name__}: {str(e).split('. ')[0]}. Download it again and compare its "
                "size/checksum."
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


SAM_PREFIXES = ("image_encoder.", "prompt_encoder.", "mask_decoder.")


def describe_tensors(torch_shapes: Mapping[str, tuple[int, ...]]) -> str:
    """What a state dict looks like, for a message: its size and top-level tensor names."""
    prefixes: dict[str, int] = {}
    for key in torch_shapes:
        head = key.split(".", 1)[0]
        prefixes[head] = prefixes.get(head, 0) + 1
    shown = ", ".join(f"{k}.* ({n})" for k, n in list(prefixes.items())[:8])
    more = f", ... {len(prefixes) - 8} more" if len(prefixes) > 8 else ""
    return f"{len(torch_shapes)} tensors named {shown}{more}"


HQ_KEY = "mask_decoder.hf_token.weight"  # present in HQ-SAM checkpoints only


def is_hq(torch_shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """Whether a state dict is HQ-SAM's (it has the HQ output token)."""
    return HQ_KEY in torch_shapes


def variant_config(name: str, hq: bool = False) -> SamConfig:
    """`VARIANTS[name]`, with HQ-SAM's parts when `hq`."""
    return dataclasses.replace(VARIANTS[name], hq=True) if hq else VARIANTS[name]


def _likely_variants(torch_shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """VARIANTS ordered by how well the encoder's width and depth match (cheap: no model
    shapes are built), so the full check usually runs once."""
    width = torch_shapes.get("image_encoder.patch_embed.proj.weight", (None,))[0]
    blocks = {k.split(".")[2] for k in torch_shapes if k.startswith("image_encoder.blocks.")}
    return sorted(
        VARIANTS,
        key=lambda n: (
            (VARIANTS[n].encoder_embed_dim, VARIANTS[n].encoder_depth) != (width, len(blocks))
        ),
    )


def _matching_variant(torch_shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    for name in _likely_variants(torch_shapes)[:1]:
        config = variant_config(name, is_hq(torch_shapes))
        if not key_map.check_keys(flax_shapes(config), torch_shapes):
            return name
    return None


def infer_config(path: str, torch_shapes: Mapping[str, tuple[int, ...]], variant: str | None):
    """The `SamConfig` whose tensors match `torch_shapes` exactly, or a ConversionError."""
    if variant and variant not in VARIANTS:
        raise ConversionError(f"unknown --variant {variant!r}; choose from {sorted(VARIANTS)}")
    sam_keys = [k for k in torch_shapes if k.startswith(SAM_PREFIXES)]
    if not sam_keys:
        raise ConversionError(
            f"{path} is not a SAM checkpoint: it holds {describe_tensors(torch_shapes)}; a SAM "
            f"checkpoint's tensors start with {', '.join(p + '*' for p in SAM_PREFIXES)} "
            "(official files: sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth, sam_vit_h_4b8939.pth)."
        )
    hq = is_hq(torch_shapes)
    if variant:
        problems = key_map.check_keys(flax_shapes(variant_config(variant, hq)), torch_shapes)
        if not problems:
            return variant, variant_config(variant, hq)
        actual = _matching_variant(torch_shapes)
        if actual:
            raise ConversionError(
                f"{path} is a SAM {actual} checkpoint, not {variant} ({len(problems)} tensors "
                f"differ, e.g. {problems[0]}); drop --variant (it is inferred) or pass "
                f"--variant={actual}."
            )
        candidates = [variant]
    else:
        candidates = _likely_variants(torch_shapes)
    reports = {}
    for name in candidates:
        reports[name] = key_map.check_keys(flax_shapes(variant_config(name, hq)), torch_shapes)
        if not reports[name]:
            return name, variant_config(name, hq)
    best = min(reports, key=lambda n: len(reports[n]))
    lines = reports[best]
    shown = "\n  ".join(lines[:20]) + (
        f"\n  ... and {len(lines) - 20} more" if len(lines) > 20 else ""
    )
    what = f"the {best} architecture" if variant else f"any SAM variant (closest: {best})"
    raise ConversionError(
        f"{path} ({describe_tensors(torch_shapes)}) does not match {what}; {len(lines)} "
        f"problem(s):\n  {shown}\n"
        "Is this an official SAM (v1) or HQ-SAM (ViT) checkpoint? SAM 2, MobileSAM and HQ-SAM's "
        "vit_tiny checkpoints have other tensors."
    )


def _float32_numpy(tensor) -> np.ndarray:
    """A float32 numpy view of a tensor (a copy only if it is stored in another dtype)."""
    torch = _import_torch()
    tensor = tensor.detach()
    return (tensor if tensor.dtype == torch.float32 else tensor.float()).numpy()


def check_output(output: str, *, overwrite: bool, directory: bool) -> None:
    """Refuses, before any work, an output that exists (without `overwrite`) or has the wrong
    kind (a file where a model directory goes, or the reverse)."""
    path = Path(output)
    if directory:
        check_output_dir(path, "--output")
    elif path.is_dir():
        raise ConversionError(f"--output={path} is a folder; --to-pytorch writes a .pth file")
    else:
        check_output_dir(path.parent, "--output")
    if path.exists() and not overwrite:
        what = "model directory" if directory else "file"
        raise ConversionError(
            f"--output={path}: a {what} is already there and is kept; pass --overwrite to "
            "replace it (the old one stays until the new one is complete)"
        )
    if directory and path.is_dir() and any(path.iterdir()):
        # --overwrite replaces the whole folder: only ever a model directory.
        found, how = output_dir.owner(path)
        if found != output_dir.MODEL:
            held = (
                f"holds {output_dir.describe(found)} ({how})" if found else "is no model directory"
            )
            raise ConversionError(
                f"--output={path} {held}; --overwrite replaces a whole model directory "
                f"(one with {checkpointing.CONFIG_FILE}) and nothing else: choose a new folder"
            )


def _existing_variant(output_dir: str) -> str | None:
    try:
        return checkpointing.read_config(output_dir).variant
    except (OSError, ValueError):
        return None


def pth_to_orbax(
    input_path: str, output_dir: str, variant: str | None = None, *, overwrite: bool = True
) -> SamConfig:
    """Converts a PyTorch SAM state_dict file to a model directory; returns its config.

    An existing `output_dir` is replaced only with `overwrite`, and only once the new model
    directory is complete."""
    check_output(output_dir, overwrite=overwrite, directory=True)
    tensors = read_torch_state_dict(input_path)
    torch_shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    name, config = infer_config(input_path, torch_shapes, variant)
    shapes = flax_shapes(config)
    total = sum(int(np.prod(s)) * 4 for s in torch_shapes.values())
    kind = "HQ-SAM" if config.hq else "SAM"
    print(
        f"{input_path}: {kind} {name}, {len(tensors)} tensors, {total / 2**20:.0f} MiB", flush=True
    )
    with tqdm(total=total, unit="B", unit_scale=True, desc="converting", file=sys.stdout) as bar:
        flat = key_map.convert_torch_to_flax(
            tensors,
            shapes,
            to_numpy=_float32_numpy,
            on_tensor=lambda k: bar.update(int(np.prod(torch_shapes[k])) * 4),
        )
    del tensors
    like = nnx.to_pure_dict(nnx.state(checkpointing.abstract_sam(config)))
    old = _existing_variant(output_dir) if Path(output_dir).exists() else None
    if old and old != name:
        print(f"note: replacing the SAM {old} model in {output_dir} with SAM {name}", flush=True)
    print(f"writing {output_dir}", flush=True)
    checkpointing.save_state_dict(output_dir, config, key_map.unflatten(flat, like))
    return config


def orbax_to_pth(input_dir: str, output_path: str, *, overwrite: bool = True) -> dict[str, Any]:
    """Writes a model directory as a PyTorch state_dict file loadable with `strict=True`."""
    check_output(output_path, overwrite=overwrite, directory=False)
    torch = _import_torch()
    config = checkpointing.read_config(input_dir)
    if config.encoder_adapter_ratio:
        raise ConversionError(
            f"--input={input_dir} has AIM encoder adapters (config.adapter, the `adapter` / "
            "`sum_adapter` variants): SAM's PyTorch model has no place for them, so no "
            "strict state_dict exists; use the model directory with sum_jax's commands"
        )
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
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output (kept otherwise)"
    )
    parser.add_argument("--verbose", action="store_true", help="traceback of a failure")
    args = parser.parse_args(argv)
    try:
        if args.to_pytorch:
            orbax_to_pth(args.input, args.output, overwrite=args.overwrite)
        else:
            pth_to_orbax(args.input, args.output, args.variant, overwrite=args.overwrite)
    except (ConversionError, OSError, ValueError) as e:
        print(f"error: {disk_message(e) or cli_message(e)}", file=sys.stderr)
        if args.verbose:
            traceback.print_exc()
        return 2  # sum_jax.cli.EXIT_USAGE: a known failure, explained in one paragraph
    return 0


if __name__ == "__main__":
    sys.exit(main())
