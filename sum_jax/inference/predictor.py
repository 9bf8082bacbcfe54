"""Interactive inference: embed an image once, then prompt it many times.

`SamPredictor` mirrors `segment_anything.SamPredictor` (same arguments, same outputs) and adds
`predict_batch` for many prompts at once and an optional SUM task prompt. Prompt counts are
padded to powers of two (absent slots are masked out of attention), so a session compiles a
handful of shapes, not one per click.

Task prompt (issue 11 item 6): with `task=DEFAULT_TASK` (the default) a SUM model, whose
directory records the task ids it trained on (`tasks.json`, `checkpointing.TaskRecord`),
gets task 0 (the paper's default, App. H.1) and a plain SAM (no record) no task prompt. A
task id the model never trained on falls back to 0, with one log line per id.

    predictor = SamPredictor.from_checkpoint("ckpt/sam_vit_h")
    predictor.set_image(np.asarray(PIL.Image.open("photo.jpg").convert("RGB")))
    masks, scores, low_res = predictor.predict(point_coords=np.array([[500, 375]]),
                                               point_labels=np.array([1]))
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sum_jax.checkpointing import TaskRecord, load_sam, read_tasks
from sum_jax.inference.decoding import Prompts, decode
from sum_jax.models.prompt_encoder import LABEL_ABSENT
from sum_jax.models.sam import Sam
from sum_jax.ops import transforms

TASKS = {
    "unlabelled": 0,
    "unspecified": 0,
    "salient": 1,
    "salient_object": 1,
    "entity": 2,
    "part": 3,
}


def task_index(task: int | str | None, num_tasks: int) -> int:
    """A task name or id -> id (-1 for none), checked against the model's task table."""
    if task is None:
        return -1
    if isinstance(task, str):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; use an id or one of {sorted(TASKS)}")
        task = TASKS[task]
    task = int(task)
    if not 0 <= task < num_tasks:
        raise ValueError(f"task id {task} out of range: the model has {num_tasks} task prompts")
    return task


# The `task` argument's default: the model's own default task (see the module docstring).
DEFAULT_TASK = "default"

SIZE_BUCKET = 256  # px: predicted masks are computed in frames padded to multiples of this


def frame_bucket(height: int, width: int) -> tuple[int, int]:
    """The frame an image's predicted masks are computed in: each side padded up to a
    multiple of `SIZE_BUCKET` (one compilation serves every image of a bucket)."""
    return (-(-height // SIZE_BUCKET) * SIZE_BUCKET, -(-width // SIZE_BUCKET) * SIZE_BUCKET)


def bucket_size(n: int, minimum: int = 1) -> int:
    """Smallest power of two >= max(n, minimum)."""
    return 1 << max(int(n), minimum, 1).__sub__(1).bit_length()


@functools.partial(jax.jit, static_argnames=("graphdef",))
def encode_images(graphdef, state, image_u8, image_size):
    """Image embeddings `[B, h, w, C]` of resized, padded uint8 images `[B, S, S, 3]` whose
    content is `image_size [B, 2]` (normalised and padded on device, as SAM's preprocess)."""
    model = nnx.merge(graphdef, state)
    return model.encode_image(transforms.normalize_and_pad(image_u8, image_size))


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "multimask_output", "return_logits"),
)
def _decode(
    graphdef,
    state,
    embeddings,
    points,
    labels,
    boxes,
    box_valid,
    mask_inputs,
    mask_valid,
    task_ids,
    taps,
    *,
    multimask_output,
    return_logits,
):
    """Decodes padded prompts and upscales the logits into the image's size bucket: `taps`
    (`transforms.postprocess_taps`, passed as arrays) carry the image size, so one
    compilation serves every image of a bucket; the caller crops `[..., :H, :W]`."""
    prompts = Prompts(
        points[None],
        labels[None],
        boxes[None],
        box_valid[None],
        mask_inputs[None],
        mask_valid[None],
        task_ids[None],
    )
    low_res, iou = decode(graphdef, state, embeddings, prompts, multimask_output=multimask_output)
    low_res, iou = low_res[0], iou[0]
    masks = transforms.apply_postprocess(low_res, taps)
    if not return_logits:
        masks = masks > transforms.MASK_THRESHOLD
    return masks, iou, low_res


class SamPredictor:
    """Embeds one image, then answers point / box / mask prompts on it."""

    def __init__(self, model: Sam, tasks: TaskRecord | None = None):
        """`tasks`: the model's task record (`from_checkpoint` reads it); None for a plain
        SAM, whose default is no task prompt."""
        self.model = model
        self.config = model.config
        self.tasks = tasks
        self._graphdef, self._state = nnx.split(model)
        self.reset_image()

    @classmethod
    def from_checkpoint(cls, directory: str, **config_overrides: Any) -> SamPredictor:
        """Loads a model directory written by the converter or the trainer."""
        return cls(load_sam(directory, **config_overrides), read_tasks(directory))

    @property
    def default_task(self) -> int | None:
        """The task prompt used when none is asked for: 0 for a SUM model, None (no task
        prompt) for a plain SAM."""
        return None if self.tasks is None else self.tasks.default_task

    def task_id(self, task: int | str | None = DEFAULT_TASK) -> int:
        """The task id given to the decoder (-1: none) for a `task` argument: the default
        task, a name or an id; an id the model did not train on falls back to 0 (logged
        once per id)."""
        if isinstance(task, str) and task == DEFAULT_TASK:
            task = self.default_task
        index = task_index(task, self.config.num_tasks)
        if self.tasks is None or index < 0 or index in self.tasks.seen:
            return index
        if index not in self._logged_tasks:
            self._logged_tasks.add(index)
            return self.tasks.prompt_task(index, what="SamPredictor")
        return 0

    # Image -----------------------------------------------------------------------------
    def reset_image(self) -> None:
        self._logged_tasks: set[int] = getattr(self, "_logged_tasks", set())
        self.features = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        self._taps = None
        self._sized_taps: dict = {}

    @property
    def is_image_set(self) -> bool:
        return self.features is not None

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Computes the image embedding of a uint8 `HxWx3` image (RGB, or BGR if so stated)."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        image = transforms.check_image(image)
        if image_format == "BGR":
            image = image[..., ::-1]
        s = self.config.img_size
        resized = transforms.resize_image(np.ascontiguousarray(image), s)
        self.original_size = image.shape[:2]
        self.input_size = resized.shape[:2]
        padded = transforms.pad_image(resized, s)[None]
        self.features = encode_images(
            self._graphdef, self._state, jnp.asarray(padded), jnp.asarray([self.input_size])
        )
        # Masks come out in a frame padded to the image's size bucket (multiples of
        # SIZE_BUCKET per side), so clicks on any image of the bucket reuse one compilation.
        bucket = frame_bucket(*self.original_size)
        taps = transforms.postprocess_taps(
            tuple(self.original_size), s, self.config.low_res_size, bucket
        )
        self._taps = jax.tree.map(jnp.asarray, taps)
        self._sized_taps = {}

    def output_taps(
        self, mask_size: tuple[int, int], frame: tuple[int, int] | None = None
    ) -> transforms.PostprocessTaps:
        """Taps of SAM's post-processing with the last resize to `mask_size` (H', W') instead
        of the original size (the crop to the resized image is the original's), padded to
        `frame` (default: `frame_bucket(H', W')`): the masks SAM gives, sampled at another
        resolution straight from the low-res logits. Cached per size."""
        self._require_image()
        key = (tuple(mask_size), frame or frame_bucket(*mask_size))
        if key not in self._sized_taps:
            (mh, mw), (fh, fw) = key
            rh, rw = self.input_size
            taps = transforms.PostprocessTaps(
                transforms.bilinear_taps(self.config.low_res_size, self.config.img_size),
                transforms.pad_taps(transforms.bilinear_taps(rh, mh), fh),
                transforms.pad_taps(transforms.bilinear_taps(rw, mw), fw),
            )
            self._sized_taps[key] = jax.tree.map(jnp.asarray, taps)
        return self._sized_taps[key]

    def get_image_embedding(self) -> jax.Array:
        """`[1, h, w, C]` embedding of the current image."""
        self._require_image()
        return self.features

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("call set_image(...) before predicting")

    # Prompts ---------------------------------------------------------------------------
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        task: int | str | None = DEFAULT_TASK,
        mask_size: tuple[int, int] | None = None,
        mask_frame: tuple[int, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One prompt, as the official `SamPredictor.predict`.

        Args:
          point_coords: `[N, 2]` (x, y) pixels in the original image; `point_labels [N]`
            1 foreground, 0 background.
          box: `[4]` (x0, y0, x1, y1) in the original image.
          mask_input: `[1, 4h, 4w]` low-res logits from a previous prediction.
          multimask_output: three masks (for ambiguous single clicks) or one.
          return_logits: logits instead of boolean masks.
          task: SUM task prompt (id or name: 'salient', 'entity', 'part'); None for none;
            `DEFAULT_TASK`: 0 for a SUM model, none for a plain SAM (module docstring).
          mask_size: `(H', W')`: masks at that size instead of the original's, by the same
            post-processing (`output_taps`), computed in `mask_frame` (default
            `frame_bucket(H', W')`; one compilation per frame). None: the original size.

        Returns:
          `masks [C, H, W]` (bool, or float logits; `[C, H', W']` with `mask_size`),
          `iou_predictions [C]`, `low_res_logits [C, 4h, 4w]`, with C = 3 or 1.
        """
        masks, iou, low_res = self.predict_batch(
            None if point_coords is None else np.asarray(point_coords)[None],
            None if point_labels is None else np.asarray(point_labels)[None],
            None if box is None else np.asarray(box)[None],
            None if mask_input is None else np.asarray(mask_input)[None],
            multimask_output=multimask_output,
            return_logits=return_logits,
            task=task,
            mask_size=mask_size,
            mask_frame=mask_frame,
        )
        return masks[0], iou[0], low_res[0]

    def predict_batch(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        task: int | str | None = DEFAULT_TASK,
        mask_size: tuple[int, int] | None = None,
        mask_frame: tuple[int, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`Q` prompts at once: coords `[Q, N, 2]`, labels `[Q, N]`, boxes `[Q, 4]`,
        mask_input `[Q, 1, 4h, 4w]`. Returns `[Q, C, H, W]`, `[Q, C]`, `[Q, C, 4h, 4w]`
        (`mask_size`, `mask_frame`: as `predict`)."""
        self._require_image()
        points, labels, boxes_, mask_, q = self._check_prompts(
            point_coords, point_labels, boxes, mask_input
        )
        q_pad = bucket_size(q)
        p_pad = bucket_size(points.shape[1], minimum=4) if points is not None else 4
        low = self.config.low_res_size
        s = self.config.img_size

        pts = np.zeros((q_pad, p_pad, 2), np.float32)
        lbl = np.full((q_pad, p_pad), LABEL_ABSENT, np.int32)
        if points is not None:
            pts[:q, : points.shape[1]] = transforms.apply_coords(points, self.original_size, s)
            lbl[:q, : points.shape[1]] = labels
        bxs = np.zeros((q_pad, 4), np.float32)
        box_valid = np.zeros((q_pad,), bool)
        if boxes_ is not None:
            bxs[:q] = transforms.apply_boxes(boxes_, self.original_size, s)
            box_valid[:q] = True
        masks_in = np.zeros((q_pad, low, low), np.float32)
        mask_valid = np.zeros((q_pad,), bool)
        if mask_ is not None:
            masks_in[:q] = mask_
            mask_valid[:q] = True
        task_ids = np.full((q_pad,), self.task_id(task), np.int32)

        masks, iou, low_res = _decode(
            self._graphdef,
            self._state,
            self.features,
            jnp.asarray(pts),
            jnp.asarray(lbl),
            jnp.asarray(bxs),
            jnp.asarray(box_valid),
            jnp.asarray(masks_in),
            jnp.asarray(mask_valid),
            jnp.asarray(task_ids),
            self._taps if mask_size is None else self.output_taps(mask_size, mask_frame),
            multimask_output=multimask_output,
            return_logits=return_logits,
        )
        h, w = self.original_size if mask_size is None else mask_size
        masks = np.asarray(masks[:q, :, :h, :w])
        return masks, np.asarray(iou[:q]), np.asarray(low_res[:q])

    def _check_prompts(self, point_coords, point_labels, boxes, mask_input):
        h, w = self.original_size
        q = None
        points = labels = None
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        if point_coords is not None:
            points = np.asarray(point_coords, np.float64)
            labels = np.asarray(point_labels)
            if points.ndim != 3 or points.shape[-1] != 2 or labels.shape != points.shape[:2]:
                raise ValueError(
                    f"point_coords must be [N, 2] (x, y) with point_labels [N]; got "
                    f"{points.shape[1:]} and {labels.shape[1:]}"
                )
            if not np.all(np.isfinite(points)):
                raise ValueError(f"point_coords must be finite (x, y) pixels, got {points[0]}")
            if not np.all(np.isin(labels, (-1, 0, 1))):
                raise ValueError(f"point_labels must be 1 (foreground) or 0 (background): {labels}")
            outside = (
                (points[..., 0] < 0)
                | (points[..., 0] > w)
                | (points[..., 1] < 0)
                | (points[..., 1] > h)
            )
            if np.any(outside):
                bad = points[outside][0]
                raise ValueError(
                    f"point ({bad[0]:g}, {bad[1]:g}) is outside the image (width {w}, height {h}); "
                    "coordinates are (x, y) pixels of the original image"
                )
            q = points.shape[0]
        if boxes is not None:
            boxes = np.asarray(boxes, np.float64)
            if boxes.ndim != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"box must be [4] (x0, y0, x1, y1), got {boxes.shape[1:]}")
            if not np.all(np.isfinite(boxes)):
                raise ValueError(f"box must be finite (x0, y0, x1, y1) pixels, got {boxes}")
            if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
                raise ValueError(f"box must be (x0, y0, x1, y1) with x0 <= x1, y0 <= y1: {boxes}")
            if q is not None and boxes.shape[0] != q:
                raise ValueError(f"{boxes.shape[0]} boxes for {q} point prompts")
            q = boxes.shape[0]
        if mask_input is not None:
            low = self.config.low_res_size
            mask_input = np.asarray(mask_input, np.float32)
            if mask_input.ndim == 4 and mask_input.shape[1] == 1:
                mask_input = mask_input[:, 0]
            if mask_input.shape[1:] != (low, low):
                raise ValueError(
                    f"mask_input must be [1, {low}, {low}] low-res logits (the third output of a "
                    f"previous predict), got {mask_input.shape[1:]}"
                )
            if not np.all(np.isfinite(mask_input)):
                raise ValueError("mask_input holds NaN or infinite logits")
            if q is not None and mask_input.shape[0] != q:
                raise ValueError(f"{mask_input.shape[0]} mask inputs for {q} prompts")
            q = mask_input.shape[0]
        if q is None:
            raise ValueError("give at least one of point_coords, box, mask_input")
        return points, labels, boxes, mask_input, q
