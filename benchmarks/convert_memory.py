"""Peak memory and time of converting a full-size SAM checkpoint, both directions.

    python benchmarks/convert_memory.py --variant vit_h --workdir /tmp/convert_bench

Builds the official PyTorch model with random weights (no download), saves its state_dict as
a .pth, then runs `python -m convert.sam_checkpoint` both ways in fresh processes and reports
each one's wall time and peak resident memory (ru_maxrss) next to the checkpoint's size, and
whether the round trip is bit-exact.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def _status_gib(pid: int, field: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2**20
    except FileNotFoundError:
        pass
    return 0.0


def run_measured(cmd: list[str]) -> tuple[float, float, float]:
    """(seconds, peak RSS, peak anonymous RSS), in GiB, of a child process.

    Peak RSS includes the pages of the memory-mapped checkpoint (clean page cache the kernel
    can drop); anonymous RSS is the memory the conversion itself holds.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    peak_rss = peak_anon = 0.0
    while proc.poll() is None:
        peak_rss = max(peak_rss, _status_gib(proc.pid, "VmHWM"))
        peak_anon = max(peak_anon, _status_gib(proc.pid, "RssAnon"))
        time.sleep(0.05)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return time.perf_counter() - t0, peak_rss, peak_anon


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="vit_h", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--workdir", default="/tmp/convert_bench")
    args = parser.parse_args()
    import torch
    from segment_anything import sam_model_registry

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    pth = work / f"sam_{args.variant}_random.pth"
    if not pth.exists():
        torch.manual_seed(0)
        torch.save(sam_model_registry[args.variant](checkpoint=None).state_dict(), pth)
    size_gib = pth.stat().st_size / 2**30
    env_py = [sys.executable, "-m", "convert.sam_checkpoint"]
    t_in, rss_in, anon_in = run_measured(
        env_py + ["--input", str(pth), "--output", str(work / "model")]
    )
    t_out, rss_out, anon_out = run_measured(
        env_py
        + ["--to-pytorch", "--input", str(work / "model"), "--output", str(work / "back.pth")]
    )
    a = torch.load(pth, weights_only=True, mmap=True)
    b = torch.load(work / "back.pth", weights_only=True, mmap=True)
    exact = set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    print(f"{args.variant}: checkpoint {size_gib:.2f} GiB")
    for name, t, rss, anon in (
        ("pth -> orbax", t_in, rss_in, anon_in),
        ("orbax -> pth", t_out, rss_out, anon_out),
    ):
        print(
            f"  {name}: {t:6.1f} s, peak anonymous memory {anon:.2f} GiB "
            f"({anon / size_gib:.2f}x the weights), peak RSS incl. mapped file {rss:.2f} GiB"
        )
    print(f"  round trip bit-exact: {exact}")


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
