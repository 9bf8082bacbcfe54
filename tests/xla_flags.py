"""XLA flags of the test processes (`tests/conftest.py`) and of the commands the tests launch.

`FAST_COMPILE`: LLVM without optimisation passes. Most of the suite's time is XLA:CPU
compiling small programs (the tiny model's training step: 32 s, 19 s this way), whose run
time hardly matters. It changes no result: XLA:CPU lets LLVM reassociate no floating-point
arithmetic at any level, and matmuls and convolutions run in the same libraries either way.
"""

FAST_COMPILE = "--xla_backend_optimization_level=0"
# Tests fake 8 CPU devices so that the sharding code runs.
TEST_XLA_FLAGS = f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}"
