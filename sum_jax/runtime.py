"""What a command runs on: the line it prints at start, and the warning when a model meant
for accelerators is about to run on a CPU.

    runtime.report("train", config_name="configs/ft_small.py", variant="vit_h", mesh=mesh)

prints `train: JAX 0.10.2, backend cpu, 8 devices (8 x cpu), process 0 of 1, mesh
{'data': 8, 'fsdp': 1}` and, on a CPU with a vit_b / vit_l / vit_h model, a `warning:` that
names the config and how to install JAX for GPUs or TPUs (README, "On GPUs and TPUs"):
`pip install -e .` gives CPU-only JAX, and a ViT-H config on it runs, but at hours per
training step. `python -m sum_jax.train`, `train_refiner`, `pseudo_labels` and `evaluate`
call it once their inputs are checked, before the model loads.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

# The full-size SAMs: minutes per image on a CPU, hours per training step.
ACCELERATOR_VARIANTS = ("vit_b", "vit_l", "vit_h")
INSTALL_HINT = (
    "on an NVIDIA GPU machine `pip install -e '.[cuda]'`, on a Cloud TPU VM "
    "`pip install -e '.[tpu]'` (README.md, \"On GPUs and TPUs\"); check with "
    "`python -c 'import jax; print(jax.devices())'`"
)


def describe(mesh: Any = None) -> str:
    """The JAX version, backend, devices, this process among the processes and, when
    given, the mesh's axis sizes."""
    import jax

    devices = jax.devices()
    kinds = Counter(d.device_kind for d in devices)
    listed = ", ".join(f"{n} x {kind}" for kind, n in kinds.items())
    text = (
        f"JAX {jax.__version__}, backend {jax.default_backend()}, {len(devices)} "
        f"device{'s' if len(devices) != 1 else ''} ({listed}), process "
        f"{jax.process_index()} of {jax.process_count()}"
    )
    if mesh is not None:
        text += f", mesh {dict(mesh.shape)}"
    return text


def cpu_warning(command: str, config_name: str | None, variant: str | None) -> str | None:
    """The warning for a `variant` SAM (a full-size one) about to run on CPU, naming the
    config; None on an accelerator or for the small variants."""
    import jax

    if jax.default_backend() != "cpu" or variant not in ACCELERATOR_VARIANTS:
        return None
    what = f"{config_name} runs" if config_name else f"{command} runs"
    return (
        f"{what} a {variant} SAM, but JAX found only the CPU: this works, at minutes per "
        f"image and hours per training step. For GPUs or TPUs install the matching JAX: "
        f"{INSTALL_HINT}."
    )


def model_variant(spec: str | None) -> str | None:
    """The SAM variant of a model given as in every command (a model directory,
    `pretrained:<name>`, `random:<variant>`), read from its config file only; None when it
    cannot be read (the command's own checks report that)."""
    if not spec:
        return None
    spec = str(spec)
    if spec.startswith("random:"):
        return spec.split(":", 1)[1]
    from sum_jax.checkpointing import read_config

    try:
        return read_config(spec).variant
    except (OSError, ValueError):
        return None


def largest(variants: list[str | None]) -> str | None:
    """The largest full-size variant among `variants` (the one a warning should name)."""
    ranked = [v for v in reversed(ACCELERATOR_VARIANTS) if v in variants]
    return ranked[0] if ranked else next((v for v in variants if v), None)


def config_name(flag: str = "config") -> str | None:
    """The config file given to the command's `--config` flag, as typed."""
    from absl import flags
    from ml_collections import config_flags

    try:
        return config_flags.get_config_filename(flags.FLAGS[flag])
    except (KeyError, AttributeError, TypeError):
        return None


def report(
    command: str, *, config_name: str | None, variant: str | None, mesh: Any = None
) -> str | None:
    """Prints `describe(mesh)` on stdout (process 0 only) and `cpu_warning` on stderr;
    returns the warning (None when there is none)."""
    import jax

    if jax.process_index() == 0:
        print(f"{command}: {describe(mesh)}", flush=True)
    warning = cpu_warning(command, config_name, variant)
    if warning and jax.process_index() == 0:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return warning
