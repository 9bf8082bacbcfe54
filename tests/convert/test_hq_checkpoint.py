"""The converter on HQ-SAM checkpoints (`segment_anything_hq`'s `sam_hq_vit_{b,l,h}.pth`):
recognised as HQ models, bit-exact both ways, loadable by the official HQ builders."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import skimage.data
import torch
from segment_anything_hq import SamPredictor as HQPredictor
from segment_anything_hq import sam_model_registry as hq_registry

from convert import sam_checkpoint
from sum_jax.checkpointing import load_sam, read_config
from sum_jax.inference.predictor import SamPredictor
from sum_jax.models.sam import VARIANTS
from tests.hq_reference import torch_sam_hq
from tests.torch_reference import rel_err


def _official_hq_model(variant: str, seed: int = 0):
    """The official registry's HQ model (`checkpoint=None`), every tensor perturbed."""
    torch.manual_seed(seed)
    model = hq_registry[variant](checkpoint=None)
    with torch.no_grad():
        for t in model.state_dict().values():
            t.add_(0.02 * torch.randn_like(t))
    return model


def _official_hq_state_dict(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    return _official_hq_model(variant, seed).state_dict()


def _round_trip(tmp_path, sd, variant=None):
    pth, out_dir, back = tmp_path / "in.pth", tmp_path / "model", tmp_path / "back.pth"
    torch.save(sd, pth)
    config = sam_checkpoint.pth_to_orbax(str(pth), str(out_dir), variant)
    sam_checkpoint.orbax_to_pth(str(out_dir), str(back))
    return config, out_dir, torch.load(back, weights_only=True)


def _assert_bit_exact(a: dict, b: dict):
    assert set(a) == set(b)
    for k, value in a.items():
        assert value.shape == b[k].shape, k
        assert torch.equal(value, b[k]), k


def test_tiny_hq_round_trip_and_predictions(tmp_path, capsys):
    """A tiny HQ-SAM: recognised as HQ, bit-exact back, and the converted model directory
    (loaded as any model) predicts what the official HQ predictor does on a photo."""
    config = dataclasses.replace(VARIANTS["tiny"], hq=True)
    tmodel = torch_sam_hq(config, seed=5)
    sd = tmodel.state_dict()
    got, out_dir, back = _round_trip(tmp_path, sd)
    assert got == config and read_config(out_dir).hq
    assert "HQ-SAM tiny" in capsys.readouterr().out
    _assert_bit_exact(sd, back)
    ours, ref = SamPredictor(load_sam(out_dir)), HQPredictor(tmodel)
    image = skimage.data.astronaut()
    ours.set_image(image)
    with torch.no_grad():
        ref.set_image(image)
    kw = {"point_coords": np.array([[250.0, 180.0]]), "point_labels": np.array([1])}
    m, s, low = ours.predict(**kw, multimask_output=False)
    with torch.no_grad():
        rm, rs, rlow = ref.predict(**kw, multimask_output=False, hq_token_only=True)
    assert rel_err(low, rlow) < 1e-5
    np.testing.assert_allclose(s, rs, rtol=1e-4, atol=1e-6)
    assert np.mean(m == rm) >= 0.9999


@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h"])
def test_official_hq_registry_keys_match(variant):
    """Every tensor of the official `sam_model_registry[variant]` HQ model, by name and
    shape, is one of ours and the reverse (built on the meta device: no memory)."""
    with torch.device("meta"):
        official = hq_registry[variant](checkpoint=None).state_dict()
    shapes = {k: tuple(v.shape) for k, v in official.items()}
    assert sam_checkpoint.is_hq(shapes)
    # A mismatch raises, naming every missing, extra or mis-shaped tensor.
    config = sam_checkpoint.infer_config(f"sam_hq_{variant}.pth", shapes, None)
    assert config == (variant, sam_checkpoint.variant_config(variant, hq=True))


@pytest.mark.slow
def test_vit_b_hq_round_trip_loads_in_official_builder(tmp_path):
    model = _official_hq_model("vit_b")
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    config, _, back = _round_trip(tmp_path, sd)
    assert config == dataclasses.replace(VARIANTS["vit_b"], hq=True)
    assert config.variant == "vit_b"
    _assert_bit_exact(sd, back)
    # The official registry's model takes the exported tensors with strict=True.
    with torch.no_grad():
        for t in model.state_dict().values():
            t.zero_()
    model.load_state_dict(back, strict=True)
    _assert_bit_exact(sd, model.state_dict())


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["vit_l", "vit_h"])
def test_large_hq_round_trips(tmp_path, variant):
    sd = _official_hq_state_dict(variant)
    config, _, back = _round_trip(tmp_path, sd)
    assert config == dataclasses.replace(VARIANTS[variant], hq=True)
    _assert_bit_exact(sd, back)


def test_incomplete_hq_checkpoint_names_the_tensors(tmp_path):
    config = dataclasses.replace(VARIANTS["tiny"], hq=True)
    sd = dict(torch_sam_hq(config, seed=2).state_dict())
    del sd["mask_decoder.hf_mlp.layers.2.weight"]
    sd["mask_decoder.embedding_maskfeature.0.weight"] = torch.zeros(8, 4, 5, 5)
    pth = tmp_path / "broken_hq.pth"
    torch.save(sd, pth)
    with pytest.raises(sam_checkpoint.ConversionError) as e:
        sam_checkpoint.pth_to_orbax(str(pth), str(tmp_path / "out"), variant="tiny")
    msg = str(e.value)
    assert "missing tensor mask_decoder.hf_mlp.layers.2.weight" in msg
    assert (
        "mask_decoder.embedding_maskfeature.0.weight has shape [8, 4, 5, 5], expected [8, 4, 3, 3]"
        in msg
    )
    assert not (tmp_path / "out").exists()
