"""The one jitted adapter from a split SAM (`graphdef`, `state`) to its prompt decoder.

Every stage that decodes prompts on precomputed image embeddings (the predictor, the
automatic mask generator, the evaluation rounds, the refinement module, the refiner's pair
builder) calls `decode` with a `Prompts` tuple, so the merge of the split model and the
mapping of prompts onto `Sam.decode` live here only. Called inside another jitted function,
it is inlined into that function's program.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
from flax import nnx

Array = jax.Array


class Prompts(NamedTuple):
    """Prompts for `Q` queries on each of `B` images, in the model's input frame (the
    resized, padded `S x S` image); see docs/contracts.md. `None` means absent."""

    points: Array  # f32[B, Q, P, 2] (x, y)
    labels: Array  # i32[B, Q, P]: 1 positive, 0 negative, -1 not a point, -2 absent
    boxes: Array | None = None  # f32[B, Q, 4] (x0, y0, x1, y1)
    box_valid: Array | None = None  # bool[B, Q]
    mask_inputs: Array | None = None  # f32[B, Q, L, L] low-res logits as mask prompt
    mask_valid: Array | None = None  # bool[B, Q]
    task_ids: Array | None = None  # i32[B, Q], negative for no task prompt


@functools.partial(jax.jit, static_argnames=("graphdef", "multimask_output"))
def decode(
    graphdef: nnx.GraphDef, state: nnx.State, embeddings: Array, prompts: Prompts, *,
    multimask_output: bool | None,
) -> tuple[Array, Array]:  # fmt: skip
    """`(low_res_logits f32[B, Q, M, L, L], iou_predictions f32[B, Q, M])` of the split
    model for `embeddings [B, h, w, C]`; `M = 3` with `multimask_output`, 1 without, 4
    when it is None (the single-mask token first)."""
    model = nnx.merge(graphdef, state)
    return model.decode(
        embeddings,
        prompts.points,
        prompts.labels,
        prompts.boxes,
        prompts.box_valid,
        prompts.mask_inputs,
        prompts.mask_valid,
        multimask_output=multimask_output,
        task_ids=prompts.task_ids,
    )
