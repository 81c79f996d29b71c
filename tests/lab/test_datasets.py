"""Datasets: the built-in ones, user IDX and .npz files, and every way a file can be wrong."""

from __future__ import annotations

import gzip
import random

import numpy as np
import pytest
import torch

from normkit.lab import datasets
from normkit.lab.datasets import load_dataset, load_idx_dir, load_npz, read_idx
from normkit.lab.errors import LabError

from .conftest import fake_images, idx_bytes, write_idx


def test_digits_shapes_split_and_standardisation():
    d = load_dataset("digits")
    assert d.x_train.shape == (1438, 1, 8, 8) and d.x_test.shape == (359, 1, 8, 8)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.num_classes == 10 and d.input_shape == (1, 8, 8)
    assert abs(float(d.x_train.mean())) < 1e-5
    assert abs(float(d.x_train.std(unbiased=False)) - 1) < 1e-4
    again = datasets._load_digits()  # uncached: the split is fixed, not random
    assert torch.equal(again.x_test, d.x_test) and torch.equal(again.y_train, d.y_train)


def test_mnist1d_is_generated_offline_and_leaves_global_rngs_alone():
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002
    expected = (random.random(), np.random.rand())  # noqa: NPY002
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002
    d = datasets._load_mnist1d()  # make_dataset reseeds `random` and NumPy internally
    assert (random.random(), np.random.rand()) == expected  # noqa: NPY002
    assert d.x_train.shape == (4000, 1, 40) and d.x_test.shape == (1000, 1, 40)
    assert set(d.y_train.unique().tolist()) == set(range(10))


def test_unknown_name_and_missing_path():
    with pytest.raises(LabError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(LabError, match="does not exist"):
        load_dataset("no/such/file.npz")


# ----------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("type_code", [0x08, 0x0B, 0x0D])
def test_read_idx_round_trip(tmp_path, gz, type_code):
    array = np.arange(24).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a-idx3-ubyte", array, gz=gz, type_code=type_code)
    got = read_idx(path)
    assert got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, array)


def test_load_idx_dir(mnist_dir):
    d = load_dataset(str(mnist_dir))
    assert d.x_train.shape == (64, 1, 8, 8) and d.x_test.shape == (32, 1, 8, 8)
    assert d.num_classes == 2 and d.name == "mnist"
    assert abs(float(d.x_train.mean())) < 1e-5


def test_idx_missing_file(mnist_dir):
    (mnist_dir / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(LabError, match=r"t10k-labels-idx1-ubyte\[\.gz\] is missing"):
        load_idx_dir(mnist_dir)


def test_idx_truncated_data(mnist_dir):
    path = mnist_dir / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(LabError, match=r"t10k-images-idx3-ubyte is truncated: shape \(32, 8, 8\)"):
        load_idx_dir(mnist_dir)


def test_idx_truncated_header(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(LabError, match="truncated: the IDX header announces 3 dimensions"):
        read_idx(path)


def test_idx_truncated_gzip(mnist_dir):
    path = mnist_dir / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(LabError, match=r"cannot read IDX file .*train-images"):
        load_idx_dir(mnist_dir)


def test_idx_bad_magic(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(LabError, match="is not an IDX file"):
        read_idx(path)


def test_idx_trailing_bytes(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(idx_bytes(np.zeros((2, 2), np.uint8)) + b"\x00")
    with pytest.raises(LabError, match="1 unexpected bytes"):
        read_idx(path)


def test_idx_images_and_labels_swapped(mnist_dir):
    images = mnist_dir / "t10k-images-idx3-ubyte"
    labels = mnist_dir / "t10k-labels-idx1-ubyte"
    a, b = images.read_bytes(), labels.read_bytes()
    images.write_bytes(b)
    labels.write_bytes(a)
    with pytest.raises(LabError, match=r"should hold images .* is it a labels file"):
        load_idx_dir(mnist_dir)


def test_idx_label_count_mismatch(mnist_dir):
    write_idx(mnist_dir / "t10k-labels-idx1-ubyte", np.zeros(31, np.uint8))
    with pytest.raises(LabError, match="x_test has 32 examples but y_test has 31 labels"):
        load_idx_dir(mnist_dir)


# ----------------------------------------------------------------------------- .npz
def test_npz_four_arrays(npz_file):
    d = load_npz(npz_file)
    assert d.x_train.shape == (64, 1, 8, 8) and d.y_test.shape == (32,)


def test_npz_x_y_is_split_deterministically(tmp_path):
    x, y = fake_images(50, 0)
    path = tmp_path / "xy.npz"
    np.savez(path, x=x.reshape(50, -1), y=y)
    a, b = load_npz(path), load_npz(path)
    assert a.x_train.shape == (40, 1, 64) and a.x_test.shape == (10, 1, 64)
    assert torch.equal(a.x_test, b.x_test)


def test_npz_object_arrays_are_refused(tmp_path):
    path = tmp_path / "evil.npz"
    objects = np.array([{"a": 1}] * 4, dtype=object)
    np.savez(
        path, x_train=objects, y_train=np.zeros(4, int), x_test=objects, y_test=np.zeros(4, int)
    )
    with pytest.raises(LabError, match=r"cannot read .*evil.npz.*allow_pickle"):
        load_npz(path)


def test_npz_missing_keys(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, images=np.zeros((4, 2)))
    with pytest.raises(LabError, match=r"must contain arrays x_train, .* found images"):
        load_npz(path)


def test_npz_truncated(npz_file):
    npz_file.write_bytes(npz_file.read_bytes()[:100])
    with pytest.raises(LabError, match=r"truncated or not an .npz file"):
        load_dataset(str(npz_file))


def test_npz_bad_labels(tmp_path):
    x, y = fake_images(10, 0)
    path = tmp_path / "a.npz"
    np.savez(path, x_train=x, y_train=y.astype(np.float32), x_test=x, y_test=y)
    with pytest.raises(LabError, match="y_train must be a 1-D array of integer class labels"):
        load_npz(path)
    np.savez(path, x_train=x, y_train=y[:-1], x_test=x, y_test=y)
    with pytest.raises(LabError, match="x_train has 10 examples but y_train has 9 labels"):
        load_npz(path)
    np.savez(path, x_train=x, y_train=y.astype(int) - 5, x_test=x, y_test=y)
    with pytest.raises(LabError, match="negative labels"):
        load_npz(path)


def test_npz_non_finite_inputs(tmp_path):
    x, y = fake_images(10, 0)
    x = x.astype(np.float32)
    x[0, 0, 0] = np.nan
    path = tmp_path / "a.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    with pytest.raises(LabError, match="x_train contains NaN"):
        load_npz(path)


def test_unreadable_path_kind(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("1,2,3\n")
    with pytest.raises(LabError, match=r"expected an .npz file or a directory"):
        load_dataset(str(path))


def test_gzip_helper_really_compresses(tmp_path):
    path = write_idx(tmp_path / "a", np.zeros((3, 3), np.uint8), gz=True)
    assert path.name == "a.gz" and gzip.decompress(path.read_bytes())[:4] == bytes([0, 0, 8, 2])
