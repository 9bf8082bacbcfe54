"""XLA flags of the test processes (`tests/conftest.py`) and of the commands the tests launch.

`FAST_COMPILE`: XLA:CPU set to compile quickly. Most of the suite's time is XLA:CPU compiling
small programs (the tiny model's training step), whose run time hardly matters:

- `--xla_backend_optimization_level=0`: LLVM without optimisation passes (the tiny step:
  32 s to compile by default, 19 s this way);
- `--xla_cpu_use_fusion_emitters=false`: fused loops through XLA's older element-by-element
  emitter instead of its MLIR fusion emitters (13.1 s -> 8.4 s for the tiny step, measured
  with `jit(...).lower(...).compile()` on the quiet 2-core machine).

Neither changes what a program computes beyond floating-point rounding: XLA:CPU lets LLVM
reassociate no floating-point arithmetic at any level, matmuls and convolutions run in the
same libraries either way, and every comparison with an independent reference in the suite
has a tolerance. Exact comparisons within the suite (a resumed run against an uninterrupted
one, two processes against one) compare one program with itself under the same flags; a
value recomputed by another program may differ in its last bit where one of the two fuses
a multiply-add (the AugSeg rounds test compares those to 1e-6).
"""

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
# Tests fake 8 CPU devices so that the sharding code runs.
TEST_XLA_FLAGS = f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}"
