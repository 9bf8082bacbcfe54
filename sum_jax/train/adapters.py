"""LoRA fine-tuning as a training config: which parameters train, what a checkpoint holds,
what the export writes.

`config.lora` (configs/base.py) with `targets` set turns the trainer's full fine-tuning into
LoRA fine-tuning of the same step:

- `adapt(model, config)` adds `sum_jax.models.lora` adapters (rank `rank`, scale
  `alpha / rank`, input dropout `dropout`) to the linear layers whose kernel path fully
  matches a `targets` regex;
- the training state's `params` (what gets gradients, AdamW moments and checkpoints) are the
  adapters plus the base parameters matching a `trainable` regex (by default the SUM task
  table, which a SAM checkpoint does not have); every other base parameter is frozen and
  sits in `model_state`, laid out by the same sharding rules as parameters;
  `config.optimizer.param_groups` then applies to the trainable tree;
- a checkpoint holds `checkpoint_view(state)` (step, trainable parameters, optimiser state,
  PRNG) and the base model reference (`BaseReference`: directory and content hash); a resume
  restores those onto the base model loaded from `config.model.checkpoint` and refuses a
  base whose hash differs;
- the export (`config.lora.export`) is `"merged"`, a plain model directory with
  `W + (alpha / rank) * A @ B` in every adapted kernel, or `"separate"`, an adapter
  directory (`checkpointing.save_adapters`) that `checkpointing.load_sam` merges onto its
  base when loaded.

`config.adapter` (configs/base.py) with `enabled` adds AIM's encoder adapters instead
(`sum_jax.models.encoder_adapter`, docs/training.md "Encoder Adapter"): `adapt` puts them
into the loaded SAM, which makes them part of its architecture (`SamConfig`), and
`config.optimizer.param_groups` decides what trains (`base.encoder_adapter_groups`). The
training state, checkpoints and export are those of full fine-tuning: the export is a plain
model directory whose `sam_config.json` records the adapters, so every command loads it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from flax import nnx

from sum_jax.models import encoder_adapter
from sum_jax.models import lora as lora_lib

EXPORTS = ("merged", "separate")


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """`config.lora` as plain values."""

    targets: tuple[str, ...]
    rank: int
    alpha: float
    dropout: float = 0.0
    trainable: tuple[str, ...] = ()
    export: str = "merged"
    # SAMed's q/v-only adapters on fused qkv layers ("qv"); empty: the whole layer.
    parts: str = ""

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def from_config(cls, config) -> LoraSettings | None:
        """The settings of a training config; None when `config.lora.targets` is empty (or
        the config has no `lora` block): full fine-tuning."""
        cfg = config.get("lora")
        if cfg is None or not tuple(cfg.targets):
            return None
        settings = cls(
            targets=tuple(cfg.targets),
            rank=int(cfg.rank),
            alpha=float(cfg.alpha),
            dropout=float(cfg.get("dropout", 0.0)),
            trainable=tuple(cfg.get("trainable", ())),
            export=str(cfg.get("export", "merged")),
            parts=str(cfg.get("parts", "")),
        )
        if settings.export not in EXPORTS:
            raise ValueError(f"config.lora.export={settings.export!r}: choose one of {EXPORTS}")
        return settings

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "targets": list(self.targets),
                "trainable": list(self.trainable)}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class EncoderAdapterSettings:
    """`config.adapter` as plain values: AIM's bottleneck `ratio` and MLP-adapter `scale`."""

    ratio: float = encoder_adapter.DEFAULT_RATIO
    scale: float = encoder_adapter.DEFAULT_SCALE

    @classmethod
    def from_config(cls, config) -> EncoderAdapterSettings | None:
        """The settings of a training config; None when `config.adapter.enabled` is off (or
        the config has no `adapter` block)."""
        cfg = config.get("adapter")
        if cfg is None or not bool(cfg.enabled):
            return None
        settings = cls(ratio=float(cfg.ratio), scale=float(cfg.scale))
        if not settings.ratio > 0:
            raise ValueError(f"config.adapter.ratio={settings.ratio}: must be > 0")
        return settings


def add_encoder_adapters(
    model: nnx.Module, settings: EncoderAdapterSettings, *, seed: int
) -> nnx.Module:
    """`model` with AIM's adapters in its encoder (`fc1` drawn from `seed`, `fc2` zero). A
    model that already has them with these settings (a previous adapter run's export, to
    train further) keeps its own; other settings are an error."""
    have = (model.config.encoder_adapter_ratio, model.config.encoder_adapter_scale)
    if not have[0]:
        return encoder_adapter.add_adapters(
            model, ratio=settings.ratio, scale=settings.scale, rngs=nnx.Rngs(params=seed)
        )
    if have != (settings.ratio, settings.scale):
        raise ValueError(
            f"the model already has encoder adapters (ratio {have[0]}, scale {have[1]}) but "
            f"config.adapter asks for ratio {settings.ratio}, scale {settings.scale}: set "
            f"--config.adapter.ratio={have[0]} --config.adapter.scale={have[1]}, or start "
            f"from a model without adapters"
        )
    return model


def adapt(model: nnx.Module, config, *, seed: int | None = None) -> nnx.Module:
    """`model` with the adapters of `config.lora` (none when its `targets` are empty) or of
    `config.adapter` (none unless `enabled`). LoRA's `A` is drawn from `seed` (default
    `config.seed`), `B` is zero; the encoder adapters' `fc1` from `seed + 2`, `fc2` zero."""
    settings = LoraSettings.from_config(config)
    encoder = EncoderAdapterSettings.from_config(config)
    seed = int(config.seed if seed is None else seed)
    if encoder is not None:
        if settings is not None:
            raise ValueError(
                "config.adapter.enabled and config.lora.targets are alternatives: a LoRA run "
                "keeps only the LoRA matrices and config.lora.trainable, so the encoder "
                "adapters would not train; use one of them"
            )
        return add_encoder_adapters(model, encoder, seed=seed + 2)
    if settings is None:
        return model
    return lora_lib.add_adapters(
        model,
        settings.targets,
        rank=settings.rank,
        alpha=settings.alpha,
        dropout=settings.dropout,
        parts=settings.parts,
        rngs=nnx.Rngs(params=seed + 1),
    )


def check_model(model: nnx.Module, settings: LoraSettings | None) -> None:
    """Fails when the config asks for LoRA but `model` has no adapters (or the reverse)."""
    if (settings is not None) != lora_lib.has_adapters(model):
        raise ValueError(
            "config.lora.targets and the model disagree: add the adapters with "
            "sum_jax.train.adapters.adapt(model, config) before train_setup"
            if settings is not None
            else "the model has LoRA adapters but config.lora.targets is empty"
        )


def trainable_filter(settings: LoraSettings | None):
    """The nnx filter of the training state's `params`: every `nnx.Param` for full
    fine-tuning; with LoRA, the adapters and the base parameters matching `trainable`."""
    if settings is None:
        return nnx.Param
    patterns = [re.compile(t) for t in settings.trainable]

    def base_trainable(path, variable) -> bool:
        name = ".".join(str(p) for p in path)
        return isinstance(variable, nnx.Param) and any(p.fullmatch(name) for p in patterns)

    return nnx.Any(nnx.LoRAParam, base_trainable)


CHECKPOINT_FIELDS = ("step", "params", "opt_state", "rng")


def checkpoint_view(state) -> dict[str, Any]:
    """What a LoRA checkpoint holds of a `TrainState` (or its abstract form): everything
    but `model_state`, the frozen base, which comes back from the base model directory."""
    return {name: getattr(state, name) for name in CHECKPOINT_FIELDS}


def abstract_model(model_config, config) -> nnx.Module:
    """The model a training config trains, with `jax.ShapeDtypeStruct` leaves (no memory):
    `Sam(model_config)` with `config.lora`'s or `config.adapter`'s adapters (a ViT-H setup
    costs nothing)."""
    from sum_jax.checkpointing import abstract_sam
    from sum_jax.models.sam import Sam

    if LoraSettings.from_config(config) is None and not EncoderAdapterSettings.from_config(config):
        return abstract_sam(model_config)  # no adapters: the plain model's shapes, traced once
    return nnx.eval_shape(lambda: adapt(Sam(model_config, rngs=nnx.Rngs(0)), config))
