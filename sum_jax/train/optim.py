"""AdamW with SAM's layer-wise learning-rate decay and regex parameter groups (App. B.1).

Works on any pytree of parameters (in practice `nnx.to_pure_dict(nnx.state(model,
nnx.Param))`), addressing each leaf by its '.'-joined path, e.g.
`image_encoder.blocks.3.attn.qkv.kernel`. Three things decide how a parameter trains:

1. Its *group*: `config.optimizer.param_groups` is an ordered list of `(regex, settings)`;
   the first regex that fully matches the path wins (`re.fullmatch`), and a path that no
   regex matches is an error, so every parameter gets exactly one group. Settings:
   `frozen` (default False: the update is exactly zero and no Adam moments are kept),
   `lr_mult` (default 1.0) and `weight_decay` (default True).
2. Its *layer-decay multiplier* (SAM / ViTDet / MAE), from its path, with `depth` the number
   of encoder blocks and `decay = config.optimizer.layer_decay`:
   - `image_encoder.blocks.{i}.*` (0-based `i`): `decay ** (depth - i)`;
   - `image_encoder.patch_embed.*` and `image_encoder.pos_embed`: `decay ** (depth + 1)`;
   - everything else (the encoder's neck, the prompt encoder, the mask decoder, the task
     table): 1.
   So the last block trains at `decay` times the decoder's rate, and the input layers at the
   smallest rate.
3. The schedule: `lr` after an optional linear warm-up, then constant or cosine to 0.

Parameter `p` with gradient-derived Adam direction `a` moves by
`-lr(t) * lr_mult * layer_mult * (a + weight_decay * p * wd_on)`, i.e. decoupled weight
decay scaled by the same per-parameter rate, as in PyTorch's AdamW with parameter groups.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

PyTree = Any

_BLOCK = re.compile(r"image_encoder\.blocks\.(\d+)\..*")
_EMBED = re.compile(r"image_encoder\.(patch_embed\..*|pos_embed)")


def path_str(keypath: Sequence[Any]) -> str:
    """A '.'-joined name for a `jax.tree` key path (dict keys, attributes, indices)."""
    parts = []
    for k in keypath:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts)


def param_paths(params: PyTree) -> list[str]:
    """The '.'-joined paths of all leaves, in `jax.tree` order."""
    return [path_str(kp) for kp, _ in jax.tree.leaves_with_path(params)]


def map_with_paths(fn: Callable[[str, Any], Any], tree: PyTree, *rest: PyTree) -> PyTree:
    """`jax.tree.map` whose function also receives the leaf's '.'-joined path."""
    return jax.tree.map_with_path(lambda kp, *xs: fn(path_str(kp), *xs), tree, *rest)


@dataclasses.dataclass(frozen=True)
class GroupSettings:
    """How one parameter group trains."""

    frozen: bool = False
    lr_mult: float = 1.0
    weight_decay: bool = True


def parse_groups(param_groups: Sequence[tuple[str, Any]]) -> list[tuple[re.Pattern, GroupSettings]]:
    """`(regex, settings dict)` pairs from the config -> compiled patterns and settings."""
    parsed = []
    for regex, settings in param_groups:
        settings = dict(settings or {})
        unknown = set(settings) - {f.name for f in dataclasses.fields(GroupSettings)}
        if unknown:
            raise ValueError(f"unknown parameter-group settings {sorted(unknown)} for {regex!r}")
        parsed.append((re.compile(regex), GroupSettings(**settings)))
    return parsed


def group_index(path: str, groups: Sequence[tuple[re.Pattern, GroupSettings]]) -> int:
    """Index of the first group whose regex fully matches `path`; ValueError if none does."""
    for index, (pattern, _) in enumerate(groups):
        if pattern.fullmatch(path):
            return index
    raise ValueError(
        f"parameter {path!r} matches no parameter group; add a catch-all ('.*', {{}}) entry "
        f"to config.optimizer.param_groups ({[regex.pattern for regex, _ in groups]})"
    )


def assign_groups(params: PyTree, param_groups: Sequence[tuple[str, Any]]) -> PyTree:
    """A tree like `params` holding each parameter's group index (int)."""
    groups = parse_groups(param_groups)
    return map_with_paths(lambda path, _: group_index(path, groups), params)


def encoder_depth(paths: Sequence[str]) -> int:
    """Number of image-encoder blocks, from the `image_encoder.blocks.{i}` paths (0 if none)."""
    idx = [int(match.group(1)) for path in paths if (match := _BLOCK.fullmatch(path))]
    return max(idx) + 1 if idx else 0


def layer_decay_multiplier(path: str, depth: int, decay: float) -> float:
    """SAM's layer-wise lr multiplier of the parameter at `path` (see the module docstring)."""
    if match := _BLOCK.fullmatch(path):
        return decay ** (depth - int(match.group(1)))
    if _EMBED.fullmatch(path):
        return decay ** (depth + 1)
    return 1.0


@dataclasses.dataclass(frozen=True)
class ParamPlan:
    """Per-parameter training settings, keyed by '.'-joined path."""

    group: dict[str, int]
    frozen: dict[str, bool]
    lr_mult: dict[str, float]  # group lr_mult * layer-decay multiplier
    weight_decay: dict[str, bool]

    def trainable_mask(self, params: PyTree) -> PyTree:
        """A bool tree like `params`: True for parameters that train."""
        return map_with_paths(lambda path, _: not self.frozen[path], params)

    def describe(self) -> str:
        """One line per parameter: group, frozen, lr multiplier, weight decay."""
        lines = [f"{'parameter':64s} group frozen  lr_mult  wd"]
        for path in sorted(self.group):
            lines.append(
                f"{path:64s} {self.group[path]:5d} {self.frozen[path]!s:6s} "
                f"{self.lr_mult[path]:8.4g}  {self.weight_decay[path]}"
            )
        return "\n".join(lines)


def make_plan(params: PyTree, opt_config) -> ParamPlan:
    """Groups and multipliers of every parameter from `config.optimizer`."""
    paths = param_paths(params)
    groups = parse_groups(opt_config.param_groups)
    depth = encoder_depth(paths)
    decay = float(opt_config.layer_decay)
    plan = ParamPlan({}, {}, {}, {})
    for path in paths:
        index = group_index(path, groups)
        settings = groups[index][1]
        plan.group[path] = index
        plan.frozen[path] = settings.frozen
        plan.lr_mult[path] = settings.lr_mult * layer_decay_multiplier(path, depth, decay)
        plan.weight_decay[path] = settings.weight_decay
    return plan


def learning_rate_schedule(opt_config, num_steps: int) -> optax.Schedule:
    """`lr` with a linear warm-up over `warmup_steps`, then constant, cosine to 0, or "step":
    `lr` until step `drop_at * num_steps`, `lr * drop_factor` from there (HQ-SAM's StepLR)."""
    lr = float(opt_config.lr)
    warmup = int(opt_config.warmup_steps)
    if opt_config.schedule == "constant":
        after = optax.constant_schedule(lr)
    elif opt_config.schedule == "cosine":
        after = optax.cosine_decay_schedule(lr, max(num_steps - warmup, 1))
    elif opt_config.schedule == "step":
        drop = round(float(opt_config.get("drop_at", 10 / 12)) * num_steps) - max(warmup, 0)
        factor = float(opt_config.get("drop_factor", 0.1))
        after = optax.piecewise_constant_schedule(lr, {max(drop, 0): factor})  # from `drop` on
    else:
        raise ValueError(
            f"unknown schedule {opt_config.schedule!r}: 'constant', 'cosine' or 'step'"
        )
    if warmup <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def _scale_and_decay(plan: ParamPlan, weight_decay: float) -> optax.GradientTransformation:
    """`u <- lr_mult * (u + weight_decay * wd_on * p)`, per parameter by path. Stateless and
    path-based, so it works on the masked trees that `optax.multi_transform` passes in."""

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("weight decay needs the parameters: call update(g, s, params)")

        def one(path, update, param):
            if plan.weight_decay[path] and weight_decay:
                update = update + weight_decay * param
            return update * jnp.asarray(plan.lr_mult[path], update.dtype)

        return map_with_paths(one, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def make_optimizer(
    params: PyTree, opt_config, num_steps: int
) -> tuple[optax.GradientTransformation, ParamPlan]:
    """AdamW with layer decay and parameter groups, and the plan it was built from.

    Args:
      params: the trainable parameter tree (only its structure and paths are used).
      opt_config: `config.optimizer` (see configs/base.py).
      num_steps: total training steps (for the cosine schedule).

    Returns:
      `(tx, plan)`: frozen parameters get `optax.set_to_zero()` (exactly zero updates, no
      optimiser state); the others `scale_by_adam -> per-parameter lr_mult and decoupled
      weight decay -> -schedule(step)`.
    """
    plan = make_plan(params, opt_config)
    train = optax.chain(
        optax.scale_by_adam(
            b1=float(opt_config.b1), b2=float(opt_config.b2), eps=float(opt_config.eps)
        ),
        _scale_and_decay(plan, float(opt_config.weight_decay)),
        optax.scale_by_learning_rate(learning_rate_schedule(opt_config, num_steps)),
    )
    labels = map_with_paths(lambda path, _: "frozen" if plan.frozen[path] else "train", params)
    tx = optax.multi_transform({"train": train, "frozen": optax.set_to_zero()}, labels)
    return tx, plan
