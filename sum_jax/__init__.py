"""sum_jax: SUM, uncertainty-aware fine-tuning of Segment Anything, in JAX/Flax."""

__version__ = "0.1.0"
