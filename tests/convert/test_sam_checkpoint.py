"""The checkpoint converter: bit-exact round trips and clear errors on bad checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import sam_model_registry

from convert import sam_checkpoint
from sum_jax.checkpointing import load_sam
from sum_jax.models.sam import VARIANTS
from tests.torch_reference import rel_err, torch_sam


def _official_state_dict(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = sam_model_registry[variant](checkpoint=None)
    sd = model.state_dict()
    with torch.no_grad():
        for t in sd.values():
            t.add_(0.02 * torch.randn_like(t))
    return sd


def _round_trip(tmp_path, sd, variant=None):
    pth, out_dir, back = tmp_path / "in.pth", tmp_path / "model", tmp_path / "back.pth"
    torch.save(sd, pth)
    config = sam_checkpoint.pth_to_orbax(str(pth), str(out_dir), variant)
    sam_checkpoint.orbax_to_pth(str(out_dir), str(back))
    return config, pth, out_dir, back


def _assert_bit_exact(a: dict, b: dict):
    assert set(a) == set(b)
    for k, value in a.items():
        assert value.shape == b[k].shape, k
        assert torch.equal(value, b[k]), k


def test_tiny_round_trip_and_forward(tmp_path):
    config = VARIANTS["tiny"]
    tmodel = torch_sam(config, seed=7)
    sd = tmodel.state_dict()
    got, _, out_dir, back = _round_trip(tmp_path, sd)
    assert got == config
    _assert_bit_exact(sd, torch.load(back, weights_only=True))
    # The converted model computes what the PyTorch one does.
    x = np.random.default_rng(0).standard_normal((1, 128, 128, 3)).astype(np.float32)
    with torch.no_grad():
        ref = tmodel.image_encoder(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert rel_err(load_sam(out_dir).encode_image(x), ref) < 1e-5


def test_vit_b_round_trip_loads_in_official_builder(tmp_path):
    sd = _official_state_dict("vit_b")
    config, _, _, back = _round_trip(tmp_path, sd)
    assert config == VARIANTS["vit_b"]
    _assert_bit_exact(sd, torch.load(back, weights_only=True))
    # The official builder loads the exported file with strict=True.
    model = sam_model_registry["vit_b"](checkpoint=str(back))
    _assert_bit_exact(sd, model.state_dict())


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["vit_l", "vit_h"])
def test_large_round_trips(tmp_path, variant):
    sd = _official_state_dict(variant)
    config, _, _, back = _round_trip(tmp_path, sd)
    assert config == VARIANTS[variant]
    _assert_bit_exact(sd, torch.load(back, weights_only=True))


def test_exported_task_prompt_is_reported(tmp_path, capsys):
    from sum_jax.checkpointing import save_sam

    config = VARIANTS["tiny"]
    sd = torch_sam(config, seed=1).state_dict()
    _, _, out_dir, _ = _round_trip(tmp_path, sd)
    model = load_sam(out_dir)
    table = model.prompt_encoder.task_embeddings.embedding
    table[...] = table[...] + 1.0
    save_sam(model, tmp_path / "tuned")
    capsys.readouterr()
    back = sam_checkpoint.orbax_to_pth(str(tmp_path / "tuned"), str(tmp_path / "tuned.pth"))
    assert "task prompt" in capsys.readouterr().out
    _assert_bit_exact(sd, back)


def test_other_model_is_rejected(tmp_path):
    import torchvision

    pth = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), pth)
    with pytest.raises(
        sam_checkpoint.ConversionError,
        match=r"resnet18\.pth is not a SAM checkpoint: it holds 122 tensors named conv1\.\*",
    ):
        sam_checkpoint.pth_to_orbax(str(pth), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_missing_extra_and_misshaped_tensors_are_named(tmp_path):
    sd = dict(torch_sam(VARIANTS["tiny"], seed=2).state_dict())
    del sd["mask_decoder.iou_token.weight"]
    sd["mask_decoder.hq_token.weight"] = torch.zeros(1, 32)
    sd["image_encoder.pos_embed"] = torch.zeros(1, 4, 4, 32)
    pth = tmp_path / "broken.pth"
    torch.save(sd, pth)
    with pytest.raises(sam_checkpoint.ConversionError) as e:
        sam_checkpoint.pth_to_orbax(str(pth), str(tmp_path / "out"), variant="tiny")
    msg = str(e.value)
    assert "missing tensor mask_decoder.iou_token.weight" in msg
    assert "unexpected tensor mask_decoder.hq_token.weight" in msg
    assert "image_encoder.pos_embed has shape [1, 4, 4, 32], expected [1, 8, 8, 32]" in msg


def test_forced_wrong_variant(tmp_path):
    pth = tmp_path / "tiny.pth"
    torch.save(torch_sam(VARIANTS["tiny"]).state_dict(), pth)
    with pytest.raises(
        sam_checkpoint.ConversionError, match="is a SAM tiny checkpoint, not vit_b.*--variant=tiny"
    ):
        sam_checkpoint.pth_to_orbax(str(pth), str(tmp_path / "out"), variant="vit_b")


def test_truncated_and_missing_files(tmp_path, capsys):
    pth = tmp_path / "sam.pth"
    torch.save(torch_sam(VARIANTS["tiny"]).state_dict(), pth)
    data = pth.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(sam_checkpoint.ConversionError, match="truncated.pth is not a readable"):
        sam_checkpoint.pth_to_orbax(str(truncated), str(tmp_path / "out"))
    # The CLI reports it as one clear line and a non-zero exit.
    assert sam_checkpoint.main(["--input", str(truncated), "--output", str(tmp_path / "o")]) == 2
    assert "truncated.pth is not a readable PyTorch checkpoint" in capsys.readouterr().err
    with pytest.raises(sam_checkpoint.ConversionError, match="no such file"):
        sam_checkpoint.pth_to_orbax(str(tmp_path / "nope.pth"), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="convert.sam_checkpoint"):
        load_sam(tmp_path / "not_a_model_dir")
