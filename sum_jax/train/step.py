"""SUM's training state and step: pure `train_step`, and its sharded, jitted, donating form.

The model lives in the state as plain pytrees: `nnx.split` gives a static graph definition
(kept in `ModelDef`, outside the state) and two nested dicts of arrays, the trainable
`nnx.Param`s (`state.params`, paths like `image_encoder.blocks.3.attn.qkv.kernel`) and
everything else (`state.model_state`, e.g. the prompt encoder's fixed Gaussian matrix), so
optax, Orbax and the sharding rules all see plain '.'-addressable trees. LoRA fine-tuning
(`config.lora.targets`, `sum_jax.train.adapters`): `params` are the adapters and the base
parameters that still train, and the frozen base weights sit in `model_state`.

Usage (see `benchmarks/train_step_speed.py` for a complete example):

    model = build_sam("tiny")
    mesh = sharding.make_mesh(config.sharding.mesh_shape)
    state, setup = init_train_state(model, config, mesh)
    step_fn = jit_train_step(setup)
    state, metrics = step_fn(state, sharding.shard_batch(numpy_batch, mesh))

`step_fn` donates `state`: do not reuse the state passed in. The step's PRNG key is
`fold_in(state.rng, state.step)`, so a run restarted from a checkpoint draws the same
prompts.

Gradient accumulation (`config.train.microbatches = k > 1`): the batch's `B` images are
split into `k` micro-batches of `B / k` (micro-batch `m` takes images `m, m + k, ...`, so
with `B / k` a multiple of the device count each device keeps its own images and nothing
moves between devices), run one after the other by a `lax.scan` inside the jitted step. Each
micro-batch's loss is its mean loss times its share of the batch's loss units
(`loss_units`), so the float32 sum of the micro-batch gradients is the gradient of the whole
batch's loss and one optimiser update follows: the same update as the batch at once, with
the memory of one micro-batch. Micro-batch `m` draws its prompts with `fold_in(key, m)`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sum_jax.models.lora import reseed_dropout
from sum_jax.train import adapters, optim, semi_supervised, sharding
from sum_jax.train.rounds import InteractiveSettings, interactive_loss
from sum_jax.train.semi_supervised import SemiSettings

PyTree = Any

# The top-level key of the dual-decoder variant's second mask decoder in `TrainState.params`;
# `ModelDef.merge` leaves it out, so exports are plain SAMs.
AUX_DECODER = semi_supervised.AUX_DECODER
# SUM itself: no semi-supervised variant.
SUM = SemiSettings()


@flax.struct.dataclass
class TrainState:
    """Everything a training step reads and writes.

    Attributes:
      step: i32 scalar, steps taken.
      params: trainable parameters, nested dict of arrays.
      model_state: the model's non-trainable variables, nested dict of arrays (unchanged).
      opt_state: the optax state of `params`.
      rng: u32 raw key data (`jax.random.key_data`), kept raw so checkpoints stay plain.
      teacher: the EMA teacher's parameters (same tree as `params`, updated after each
        optimiser step, `semi_supervised.ema_update`), or None when the config has no
        teacher: SUM's state, memory and checkpoints are then unchanged.
    """

    step: jax.Array
    params: PyTree
    model_state: PyTree
    opt_state: optax.OptState
    rng: jax.Array
    teacher: PyTree = None


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """The static half of an `nnx.split` model: rebuilds the module from plain dicts."""

    graphdef: Any
    param_treedef: Any
    rest_treedef: Any

    @classmethod
    def split(
        cls, model: nnx.Module, trainable: Any = nnx.Param
    ) -> tuple[ModelDef, PyTree, PyTree]:
        """`model -> (ModelDef, params dict, other-variables dict)`; `trainable` is the nnx
        filter of the variables that go into `params` (LoRA: the adapters and the base
        parameters that still train, see `sum_jax.train.adapters`)."""
        graphdef, params, rest = nnx.split(model, trainable, ...)
        model_def = cls(graphdef, jax.tree.structure(params), jax.tree.structure(rest))
        return model_def, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)

    def merge(self, params: PyTree, model_state: PyTree) -> nnx.Module:
        # Trainer-only parameters outside the SAM (the dual-decoder variant's second mask
        # decoder) are not part of the model.
        if isinstance(params, dict) and AUX_DECODER in params:
            params = {k: v for k, v in params.items() if k != AUX_DECODER}
        # Pure dicts and nnx States flatten in the same (sorted-key) leaf order.
        return nnx.merge(
            self.graphdef,
            jax.tree.unflatten(self.param_treedef, jax.tree.leaves(params)),
            jax.tree.unflatten(self.rest_treedef, jax.tree.leaves(model_state)),
        )


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    """The static parts of training: model definition, optimiser, settings, shardings."""

    model_def: ModelDef
    tx: optax.GradientTransformation
    plan: optim.ParamPlan
    settings: InteractiveSettings
    schedule: optax.Schedule
    mesh: Mesh
    state_shardings: TrainState
    batch_sharding: NamedSharding
    microbatches: int = 1
    # LoRA fine-tuning (`config.lora.targets` set): its settings; None for full fine-tuning.
    lora: adapters.LoraSettings | None = None
    semi: SemiSettings = SUM


def params_loss_and_grads(
    state: TrainState,
    loss_fn: Callable[[PyTree], tuple[jax.Array, Any]],
    *,
    plan: optim.ParamPlan,
) -> tuple[tuple[jax.Array, Any], PyTree]:
    """`((loss, aux), grads)` of `loss_fn(params) -> (loss, aux)` at `state.params`, the
    parameters the plan freezes entering as constants (see `loss_and_grads`)."""

    def params_loss(params):
        params = optim.map_with_paths(
            lambda p, x: jax.lax.stop_gradient(x) if plan.frozen[p] else x, params
        )
        return loss_fn(params)

    return jax.value_and_grad(params_loss, has_aux=True)(state.params)


def loss_and_grads(
    state: TrainState,
    loss_fn: Callable[[nnx.Module], tuple[jax.Array, Any]],
    *,
    model_def: ModelDef,
    plan: optim.ParamPlan,
) -> tuple[tuple[jax.Array, Any], PyTree]:
    """`((loss, aux), grads)` of `loss_fn(model) -> (loss, aux)` at `state.params`.

    Parameters the plan freezes enter the loss as constants (`stop_gradient`), so XLA drops
    their backward pass (their gradient is zero).
    """

    return params_loss_and_grads(
        state, lambda params: loss_fn(model_def.merge(params, state.model_state)), plan=plan
    )


def gradient_step(
    state: TrainState,
    loss_fn: Callable[[nnx.Module], tuple[jax.Array, Any]],
    *,
    model_def: ModelDef,
    tx: optax.GradientTransformation,
    plan: optim.ParamPlan,
) -> tuple[TrainState, jax.Array, Any, dict[str, jax.Array]]:
    """One optimiser step on `loss_fn(model) -> (loss, aux)`, shared by every trainer here.

    The optimiser leaves frozen parameters unchanged (see `loss_and_grads`).

    Returns:
      `(new_state, loss, aux, metrics)` with `metrics` holding the global norms of the
      gradient (`grad_norm`) and of the update (`update_norm`).
    """
    (loss, aux), grads = loss_and_grads(state, loss_fn, model_def=model_def, plan=plan)
    new_state, metrics = apply_gradients(state, loss, grads, tx=tx)
    return new_state, loss, aux, metrics


def apply_gradients(
    state: TrainState, loss: jax.Array, grads: PyTree, *, tx: optax.GradientTransformation
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser update with `grads`; metrics `loss`, `grad_norm`, `update_norm`."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    # Finite old parameters plus a finite update give finite new ones: the trainer's NaN
    # guard checks this norm instead of every parameter.
    update_norm = optax.global_norm(updates)
    params = jax.tree.map(
        lambda p, u: (p + u + 0.0 * update_norm).astype(p.dtype), state.params, updates
    )
    # `+ 0 * update_norm` (exact while the norm is finite) makes every new parameter wait
    # for the norm, the last reader of the old parameters, so XLA writes the new ones in
    # place into the donated buffers. Without it the norm's reads are unordered with those
    # writes and XLA copies every donated parameter at the start of the step (2.4 GiB for
    # ViT-H, live through the whole step; optimization barriers do not survive its CPU
    # pipeline).
    metrics = {
        "loss": loss,
        "grad_norm": optax.global_norm(grads),
        "update_norm": update_norm,
    }
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def loss_units(batch: dict[str, jax.Array], select: jax.Array | None = None) -> jax.Array:
    """How many units `interactive_loss` averages its loss over: the images with at least one
    valid mask (its `image_valid`), among those where `select [B]` is true if given. f32.

    Accumulation weighs each micro-batch's mean loss by its units over the batch's, which is
    exact because every loss term is a mean over the same units (rounds.py, "Reduction").
    """
    valid = batch["mask_valid"].astype(bool).any(axis=-1)
    if select is not None:
        valid = valid & select
    return jnp.sum(valid).astype(jnp.float32)


# `interactive_loss` aux entries with one value per image (`[B]`), not means.
PER_IMAGE = ("image_loss", "image_valid")
# `interactive_loss` aux entries that are step means, not per-round `[R]` arrays.
PER_STEP = ("contrastive",)


def split_microbatches(batch: dict[str, jax.Array], k: int) -> dict[str, jax.Array]:
    """`[B, ...] -> [k, B / k, ...]` with micro-batch `m` = images `m, m + k, m + 2k, ...`:
    a device holding `B / D` consecutive images keeps its own in every micro-batch."""

    def split(x):
        return x.reshape((x.shape[0] // k, k) + x.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(split, batch)


def accumulated_loss_and_grads(
    state: TrainState,
    batch: dict[str, jax.Array],
    key: jax.Array,
    microbatches: int,
    *,
    model_def: ModelDef,
    plan: optim.ParamPlan,
    settings: InteractiveSettings,
    batch_loss: Callable | None = None,
) -> tuple[tuple[jax.Array, dict[str, jax.Array]], PyTree]:
    """The interactive loss, its per-round metrics and its gradient over `batch`, computed
    one micro-batch at a time (`lax.scan`), gradients summed in float32.

    `batch_loss(params, batch, key, model_state) -> (loss, aux)` replaces the interactive
    loss (the semi-supervised variants); its aux must have `interactive_loss`'s entries.
    Each micro-batch's LoRA dropout masks are drawn from its own key (`reseed_dropout`), for
    either loss.

    Micro-batch `m`'s loss and metrics are weighted by its share of the batch's loss units,
    `loss_human` / `loss_pseudo` by its share of the human / pseudo-labelled units, so the
    sums are the whole batch's means.
    """
    pseudo = batch["is_pseudo"].astype(bool)
    totals = {
        "all": loss_units(batch),
        "human": loss_units(batch, ~pseudo),
        "pseudo": loss_units(batch, pseudo),
    }
    weight_of = {"loss_human": "human", "loss_pseudo": "pseudo"}

    def one(grad_sum, xs):
        micro, m = xs
        mp = micro["is_pseudo"].astype(bool)
        units = {
            "all": loss_units(micro),
            "human": loss_units(micro, ~mp),
            "pseudo": loss_units(micro, mp),
        }
        share = {k: units[k] / jnp.maximum(totals[k], 1.0) for k in units}
        micro_key = jax.random.fold_in(key, m)
        # LoRA dropout: fresh masks per micro-batch (no-op without adapters).
        micro_state = state.replace(model_state=reseed_dropout(state.model_state, micro_key))

        def loss_fn(params):
            if batch_loss is None:
                model = model_def.merge(params, micro_state.model_state)
                loss, aux = interactive_loss(model, micro, micro_key, settings)
            else:
                loss, aux = batch_loss(params, micro, micro_key, micro_state.model_state)
            return loss * share["all"], aux

        (loss, aux), grads = params_loss_and_grads(micro_state, loss_fn, plan=plan)
        aux = {
            k: v if k in PER_IMAGE else v * share[weight_of.get(k, "all")] for k, v in aux.items()
        }
        grad_sum = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grad_sum, grads)
        return grad_sum, (loss, aux)

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
    micro = split_microbatches(batch, microbatches)
    grads, (losses, aux) = jax.lax.scan(one, zeros, (micro, jnp.arange(microbatches)))
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
    # Means: the weighted sum over micro-batches. Per-image entries `[k, B/k]`: back in the
    # batch's order (image i = micro-batch i % k, position i // k).
    aux = {k: v.swapaxes(0, 1).reshape(-1) if k in PER_IMAGE else v.sum(0) for k, v in aux.items()}
    return (losses.sum(), aux), grads


def resolve_microbatches(requested: int, batch_size: int, num_devices: int) -> int:
    """`config.train.microbatches` as a count: -1 gives one image per device per
    micro-batch; the count must split the batch into micro-batches that split evenly over
    the devices."""
    k = batch_size // num_devices if requested == -1 else int(requested)
    if k < 1 or batch_size % k or (batch_size // k) % num_devices:
        raise ValueError(
            f"train.microbatches={requested} does not split train.batch_size={batch_size} "
            f"into micro-batches of a multiple of the {num_devices} devices; use a divisor "
            f"of {batch_size // num_devices if batch_size % num_devices == 0 else batch_size}"
            f" or -1 (one image per device at a time)"
        )
    return k


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    model_def: ModelDef,
    tx: optax.GradientTransformation,
    plan: optim.ParamPlan,
    settings: InteractiveSettings,
    schedule: optax.Schedule | None = None,
    microbatches: int = 1,
    semi: SemiSettings = SUM,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SUM step: interactive rounds on the batch, gradients, AdamW update.

    Args:
      state: the current state.
      batch: the training batch of docs/contracts.md (device arrays).
      model_def, tx, plan, settings, schedule: static, bind with `functools.partial`.
      microbatches: static; > 1 accumulates the gradient over that many micro-batches
        (`accumulated_loss_and_grads`) before the one update.
      semi: static; a semi-supervised variant (`semi_supervised.py`: Discrepancy-Uncer,
        AugSeg) in place of SUM's loss, and the EMA teacher's update after the step.

    Returns:
      `(new_state, metrics)`: `loss`, per-round `[R]` arrays `round_loss`, `round_iou`,
      `round_focal`, `round_dice`, `round_iou_mse`, `round_loss_human`, `round_loss_pseudo`
      (each the mean over images of the image's mean over its valid masks), the valid-mask
      counts `masks_human` and `masks_pseudo`, the counts of images with a valid mask
      `images_human` and `images_pseudo`, the global norms of the
      gradient and of the update over trainable parameters, and the learning rate (when
      `schedule` is given).
    """
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    # LoRA dropout masks for this step (no-op without adapters); the state keeps its keys.
    loss_state = state.replace(model_state=reseed_dropout(state.model_state, key))
    batch_loss = None
    if semi.method == "augseg":
        # The students' strong views over the whole batch: CutMix partners come from any
        # micro-batch of the step (semi_supervised.augseg_views).
        batch = semi_supervised.augseg_views(
            jax.random.fold_in(key, semi_supervised.VIEW_STREAM),
            batch,
            batch["image"].shape[1],
            semi,
        )
    if semi.method != "none":
        batch_loss = functools.partial(
            semi_supervised.semi_supervised_loss,
            teacher=state.teacher,
            model_def=model_def,
            settings=settings,
            semi=semi,
        )
    if microbatches == 1 and batch_loss is None:
        (loss, aux), grads = loss_and_grads(
            loss_state,
            lambda model: interactive_loss(model, batch, key, settings),
            model_def=model_def,
            plan=plan,
        )
    elif microbatches == 1:
        (loss, aux), grads = params_loss_and_grads(
            state, lambda params: batch_loss(params, batch, key, loss_state.model_state), plan=plan
        )
    else:
        (loss, aux), grads = accumulated_loss_and_grads(
            state,
            batch,
            key,
            microbatches,
            model_def=model_def,
            plan=plan,
            settings=settings,
            batch_loss=batch_loss,
        )
    new_state, metrics = apply_gradients(state, loss, grads, tx=tx)
    if semi.uses_teacher:
        teacher = semi_supervised.ema_update(state.teacher, new_state.params, semi.ema_momentum)
        new_state = new_state.replace(teacher=teacher)
    metrics.update({f"round_{k}": v for k, v in aux.items() if k not in PER_IMAGE + PER_STEP})
    metrics.update({k: aux[k] for k in PER_STEP if k in aux})
    pseudo = batch["is_pseudo"].astype(bool)[:, None]
    valid = batch["mask_valid"].astype(bool)
    metrics["masks_human"] = jnp.sum(valid & ~pseudo)
    metrics["masks_pseudo"] = jnp.sum(valid & pseudo)
    metrics["images_human"] = jnp.sum(aux["image_valid"] & ~pseudo[:, 0])
    metrics["images_pseudo"] = jnp.sum(aux["image_valid"] & pseudo[:, 0])
    if schedule is not None:
        metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
    return new_state, metrics


def train_setup(
    model: nnx.Module, config, mesh: Mesh, *, num_steps: int | None = None
) -> tuple[TrainSetup, TrainState]:
    """The step's static setup and the abstract state: `jax.ShapeDtypeStruct` leaves that
    carry their shardings, with no memory behind them.

    `model` may itself be abstract (`nnx.eval_shape`), so a ViT-H setup costs nothing; the
    abstract state is what `jit(...).lower` and an Orbax restore take.
    """
    lora = adapters.LoraSettings.from_config(config)
    adapters.check_model(model, lora)
    semi = SemiSettings.from_config(config)
    model_def, params, model_state = ModelDef.split(model, adapters.trainable_filter(lora))
    params = semi_supervised.training_params(params, semi)
    num_steps = int(num_steps if num_steps is not None else config.train.num_steps)
    tx, plan = optim.make_optimizer(params, config.optimizer, num_steps)
    schedule = optim.learning_rate_schedule(config.optimizer, num_steps)
    settings = InteractiveSettings.from_config(config)

    rng = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))  # raw key data
    abstract = jax.eval_shape(
        lambda p, s, r: _new_state(p, s, r, tx, semi), params, model_state, rng
    )
    param_sh = sharding.param_shardings(abstract.params, mesh, config.sharding)
    replicated = NamedSharding(mesh, P())
    if lora is None:
        model_state_sh = jax.tree.map(lambda _: replicated, abstract.model_state)
    else:  # the frozen base weights live here: laid out by the parameters' rules
        model_state_sh = sharding.param_shardings(abstract.model_state, mesh, config.sharding)
    state_sh = TrainState(
        step=replicated,
        params=param_sh,
        model_state=model_state_sh,
        opt_state=sharding.state_shardings(abstract.opt_state, abstract.params, param_sh, mesh),
        rng=replicated,
        # The teacher is laid out as the parameters it follows.
        teacher=param_sh if semi.uses_teacher else None,
    )
    setup = TrainSetup(
        model_def=model_def,
        tx=tx,
        plan=plan,
        settings=settings,
        schedule=schedule,
        mesh=mesh,
        state_shardings=state_sh,
        batch_sharding=sharding.batch_sharding(mesh),
        microbatches=resolve_microbatches(
            int(config.train.get("microbatches", 1)),
            int(config.train.batch_size),
            mesh.devices.size,
        ),
        lora=lora,
        semi=semi,
    )
    abstract = jax.tree.map(
        lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), abstract, state_sh
    )
    return setup, abstract


def _new_state(params, model_state, rng, tx, semi: SemiSettings) -> TrainState:
    """The step-0 state; the EMA teacher (when the variant has one) starts as the model."""
    teacher = jax.tree.map(jnp.copy, params) if semi.uses_teacher else None
    return TrainState(jnp.zeros((), jnp.int32), params, model_state, tx.init(params), rng, teacher)


def initial_state(model: nnx.Module, setup: TrainSetup, seed: int) -> TrainState:
    """The step-0 state of `model`, created straight into `setup`'s shardings (the
    optimiser state by a jitted `tx.init`)."""
    _, params, model_state = ModelDef.split(model, adapters.trainable_filter(setup.lora))
    params = semi_supervised.training_params(params, setup.semi)
    rng = jax.random.key_data(jax.random.key(int(seed)))
    state_sh = setup.state_shardings

    def make(p, s):
        return _new_state(p, s, rng, setup.tx, setup.semi)

    return jax.jit(
        make, in_shardings=(state_sh.params, state_sh.model_state), out_shardings=state_sh
    )(params, model_state)


def init_train_state(
    model: nnx.Module, config, mesh: Mesh, *, num_steps: int | None = None
) -> tuple[TrainState, TrainSetup]:
    """The initial state, laid out on `mesh` by `config.sharding`, and the step's setup."""
    setup, _ = train_setup(model, config, mesh, num_steps=num_steps)
    return initial_state(model, setup, config.seed), setup


def abstract_batch(config, setup: TrainSetup, model_config) -> dict[str, jax.ShapeDtypeStruct]:
    """The training batch of docs/contracts.md as abstract arrays laid out with
    `setup.batch_sharding`: what `jit_train_step(setup).lower` takes to size a step without
    data (config tests, the memory benchmark)."""
    s, low = model_config.img_size, model_config.low_res_size
    n, b = int(config.train.masks_per_image), int(config.train.batch_size)
    shapes = {
        "image": ((b, s, s, 3), jnp.uint8),
        "image_size": ((b, 2), jnp.int32),
        "masks": ((b, n, low, low), jnp.uint8),
        "mask_valid": ((b, n), jnp.bool_),
        "uncertainty": ((b, n, low, low), jnp.uint8),
        "is_pseudo": ((b,), jnp.bool_),
        "task_id": ((b,), jnp.int32),
    }
    if str(config.loss.get("resolution", "low")) != "low":
        shapes["masks_full"] = ((b, n, s, s), jnp.uint8)
    return {
        k: jax.ShapeDtypeStruct(shape, dtype, sharding=setup.batch_sharding)
        for k, (shape, dtype) in shapes.items()
    }


def jit_train_step(setup: TrainSetup) -> Callable:
    """`train_step` bound to `setup`, jitted with in/out shardings and the state donated.

    The batch must be laid out with `setup.batch_sharding` (see `sharding.shard_batch`);
    metrics come back replicated.
    """
    step = functools.partial(
        train_step,
        model_def=setup.model_def,
        tx=setup.tx,
        plan=setup.plan,
        settings=setup.settings,
        schedule=setup.schedule,
        microbatches=setup.microbatches,
        semi=setup.semi,
    )

    @functools.wraps(train_step)
    def step_in_mesh(state, batch):
        # The model constrains its activations to the batch sharding under this mesh
        # (`models.common.shard_leading_axis`).
        with jax.sharding.use_abstract_mesh(setup.mesh.abstract_mesh):
            return step(state, batch)

    return jax.jit(
        step_in_mesh,
        in_shardings=(setup.state_shardings, setup.batch_sharding),
        out_shardings=(setup.state_shardings, NamedSharding(setup.mesh, P())),
        donate_argnums=0,
    )


def describe_params(state: TrainState, plan: optim.ParamPlan | None = None) -> str:
    """Parameter count and one line per parameter: shape, sharding spec, (lr mult, frozen)."""
    lines = []
    total = trainable = 0
    for kp, x in jax.tree.leaves_with_path(state.params):
        path = optim.path_str(kp)
        total += x.size
        extra = ""
        if plan is not None:
            trainable += 0 if plan.frozen[path] else x.size
            extra = f" lr_mult={plan.lr_mult[path]:.4g} frozen={plan.frozen[path]}"
        spec = getattr(getattr(x, "sharding", None), "spec", None)
        lines.append(f"{path:64s} {tuple(x.shape)!s:20s} {spec}{extra}")
    head = f"{total:,} parameters" + (f", {trainable:,} trainable" if plan is not None else "")
    return "\n".join([head] + lines)
