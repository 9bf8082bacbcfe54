"""Pictures a person looks at: masks over photos, prompts drawn on top. Written atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from sum_jax.fileio import atomic_path

PALETTE = np.array(
    [[30, 144, 255], [255, 99, 71], [50, 205, 50], [255, 215, 0], [186, 85, 211], [0, 206, 209]],
    np.uint8,
)


def save_png(path: str | os.PathLike, image: np.ndarray | Image.Image) -> None:
    """Writes a PNG atomically."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def overlay(
    image: np.ndarray,
    masks: Sequence[np.ndarray] | np.ndarray,
    *,
    alpha: float = 0.5,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
) -> Image.Image:
    """Tints each boolean `[H, W]` mask over the uint8 photo, outlines it, draws the prompts.

    Positive points are green, negative red; the box is yellow.
    """
    out = image.astype(np.float32).copy()
    masks = [np.asarray(m, bool) for m in (masks if len(np.shape(masks)) == 3 else [masks])]
    for i, m in enumerate(masks):
        colour = PALETTE[i % len(PALETTE)].astype(np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * colour
        edge = m & ~(
            np.pad(m, 1)[2:, 1:-1]
            & np.pad(m, 1)[:-2, 1:-1]
            & np.pad(m, 1)[1:-1, 2:]
            & np.pad(m, 1)[1:-1, :-2]
        )
        out[edge] = colour
    pil = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    r = max(3, round(max(image.shape[:2]) / 150))
    if box is not None:
        draw.rectangle([float(v) for v in box], outline=(255, 215, 0), width=max(2, r // 2))
    if points is not None:
        for (x, y), lab in zip(np.asarray(points), np.asarray(labels)):
            fill = (0, 220, 0) if lab == 1 else (230, 0, 0)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(255, 255, 255))
    return pil


def heat_map(image: np.ndarray, values: np.ndarray, *, alpha: float = 0.7) -> Image.Image:
    """A `[H, W]` map in [0, 1] over a greyed photo, black (0) to yellow-white (1)."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0)[..., None]
    # A short inferno-like ramp: black -> red -> yellow -> white.
    ramp = np.concatenate(
        [np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1
    )
    grey = image.astype(np.float32).mean(axis=-1, keepdims=True) / 255.0
    out = (1 - alpha) * grey + alpha * ramp
    return Image.fromarray((255 * out).clip(0, 255).astype(np.uint8))


def side_by_side(panels: Sequence[Image.Image | np.ndarray], gap: int = 4) -> np.ndarray:
    """Panels of equal height in a row, separated by white gaps."""
    arrays = [np.asarray(p) for p in panels]
    h = arrays[0].shape[0]
    white = np.full((h, gap, 3), 255, np.uint8)
    row = []
    for i, a in enumerate(arrays):
        row += [a] if i == 0 else [white, a]
    return np.concatenate(row, axis=1)


def plot_curves(
    path: str | os.PathLike,
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    ylabel: str,
    title: str,
    xlabel: str = "step",
    smooth: bool = False,
) -> None:
    """A PNG of training curves `{label: (steps, values)}`, written atomically. With
    `smooth`, each curve also gets its running mean over a twentieth of its length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, (steps, values) in curves.items():
        steps, values = np.asarray(steps), np.asarray(values, np.float64)
        few = len(values) < 30
        ax.plot(steps, values, lw=0.8, alpha=0.5 if smooth else 1.0, label=label,
                marker="." if few else None)  # fmt: skip
        window = max(1, len(values) // 20)
        if smooth and window > 1:
            mean = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], mean, lw=1.5, label=f"{label}, mean of {window}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
