"""The map between sum_jax's parameter paths and the official PyTorch SAM `state_dict` keys.

A Flax path joined with dots is the PyTorch key, except its last component and layout:

| Flax leaf                                   | PyTorch            | layout                      |
|---------------------------------------------|--------------------|-----------------------------|
| `kernel` of an `nnx.Linear` (2-D)           | `weight`           | `[in, out]` <- `[out, in]`  |
| `kernel` of an `nnx.Conv` (4-D)             | `weight`           | `[kh, kw, in, out]` <- `[out, in, kh, kw]` |
| `kernel` of `output_upscaling.{0,3}` (4-D)  | `weight`           | `[kh, kw, in, out]` <- `[in, out, kh, kw]` (ConvTranspose2d) |
| `kernel` of HQ-SAM's `compress_vit_feat.{0,3}`, `embedding_encoder.{0,3}` | `weight` | as `output_upscaling` (ConvTranspose2d) |
| `scale` (LayerNorm)                         | `weight`           | same                        |
| `embedding` (Embedding)                     | `weight`           | same                        |
| anything else                               | same name          | same                        |

`prompt_encoder.task_embeddings` (SUM's task prompt) has no PyTorch counterpart: it starts at
zero when importing and is dropped when exporting. An HQ model (`SamConfig.hq`) has HQ-SAM's
`mask_decoder.{hf_token, hf_mlp, compress_vit_feat, embedding_encoder, embedding_maskfeature}`
under the names of the official `segment_anything_hq` state dict (`sam_hq_vit_{b,l,h}.pth`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

FLAX_ONLY_PREFIXES = ("prompt_encoder.task_embeddings.",)


# ConvTranspose2d layers (PyTorch weight `[in, out, kh, kw]`): SAM's upscaling and HQ-SAM's
# fusion upscalers.
CONV_TRANSPOSE_PREFIXES = (
    "mask_decoder.output_upscaling.",
    "mask_decoder.compress_vit_feat.",
    "mask_decoder.embedding_encoder.",
)


def _is_conv_transpose(flax_path: str) -> bool:
    return flax_path.startswith(CONV_TRANSPOSE_PREFIXES)


def torch_key(flax_path: str) -> str | None:
    """The PyTorch key of a dotted Flax path, or None for Flax-only variables."""
    if flax_path.startswith(FLAX_ONLY_PREFIXES):
        return None
    head, _, leaf = flax_path.rpartition(".")
    leaf = {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(leaf, leaf)
    return f"{head}.{leaf}" if head else leaf


def to_flax_layout(flax_path: str, array: np.ndarray) -> np.ndarray:
    """Rearranges a PyTorch tensor (as numpy) into the Flax layout of `flax_path`."""
    if not flax_path.endswith(".kernel"):
        return array
    if array.ndim == 2:
        return array.T
    if array.ndim == 4:
        perm = (2, 3, 0, 1) if _is_conv_transpose(flax_path) else (2, 3, 1, 0)
        return array.transpose(perm)
    raise ValueError(f"{flax_path}: unexpected kernel rank {array.ndim}")


def to_torch_layout(flax_path: str, array: np.ndarray) -> np.ndarray:
    """Inverse of `to_flax_layout`."""
    if not flax_path.endswith(".kernel"):
        return array
    if array.ndim == 2:
        return array.T
    if array.ndim == 4:
        perm = (2, 3, 0, 1) if _is_conv_transpose(flax_path) else (3, 2, 0, 1)
        return array.transpose(perm)
    raise ValueError(f"{flax_path}: unexpected kernel rank {array.ndim}")


def torch_shape(flax_path: str, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape of a Flax variable, without touching data."""
    return to_torch_layout(flax_path, np.empty(flax_shape, np.int8)).shape


def flatten(tree: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested dicts (int or str keys) -> {dotted path: leaf}."""
    out: dict[str, object] = {}
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, path + "."))
        else:
            out[path] = v
    return out


def unflatten(flat: Mapping[str, object], like: Mapping) -> dict:
    """{dotted path: leaf} -> nested dicts with the key types of `like`."""
    out: dict = {}
    for k, v in like.items():
        if isinstance(v, Mapping):
            out[k] = unflatten(
                {p[len(str(k)) + 1 :]: x for p, x in flat.items() if p.startswith(f"{k}.")}, v
            )
        else:
            out[k] = flat[str(k)]
    return out


def check_keys(
    flax_shapes: Mapping[str, tuple[int, ...]],
    torch_shapes: Mapping[str, tuple[int, ...]],
) -> list[str]:
    """Every way the two key sets disagree, as readable lines (empty: they match exactly)."""
    problems = []
    expected = {}
    for path, shape in flax_shapes.items():
        key = torch_key(path)
        if key is not None:
            expected[key] = torch_shape(path, shape)
    for key in sorted(set(expected) - set(torch_shapes)):
        problems.append(f"missing tensor {key} (expected shape {list(expected[key])})")
    for key in sorted(set(torch_shapes) - set(expected)):
        problems.append(f"unexpected tensor {key} (shape {list(torch_shapes[key])})")
    for key in sorted(set(expected) & set(torch_shapes)):
        if tuple(expected[key]) != tuple(torch_shapes[key]):
            problems.append(
                f"tensor {key} has shape {list(torch_shapes[key])}, expected {list(expected[key])}"
            )
    return problems


def convert_torch_to_flax(
    torch_tensors: Mapping[str, object],
    flax_shapes: Mapping[str, tuple[int, ...]],
    to_numpy: Callable[[object], np.ndarray],
    on_tensor: Callable[[str], None] | None = None,
) -> dict[str, np.ndarray]:
    """{dotted Flax path: array}, converting one tensor at a time (keys must be checked first).

    Transposed kernels stay views of `to_numpy`'s arrays (no copy): with a memory-mapped
    checkpoint, nothing is held in memory twice. Flax-only variables (the task table) are zeros.
    """
    out = {}
    for path, shape in flax_shapes.items():
        key = torch_key(path)
        if key is None:
            out[path] = np.zeros(shape, np.float32)
            continue
        out[path] = to_flax_layout(path, to_numpy(torch_tensors[key]))
        if on_tensor is not None:
            on_tensor(key)
    return out
