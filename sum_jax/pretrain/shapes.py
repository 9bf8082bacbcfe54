"""Procedural objects: masks of many forms and the textures that fill them.

The real instances that ship with the project are few (`assets.cutouts`); these make up the
variety a segmenter needs: convex and concave outlines, smooth blobs, objects with holes,
thin curved and branching structures, meshes, and fills that are flat, graded, striped,
checkered, noisy or cut from a photo. Every function draws from the `numpy` Generator it is
given, so a scene is a pure function of its seed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _canvas(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("L", (size, size), 0)
    return image, ImageDraw.Draw(image)


def ellipse(rng: np.random.Generator, size: int) -> np.ndarray:
    image, draw = _canvas(size)
    rx, ry = rng.uniform(0.25, 0.5, 2) * size
    c = size / 2
    draw.ellipse([c - rx, c - ry, c + rx, c + ry], fill=255)
    return np.asarray(image) > 127


def polygon(rng: np.random.Generator, size: int) -> np.ndarray:
    """A star-shaped polygon: 3-14 vertices at random radii (convex to spiky)."""
    image, draw = _canvas(size)
    n = int(rng.integers(3, 15))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    spiky = rng.uniform(0.0, 0.7)
    radii = size * 0.48 * (1 - spiky * rng.uniform(0, 1, n))
    points = [(size / 2 + r * np.cos(a), size / 2 + r * np.sin(a)) for r, a in zip(radii, angles)]
    draw.polygon(points, fill=255)
    return np.asarray(image) > 127


def rounded_rectangle(rng: np.random.Generator, size: int) -> np.ndarray:
    image, draw = _canvas(size)
    w, h = rng.uniform(0.3, 0.95, 2) * size
    x0, y0 = (size - w) / 2, (size - h) / 2
    radius = rng.uniform(0, 0.4) * min(w, h)
    draw.rounded_rectangle([x0, y0, x0 + w, y0 + h], radius=radius, fill=255)
    return np.asarray(image) > 127


def blob(rng: np.random.Generator, size: int) -> np.ndarray:
    """An organic outline: low-frequency noise thresholded, its largest part kept."""
    coarse = rng.normal(size=(int(rng.integers(3, 7)),) * 2).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
    yy, xx = np.mgrid[:size, :size] / (size - 1) - 0.5
    field = field - 6.0 * (xx**2 + yy**2)  # fade out towards the border
    mask = field > np.quantile(field, rng.uniform(0.55, 0.8))
    return largest_component(mask)


def with_holes(rng: np.random.Generator, size: int) -> np.ndarray:
    """An ellipse, polygon or rectangle with 1-4 holes cut out (a ring, a wheel, a frame)."""
    base = [ellipse, polygon, rounded_rectangle][int(rng.integers(3))](rng, size)
    image = Image.fromarray(base.astype(np.uint8) * 255)
    draw = ImageDraw.Draw(image)
    ys, xs = np.nonzero(base)
    for _ in range(int(rng.integers(1, 5))):
        k = int(rng.integers(len(ys)))
        r = rng.uniform(0.06, 0.2) * size
        draw.ellipse([xs[k] - r, ys[k] - r, xs[k] + r, ys[k] + r], fill=0)
    return np.asarray(image) > 127


def _bezier(p: np.ndarray, steps: int = 24) -> list[tuple[float, float]]:
    t = np.linspace(0, 1, steps)[:, None]
    q = (1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t**2 * p[2] + t**3 * p[3]
    return [tuple(v) for v in q]


def thin_curves(rng: np.random.Generator, size: int) -> np.ndarray:
    """1-3 smooth curves, 3-7% of the object's side wide: cables, stems, handles."""
    image, draw = _canvas(size)
    width = max(2, int(rng.uniform(0.03, 0.07) * size))
    first = rng.uniform(0.1, 0.9, 2) * size
    for _ in range(int(rng.integers(1, 4))):
        controls = np.concatenate([first[None], rng.uniform(0.05, 0.95, (3, 2)) * size])
        draw.line(_bezier(controls), fill=255, width=width, joint="curve")
        first = controls[-1]  # the next curve continues this one: one connected object
    return np.asarray(image) > 127


def branches(rng: np.random.Generator, size: int) -> np.ndarray:
    """A branching structure (a twig, a vessel tree, a crack) with tapering widths."""
    image, draw = _canvas(size)
    stack = [(np.array([size / 2, size * 0.95]), -np.pi / 2, 0.35 * size, 0.07 * size, 0)]
    while stack:
        start, angle, length, width, depth = stack.pop()
        end = start + length * np.array([np.cos(angle), np.sin(angle)])
        draw.line([tuple(start), tuple(end)], fill=255, width=max(2, int(width)))
        if depth < 4 and length > 0.06 * size:
            for turn in rng.uniform(0.25, 0.8, int(rng.integers(1, 3))) * rng.choice([-1, 1], 1):
                stack.append((end, angle + turn, length * rng.uniform(0.55, 0.8),
                              width * 0.7, depth + 1))  # fmt: skip
            stack.append((end, angle + rng.normal(0, 0.15), length * 0.7, width * 0.75, depth + 1))
    return np.asarray(image) > 127


def mesh(rng: np.random.Generator, size: int) -> np.ndarray:
    """A frame with bars across it: a grille, a fence, a window, a ladder."""
    image, draw = _canvas(size)
    w = max(2, int(rng.uniform(0.04, 0.1) * size))
    lo, hi = w, size - w
    draw.rectangle([lo, lo, hi, hi], outline=255, width=w)
    for axis in (0, 1):
        for pos in np.linspace(lo, hi, int(rng.integers(1, 5)) + 2)[1:-1]:
            line = [(pos, lo), (pos, hi)] if axis else [(lo, pos), (hi, pos)]
            draw.line(line, fill=255, width=w)
    return np.asarray(image) > 127


SHAPES = {
    "ellipse": ellipse,
    "polygon": polygon,
    "rounded_rectangle": rounded_rectangle,
    "blob": blob,
    "with_holes": with_holes,
    "thin_curves": thin_curves,
    "branches": branches,
    "mesh": mesh,
}


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The mask's largest connected component (the mask itself when it has at most one)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def random_shape(rng: np.random.Generator, size: int) -> np.ndarray:
    """bool[size, size]: one procedural object's mask, never empty."""
    names = list(SHAPES)
    mask = SHAPES[names[int(rng.integers(len(names)))]](rng, size)
    if not mask.any():
        mask = ellipse(rng, size)
    return mask


def random_fill(rng: np.random.Generator, h: int, w: int, photos) -> np.ndarray:
    """u8[h, w, 3]: flat, graded, striped, checkered, noisy, or a crop of a photo."""
    kind = int(rng.integers(6))
    base = rng.uniform(0, 255, 3)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    if kind == 0:  # flat colour with slight shading
        fill = np.broadcast_to(base, (h, w, 3)) + rng.normal(0, 4, (h, w, 1))
    elif kind == 1:  # linear gradient between two colours
        other = rng.uniform(0, 255, 3)
        a = rng.uniform(0, 2 * np.pi)
        t = (np.cos(a) * xx + np.sin(a) * yy) / max(h, w)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        fill = base * (1 - t[..., None]) + other * t[..., None]
    elif kind == 2:  # stripes
        other = rng.uniform(0, 255, 3)
        a = rng.uniform(0, np.pi)
        period = rng.uniform(4, 16)
        s = (np.sin((np.cos(a) * xx + np.sin(a) * yy) * 2 * np.pi / period) > 0)[..., None]
        fill = np.where(s, base, other)
    elif kind == 3:  # checkerboard
        other = rng.uniform(0, 255, 3)
        cell = int(rng.integers(3, 12))
        s = (((yy // cell) + (xx // cell)) % 2 > 0)[..., None]
        fill = np.where(s, base, other)
    elif kind == 4:  # coloured noise, smoothed
        noise = rng.normal(0, 1, (max(h // 4, 1), max(w // 4, 1), 3)).astype(np.float32)
        noise = np.stack(
            [np.asarray(Image.fromarray(noise[..., c]).resize((w, h))) for c in range(3)], -1
        )
        fill = base + 40 * noise
    else:  # a crop of a photo
        photo = photos[int(rng.integers(len(photos)))]
        ph, pw = photo.shape[:2]
        ch, cw = min(h, ph), min(w, pw)
        y, x = int(rng.integers(ph - ch + 1)), int(rng.integers(pw - cw + 1))
        crop = Image.fromarray(photo[y : y + ch, x : x + cw]).resize((w, h))
        fill = np.asarray(crop, np.float32)
    return np.clip(fill, 0, 255).astype(np.uint8)


def feather(mask: np.ndarray, radius: float) -> np.ndarray:
    """float32 alpha in [0, 1]: the mask with its edge softened by a Gaussian of `radius` px."""
    alpha = Image.fromarray(mask.astype(np.uint8) * 255)
    if radius > 0:
        alpha = alpha.filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(alpha, np.float32) / 255.0
