"""Fixtures for the lab tests: quiet runs and small data files written on the fly."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")


@pytest.fixture(autouse=True)
def _quiet_lab():
    """No progress bars in tests."""
    from normkit.lab.runner import quiet

    with quiet():
        yield


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file's bytes: 0, 0, type code, rank, big-endian uint32 sizes, big-endian data."""
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtypes[type_code]).tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False, type_code: int = 0x08) -> Path:
    raw = idx_bytes(array, type_code)
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def fake_images(n: int, seed: int, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of two separable classes (bright left half vs bright right half)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.uint8)
    x = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    half = size // 2
    for i, label in enumerate(y):
        cols = slice(0, half) if label == 0 else slice(half, size)
        x[i, :, cols] += 150
    return x, y


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    """A directory with the four MNIST IDX files (train gzipped, test raw), 8x8 images."""
    d = tmp_path / "mnist"
    d.mkdir()
    x_train, y_train = fake_images(64, 0)
    x_test, y_test = fake_images(32, 1)
    write_idx(d / "train-images-idx3-ubyte", x_train, gz=True)
    write_idx(d / "train-labels-idx1-ubyte", y_train, gz=True)
    write_idx(d / "t10k-images-idx3-ubyte", x_test)
    write_idx(d / "t10k-labels-idx1-ubyte", y_test)
    return d


@pytest.fixture
def npz_file(tmp_path: Path) -> Path:
    x_train, y_train = fake_images(64, 0)
    x_test, y_test = fake_images(32, 1)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path
