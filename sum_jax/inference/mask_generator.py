"""SAM's automatic mask generation (the pseudo-label engine of SUM, App. B.1), in JAX.

Mirrors `segment_anything.SamAutomaticMaskGenerator`: a regular grid of single-click prompts
(32x32 by default) in fixed-size jitted batches, three masks per click, then the filters:
predicted IoU > 0.88, stability score >= 0.95 (IoU of the masks thresholded at logits -1 and
+1), and, as in SAM's data engine (not in the released generator), area below 95% of the
image; then box NMS at 0.7, optionally over crop layers.

Work is spent on survivors only. Each batch of clicks is decoded on device and only its
predicted IoUs come back; the IoU filter needs nothing else. The survivors alone are upscaled
to full resolution (SAM's postprocessing as two-tap bilinear gathers,
`transforms.postprocess_taps`), a few masks per device call (about `upscale_pixels` pixels,
at most `upscale_chunk` masks: XLA:CPU ran one 512x512 mask ten times faster in calls of
one or two than in calls of 32, whose buffers leave the cache), into a frame padded up to a
multiple of `size_multiple` pixels: the taps are arrays, so one compilation serves every
image size of a bucket. Stability, boxes and areas come from those full-resolution logits
(as the official generator computes them); the filters and NMS run on the host over the
small per-mask arrays, and only the masks NMS keeps are made again at full resolution (the
same jitted arithmetic) and copied to the host.

Each kept mask also keeps what SUM's later stages need: its low-res logits (the mask prompt
of the refinement module) and the generating point.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np

from sum_jax.inference.decoding import Prompts, decode
from sum_jax.inference.predictor import SamPredictor
from sum_jax.ops import transforms
from sum_jax.ops.masks import box_iou, mask_to_box, stability_score


@dataclasses.dataclass(frozen=True)
class GeneratorSettings:
    """Parameters of automatic mask generation; defaults are SAM's and the paper's."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    max_area_fraction: float = 0.95  # SAM's data engine: drop masks covering >= 95% of the image
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1


def point_grid(n_per_side: int) -> np.ndarray:
    """`[n*n, 2]` (x, y) cell centres of an n x n grid over [0, 1]^2, row by row."""
    offset = 1.0 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def crop_boxes(im_size: tuple[int, int], n_layers: int, overlap_ratio: float):
    """SAM's crop layers: the whole image, then (2^i)^2 overlapping crops for layer i."""
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]
    for i_layer in range(n_layers):
        n = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n))
        crop_w = math.ceil((overlap * (n - 1) + im_w) / n)
        crop_h = math.ceil((overlap * (n - 1) + im_h) / n)
        x0s = [int((crop_w - overlap) * i) for i in range(n)]
        y0s = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in itertools.product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(i_layer + 1)
    return boxes, layers


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: indices kept, by decreasing score; a box is dropped if its IoU with a
    kept, higher-scoring box is above `iou_threshold`."""
    order = np.argsort(-scores, kind="stable")
    boxes = boxes.astype(np.float64)
    iou = box_iou(boxes[order], boxes[order])
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        suppressed |= iou[i] > iou_threshold
    return np.asarray(keep, np.int64)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _decode_batch(graphdef, state, embeddings, points):
    """One batch of single-click prompts `[Q, 2]` -> low-res logits `[3Q, L, L]` and IoU
    predictions `[3Q]` (three masks per click, click-major)."""
    q = points.shape[0]
    prompts = Prompts(points[None, :, None, :], jnp.ones((1, q, 1), jnp.int32))
    low_res, iou = decode(graphdef, state, embeddings, prompts, multimask_output=True)
    return low_res[0].reshape((-1,) + low_res.shape[-2:]), iou[0].reshape(-1)


def _full_logits(low_res, index, taps, crop_hw):
    """Low-res logits `low_res[index]` (`[n, L, L]`) -> full-resolution logits `[n, Hb, Wb]`,
    -inf beyond the crop's `crop_hw` in the padded frame (counts at no threshold)."""
    logits = transforms.apply_postprocess(low_res[index], taps)
    hb, wb = logits.shape[-2:]
    inside = (jnp.arange(hb)[:, None] < crop_hw[0]) & (jnp.arange(wb)[None, :] < crop_hw[1])
    return jnp.where(inside, logits, -jnp.inf)


@functools.partial(jax.jit, static_argnames=("offset",))
def _score_masks(low_res, index, taps, crop_hw, *, offset):
    """What the filters and NMS need of the masks `low_res[index]` at full resolution:
    stability `[n]`, boxes `[n, 4]`, areas `[n]` (the masks stay on device and are dropped)."""
    logits = _full_logits(low_res, index, taps, crop_hw)
    masks = logits > transforms.MASK_THRESHOLD
    return {
        "stability": stability_score(logits, offset),
        "boxes": mask_to_box(masks)[0],
        "area": jnp.sum(masks, axis=(-1, -2), dtype=jnp.int32),
    }


@jax.jit
def _binary_masks(low_res, index, taps, crop_hw):
    """The full-resolution masks `bool[n, Hb, Wb]` of `low_res[index]`, as `_score_masks`
    thresholds them (same arithmetic: the kept masks are made again after NMS)."""
    return _full_logits(low_res, index, taps, crop_hw) > transforms.MASK_THRESHOLD


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class MaskGenerator:
    """Generates all masks of an image, as `SamAutomaticMaskGenerator.generate`."""

    def __init__(
        self,
        predictor: SamPredictor,
        config: GeneratorSettings = GeneratorSettings(),
        *,
        upscale_chunk: int = 32,
        upscale_pixels: int = 2**19,
        size_multiple: int = 128,
    ):
        if getattr(predictor.config, "hq", False):
            raise ValueError(
                "the automatic mask generator takes SAM's three outputs per point; an HQ-SAM "
                "model has one (docs/training.md, HQ-SAM's architecture): generate "
                "pseudo-labels with a plain SAM"
            )
        self.predictor = predictor
        self.config = config
        self.upscale_chunk = upscale_chunk  # at most this many masks per device call,
        self.upscale_pixels = upscale_pixels  # and about this many pixels per call
        self.size_multiple = size_multiple  # size buckets of the full-resolution frame
        self._image_is_set = False
        self.grids = [
            point_grid(config.points_per_side // config.crop_n_points_downscale_factor**i)
            for i in range(config.crop_n_layers + 1)
        ]

    def generate(
        self, image: np.ndarray, stats: Counter | None = None, *, image_is_set: bool = False
    ) -> list[dict]:
        """Masks of a uint8 `HxWx3` image as a list of records (largest predicted IoU first
        within each crop), each with: `segmentation` (bool `[H, W]`), `area`, `bbox` (XYWH),
        `predicted_iou`, `stability_score`, `point_coords` ([[x, y]] in the image),
        `crop_box` (XYWH), `low_res_logits` (`[L, L]` float32, in the crop's model frame).

        `stats`, if given, counts the masks left after each stage: `candidates`,
        `predicted_iou`, `stability`, `area`, `crop_edge`, `box_nms`, `crop_nms`.

        `image_is_set`: the caller has already given `image` to the predictor
        (`predictor.set_image(image)`), e.g. to have its encoding run on the device while the
        host finishes the previous image; the whole-image crop then uses that embedding.
        """
        stats = Counter() if stats is None else stats
        image = transforms.check_image(image)
        orig_h, orig_w = image.shape[:2]
        if image_is_set and self.predictor.original_size != (orig_h, orig_w):
            raise ValueError(
                f"image_is_set, but the predictor holds an image of size "
                f"{self.predictor.original_size}, not {(orig_h, orig_w)}"
            )
        self._image_is_set = image_is_set
        boxes, layers = crop_boxes(
            (orig_h, orig_w), self.config.crop_n_layers, self.config.crop_overlap_ratio
        )
        records = []
        for crop, layer in zip(boxes, layers):
            records += self._process_crop(image, crop, layer, stats)
        if len(boxes) > 1 and records:
            crop_area = np.array([r["crop_box"][2] * r["crop_box"][3] for r in records], float)
            keep = nms(
                np.array([r["_box"] for r in records]), 1.0 / crop_area, self.config.crop_nms_thresh
            )
            records = [records[i] for i in keep]
        stats["crop_nms"] += len(records)
        for r in records:
            del r["_box"]
        return records

    def _process_crop(self, image, crop, layer, stats: Counter) -> list[dict]:
        cfg = self.config
        x0, y0, x1, y1 = crop
        orig_h, orig_w = image.shape[:2]
        cropped = np.ascontiguousarray(image[y0:y1, x0:x1])
        crop_h, crop_w = cropped.shape[:2]
        p = self.predictor
        if not (self._image_is_set and (crop_h, crop_w) == (orig_h, orig_w)):
            p.set_image(cropped)
        s = p.config.img_size
        points = self.grids[layer] * np.array([crop_w, crop_h])
        n = len(points)
        batch = cfg.points_per_batch
        hb, wb = _round_up(crop_h, self.size_multiple), _round_up(crop_w, self.size_multiple)
        taps = transforms.postprocess_taps((crop_h, crop_w), s, p.config.low_res_size, (hb, wb))
        taps = jax.tree.map(jnp.asarray, taps)
        crop_hw = jnp.asarray([crop_h, crop_w], jnp.int32)
        # Masks per device call: a few, so that each call's full-resolution buffers stay in
        # the cache (one 512x512 mask per call cost ~1/10 of what it cost in calls of 32).
        per_call = max(1, min(self.upscale_chunk, self.upscale_pixels // max(s * s, hb * wb)))
        offset = float(cfg.stability_score_offset)
        # Filters run per batch on per-mask numbers (stability, box, area) and only the
        # survivors' low-res logits are kept; their full-size masks are made after NMS, for
        # the masks NMS keeps (holding every candidate's would take ~10 GB at SA-1B's size).
        out: dict[str, list[np.ndarray]] = {}
        for start in range(0, n, batch):
            chunk = points[start : start + batch]
            padded = np.zeros((batch, 2))
            padded[: len(chunk)] = chunk  # fixed batch shape: one compilation per model
            low_res, iou = _decode_batch(
                p._graphdef,
                p._state,
                p.features,
                jnp.asarray(transforms.apply_coords(padded, (crop_h, crop_w), s), jnp.float32),
            )
            rows = {"iou": np.asarray(iou)[: 3 * len(chunk)], "points": np.repeat(chunk, 3, 0)}
            keep = self._iou_filter(rows["iou"], stats)
            if not keep.size:
                continue
            # Every call is dispatched before any result is read (JAX runs them
            # asynchronously); the index is padded to `per_call` (one compilation).
            index = np.zeros(_round_up(keep.size, per_call), np.int32)
            index[: keep.size] = keep
            calls = [
                _score_masks(low_res, index[c : c + per_call], taps, crop_hw, offset=offset)
                for c in range(0, keep.size, per_call)
            ]
            host = jax.device_get(calls)
            scores = {k: np.concatenate([h[k] for h in host])[: keep.size] for k in host[0]}
            scores.update({k: v[keep] for k, v in rows.items()})
            kept = np.nonzero(self._mask_filters(scores, crop, (orig_h, orig_w), stats))[0]
            if not kept.size:
                continue
            scores = {k: v[kept] for k, v in scores.items()}
            scores["low_res"] = np.asarray(low_res)[keep[kept]]
            for k, v in scores.items():
                out.setdefault(k, []).append(v)
        data = {k: np.concatenate(v) for k, v in out.items()}
        idx = np.arange(len(data.get("iou", ())))
        if len(idx):
            idx = idx[nms(data["boxes"], data["iou"], cfg.box_nms_thresh)]
        stats["box_nms"] += len(idx)
        masks = self._masks(data["low_res"][idx] if len(idx) else None, taps, crop_hw, per_call)

        offset = np.array([x0, y0, x0, y0])
        records = []
        for i, mask in zip(idx, masks):
            mask = mask[:crop_h, :crop_w]
            if (crop_h, crop_w) != (orig_h, orig_w):
                full = np.zeros((orig_h, orig_w), bool)
                full[y0:y1, x0:x1] = mask
                mask = full
            box = data["boxes"][i] + offset
            records.append(
                {
                    "segmentation": mask,
                    "area": int(data["area"][i]),
                    "bbox": [int(box[0]), int(box[1]), int(box[2] - box[0]), int(box[3] - box[1])],
                    "predicted_iou": float(data["iou"][i]),
                    "stability_score": float(data["stability"][i]),
                    "point_coords": [(data["points"][i] + offset[:2]).tolist()],
                    "crop_box": [x0, y0, x1 - x0, y1 - y0],
                    "low_res_logits": data["low_res"][i],
                    "_box": box,
                }
            )
        return records

    def _masks(self, low_res, taps, crop_hw, per_call: int) -> np.ndarray:
        """Full-resolution masks `bool[m, Hb, Wb]` of the host logits `low_res [m, L, L]`."""
        if low_res is None:
            return np.zeros((0, 0, 0), bool)
        m = len(low_res)
        padded = np.zeros((_round_up(m, per_call),) + low_res.shape[1:], low_res.dtype)
        padded[:m] = low_res
        padded = jnp.asarray(padded)
        index = np.arange(len(padded), dtype=np.int32)
        calls = [
            _binary_masks(padded, index[c : c + per_call], taps, crop_hw)
            for c in range(0, m, per_call)
        ]
        return np.concatenate(jax.device_get(calls))[:m]

    def _iou_filter(self, iou: np.ndarray, stats: Counter) -> np.ndarray:
        """Indices of the candidates above the predicted-IoU threshold (SAM's first filter)."""
        keep = np.ones(len(iou), bool)
        stats["candidates"] += int(keep.sum())
        if self.config.pred_iou_thresh > 0:
            keep &= iou > self.config.pred_iou_thresh
        stats["predicted_iou"] += int(keep.sum())
        return np.nonzero(keep)[0]

    def _mask_filters(self, data: dict, crop, orig_hw: tuple[int, int], stats: Counter):
        """SAM's filters after the IoU filter, in its order, counting the masks left after
        each: stability, area (SAM's data engine), crop edge."""
        cfg = self.config
        orig_h, orig_w = orig_hw
        keep = np.ones(len(data["stability"]), bool)
        if cfg.stability_score_thresh > 0:
            keep &= data["stability"] >= cfg.stability_score_thresh
        stats["stability"] += int(keep.sum())
        if cfg.max_area_fraction < 1:
            keep &= data["area"] < cfg.max_area_fraction * orig_h * orig_w
        stats["area"] += int(keep.sum())
        keep &= ~_near_crop_edge(data["boxes"], crop, (orig_w, orig_h))
        stats["crop_edge"] += int(keep.sum())
        return keep


def _near_crop_edge(boxes, crop, orig_wh, atol: float = 20.0) -> np.ndarray:
    """Masks touching a crop's inner edge (not the image border) are cut off: drop them."""
    x0, y0, _, _ = crop
    b = boxes + np.array([x0, y0, x0, y0])
    crop_arr = np.asarray(crop, float)
    orig = np.array([0, 0, orig_wh[0], orig_wh[1]], float)
    near_crop = np.abs(b - crop_arr) <= atol
    near_image = np.abs(b - orig) <= atol
    return np.any(near_crop & ~near_image, axis=1)
