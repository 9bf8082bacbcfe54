"""Issue 16's variants train end to end on the photos that install with the project: the
demo's datasets, pseudo-labels from a random tiny SAM, "SUM Confidence-Uncer" maps from the
uncertainty stage, then a few steps of the `confidence_uncer` and `u2pl` ablation configs
(tiny model, the demo's data) through the trainer."""

from __future__ import annotations

import math

import ml_collections
import numpy as np
import pytest

from configs import ablations
from configs import demo as demo_config
from sum_jax import demo
from sum_jax.data import pseudo_label_format as plf

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """`(data_dir, pseudo-label folder with confidence maps)` on the demo's photos."""
    from sum_jax.pseudo_labels.generation import generate_pseudo_labels
    from sum_jax.uncertainty.maps import compute_uncertainty

    root = tmp_path_factory.mktemp("variants")
    demo.write_sources(root / "sources")
    data_dir = root / "prepared"
    demo.prepare_sources(root / "sources", data_dir)
    cfg = demo_config.get_config()
    pl = ml_collections.ConfigDict(cfg.demo.pseudo_labels.to_dict())
    pl.checkpoint, pl.data_dir = cfg.model.checkpoint, str(data_dir)
    pl.dataset, pl.output_dir = f"{demo.UNLABELLED}:train", str(root / "pl")
    generate_pseudo_labels(pl, progress=False)
    unc = ml_collections.ConfigDict(cfg.demo.uncertainty.to_dict())
    unc.source, unc.data_dir, unc.dataset = "confidence", str(data_dir), pl.dataset
    unc.pseudo_labels, unc.output_dir = str(root / "pl"), str(root / "pl_confidence")
    summary = compute_uncertainty(unc, progress=False)
    assert summary["masks"] > 0 and 0.0 < summary["mean_uncertainty"] < 1.0
    return data_dir, root / "pl_confidence"


def tiny(variant: str, data_dir, pseudo_label_dir) -> ml_collections.ConfigDict:
    """The variant's FT-Small config with the demo's model, data and a 3-step schedule."""
    config = ablations.get_config(f"{variant},ft_small")
    small = demo_config.get_config()
    config.model.checkpoint, config.model.variant = "random:tiny", "tiny"
    config.data.labelled, config.data.unlabelled = small.data.labelled, small.data.unlabelled
    config.data.data_dir, config.data.pseudo_label_dir = str(data_dir), str(pseudo_label_dir)
    config.data.read_threads = 1
    config.sharding.min_shard_size = 256
    config.interactive.num_rounds = 3
    # One image per (fake CPU) device: the trainer splits the batch over all of them.
    config.train.update(num_steps=3, batch_size=8, masks_per_image=2, log_every=1)
    config.model.mask_chunks = 1  # FT-Small's 3 chunks split its 30 masks, not 2
    config.train.checkpoint_every = 3
    config.eval.eval_sets = ""
    return config


# `confidence_uncer` trains SUM's step on other maps (the fixture makes them for both): its
# three steps run under `-m slow`; `u2pl` trains on the same confidence maps by default.
@pytest.mark.parametrize(
    "variant", [pytest.param("confidence_uncer", marks=pytest.mark.slow), "u2pl"]
)
def test_variant_trains_a_few_steps(prepared, variant, tmp_path):
    from sum_jax.train import loop

    data_dir, pl_dir = prepared
    config = tiny(variant, data_dir, pl_dir)
    assert plf.read(pl_dir, next(pl_dir.glob("*.npz")).stem).has_uncertainty
    summary = loop.train_and_evaluate(config, tmp_path / variant)
    assert summary["step"] == 3
    last = summary["metrics"]
    assert math.isfinite(last["loss"]) and last["masks_pseudo"] > 0
    if variant == "u2pl":
        # The contrastive term is logged; it is positive whenever a pseudo-labelled mask has
        # reliable cells of both classes and unreliable ones (confidence maps: boundaries).
        assert "contrastive" in last and last["contrastive"] >= 0.0
        logged = [line for line in (tmp_path / variant / "metrics.jsonl").read_text().split("\n")
                  if '"contrastive"' in line]  # fmt: skip
        assert len(logged) == 3
    else:
        assert "contrastive" not in last
    assert np.isfinite(last["grad_norm"]) and last["grad_norm"] > 0
