"""The mask-refinement module at inference time (SUM §3.2.3, App. D) and the uncertainty it gives.

The refinement module is a SAM whose prompt encoder and mask decoder were fine-tuned (by
`python -m sum_jax.train_refiner`) to turn SAM's own low-res logits of a pseudo-label, given
as the mask prompt, plus a box around the pseudo-label and its generating point into a
refined mask. `u = |sigmoid(s) - sigmoid(r)|` between SAM's logits `s` and the refined ones
`r` is the pseudo-label's uncertainty map.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sum_jax.data import pseudo_label_format as plf
from sum_jax.inference.decoding import Prompts, decode
from sum_jax.inference.predictor import bucket_size, encode_images
from sum_jax.models.prompt_encoder import LABEL_ABSENT, LABEL_POSITIVE
from sum_jax.models.sam import Sam
from sum_jax.ops import transforms
from sum_jax.ops.masks import mask_to_box

Array = jax.Array


def uncertainty(sam_logits: jax.Array, refined_logits: jax.Array) -> jax.Array:
    """`|sigmoid(s) - sigmoid(r)|`, elementwise, in [0, 1]."""
    return jnp.abs(jax.nn.sigmoid(sam_logits) - jax.nn.sigmoid(refined_logits))


def refiner_prompts(points: Array, boxes: Array, sam_logits: Array, valid: Array) -> Prompts:
    """The refinement module's prompts for `Q` pseudo-labels per image (App. D): the point
    that generated each (`[B, Q, 2]`, input frame), the box around it (`[B, Q, 4]`, input
    frame, inclusive) and SAM's low-res logits as the mask prompt (`[B, Q, L, L]`); padding
    slots (`valid [B, Q]` False) get no prompt at all."""
    labels = jnp.where(valid, LABEL_POSITIVE, LABEL_ABSENT)[..., None]
    return Prompts(points[..., None, :], labels, boxes, valid, sam_logits, valid)


def refine(
    model: Sam, embeddings: Array, points: Array, boxes: Array, sam_logits: Array, valid: Array
) -> tuple[Array, Array]:
    """The refinement module's single-mask answer -> `(logits [B, Q, L, L], iou [B, Q])`,
    for a merged model (the refiner's training step differentiates through it); shapes as
    `refiner_prompts`, `embeddings [B, h, w, C]`."""
    prompts = refiner_prompts(points, boxes, sam_logits, valid)
    logits, iou = model.decode(embeddings, *prompts[:6], multimask_output=False)
    return logits[:, :, 0], iou[:, :, 0]


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _refine_image(graphdef, state, embedding, points, boxes, sam_logits, valid):
    """`[K]` masks of one image -> (refined logits, u), both `[K, L, L]`."""
    prompts = refiner_prompts(points[None], boxes[None], sam_logits[None], valid[None])
    refined = decode(graphdef, state, embedding, prompts, multimask_output=False)[0][0, :, 0]
    return refined, uncertainty(sam_logits, refined)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Inclusive (x0, y0, x1, y1) pixel boxes `[K, 4]` of boolean masks `[K, H, W]`."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for k, m in enumerate(masks):
        ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        if len(ys):
            boxes[k] = (xs[0], ys[0], xs[-1], ys[-1])
    return boxes


class Refiner:
    """The mask-refinement module applied to the pseudo-labels of one image at a time."""

    def __init__(self, model: Sam):
        self.config = model.config
        self._graphdef, self._state = nnx.split(model)

    def __call__(
        self, image: np.ndarray, labels: plf.PseudoLabels
    ) -> tuple[np.ndarray, np.ndarray]:
        """(refined logits, u), each float32 `[K, L, L]`, for one image's pseudo-labels."""
        s, low = self.config.img_size, self.config.low_res_size
        if labels.map_size != low:
            raise ValueError(
                f"pseudo-labels of {labels.image_id!r} have {labels.map_size}px maps but the "
                f"refiner's are {low}px: make both with the same SAM variant"
            )
        k = labels.num_masks
        resized = transforms.resize_image(image, s)
        input_size = resized.shape[:2]
        embedding = encode_images(
            self._graphdef,
            self._state,
            jnp.asarray(transforms.pad_image(resized, s)[None]),
            jnp.asarray([input_size]),
        )
        size = (labels.height, labels.width)
        q = bucket_size(k)  # padded mask count: one compilation per power of two
        points = np.zeros((q, 2), np.float32)
        boxes = np.zeros((q, 4), np.float32)
        sam_logits = np.zeros((q, low, low), np.float32)
        valid = np.arange(q) < k
        points[:k] = transforms.apply_coords(labels.points, size, s)
        boxes[:k] = transforms.apply_boxes(
            np.asarray(mask_to_box(labels.decode_masks())[0], np.float32), size, s
        )
        sam_logits[:k] = labels.logits()
        refined, u = _refine_image(
            self._graphdef,
            self._state,
            embedding,
            jnp.asarray(points),
            jnp.asarray(boxes),
            jnp.asarray(sam_logits),
            jnp.asarray(valid),
        )
        return np.asarray(refined[:k]), np.asarray(u[:k])
