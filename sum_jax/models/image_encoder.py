"""SAM's image encoder: a ViT with windowed and global attention and a convolutional neck.

Matches `segment_anything.modeling.image_encoder.ImageEncoderViT`, in channels-last layout:
images `[B, S, S, 3]` (normalised, padded) -> embeddings `[B, S/16, S/16, out_chans]`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from sum_jax.models import encoder_adapter
from sum_jax.models.common import (
    MLPBlock,
    dot_general,
    layer_norm,
    matmul,
    remat_policy,
    shard_leading_axis,
    use_fused_attention,
)

ENCODER_LN_EPS = 1e-6


def window_partition(x_bhwc: jax.Array, window: int) -> tuple[jax.Array, tuple[int, int]]:
    """Zero-pads H and W up to multiples of `window` and cuts `[B*nW, window, window, C]`."""
    b, h, w, c = x_bhwc.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    x = jnp.pad(x_bhwc, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    hp, wp = h + pad_h, w + pad_w
    x = x.reshape(b, hp // window, window, wp // window, window, c)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)
    return x, (hp, wp)


def window_unpartition(
    windows: jax.Array, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> jax.Array:
    """Inverse of `window_partition`, dropping the padding."""
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.reshape(b, hp // window, wp // window, window, window, -1)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :]


def relative_position_table(q_size: int, k_size: int, rel_pos: jax.Array) -> jax.Array:
    """`[q_size, k_size, C]` embeddings of the relative offsets `q - k` (SAM's `get_rel_pos`).

    Tables whose length differs from `2 * max(q, k) - 1` (a checkpoint trained at another
    resolution) are linearly resized first, as in PyTorch's `F.interpolate(mode="linear")`.
    """
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos = jax.image.resize(
            rel_pos, (max_rel_dist, rel_pos.shape[1]), "linear", antialias=False
        )
    q_coords = jnp.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = jnp.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.astype(jnp.int32)]


# Queries per chunk of the plain-matmul attention: the 14 x 14 windows and small grids run
# in one piece, ViT global attention at 1024 px (64 x 64 tokens) in 4 chunks of 16 rows.
QUERY_CHUNK = 1024


def query_chunks(h: int, w: int) -> int:
    """Number of equal chunks of query rows with at most `QUERY_CHUNK` queries each (1 when
    the grid is small, or when no divisor of `h` gives such chunks)."""
    if h * w <= QUERY_CHUNK:
        return 1
    for n in range(2, h + 1):
        if h % n == 0 and (h // n) * w <= QUERY_CHUNK:
            return n
    return 1


class Attention(nnx.Module):
    """Multi-head self-attention over a `[B, H, W, C]` grid with decomposed relative positions.

    `attention="matmul"`: heads folded into the batch (`[B*heads, N, head_dim]`) so that both
    matmuls are plain batched GEMMs (on CPU this ran 25% faster than an einsum with heads in
    the middle). `"fused"`: `jax.nn.dot_product_attention` with the relative positions as an
    additive bias, which GPUs run as one cuDNN kernel. `"auto"`: fused on GPU/TPU, matmul on
    CPU (see `common.use_fused_attention`). Logits are summed and normalised in float32.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        input_size: tuple[int, int],
        *,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        attention: str = "auto",
        rngs: nnx.Rngs,
    ):
        self.num_heads = num_heads
        self.attention = attention
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        kw = {"dtype": dtype, "param_dtype": param_dtype, "dot_general": dot_general, "rngs": rngs}
        self.qkv = nnx.Linear(dim, dim * 3, use_bias=True, **kw)
        self.proj = nnx.Linear(dim, dim, **kw)
        self.rel_pos_h = nnx.Param(jnp.zeros((2 * input_size[0] - 1, head_dim), param_dtype))
        self.rel_pos_w = nnx.Param(jnp.zeros((2 * input_size[1] - 1, head_dim), param_dtype))
        self.dtype = dtype

    def __call__(self, x_bhwc: jax.Array) -> jax.Array:
        b, h, w, _ = x_bhwc.shape
        nh = self.num_heads
        qkv = self.qkv(x_bhwc).reshape(b, h * w, 3, nh, -1).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * nh, h * w, -1)

        # Decomposed relative positions: bias[q, k] = <q, Rh[qh - kh]> + <q, Rw[qw - kw]>.
        rh = relative_position_table(h, h, self.rel_pos_h[...]).astype(q.dtype)
        rw = relative_position_table(w, w, self.rel_pos_w[...]).astype(q.dtype)
        r_q = q.reshape(b * nh, h, w, -1)
        rel_h = jnp.einsum("bhwc,hkc->bhwk", r_q, rh)[:, :, :, :, None]
        rel_w = jnp.einsum("bhwc,wkc->bhwk", r_q, rw)[:, :, :, None, :]

        if use_fused_attention(self.attention):
            # [B, N, heads, head_dim] layout; the bias [B, heads, N, N] is added after scaling.
            bias = (rel_h + rel_w).reshape(b, nh, h * w, h * w)
            heads_last = lambda t: t.reshape(b, nh, h * w, -1).transpose(0, 2, 1, 3)
            out = jax.nn.dot_product_attention(
                heads_last(q), heads_last(k), heads_last(v), bias=bias, scale=self.scale
            )
            return self.proj(out.reshape(b, h, w, -1))

        def attend(q_rows, rel_h_rows, rel_w_rows):
            """Rows `[B*nh, hc, w, hd]` of queries attend to every key: `[B*nh, hc*w, hd]`."""
            hc = q_rows.shape[1]
            q_rows = q_rows.reshape(b * nh, hc * w, -1)
            # [B*nh, hc*w, HW]; bfloat16 operands multiply natively into float32 on CPU.
            attn = matmul(q_rows * self.scale, k.swapaxes(-1, -2), jnp.float32)
            attn = attn.reshape(b * nh, hc, w, h, w)
            attn = attn + rel_h_rows.astype(jnp.float32) + rel_w_rows.astype(jnp.float32)
            attn = jax.nn.softmax(attn.reshape(b * nh, hc * w, h * w), axis=-1)
            return matmul(attn.astype(v.dtype), v)

        chunks = query_chunks(h, w)
        if chunks == 1:
            out = attend(r_q, rel_h, rel_w)
        else:
            # Global attention at full size: [heads, HW, HW] float32 is 1 GiB per tensor for
            # ViT-H. Query rows in chunks, each rematerialised, so the backward pass holds one
            # chunk's attention at a time (the same sums, row by row).
            rows = lambda t: t.reshape((b * nh, chunks, h // chunks) + t.shape[2:]).swapaxes(0, 1)
            out = jax.lax.map(
                lambda xs: jax.checkpoint(attend)(*xs), (rows(r_q), rows(rel_h), rows(rel_w))
            )  # [chunks, B*nh, hc*w, hd]
            out = out.swapaxes(0, 1).reshape(b * nh, h * w, -1)
        out = out.reshape(b, nh, h, w, -1).transpose(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)


class Block(nnx.Module):
    """Pre-norm transformer block; windowed attention when `window_size > 0`; with
    `adapter_ratio > 0`, AIM's spatial and MLP adapters (`encoder_adapter.py`)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        input_size: tuple[int, int],
        *,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        attention: str = "auto",
        adapter_ratio: float = 0.0,
        adapter_scale: float = encoder_adapter.DEFAULT_SCALE,
        rngs: nnx.Rngs,
    ):
        self.window_size = window_size
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.norm1 = layer_norm(dim, ENCODER_LN_EPS, param_dtype=param_dtype, rngs=rngs)
        self.attn = Attention(
            dim,
            num_heads,
            attn_size,
            dtype=dtype,
            param_dtype=param_dtype,
            attention=attention,
            rngs=rngs,
        )
        self.norm2 = layer_norm(dim, ENCODER_LN_EPS, param_dtype=param_dtype, rngs=rngs)
        self.mlp = MLPBlock(
            dim, int(dim * mlp_ratio), dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        # AIM's adapters (`encoder_adapter.py`); None, and no cost, when `adapter_ratio` is 0.
        self.space_adapter, self.mlp_adapter = encoder_adapter.make_pair(
            dim, adapter_ratio, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.adapter_scale = float(adapter_scale)
        self.dtype = dtype

    def __call__(self, x_bhwc: jax.Array) -> jax.Array:
        x_bhwc = shard_leading_axis(x_bhwc)  # images stay on their devices (FSDP)
        shortcut = x_bhwc
        x = self.norm1(x_bhwc).astype(self.dtype)
        if self.window_size > 0:
            h, w = x.shape[1:3]
            x, padded_hw = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded_hw, (h, w))
        else:
            x = self.attn(x)
        if self.space_adapter is not None:  # AIM's spatial adapter, with its own skip
            x = x + self.space_adapter(x)
        x = shortcut + x
        if self.mlp_adapter is None:
            return shard_leading_axis(x + self.mlp(self.norm2(x).astype(self.dtype)))
        xn = self.norm2(x).astype(self.dtype)  # AIM's MLP adapter: beside the MLP, scaled
        return shard_leading_axis(x + self.mlp(xn) + self.adapter_scale * self.mlp_adapter(xn))


class PatchEmbed(nnx.Module):
    """Non-overlapping `patch_size` convolution: `[B, S, S, 3] -> [B, S/p, S/p, dim]`."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, *, dtype, param_dtype, rngs):
        self.proj = nnx.Conv(
            in_chans,
            embed_dim,
            kernel_size=(patch_size, patch_size),
            strides=(patch_size, patch_size),
            padding="VALID",
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.proj(x)


def block_period(depth: int, global_attn_indexes: Sequence[int]) -> int:
    """Length of the repeating group of blocks (windowed blocks, then one global), e.g. 8 for
    ViT-H's 4 x (7 + 1); 0 when the global blocks are not evenly spaced."""
    if not global_attn_indexes:
        return 0
    period = global_attn_indexes[0] + 1
    regular = tuple(global_attn_indexes) == tuple(range(period - 1, depth, period))
    return period if regular and depth % period == 0 else 0


class ImageEncoderViT(nnx.Module):
    """ViT backbone + neck. Input `[B, S, S, 3]`, output `[B, S/16, S/16, out_chans]`.

    Execution options (no effect on parameters or, in float32, on results):
    `remat` ("none" | "block" | "dots", see `common.remat_policy`) rematerialises each block
    in the backward pass, so only block inputs are kept; `scan_blocks` runs the repeating
    groups of blocks (ViT-H: 4 x (7 windowed + 1 global)) as one `lax.scan` over their
    stacked parameters, so XLA compiles one group instead of 32 blocks.

    `adapter_ratio > 0` adds AIM's two adapters to every block (`encoder_adapter.py`), the
    MLP adapter's output scaled by `adapter_scale`; 0 (SAM) builds none.
    """

    def __init__(
        self,
        *,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        window_size: int = 14,
        global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        remat: str = "none",
        attention: str = "auto",
        scan_blocks: bool = False,
        adapter_ratio: float = 0.0,
        adapter_scale: float = encoder_adapter.DEFAULT_SCALE,
        rngs: nnx.Rngs,
    ):
        grid = img_size // patch_size
        self.dtype = dtype
        remat_policy(remat)  # validates
        self.remat = remat
        self.period = block_period(depth, global_attn_indexes) if scan_blocks else 0
        # HQ-SAM's early features: the output of the first global-attention block.
        self.first_global = int(global_attn_indexes[0]) if global_attn_indexes else depth - 1
        if scan_blocks and not self.period:
            raise ValueError(
                f"scan_blocks needs evenly spaced global blocks; got {tuple(global_attn_indexes)}"
                f" in {depth} blocks"
            )
        self.patch_embed = PatchEmbed(
            patch_size, in_chans, embed_dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.pos_embed = nnx.Param(jnp.zeros((1, grid, grid, embed_dim), param_dtype))
        self.blocks = nnx.List(
            [
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio,
                    0 if i in global_attn_indexes else window_size,
                    (grid, grid),
                    dtype=dtype,
                    param_dtype=param_dtype,
                    attention=attention,
                    adapter_ratio=adapter_ratio,
                    adapter_scale=adapter_scale,
                    rngs=rngs,
                )
                for i in range(depth)
            ]
        )
        conv = {"use_bias": False, "dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.neck = nnx.List(
            [
                nnx.Conv(embed_dim, out_chans, kernel_size=(1, 1), **conv),
                layer_norm(out_chans, ENCODER_LN_EPS, param_dtype=param_dtype, rngs=rngs),
                nnx.Conv(
                    out_chans, out_chans, kernel_size=(3, 3), padding=((1, 1), (1, 1)), **conv
                ),
                layer_norm(out_chans, ENCODER_LN_EPS, param_dtype=param_dtype, rngs=rngs),
            ]
        )

    def __call__(
        self, images_bhwc: jax.Array, *, early_features: bool = False
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """`[B, S, S, 3]` -> `[B, S/16, S/16, out_chans]`; with `early_features` (HQ-SAM,
        static) also the output of the first global-attention block, `[B, S/16, S/16, dim]`
        (what `segment_anything_hq`'s encoder returns as `interm_embeddings[0]`)."""
        x = self.patch_embed(images_bhwc.astype(self.dtype))
        x = x + self.pos_embed[...].astype(x.dtype)
        if self.period:
            x, early = self._scanned_blocks(x, early_features)
        else:
            x, early = self._blocks(x, early_features)
        for layer in self.neck:
            x = layer(x).astype(self.dtype)
        return (x, early) if early_features else x

    def _block_fn(self, graphdef):
        """`(block state, x) -> block(x)`, rematerialised as `self.remat` says."""

        def apply(state, x):
            return nnx.merge(graphdef, state)(x)

        if self.remat == "none":
            return apply
        # Inside a scan, CSE cannot merge the recomputation with the forward pass anyway.
        return jax.checkpoint(apply, policy=remat_policy(self.remat), prevent_cse=not self.period)

    def _blocks(self, x: jax.Array, early_features: bool = False):
        """`(output, early)`: early is the first global block's output, or None."""
        early = None
        for i, block in enumerate(self.blocks):
            if self.remat == "none":
                x = block(x)
            else:
                graphdef, state = nnx.split(block)
                x = self._block_fn(graphdef)(state, x)
            if early_features and i == self.first_global:
                early = x
        return x, early

    def _compute_weights(self, state):
        """A block's state with the matmul weights (attention, MLP, relative positions) in
        the compute dtype, LayerNorms left float32. The layers cast them so anyway, so values
        and gradients are unchanged; the stacked copy the scan needs (and its gradient) is
        half the size in bfloat16."""

        def cast(path, x):
            in_norm = any(str(getattr(k, "key", k)).startswith("norm") for k in path)
            # Integer leaves (a LoRA adapter's dropout key) are not weights.
            floating = jnp.issubdtype(x.dtype, jnp.floating)
            return x if in_norm or not floating else x.astype(self.dtype)

        return jax.tree_util.tree_map_with_path(cast, state)

    def _scanned_blocks(self, x: jax.Array, early_features: bool = False):
        """A `lax.scan` over the groups of blocks, and inside it a `lax.scan` over each
        group's windowed blocks followed by its global block.

        One block per iteration of the inner scan: its backward pass recomputes one block,
        back-propagates through it and frees it before the next. With one scan over groups
        whose body held the 7 windowed blocks, XLA recomputed all 7 first (they depend only
        on their saved inputs) and kept their activations alive together (about 3 GiB for
        ViT-H on CPU).
        """
        blocks = list(self.blocks)
        p = self.period
        groups = [blocks[i : i + p] for i in range(0, len(blocks), p)]
        global_fn = self._block_fn(nnx.split(groups[0][-1])[0])
        windowed_fn = self._block_fn(nnx.split(groups[0][0])[0]) if p > 1 else None

        def stack(states):
            return jax.tree.map(lambda *xs: jnp.stack(xs), *states)

        def weights(block):
            return self._compute_weights(nnx.split(block)[1])

        # [groups, p - 1, ...] windowed blocks (None when every block is global), [groups,
        # ...] global blocks.
        windowed = stack([stack([weights(b) for b in g[:-1]]) for g in groups]) if p > 1 else None
        global_ = stack([weights(group[-1]) for group in groups])

        def windowed_block(x, state):
            return windowed_fn(state, x), None

        def group(x, states):
            windowed_states, global_state = states
            if windowed_states is not None:
                x, _ = jax.lax.scan(windowed_block, x, windowed_states)
            x = global_fn(global_state, x)
            # HQ-SAM: each group's output; the first group ends with the first global block.
            return x, x if early_features else None

        x, outs = jax.lax.scan(group, x, (windowed, global_))
        return x, outs[0] if early_features else None
