"""Speed of the Flax SAM against the official PyTorch SAM, same weights, same process.

    python benchmarks/model_speed.py --variant vit_b --prompts 64 --repeats 3
    python benchmarks/model_speed.py --variant vit_h --dtype bfloat16   # on a GPU

Times the image encoder (one 1024x1024 image) and the prompt encoder + mask decoder on one
image embedding with `--prompts` single-click prompts (three masks each), after a warm-up
(compilation excluded and reported separately). Prints the median seconds of each with the
min-max over `--repeats`, the ratio PyTorch / Flax of the medians (above 1: Flax is faster)
and the load average (the machine may be shared: compare ratios from the same run). PyTorch runs on the CPU with the same number
of threads as XLA; when JAX has a GPU, only the JAX side moves there, so the ratio then
compares devices, not frameworks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


SPREAD: dict[str, str] = {}


def median_seconds(fn, repeats: int, name: str = "") -> float:
    """Median seconds of `repeats` calls; the min-max goes to `SPREAD[name]`."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    SPREAD[name] = f"{min(times):.3f}-{max(times):.3f} s"
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="vit_b", choices=["tiny", "vit_b", "vit_l", "vit_h"])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--no-torch", action="store_true", help="time only the Flax model")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from sum_jax.models.sam import VARIANTS
    from tests.torch_reference import flax_from_torch, torch_sam

    torch.set_num_threads(os.cpu_count() or 1)
    config = VARIANTS[args.variant]
    tmodel = torch_sam(config, seed=0, perturb=0.02)
    fmodel = flax_from_torch(tmodel, config, dtype=args.dtype)
    s, g, q = config.img_size, config.embedding_size, args.prompts
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, s, s, 3)).astype(np.float32)
    points = rng.uniform(0, s, (q, 1, 2)).astype(np.float32)
    labels = np.ones((q, 1), np.int32)

    from flax import nnx

    graphdef, state = nnx.split(fmodel)

    @jax.jit
    def encode(state, x):
        return nnx.merge(graphdef, state).encode_image(x)

    @jax.jit
    def decode(state, emb, pts, lbl):
        return nnx.merge(graphdef, state).decode(emb, pts[None], lbl[None], multimask_output=True)

    x, pts, lbl = jnp.asarray(image), jnp.asarray(points), jnp.asarray(labels)
    t0 = time.perf_counter()
    emb = jax.block_until_ready(encode(state, x))
    compile_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(decode(state, emb, pts, lbl))
    compile_dec = time.perf_counter() - t0
    jax_enc = median_seconds(lambda: jax.block_until_ready(encode(state, x)), args.repeats, "fe")
    jax_dec = median_seconds(
        lambda: jax.block_until_ready(decode(state, emb, pts, lbl)), args.repeats, "fd"
    )
    print(f"device: {jax.devices()[0].device_kind}, {args.variant}, {args.dtype}, {q} prompts")
    print(
        f"flax   encoder {jax_enc:8.3f} s   decoder {jax_dec * 1e3:8.1f} ms"
        f"   (first calls incl. compile: {compile_enc:.1f} s, {compile_dec:.1f} s)"
    )
    if args.no_torch:
        return

    timg = torch.from_numpy(image).permute(0, 3, 1, 2)
    tpts, tlbl = torch.from_numpy(points), torch.from_numpy(labels)

    def torch_encode():
        with torch.inference_mode():
            return tmodel.image_encoder(timg)

    temb = torch_encode()

    def torch_decode():
        with torch.inference_mode():
            sparse, dense = tmodel.prompt_encoder(points=(tpts, tlbl), boxes=None, masks=None)
            return tmodel.mask_decoder(
                image_embeddings=temb,
                image_pe=tmodel.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )

    torch_decode()
    t_enc = median_seconds(torch_encode, args.repeats, "te")
    t_dec = median_seconds(torch_decode, args.repeats, "td")
    print(
        f"torch  encoder {t_enc:8.3f} s   decoder {t_dec * 1e3:8.1f} ms   "
        f"({torch.get_num_threads()} threads)"
    )
    print(f"ratio torch/flax: encoder {t_enc / jax_enc:.2f}x, decoder {t_dec / jax_dec:.2f}x")
    print(
        f"min-max over {args.repeats} repeats: flax encoder {SPREAD['fe']}, decoder "
        f"{SPREAD['fd']}; torch encoder {SPREAD['te']}, decoder {SPREAD['td']}"
    )
    print("load average (1, 5, 15 min):", ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    del g


if __name__ == "__main__":
    main()
