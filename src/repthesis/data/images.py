"""Image folders and the in-project synthetic ``shapes`` set."""

from __future__ import annotations

import os

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def load_folder(path: str, image_size: int) -> np.ndarray:
    """Every readable image under ``path`` (sorted), centre-cropped to a square and resized:
    [N, S, S, 3] float32 in [0, 1]. Unreadable files are skipped with a count on stderr."""
    from PIL import Image, UnidentifiedImageError

    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.lower().endswith(IMAGE_EXTENSIONS))
    images, bad = [], 0
    for file in files:
        try:
            with Image.open(file) as im:
                im = im.convert("RGB")
                w, h = im.size
                s = min(w, h)
                im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                images.append(np.asarray(im.resize((image_size, image_size), Image.BILINEAR), np.float32) / 255.0)
        except (OSError, UnidentifiedImageError):
            bad += 1
    if bad:
        import sys

        print(f"repthesis.data: skipped {bad} unreadable image(s) in {path}", file=sys.stderr)
    return np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.float32)


SHAPE_CLASSES = ("disc", "square", "triangle")


def shape_labels(n: int, seed: int = 0) -> np.ndarray:
    """The class (index into ``SHAPE_CLASSES``) of each image ``make_shapes(n, ·, seed)`` draws."""
    return np.random.default_rng(seed).integers(0, 3, n)


def make_shapes(n: int, image_size: int = 64, seed: int = 0) -> np.ndarray:
    """n images of one coloured disc, square or triangle each (``shape_labels``), random position,
    size and colour, on a dark background: [n, S, S, 3] float32 in [0, 1], a function of the seed only."""
    rng = np.random.default_rng(seed)
    s = image_size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    out = np.empty((n, s, s, 3), np.float32)
    kind = rng.integers(0, 3, n)  # the first draw: shape_labels repeats it
    cy, cx = rng.uniform(0.3, 0.7, (2, n))
    r = rng.uniform(0.12, 0.25, n)
    colour = rng.uniform(0.3, 1.0, (n, 3))
    background = rng.uniform(0.0, 0.15, (n, 3))
    for i in range(n):
        dy, dx = yy - cy[i], xx - cx[i]
        if kind[i] == 0:
            mask = dy**2 + dx**2 < r[i] ** 2
        elif kind[i] == 1:
            mask = (np.abs(dy) < r[i]) & (np.abs(dx) < r[i])
        else:
            mask = (dy > -r[i]) & (dy < r[i]) & (np.abs(dx) < (dy + r[i]) / 2)
        out[i] = np.where(mask[..., None], colour[i], background[i])
    return out
