"""Building blocks shared by SAM's image encoder, prompt encoder and mask decoder.

Parameter names follow Flax conventions (`kernel`, `scale`, `embedding`); the module
attribute names follow the PyTorch SAM modules so that a parameter's path, joined with dots,
is its PyTorch key up to that last component (see `convert/key_map.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class Buffer(nnx.Variable):
    """A fixed, never-trained tensor that is part of a checkpoint (PyTorch's `register_buffer`).

    Optimisers select `nnx.Param`, so a `Buffer` is never updated.
    """


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as `torch.nn.GELU()`; `jax.nn.gelu` defaults to the tanh form."""
    return jax.nn.gelu(x, approximate=False)


REMAT_POLICIES = ("none", "block", "dots")
ATTENTION_KINDS = ("auto", "matmul", "fused")


def remat_policy(remat: str):
    """The `jax.checkpoint` policy of `config.model.remat` (None for `"none"`).

    `"block"` saves nothing inside a rematerialised block (its input is the only residual);
    `"dots"` saves the outputs of matmuls without batch dimensions (the linear layers) and
    recomputes the rest: the attention matrices, softmax, GELU and LayerNorm.
    """
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat={remat!r}: choose one of {REMAT_POLICIES}")
    return {
        "none": None,
        "block": jax.checkpoint_policies.nothing_saveable,
        "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    }[remat]


def shard_leading_axis(x: jax.Array) -> jax.Array:
    """`x` with its leading (batch) axis split over every axis of the mesh in context.

    The training step traces under its mesh (`jax.sharding.use_abstract_mesh`); without
    one, on a single device or when the axis does not split evenly, `x` is returned as is.
    Why: inside the scans over blocks and rounds XLA's sharding propagation loses the
    batch sharding of the inputs and, with FSDP-sharded weights, chose to all-gather the
    activations of every device's images instead of the weights (8 devices: every device
    computed all 8 images, 27 GiB of temporaries). Constraining the activations makes it
    gather one block's weights at a time instead.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1 or x.ndim == 0 or x.shape[0] % mesh.size:
        return x
    return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(mesh.axis_names))


def use_fused_attention(attention: str) -> bool:
    """Whether attention goes through `jax.nn.dot_product_attention` (cuDNN's fused kernel on
    GPU): `"fused"`, or `"auto"` on a GPU/TPU backend. The plain-matmul path stays on CPU,
    where it is the faster one, and is the float32 parity reference."""
    if attention not in ATTENTION_KINDS:
        raise ValueError(f"attention={attention!r}: choose one of {ATTENTION_KINDS}")
    if attention == "auto":
        return jax.default_backend() in ("gpu", "cuda", "rocm", "tpu")
    return attention == "fused"


def _bf16_on_cpu(*operands: jax.Array) -> bool:
    return jax.default_backend() == "cpu" and all(x.dtype == jnp.bfloat16 for x in operands)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kw):
    """`lax.dot_general`, except that a bfloat16 x bfloat16 product on CPU is computed with a
    float32 output and cast back to bfloat16 (the same rounding as XLA's own bf16 dot).

    XLA:CPU (0.10) runs bf16 x bf16 -> f32 natively (YNNPACK, AVX512-BF16 where the processor
    has it) but for a bf16 output first converts both operands to float32: a 4096x768x3072
    product took 78 ms of CPU time with the float32 output, 154 ms (as float32's 135 ms) with
    the bf16 one. On GPU and for other dtypes this is `lax.dot_general` unchanged. Passed to
    `nnx.Linear(dot_general=...)`.
    """
    if preferred_element_type is None and _bf16_on_cpu(lhs, rhs):
        out = jax.lax.dot_general(
            lhs, rhs, dimension_numbers, precision, preferred_element_type=jnp.float32, **kw
        )
        return out.astype(jnp.bfloat16)
    return jax.lax.dot_general(
        lhs, rhs, dimension_numbers, precision, preferred_element_type=preferred_element_type, **kw
    )


def matmul(a: jax.Array, b: jax.Array, out_dtype=None) -> jax.Array:
    """`a @ b` over the last two axes (leading axes batch), as `dot_general` above: bfloat16
    operands on CPU multiply natively into float32. `out_dtype` (default: `a`'s dtype) is
    the result's dtype, e.g. float32 for attention logits that are summed in float32."""
    out_dtype = out_dtype or a.dtype
    if _bf16_on_cpu(a, b):
        return jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(out_dtype)
    return jnp.matmul(a, b).astype(out_dtype)


class GELU(nnx.Module):
    """Parameter-free GELU module, so `nnx.List` indices line up with `nn.Sequential`'s."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return gelu(x)


class MLPBlock(nnx.Module):
    """`lin2(act(lin1(x)))`: the transformer MLP (GELU in the encoder, ReLU in the decoder)."""

    def __init__(
        self,
        embedding_dim: int,
        mlp_dim: int,
        *,
        activation: str = "gelu",
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "dot_general": dot_general, "rngs": rngs}
        self.lin1 = nnx.Linear(embedding_dim, mlp_dim, **kw)
        self.lin2 = nnx.Linear(mlp_dim, embedding_dim, **kw)
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.lin1(x)
        h = gelu(h) if self.activation == "gelu" else jax.nn.relu(h)
        return self.lin2(h)


class MLP(nnx.Module):
    """`num_layers` linear layers with ReLU between them (the decoder's hypernetworks, IoU head)."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        *,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nnx.List(
            [
                nnx.Linear(i, o, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                for i, o in zip(dims_in, dims_out)
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = jax.nn.relu(x)
        return x


def layer_norm(dim: int, eps: float, *, param_dtype=jnp.float32, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm over the last (channel) axis, computed in float32 whatever the input dtype.

    In channels-last layout this is also SAM's `LayerNorm2d`. The variance is the two-pass
    `mean((x - mean)^2)` as in PyTorch: Flax's default `E[x^2] - E[x]^2` loses precision by
    cancellation (measured 8e-5 relative error on the mask-downscaling stack vs 4e-7).
    """
    return nnx.LayerNorm(
        dim,
        epsilon=eps,
        dtype=jnp.float32,
        param_dtype=param_dtype,
        use_fast_variance=False,
        rngs=rngs,
    )


class ConvTranspose2x2(nnx.Module):
    """Transposed convolution with kernel 2 and stride 2 (SAM's output upscaling), `bhwc`.

    The kernel windows do not overlap, so `out[2i+a, 2j+b] = x[i, j] @ kernel[a, b] + bias`:
    one einsum, exactly PyTorch's `ConvTranspose2d(k=2, s=2)` with `kernel[a, b, c_in, c_out]
    = weight[c_in, c_out, a, b]`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        fan_in = in_features * 4
        init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
        self.kernel = nnx.Param(init(rngs.params(), (2, 2, in_features, out_features), param_dtype))
        bound = 1.0 / fan_in**0.5
        self.bias = nnx.Param(
            jax.random.uniform(rngs.params(), (out_features,), param_dtype, -bound, bound)
        )
        self.dtype = dtype

    def __call__(self, x_bhwc: jax.Array) -> jax.Array:
        b, h, w, _ = x_bhwc.shape
        kernel = self.kernel[...].astype(self.dtype)
        y = jnp.einsum("nhwc,abcd->nhawbd", x_bhwc.astype(self.dtype), kernel)
        y = y.reshape(b, 2 * h, 2 * w, kernel.shape[-1])
        return y + self.bias[...].astype(self.dtype)
