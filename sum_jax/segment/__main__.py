"""Segments one image from clicks and/or a box, and writes the mask and an overlay as PNG.

    python -m sum_jax.segment --checkpoint=ckpt/sam_vit_h --image=photo.jpg \
        --point=300,200 --point=50,380:0 --box=150,60,480,350 --output_dir=out/segment

Points are `x,y` (positive) or `x,y:0` (negative) in pixels of the original image. Writes
`mask.png` (the highest-scoring mask, white on black), `overlay.png` (mask and prompts over the
photo), `candidates.png` (all masks when several are predicted) and `result.json` (scores).
With no `--checkpoint`, `pretrained:small` is used (a 128 px SAM pretrained in this project
on generated scenes, shipped in the package: docs/pretraining.md); with no `--image`,
scikit-image's coffee photo.
"""

from __future__ import annotations

from absl import flags, logging

from sum_jax import cli, output_dir
from sum_jax.checkpointing import CONVERT_HINT, load_model, parse_checkpoint
from sum_jax.inference.predictor import DEFAULT_TASK, SamPredictor
from sum_jax.segment.segmentation import load_image, parse_box, parse_point, segment

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    "pretrained:small",
    "Model directory (convert.sam_checkpoint), pretrained:<name>, random:<variant>, or "
    "NAME= before any of them (as in evaluate and serve).",
)
_IMAGE = flags.DEFINE_string("image", None, "Image file; default: scikit-image's coffee photo.")
_POINT = flags.DEFINE_multi_string("point", [], "Click 'x,y' (positive) or 'x,y:0' (negative).")
_BOX = flags.DEFINE_string("box", None, "Box 'x0,y0,x1,y1'.")
_TASK = flags.DEFINE_string(
    "task",
    None,
    "SUM task prompt: salient, entity, part, an id, or none. Default: task 0 for a SUM "
    "model (its directory records its training tasks), no task prompt for a plain SAM.",
)
_SINGLE = flags.DEFINE_bool("single", False, "One mask instead of three candidates.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/segment", "Where the PNGs and JSON go.")


def main(argv: list[str]) -> None:
    del argv
    points = [parse_point(p) for p in _POINT.value]
    box = parse_box(_BOX.value) if _BOX.value else None
    image = load_image(_IMAGE.value)
    # Everything that needs no model is checked before the model loads.
    cli.check_output_dir(_OUTPUT_DIR.value, "--output_dir")
    output_dir.check_owner(_OUTPUT_DIR.value, "segment", "--output_dir")
    spec = parse_checkpoint(_CHECKPOINT.value)[1]  # the grammar of every command
    cli.check_model_dir(spec, "--checkpoint")
    if spec.startswith("random:"):
        logging.warning(
            "--checkpoint=%s: a RANDOMLY INITIALISED model; its masks mean nothing. %s",
            spec, CONVERT_HINT.format(directory="DIR"),
        )  # fmt: skip
        predictor = SamPredictor(load_model(spec))
    else:
        predictor = SamPredictor.from_checkpoint(spec)
    task = _TASK.value
    if task is None:
        task = DEFAULT_TASK
    elif task.isdigit():
        task = int(task)
    elif task == "none":
        task = None
    with output_dir.claim(_OUTPUT_DIR.value, "segment", "--output_dir"):
        result = segment(
            predictor,
            image,
            points,
            box,
            _OUTPUT_DIR.value,
            multimask_output=not _SINGLE.value,
            task=task,
        )
    print(
        f"wrote {_OUTPUT_DIR.value}/mask.png, overlay.png, result.json "
        f"(scores {[round(s, 3) for s in result['scores']]}, best mask "
        f"{result['mask_area_px']} px)"
    )


if __name__ == "__main__":
    cli.run(main)
