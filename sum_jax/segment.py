"""Segments one image from clicks and/or a box, and writes the mask and an overlay as PNG.

    python -m sum_jax.segment --checkpoint=ckpt/sam_vit_h --image=photo.jpg \
        --point=300,200 --point=50,380:0 --box=150,60,480,350 --output_dir=out/segment

Points are `x,y` (positive) or `x,y:0` (negative) in pixels of the original image. Writes
`mask.png` (the highest-scoring mask, white on black), `overlay.png` (mask and prompts over the
photo), `candidates.png` (all masks when several are predicted) and `result.json` (scores).
With no `--checkpoint`, a randomly initialised tiny model is used: that checks the pipeline,
and its masks are meaningless. With no `--image`, scikit-image's coffee photo is used.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from absl import app, flags, logging
from PIL import Image, UnidentifiedImageError

from sum_jax.fileio import atomic_write
from sum_jax.predictor import SamPredictor
from sum_jax.visualize import overlay, save_png

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Model directory (convert.sam_checkpoint).")
_IMAGE = flags.DEFINE_string("image", None, "Image file; default: scikit-image's coffee photo.")
_POINT = flags.DEFINE_multi_string("point", [], "Click 'x,y' (positive) or 'x,y:0' (negative).")
_BOX = flags.DEFINE_string("box", None, "Box 'x0,y0,x1,y1'.")
_TASK = flags.DEFINE_string("task", None, "SUM task prompt: salient, entity, part, or an id.")
_SINGLE = flags.DEFINE_bool("single", False, "One mask instead of three candidates.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/segment", "Where the PNGs and JSON go.")


def parse_point(text: str) -> tuple[float, float, int]:
    """'x,y' or 'x,y:label' -> (x, y, label)."""
    try:
        xy, _, label = text.partition(":")
        x, y = (float(v) for v in xy.split(","))
        return x, y, int(label) if label else 1
    except ValueError as e:
        raise ValueError(f"--point={text!r}: expected 'x,y' or 'x,y:0'") from e


def parse_box(text: str) -> np.ndarray:
    try:
        box = np.array([float(v) for v in text.split(",")])
    except ValueError as e:
        raise ValueError(f"--box={text!r}: expected 'x0,y0,x1,y1'") from e
    if box.shape != (4,):
        raise ValueError(f"--box={text!r}: expected 4 numbers 'x0,y0,x1,y1'")
    return box


def load_image(path: str | None) -> np.ndarray:
    """RGB uint8 array of an image file (default: scikit-image's coffee photo)."""
    if path is None:
        import skimage.data

        return skimage.data.coffee()
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError as e:
        raise ValueError(f"{path}: no such image file") from e
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path} is not a readable image (corrupt or truncated?): {e}") from e


def segment(
    predictor: SamPredictor,
    image: np.ndarray,
    points: list[tuple[float, float, int]],
    box: np.ndarray | None,
    output_dir: str,
    *,
    multimask_output: bool = True,
    task: str | int | None = None,
) -> dict:
    """Runs one prediction and writes mask.png, overlay.png, candidates.png, result.json."""
    predictor.set_image(image)
    if not points and box is None:
        points = [(image.shape[1] / 2, image.shape[0] / 2, 1)]
    coords = np.array([p[:2] for p in points]) if points else None
    labels = np.array([p[2] for p in points]) if points else None
    masks, scores, _ = predictor.predict(
        coords, labels, box, multimask_output=multimask_output, task=task
    )
    best = int(np.argmax(scores))
    out = Path(output_dir)
    save_png(out / "mask.png", masks[best].astype(np.uint8) * 255)
    save_png(
        out / "overlay.png", overlay(image, masks[best], points=coords, labels=labels, box=box)
    )
    if len(masks) > 1:
        tiles = [overlay(image, m, points=coords, labels=labels, box=box) for m in masks]
        save_png(out / "candidates.png", np.concatenate([np.asarray(t) for t in tiles], axis=1))
    result = {
        "scores": [float(s) for s in scores],
        "best": best,
        "mask_area_px": int(masks[best].sum()),
        "image_size": list(image.shape[:2]),
        "points": [list(p) for p in points],
        "box": None if box is None else box.tolist(),
        "task": task,
    }
    atomic_write(out / "result.json", json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str]) -> None:
    del argv
    try:
        points = [parse_point(p) for p in _POINT.value]
        box = parse_box(_BOX.value) if _BOX.value else None
        image = load_image(_IMAGE.value)
        if _CHECKPOINT.value:
            predictor = SamPredictor.from_checkpoint(_CHECKPOINT.value)
        else:
            from sum_jax.models.sam import build_sam

            logging.warning(
                "no --checkpoint: using a RANDOMLY INITIALISED tiny model. This checks the "
                "pipeline; its masks mean nothing. Convert real SAM weights with "
                "`python -m convert.sam_checkpoint --input sam_vit_h_4b8939.pth --output DIR`."
            )
            predictor = SamPredictor(build_sam("tiny"))
        task = int(_TASK.value) if _TASK.value and _TASK.value.isdigit() else _TASK.value
        result = segment(
            predictor,
            image,
            points,
            box,
            _OUTPUT_DIR.value,
            multimask_output=not _SINGLE.value,
            task=task,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(
        f"wrote {_OUTPUT_DIR.value}/mask.png, overlay.png, result.json "
        f"(scores {[round(s, 3) for s in result['scores']]}, best mask "
        f"{result['mask_area_px']} px)"
    )


if __name__ == "__main__":
    app.run(main)
