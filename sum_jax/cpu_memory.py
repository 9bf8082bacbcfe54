"""Keep freed host memory in the process, so that XLA:CPU's buffers do not page-fault per call.

XLA:CPU allocates an executable's buffers with `malloc` on every call and frees them after.
glibc serves blocks above its mmap threshold (at most 32 MiB) with a fresh `mmap` and
returns them with `munmap`, so every call of the vit_b encoder touched about 8 GiB of new
pages: 2.1 million minor page faults, 3.5 s of kernel time out of 10.5 s of CPU time
(measured on the project's 2-core machine, see README "Benchmarks"). With
`keep_freed_memory()` glibc serves every block from its heap and keeps freed memory for the
next call: 0.16 million faults, 0.7 s of kernel time, 7.2 s of CPU time for the same encoder.

The cost: the process's resident memory stays at its peak (nothing is handed back to the
kernel until the process ends), which is what a long-running inference or training process
wants. `SUM_JAX_KEEP_FREED_MEMORY=0` leaves glibc's defaults. Every `python -m sum_jax.*`
command calls this at start (`cli.run`); library users call it once themselves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV = "SUM_JAX_KEEP_FREED_MEMORY"

# mallopt parameters from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
_INT_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Sets glibc's malloc to never `mmap` a block (`M_MMAP_MAX=0`), never trim its heap
    (`M_TRIM_THRESHOLD` at its maximum) and use one arena (`M_ARENA_MAX=1`, so that blocks
    freed by one XLA thread serve the next call's other threads). Process-wide, idempotent.

    Returns whether the settings were applied: False when `$SUM_JAX_KEEP_FREED_MEMORY` is
    `0`/`false`/`off`, or when the C library is not glibc (no `mallopt`).
    """
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "off", "no"):
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success.
    return all(
        mallopt(param, value) == 1
        for param, value in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, _INT_MAX), (M_ARENA_MAX, 1))
    )
