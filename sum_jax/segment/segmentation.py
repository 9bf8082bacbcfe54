"""Segmenting one image from clicks and a box, to files (the library behind `sum_jax.segment`).

`segment` runs one prediction and writes `mask.png`, `overlay.png`, `candidates.png` and
`result.json`, all beside the old result first and then moved in together, so a failed write
(a full disk) never leaves a new mask beside an old overlay; the parsers turn command-line
text into prompts.
"""

from __future__ import annotations

import json

import numpy as np

from sum_jax.data import image_ops
from sum_jax.fileio import as_path, atomic_files, atomic_write
from sum_jax.inference.predictor import DEFAULT_TASK, SamPredictor
from sum_jax.visualize import overlay, save_png

# The files of one result; an older result's files that a new one does not write go.
OUTPUTS = ("mask.png", "overlay.png", "candidates.png", "result.json")


def parse_point(text: str) -> tuple[float, float, int]:
    """'x,y' or 'x,y:label' -> (x, y, label)."""
    try:
        xy, _, label = text.partition(":")
        x, y = (float(v) for v in xy.split(","))
        label = int(label) if label else 1
    except ValueError as e:
        raise ValueError(f"--point={text!r}: expected 'x,y' or 'x,y:0'") from e
    if not (np.isfinite(x) and np.isfinite(y)):
        raise ValueError(f"--point={text!r}: coordinates must be finite numbers (pixels)")
    if label not in (0, 1):
        raise ValueError(f"--point={text!r}: the label after ':' is 1 (object) or 0 (background)")
    return x, y, label


def parse_box(text: str) -> np.ndarray:
    try:
        box = np.array([float(v) for v in text.split(",")])
    except ValueError as e:
        raise ValueError(f"--box={text!r}: expected 'x0,y0,x1,y1'") from e
    if box.shape != (4,):
        raise ValueError(f"--box={text!r}: expected 4 numbers 'x0,y0,x1,y1'")
    if not np.all(np.isfinite(box)):
        raise ValueError(f"--box={text!r}: coordinates must be finite numbers (pixels)")
    return box


def load_image(path: str | None) -> np.ndarray:
    """RGB uint8 array of an image file (default: scikit-image's coffee photo)."""
    if path is None:
        import skimage.data

        return skimage.data.coffee()
    file = as_path(path, "--image")
    if file.is_dir():
        raise ValueError(f"--image={path} is a folder; give one image file")
    if not file.is_file():
        raise ValueError(f"--image={path}: no such image file")
    data = file.read_bytes()
    if not data:
        raise ValueError(f"--image={path} is empty (0 bytes)")
    try:
        # As a viewer shows it: EXIF rotation applied, so clicks are where the user sees them.
        return image_ops.decode_image(data, apply_exif=True)
    except image_ops.ImageDecodeError as e:
        raise ValueError(f"--image={path} is not a readable image: {e}") from e


def segment(
    predictor: SamPredictor,
    image: np.ndarray,
    points: list[tuple[float, float, int]],
    box: np.ndarray | None,
    output_dir: str,
    *,
    multimask_output: bool = True,
    task: str | int | None = DEFAULT_TASK,
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
    result = {
        "scores": [float(s) for s in scores],
        "best": best,
        "mask_area_px": int(masks[best].sum()),
        "image_size": list(image.shape[:2]),
        "points": [list(p) for p in points],
        "box": None if box is None else box.tolist(),
        "task": task,
        "task_id": predictor.task_id(task),  # what the decoder got; -1: no task prompt
    }
    # All files are written beside the old result and moved in together: a full disk leaves
    # the old result whole, and a single-mask run removes an older run's candidates.png.
    with atomic_files(output_dir, replaces=OUTPUTS) as out:
        save_png(out / "mask.png", masks[best].astype(np.uint8) * 255)
        save_png(
            out / "overlay.png", overlay(image, masks[best], points=coords, labels=labels, box=box)
        )
        if len(masks) > 1:
            tiles = [overlay(image, m, points=coords, labels=labels, box=box) for m in masks]
            save_png(out / "candidates.png", np.concatenate([np.asarray(t) for t in tiles], 1))
        atomic_write(out / "result.json", json.dumps(result, indent=2) + "\n")
    return result
