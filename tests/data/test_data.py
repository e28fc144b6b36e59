"""Data layer: synthetic shapes, image folders with clear errors, MNIST file checks, binarisation."""

import gzip
import pickle

import numpy as np
import pytest

from repthesis import data


def test_shapes_are_deterministic_images_in_unit_range():
    a, b = data.make_shapes(16, 32, seed=3), data.make_shapes(16, 32, seed=3)
    assert a.shape == (16, 32, 32, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert 0.0 <= a.min() and a.max() <= 1.0 and a.std() > 0.1
    assert not np.array_equal(a, data.make_shapes(16, 32, seed=4))


def test_folder_loader_crops_resizes_and_reports_problems(tmp_path, capsys):
    from PIL import Image

    with pytest.raises(data.DataError, match="does not exist"):
        data.check(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataError, match="holds no images"):
        data.check(f"folder:{tmp_path / 'empty'}")
    imgs = tmp_path / "imgs" / "sub"
    imgs.mkdir(parents=True)
    for i in range(4):
        arr = np.zeros((40, 60, 3), np.uint8)
        arr[:, 10:50] = 50 * i  # the centre 40×40 square is uniform
        Image.fromarray(arr).save(imgs / f"{i}.png")
    (imgs / "broken.jpg").write_bytes(b"not an image")
    ds = data.load(f"folder:{tmp_path / 'imgs'}", image_size=16)
    assert "skipped 1 unreadable" in capsys.readouterr().err
    everything = np.concatenate([ds.valid, ds.test, ds.train])
    assert everything.shape == (4, 16, 16, 3) and not ds.binary
    np.testing.assert_allclose(sorted(everything.mean(axis=(1, 2, 3))), [50 * i / 255 for i in range(4)], atol=1e-6)


def test_unknown_dataset_and_missing_mnist_name_the_fix(tmp_path):
    with pytest.raises(data.DataError, match="valid: mnist, shapes, folder:PATH"):
        data.check("cifar")
    with pytest.raises(data.DataError, match="python -m repthesis.data fetch mnist"):
        data.check("mnist", str(tmp_path))


def test_mnist_loader_reads_the_wheel_format_and_binarisation_is_fixed(tmp_path):
    rng = np.random.default_rng(0)
    splits = tuple((rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)) for n in (5, 2, 3))
    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as f:
        pickle.dump(splits, f)
    ds = data.load("mnist", str(tmp_path))
    assert ds.binary and ds.train.shape == (5, 28, 28, 1) and ds.test.shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(ds.valid.reshape(2, 784), splits[1][0])
    b1, b2 = data.binarise(ds.test, 7), data.binarise(ds.test, 7)
    np.testing.assert_array_equal(b1, b2)
    assert set(np.unique(b1)) <= {0.0, 1.0}
    many = data.binarise(np.full((200, 28, 28, 1), 0.3, np.float32), 1)
    assert abs(many.mean() - 0.3) < 0.01
