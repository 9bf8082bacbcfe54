"""The official HQ-SAM (`segment-anything-hq==0.3`, module `segment_anything_hq`) as the
tests' numerical reference for `SamConfig.hq`.

`torch_sam_hq(config)` builds the official HQ model (`MaskDecoderHQ`, the encoder that also
returns its global blocks' outputs) with the architecture of a `SamConfig` (the official
builders only know vit_b/l/h), perturbs every tensor, and `flax_from_torch` (tests/
torch_reference.py) loads the same weights into sum_jax through the converter's key map.
"""

from __future__ import annotations

from segment_anything_hq import modeling as hq_modeling

from sum_jax.models.sam import SamConfig
from tests.torch_reference import torch_sam


def torch_sam_hq(config: SamConfig, seed: int = 0, perturb: float = 0.05) -> hq_modeling.Sam:
    """The official HQ-SAM with `config`'s architecture, every tensor perturbed (the same
    builder and draws as `torch_sam`, with the HQ package's classes)."""
    return torch_sam(config, seed, perturb, modeling=hq_modeling)
