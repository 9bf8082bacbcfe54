"""Bad input to `python -m sum_jax.serve`: flags out of range are refused before any model
loads or any port is taken, naming the flag and its valid range."""

from __future__ import annotations

from tests.corpus import Case

SERVE = "sum_jax.serve"

CASES = [
    Case("serve: port above 65535", SERVE, lambda w, t: ["--port=99999"],
         ("--port=99999", "1..65535", "0 picks")),
    Case("serve: negative port", SERVE, lambda w, t: ["--port=-1"], ("--port=-1", "1..65535")),
    Case("serve: negative max_side", SERVE, lambda w, t: ["--max_side=-5"],
         ("--max_side=-5", "at least 1 px")),
    Case("serve: zero max_mb", SERVE, lambda w, t: ["--max_mb=0"], ("--max_mb=0", "more than 0")),
    Case("serve: zero cache_images", SERVE, lambda w, t: ["--cache_images=0"],
         ("--cache_images=0", "at least 1")),
    Case("serve: images folder missing", SERVE, lambda w, t: [f"--images={t}/nope", "--port=0"],
         ("--images=", "nope", "no such folder")),
]  # fmt: skip
