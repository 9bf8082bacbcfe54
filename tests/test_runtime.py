"""sum_jax.runtime: the line every long command prints at start (backend, devices, mesh)
and the warning when a full-size SAM would run on the CPU."""

from __future__ import annotations

from configs import ft_small
from sum_jax import runtime
from sum_jax.train import sharding


def test_accelerator_config_on_cpu_is_named_with_the_install_commands(capsys):
    variant = ft_small.get_config().model.variant
    mesh = sharding.make_mesh((2, -1))
    warning = runtime.report("train", config_name="configs/ft_small.py", variant=variant, mesh=mesh)
    out, err = capsys.readouterr()
    assert out.startswith("train: JAX ") and "backend cpu" in out
    assert "8 devices (8 x cpu)" in out and "mesh {'data': 2, 'fsdp': 4}" in out
    assert err == f"warning: {warning}\n"
    for text in ("configs/ft_small.py runs a vit_h SAM", "only the CPU", ".[cuda]", ".[tpu]"):
        assert text in warning, text
    assert runtime.cpu_warning("train", "configs/demo.py", "small") is None
    assert runtime.cpu_warning("evaluate", None, "vit_b").startswith("evaluate runs a vit_b")


def test_model_variant_reads_only_the_model_config(tmp_path):
    assert runtime.model_variant("random:vit_l") == "vit_l"
    assert runtime.model_variant("pretrained:small") == "small"
    assert runtime.model_variant(str(tmp_path / "missing")) is None  # the command says why
    assert runtime.largest(["small", "vit_b", None, "vit_h"]) == "vit_h"
    assert runtime.largest(["tiny"]) == "tiny"
