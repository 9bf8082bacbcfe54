"""experiments/small_scale/: its data are the kinds it says (intricate scenes to fine-tune
on, generic scenes and real photos to check forgetting), and its table is the mean and
spread of the evaluators' numbers."""

from __future__ import annotations

import json

import numpy as np
from scipy import ndimage

from experiments import small_scale
from sum_jax.data import sources


def test_the_data_stage_writes_and_prepares_every_set(tmp_path):
    small_scale.write_data(tmp_path)
    prepared = tmp_path / "prepared"
    counts = {}
    for ref in ("intricate:train", *small_scale.EVAL_SETS, "unlabelled:train"):
        ref = ref.split("@")[0]
        counts[ref] = len(sources.open_sources(str(prepared), [ref], {}))
    assert counts == {"intricate:train": 48, "intricate:validation": 24, "generic:validation": 24,
                      "heldout_hopper:validation": 1, "heldout_motorcycle:validation": 1,
                      "heldout_flower:validation": 1, "heldout_voc:validation": 1,
                      "heldout_coins:validation": 1,
                      "unlabelled:train": 48}  # fmt: skip

    # Intricate objects are thin or holed: much of each mask is near its boundary; generic
    # ones are compact.
    def boundary_share(split_dir):
        shares = []
        for mask_file in sorted(split_dir.glob("masks/*/*.png"))[:60]:
            from PIL import Image

            mask = np.asarray(Image.open(mask_file)) > 0
            inner = ndimage.binary_erosion(mask, iterations=4)
            shares.append(1 - inner.sum() / mask.sum())
        return float(np.median(shares))

    data = tmp_path / "data"
    assert (
        boundary_share(data / "intricate" / "validation")
        > boundary_share(data / "generic" / "validation") + 0.2
    )


def _summary(values_by_set: dict[str, float]) -> dict:
    datasets = {f"{name}:validation": {"miou": [v, v, v, v, v + 0.1]}
                for name, v in values_by_set.items()}  # fmt: skip
    mode = {"single": {"datasets": datasets}}
    return {"protocols": {"point": mode, "box": mode}}


def test_collect_and_render_give_mean_and_spread_over_seeds(tmp_path):
    sets = list(small_scale.SET_LABELS)
    numbers = {"SAM": 0.5, "vanilla_0": 0.6, "vanilla_1": 0.7, "sum_0": 0.55, "sum_1": 0.65}
    for name, v in numbers.items():
        folder = tmp_path / "eval" / name
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(_summary({s: v for s in sets})))
    results = small_scale.collect(tmp_path, [0, 1])
    assert results["Vanilla"]["intricate"]["point"]["click1"] == [0.6, 0.7]
    assert np.allclose(results["SUM"]["generic"]["box"]["click5"], [0.65, 0.75])
    text = small_scale.render(results, [0, 1], 60.0, 150)
    # mean ± sample std over the two seeds; SAM is one model
    assert "| 0.500 | 0.650 ± 0.071 | 0.600 ± 0.071 |" in text
    small_scale.plot(results, tmp_path / "results.png")
    assert (tmp_path / "results.png").stat().st_size > 1000
