"""LoRA adapters on SAM's linear layers (Hu et al., 2021), chosen by regexes over paths.

`add_adapters(model, targets, rank=r, alpha=a)` turns every `nnx.Linear` whose kernel path
(e.g. `image_encoder.blocks.3.attn.qkv.kernel`) fully matches one of the `targets` regexes
into a `LoRALinear`: the same `kernel [in, out]` and `bias [out]` at the same paths, plus
an `nnx.LoRA` at `<layer>.lora` holding `lora_a [in, r]` and `lora_b [r, out]`
(`nnx.LoRAParam`, an `nnx.Param` subclass, so filters can pick the adapters alone). It
computes

    y = x @ W + b + (alpha / r) * (dropout(x) @ A) @ B

`B` starts at zero, so an adapted model starts exactly at its base model. `merge_state`
folds the adapters of a pure (nested-dict) model state into its kernels,
`W' = W + (alpha / r) * A @ B` in Flax's `[in, out]` layout, and drops them: the result is a
plain SAM state that `checkpointing`, the predictor and `convert/` read unchanged.

With `parts` (SAMed's LoRA on a fused `qkv` layer, Zhang & Liu 2023: separate rank-`r`
adapters on the query and value projections only, none on the keys), the layer's output is
split into `len(QKV)` equal thirds and part `p` of `parts` gets its own pair `A_p [in, r]`,
`B_p [r, out / 3]` added to its third: stored as one `A [in, r * P]` and one
`B [r * P, out]` whose entries outside the blocks `(rows of p, columns of its third)` are
multiplied by zero in the forward pass. Those entries start at zero and get zero gradients,
so they stay zero under AdamW (decoupled decay of zero is zero), and `A @ B` is exactly
the sum of the per-part updates: merging and exports need nothing special.

Dropout (rate > 0) draws its mask from `dropout_key`, a per-layer `LoRADropoutKey`
variable (raw `u32[2]` key data, not a parameter) that the training step rewrites for each
step and micro-batch with `reseed_dropout`; it is read, never written, inside the forward
pass, so it works under `lax.scan`, remat and the scanned encoder blocks. One step's mask of
a layer is the same in every interactive round. `model.eval()` (or `deterministic=True`)
turns dropout off.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ADAPTER = "lora"  # attribute (and path component) of a LoRALinear's adapter
# The thirds of a fused qkv projection's output, in SAM's order.
QKV = ("q", "k", "v")
DROPOUT_KEY = "dropout_key"
# Folded into the step key so dropout masks are independent of the prompt sampling.
_DROPOUT_STREAM = 0x4C6F5241


class LoRADropoutKey(nnx.Variable):
    """Raw PRNG key data `u32[2]` of one adapter's dropout; not trained, not a parameter."""


class LoRALinear(nnx.Linear):
    """An `nnx.Linear` plus a low-rank update; see the module docstring.

    Built from an existing layer, whose variables it takes over (no re-initialisation), so
    `kernel` and `bias` keep their values and paths. Input `[..., in]`, output `[..., out]`
    in the base layer's compute dtype; the adapter runs in that dtype too.
    """

    def __init__(
        self,
        base: nnx.Linear,
        *,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        parts: str = "",
        rngs: nnx.Rngs,
    ):
        for name, value in vars(base).items():
            if not name.startswith("_"):
                setattr(self, name, value)
        if parts and (base.out_features % len(QKV) or any(p not in QKV for p in parts)):
            raise ValueError(
                f"LoRA parts {parts!r} need a fused qkv layer (output divisible by 3) and "
                f"letters from {''.join(QKV)}; this layer has {base.out_features} outputs"
            )
        self.parts = tuple(QKV.index(p) for p in parts)
        self.part_rank = rank
        self.lora = nnx.LoRA(
            base.in_features,
            rank * max(len(self.parts), 1),
            base.out_features,
            dtype=base.dtype,
            param_dtype=base.param_dtype,
            rngs=rngs,
        )
        self.scale = float(alpha) / rank
        self.dropout_rate = float(dropout)
        self.deterministic = self.dropout_rate == 0.0
        self.dropout_key = (
            LoRADropoutKey(jax.random.key_data(rngs.params())) if self.dropout_rate else None
        )

    def __call__(self, x: jax.Array, out_sharding=None) -> jax.Array:
        y = super().__call__(x, out_sharding)
        h = x
        if not self.deterministic and self.dropout_rate > 0.0:
            keep = 1.0 - self.dropout_rate
            key = jax.random.wrap_key_data(self.dropout_key[...])
            mask = jax.random.bernoulli(key, keep, x.shape)
            h = jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))
        if not self.parts:
            return y + (self.lora(h) * self.scale).astype(y.dtype)
        dtype = self.lora.dtype or h.dtype
        a, b = self.lora.lora_a[...].astype(dtype), self.lora.lora_b[...].astype(dtype)
        third = self.out_features // len(QKV)
        block = np.zeros(b.shape, np.float32)
        for i, p in enumerate(self.parts):
            block[i * self.part_rank : (i + 1) * self.part_rank, p * third : (p + 1) * third] = 1
        update = (h.astype(dtype) @ a) @ (b * block.astype(dtype))
        return y + (update * self.scale).astype(y.dtype)


def _path_str(path: Sequence[Any]) -> str:
    return ".".join(str(p) for p in path)


def add_adapters(
    model: nnx.Module,
    targets: Sequence[str],
    *,
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    parts: str = "",
    rngs: nnx.Rngs,
) -> nnx.Module:
    """Replaces, in place, every `nnx.Linear` whose `<path>.kernel` fully matches a regex in
    `targets` by a `LoRALinear` (with `parts`, e.g. "qv", adapters on those thirds of each
    fused qkv output only); returns `model`. A regex that matches no linear layer is an
    error (a typo would otherwise train nothing)."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
    patterns = [re.compile(t) for t in targets]
    hits = [0] * len(patterns)
    chosen = []
    for path, node in nnx.iter_graph(model):
        if type(node) is not nnx.Linear or not path:
            continue
        kernel_path = _path_str(path) + ".kernel"
        matched = [i for i, p in enumerate(patterns) if p.fullmatch(kernel_path)]
        for i in matched:
            hits[i] += 1
        if matched:
            chosen.append(path)
    missing = [t for t, n in zip(targets, hits) if n == 0]
    if missing:
        raise ValueError(
            f"config.lora.targets {missing} match no linear layer's kernel path (paths look "
            f"like image_encoder.blocks.0.attn.qkv.kernel; see parameters.txt of a run)"
        )
    for path in chosen:
        parent = model
        for p in path[:-1]:
            parent = parent[p] if isinstance(p, int) else getattr(parent, p)
        last = path[-1]
        base = parent[last] if isinstance(last, int) else getattr(parent, last)
        adapted = LoRALinear(base, rank=rank, alpha=alpha, dropout=dropout, parts=parts, rngs=rngs)
        if isinstance(last, int):
            parent[last] = adapted
        else:
            setattr(parent, last, adapted)
    return model


def has_adapters(model: nnx.Module) -> bool:
    return any(isinstance(node, LoRALinear) for _, node in nnx.iter_graph(model))


def merge_state(state: dict, scale: float) -> dict:
    """A pure model state with every adapter folded into its kernel: `kernel + scale *
    lora_a @ lora_b` (float32 matmul at highest precision, cast back to the kernel's dtype),
    the `lora` and `dropout_key` entries dropped. Other entries are returned as they are."""
    if not isinstance(state, dict):
        return state
    out = {k: merge_state(v, scale) for k, v in state.items() if k not in (ADAPTER, DROPOUT_KEY)}
    if ADAPTER in state:
        a, b = state[ADAPTER]["lora_a"], state[ADAPTER]["lora_b"]
        kernel = out["kernel"]
        delta = jnp.matmul(
            jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), precision="highest"
        )
        out["kernel"] = (jnp.asarray(kernel, jnp.float32) + scale * delta).astype(kernel.dtype)
    return out


def reseed_dropout(model_state: Any, key: jax.Array) -> Any:
    """`model_state` (pure dict) with every `dropout_key` leaf replaced by
    `fold_in(fold_in(key, stream), i)` (its index `i` in leaf order): fresh, distinct masks
    per layer for the step or micro-batch `key`. A tree without adapters is returned as is."""
    counter = iter(range(1 << 30))
    base = jax.random.fold_in(key, _DROPOUT_STREAM)

    def one(kp, x):
        if kp and str(getattr(kp[-1], "key", "")) == DROPOUT_KEY:
            return jax.random.key_data(jax.random.fold_in(base, next(counter)))
        return x

    return jax.tree.map_with_path(one, model_state)
