"""config.loss.resolution (issue 11 item 3): full-resolution and point-sampled mask losses
against NumPy float64 references (SAM's bilinear upsampling, grid_sample, eq. 1 and 2)."""

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from sum_jax.models.sam import build_sam
from sum_jax.ops.transforms import normalize_and_pad
from sum_jax.train import loss_resolution, losses
from sum_jax.train.rounds import InteractiveSettings, interactive_loss, training_rounds
from tests.train.test_losses import np_dice, np_focal
from tests.train.test_rounds import B, L, N, S, make_batch, np_image_means

ROUNDS = 4


def np_upsample(x: np.ndarray, out: int) -> np.ndarray:
    """float64 bilinear resize of the last two axes, PyTorch's `align_corners=False`:
    source position `(i + 0.5) * in / out - 0.5`, clamped at 0, neighbours clamped at the
    last index."""

    def taps(size_in):
        src = np.maximum((np.arange(out) + 0.5) * size_in / out - 0.5, 0.0)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, size_in - 1)
        return i0, i1, src - i0

    x = np.asarray(x, np.float64)
    r0, r1, wr = taps(x.shape[-2])
    x = x[..., r0, :] * (1 - wr)[:, None] + x[..., r1, :] * wr[:, None]
    c0, c1, wc = taps(x.shape[-1])
    return x[..., c0] * (1 - wc) + x[..., c1] * wc


def np_point_sample(maps: np.ndarray, points: np.ndarray) -> np.ndarray:
    """float64 bilinear samples `[N, P]` at `(x, y)` in `[0, 1]` (pixel j's centre at
    `(j + 0.5) / W`), zero outside the map: grid_sample's rule written out."""
    maps = np.asarray(maps, np.float64)
    n, h, w = maps.shape
    out = np.zeros(points.shape[:2])
    for i in range(n):
        for k, (x, y) in enumerate(points[i]):
            px, py = x * w - 0.5, y * h - 0.5
            x0, y0 = int(np.floor(px)), int(np.floor(py))
            for yy, xx, wt in (
                (y0, x0, (1 - (px - x0)) * (1 - (py - y0))),
                (y0, x0 + 1, (px - x0) * (1 - (py - y0))),
                (y0 + 1, x0, (1 - (px - x0)) * (py - y0)),
                (y0 + 1, x0 + 1, (px - x0) * (py - y0)),
            ):
                if 0 <= yy < h and 0 <= xx < w:
                    out[i, k] += wt * maps[i, yy, xx]
    return out


def test_point_sample_matches_grid_sample_and_formula():
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((3, 9, 13)).astype(np.float32)
    points = rng.uniform(-0.1, 1.1, (3, 50, 2)).astype(np.float32)  # some outside
    got = np.asarray(loss_resolution.point_sample(maps, points))
    np.testing.assert_allclose(got, np_point_sample(maps, points), rtol=1e-5, atol=1e-5)
    grid = torch.from_numpy(2 * points[:, :, None, :] - 1)  # [N, P, 1, 2]
    ref = torch.nn.functional.grid_sample(
        torch.from_numpy(maps)[:, None], grid, align_corners=False, padding_mode="zeros"
    )[:, 0, :, 0]
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-5)


def test_importance_points_are_the_most_uncertain_and_inside_the_image():
    rng = np.random.default_rng(1)
    logits = (10 * rng.standard_normal((2, 16, 16))).astype(np.float32)
    extent = np.array([[1.0, 0.5], [0.75, 1.0]], np.float32)  # (w / S, h / S)
    key = jax.random.key(3)
    coords = np.asarray(
        loss_resolution.importance_points(
            key, logits, extent, num_points=40, oversample_ratio=3, importance_sample_ratio=0.75
        )
    )
    assert coords.shape == (2, 40, 2)
    assert (coords >= 0).all() and (coords < extent[:, None, :]).all()
    # The first 30 are the 30 candidates with the smallest |logit| (float64 reference).
    candidates = np.asarray(loss_resolution.uniform_points(jax.random.split(key)[0], extent, 120))
    u = np.abs(np_point_sample(logits, candidates))
    for i in range(2):
        expected = candidates[i][np.argsort(u[i], kind="stable")[:30]]
        np.testing.assert_allclose(np.sort(coords[i, :30], 0), np.sort(expected, 0), atol=1e-6)


def test_point_sampled_loss_with_fixed_points_matches_formula():
    """focal (eq. 1) and Dice (eq. 2) over sampled points: logits from the low-res grid,
    targets from the full frame, certainty from its grid, all bilinear."""
    rng = np.random.default_rng(2)
    n, p = 4, 300
    logits = (3 * rng.standard_normal((n, L, L))).astype(np.float32)
    targets = np.zeros((n, S, S), np.uint8)
    for i in range(n):
        y0, x0 = rng.integers(0, 60, 2)
        targets[i, y0 : y0 + 50, x0 : x0 + 3 + 10 * i] = 1  # thin to wide bars
    c = rng.random((n, L, L)).astype(np.float32)
    points = rng.uniform(0, 1, (n, p, 2)).astype(np.float32)
    sample = loss_resolution.point_sample
    x = sample(logits, points)[:, None]
    y = sample(targets, points)[:, None]
    cp = sample(c, points)[:, None]
    terms = losses.combined_loss(x, np.zeros(n, np.float32), y, cp, theta=0.6)
    xn, yn, cn = (np_point_sample(a, points)[:, None] for a in (logits, targets, c))
    np.testing.assert_allclose(terms["focal"], np_focal(xn, yn, cn), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(terms["dice"], np_dice(xn, yn, cn, 0.6), rtol=2e-5, atol=1e-6)
    assert 0 < yn.mean() < 1 and ((yn > 0) & (yn < 1)).any()  # soft at the bars' edges


def full_batch(seed: int) -> dict[str, np.ndarray]:
    """`make_batch` plus `masks_full`: thin bars drawn at the input frame (1 to 3 px wide,
    which area-averaging onto the 4x coarser grid mostly erases)."""
    batch = make_batch(seed)
    rng = np.random.default_rng(seed + 100)
    full = np.zeros((B, N, S, S), np.uint8)
    for i in range(B):
        for j in range(N):
            y0, x0 = rng.integers(0, 80, 2)
            full[i, j, y0 : y0 + 40, x0 : x0 + 1 + j % 3] = 1
            full[i, j] |= np.kron(batch["masks"][i, j], np.ones((4, 4), np.uint8))
    batch["masks_full"] = full
    return batch


@pytest.fixture(scope="module")
def model():
    return build_sam("tiny", rngs=nnx.Rngs(1))


def run_rounds(model, batch, settings):
    graphdef, state = nnx.split(model)
    fn = jax.jit(
        lambda st, bt, k: interactive_loss(nnx.merge(graphdef, st), bt, k, settings, record=True)
    )
    loss, aux = fn(state, batch, jax.random.key(0))
    return float(loss), jax.tree.map(np.asarray, aux)


def test_full_resolution_loss_matches_numpy_upsample_and_loss(model):
    """Rounds 2..R: focal and Dice of the recorded single-output logits, upsampled to the
    input frame in float64 and scored there on the real pixels only."""
    batch = full_batch(0)
    settings = InteractiveSettings(num_rounds=ROUNDS, loss_resolution="full")
    loss, aux = run_rounds(model, batch, settings)
    assert np.isfinite(loss)
    c = 1.0 - batch["uncertainty"] / 255.0
    c = np.where(batch["is_pseudo"][:, None, None, None], c, 1.0)
    c_full = np_upsample(c, S)
    real = np.zeros((B, S, S), bool)
    for i, (h, w) in enumerate(batch["image_size"]):
        real[i, :h, :w] = True
    for k in range(1, ROUNDS):
        up = np_upsample(aux["rounds"]["logits"][k], S)  # [B, N, S, S]
        focal = np.zeros((B, N))
        dice = np.zeros((B, N))
        for i in range(B):
            m = real[i]
            x = up[i][:, m][:, None]  # [N, 1, pixels]: the real pixels only
            y = batch["masks_full"][i][:, m][:, None]
            cc = c_full[i][:, m][:, None]
            focal[i] = np_focal(x, y, cc)
            dice[i] = np_dice(x, y, cc, settings.theta)
        valid = batch["mask_valid"]
        np.testing.assert_allclose(
            aux["focal"][k], np_image_means(focal, valid).mean(), rtol=1e-4, atol=1e-7
        )
        np.testing.assert_allclose(
            aux["dice"][k], np_image_means(dice, valid).mean(), rtol=1e-4, atol=1e-6
        )


@pytest.mark.slow  # three decoder-gradient compiles: 13 min on the loaded 2-core CPU
def test_points_and_full_losses_train_and_differ_from_low(model):
    """Each high-resolution setting gives finite, nonzero decoder gradients; the thin bars
    that exist only at the input frame change the full and point losses, not the low one.
    (The rounds run from a precomputed embedding: the encoder is not what changes here.)"""
    batch = full_batch(1)
    graphdef, state = nnx.split(model)
    embedding = jax.jit(lambda st, x: nnx.merge(graphdef, st).encode_image(x))(
        state, normalize_and_pad(batch["image"], batch["image_size"])
    )

    def rounds_loss(st, bt, settings):
        model_ = nnx.merge(graphdef, st)
        return training_rounds(model_, embedding, bt, jax.random.key(0), settings)[0]

    losses_by = {}
    for resolution in ("full", "points"):
        settings = InteractiveSettings(num_rounds=2, loss_resolution=resolution, num_points=256)
        fn = jax.jit(jax.value_and_grad(rounds_loss), static_argnums=2)
        loss, grads = fn(state, batch, settings)
        norms = [float(np.abs(g).max()) for g in jax.tree.leaves(grads)]
        assert np.isfinite(float(loss)) and all(np.isfinite(norms)) and max(norms) > 0
        losses_by[resolution] = float(loss)
    low = InteractiveSettings(num_rounds=2, loss_resolution="low")
    low_fn = jax.jit(rounds_loss, static_argnums=2)
    losses_by["low"] = float(low_fn(state, batch, low))
    thin_free = dict(batch, masks_full=np.kron(batch["masks"], np.ones((4, 4), np.uint8)))
    assert float(low_fn(state, thin_free, low)) == losses_by["low"]
    assert abs(losses_by["full"] - losses_by["low"]) > 1e-3
    assert abs(losses_by["points"] - losses_by["low"]) > 1e-3


def test_points_iou_target_stays_on_the_low_res_grid(model):
    """The IoU metric of the point-sampled rounds is the low-res IoU of the passed logits."""
    batch = full_batch(2)
    settings = InteractiveSettings(num_rounds=ROUNDS, loss_resolution="points", num_points=64)
    _, aux = run_rounds(model, batch, settings)
    real = np.zeros((B, L, L), bool)
    for i, (h, w) in enumerate(batch["image_size"]):
        real[i, : int(np.ceil(h * L / S)), : int(np.ceil(w * L / S))] = True
    for k in range(1, ROUNDS):
        pred = (aux["rounds"]["logits"][k] > 0) & real[:, None]
        gt = (batch["masks"] > 0) & real[:, None]
        inter = (pred & gt).sum((-2, -1))
        union = (pred | gt).sum((-2, -1))
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        np.testing.assert_allclose(
            aux["iou"][k], np_image_means(iou, batch["mask_valid"]).mean(), rtol=1e-5
        )


def test_missing_full_resolution_targets_are_named(model):
    batch = make_batch(0)
    settings = InteractiveSettings(num_rounds=2, loss_resolution="full")
    with pytest.raises(ValueError, match="masks_full"):
        run_rounds(model, batch, settings)


def test_config_asks_the_pipeline_for_full_resolution_targets():
    from configs import base
    from sum_jax.train import loop

    config = base.get_config()
    model_config = build_sam("tiny", rngs=nnx.Rngs(0)).config
    for resolution, expected in (("low", False), ("full", True), ("points", True)):
        config.loss.resolution = resolution
        data = loop.data_config(config, model_config, 1)
        assert bool(data.full_res_masks) is expected
        assert InteractiveSettings.from_config(config).loss_resolution == resolution
    # The library default stays the low-res grid; the paper's FT recipes train on every
    # pixel of the input frame (eq. 1-2's means over all m pixels); points are an ablation.
    from configs import ablations, ft_large, ft_medium, ft_small

    assert base.get_config().loss.resolution == "low"
    for module in (ft_small, ft_medium, ft_large):
        assert module.get_config().loss.resolution == "full"
    assert ablations.get_config("sum").loss.resolution == "full"
    assert ablations.get_config("loss_points").loss.resolution == "points"
    config.loss.resolution = "high"
    with pytest.raises(ValueError, match="resolution"):
        InteractiveSettings.from_config(config)
