"""Datasets for the lab, none of which is downloaded.

Built in (generated or shipped by a dependency of the ``lab`` extra):

- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), split
  80/20 with a fixed permutation; inputs ``(N, 1, 8, 8)``.
- ``mnist1d``: MNIST-1D (Greydanus 2020, Apache-2.0), generated offline by the ``mnist1d``
  package's ``make_dataset(get_dataset_args())`` (about a second; its ``get_dataset`` would
  download and unpickle, so it is never called): 4,000 train / 1,000 test sequences of
  length 40, inputs ``(N, 1, 40)``.

Brought by the user (``--data PATH``):

- a directory with MNIST or Fashion-MNIST in IDX format, raw or ``.gz``
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``); pixels are scaled to [0, 1];
- an ``.npz`` file with ``x_train, y_train, x_test, y_test`` (or ``x, y``, then split
  80/20 with a fixed permutation), read with ``allow_pickle=False`` so that a data file
  can never run code. ``x`` arrays of shape ``(N, D)`` become ``(N, 1, D)`` sequences,
  ``(N, H, W)`` become one-channel images ``(N, 1, H, W)``, ``(N, C, H, W)`` stay.

Every dataset is standardised with the training split's mean and standard deviation (one
scalar each) and returned as float32 inputs and int64 labels. Problems with a file
(missing, truncated, not IDX, labels that do not match the images, ...) raise
:class:`~normkit.lab.errors.LabError` naming the file.
"""

from __future__ import annotations

import functools
import gzip
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from normkit.lab.errors import LabError

BUILTIN = ("digits", "mnist1d")
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SPLIT_SEED = 0  # fixed: the test set does not change with the training seed


@dataclass(frozen=True)
class Dataset:
    """A classification dataset as tensors.

    ``x_train``: float32 ``(N, C, *spatial)``; ``y_train``: int64 ``(N,)`` in
    ``[0, num_classes)``; the same for the test split.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    description: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, *spatial)`` of one example."""
        return tuple(self.x_train.shape[1:])

    def summary(self) -> str:
        shape = "x".join(str(s) for s in self.input_shape)
        return (
            f"{self.name}: {len(self.y_train)} train / {len(self.y_test)} test, "
            f"input {shape}, {self.num_classes} classes"
        )


def load_dataset(spec: str) -> Dataset:
    """``"digits"``, ``"mnist1d"``, an ``.npz`` file or a directory of IDX files."""
    if spec in BUILTIN:
        return _load_builtin(spec)
    path = Path(spec).expanduser()
    if not path.exists():
        looks_like_path = any(sep in spec for sep in ("/", "\\")) or path.suffix != ""
        if looks_like_path:
            raise LabError(f"data path {spec!r} does not exist")
        raise LabError(
            f"unknown dataset {spec!r}: expected one of {', '.join(BUILTIN)}, "
            "a path to an .npz file or a directory with MNIST/Fashion-MNIST IDX files"
        )
    stat = path.stat()
    return _load_path(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _load_builtin(name: str) -> Dataset:
    if name == "digits":
        return _load_digits()
    return _load_mnist1d()


@functools.lru_cache(maxsize=4)
def _load_path(path_str: str, _mtime_ns: int, _size: int) -> Dataset:
    """Cached on (path, mtime, size) so an edited file is read again."""
    path = Path(path_str)
    if path.is_dir():
        return load_idx_dir(path)
    if path.suffix == ".npz":
        return load_npz(path)
    raise LabError(f"cannot read {path}: expected an .npz file or a directory with MNIST IDX files")


def _load_digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - part of the lab extra
        raise LabError("the digits dataset needs scikit-learn: pip install 'normkit[lab]'") from exc
    bunch = load_digits()
    x = np.asarray(bunch.images, dtype=np.float32)[:, None] / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    return _finish("digits", *_split(x, y), "scikit-learn 8x8 handwritten digits")


def _load_mnist1d() -> Dataset:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:  # pragma: no cover - part of the lab extra
        raise LabError("the mnist1d dataset needs mnist1d: pip install 'normkit[lab]'") from exc
    # make_dataset seeds the global `random` and NumPy generators: restore them afterwards.
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        data = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
    return _finish(
        "mnist1d",
        np.asarray(data["x"], dtype=np.float32)[:, None],
        np.asarray(data["y"], dtype=np.int64),
        np.asarray(data["x_test"], dtype=np.float32)[:, None],
        np.asarray(data["y_test"], dtype=np.int64),
        "MNIST-1D (generated offline by the mnist1d package)",
    )


def _split(x: np.ndarray, y: np.ndarray, train_fraction: float = 0.8):
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(y))
    x, y = x[order], y[order]
    cut = round(train_fraction * len(y))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def _finish(name, x_train, y_train, x_test, y_test, description) -> Dataset:
    """Standardise with the training split's scalar mean/std; convert to tensors."""
    x_train = np.asarray(x_train, dtype=np.float64)
    x_test = np.asarray(x_test, dtype=np.float64)
    mean, std = float(x_train.mean()), float(x_train.std())
    std = std if std > 0 else 1.0
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(
        name=name,
        x_train=torch.from_numpy(((x_train - mean) / std).astype(np.float32)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train, dtype=np.int64)),
        x_test=torch.from_numpy(((x_test - mean) / std).astype(np.float32)),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test, dtype=np.int64)),
        num_classes=num_classes,
        description=description,
    )


# ----------------------------------------------------------------------------- IDX files
def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw or gzip-compressed) into a NumPy array.

    Layout: two zero bytes, a type code (0x08 unsigned byte, 0x09 signed byte, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions ``d``, then ``d``
    big-endian uint32 sizes, then the values in C order, big-endian.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise LabError(f"IDX file {path} is missing") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise LabError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise LabError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise LabError(f"{path} is truncated: the IDX header announces {ndim} dimensions")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got < expected:
        raise LabError(
            f"{path} is truncated: shape {dims} needs {expected} bytes of data, found {got}"
        )
    if got > expected:
        raise LabError(f"{path} has {got - expected} unexpected bytes after shape {dims}")
    return (
        np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
    )


def _find_idx(directory: Path, stem: str) -> Path:
    for candidate in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        if (directory / candidate).is_file():
            return directory / candidate
    raise LabError(f"IDX file {stem}[.gz] is missing from {directory}")


def load_idx_dir(directory: str | Path) -> Dataset:
    """MNIST or Fashion-MNIST from a directory holding the four IDX files (raw or .gz)."""
    directory = Path(directory)
    arrays = {key: read_idx(_find_idx(directory, stem)) for key, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        img_name, lab_name = IDX_FILES[f"x_{split}"], IDX_FILES[f"y_{split}"]
        if images.ndim != 3:
            raise LabError(
                f"{img_name} in {directory} should hold images (N, rows, cols), got shape "
                f"{images.shape}; is it a labels file?"
            )
        if labels.ndim != 1:
            raise LabError(
                f"{lab_name} in {directory} should hold labels (N,), got shape {labels.shape}; "
                "is it an images file?"
            )
    x_train, y_train, x_test, y_test = (
        arrays[k] for k in ("x_train", "y_train", "x_test", "y_test")
    )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise LabError(
            f"train and test images in {directory} differ in size: "
            f"{x_train.shape[1:]} vs {x_test.shape[1:]}"
        )
    x_train, y_train, x_test, y_test = _check_arrays(
        f"the IDX files in {directory}", x_train, y_train, x_test, y_test
    )
    return _finish(
        directory.name or str(directory),
        x_train.astype(np.float64)[:, None] / 255.0,
        y_train,
        x_test.astype(np.float64)[:, None] / 255.0,
        y_test,
        f"IDX images from {directory}",
    )


# ----------------------------------------------------------------------------- .npz files
def load_npz(path: str | Path) -> Dataset:
    """Arrays ``x_train, y_train, x_test, y_test`` (or ``x, y``) from an ``.npz`` file.

    Read with ``allow_pickle=False``: object arrays are refused, nothing is unpickled.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            if {"x_train", "y_train", "x_test", "y_test"} <= keys:
                x_train, y_train, x_test, y_test = (
                    archive[k] for k in ("x_train", "y_train", "x_test", "y_test")
                )
            elif {"x", "y"} <= keys:
                x, y = archive["x"], archive["y"]
                if len(x) != len(y):
                    raise LabError(f"{path}: 'x' has {len(x)} examples but 'y' has {len(y)} labels")
                x_train, y_train, x_test, y_test = _split(x, y)
            else:
                raise LabError(
                    f"{path} must contain arrays x_train, y_train, x_test, y_test (or x, y); "
                    f"found {', '.join(sorted(keys)) or 'none'}"
                )
    except FileNotFoundError:
        raise LabError(f"data file {path} is missing") from None
    except LabError:
        raise
    except ValueError as exc:  # object arrays with allow_pickle=False, bad headers
        raise LabError(f"cannot read {path}: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise LabError(f"cannot read {path} (truncated or not an .npz file): {exc}") from None
    x_train, y_train, x_test, y_test = _check_arrays(str(path), x_train, y_train, x_test, y_test)
    return _finish(
        path.stem,
        _as_channels_first(x_train),
        y_train,
        _as_channels_first(x_test),
        y_test,
        f"arrays from {path}",
    )


def _as_channels_first(x: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, 1, D); (N, H, W) -> (N, 1, H, W); (N, C, H, W) unchanged."""
    return x[:, None] if x.ndim in (2, 3) else x


def _check_arrays(source: str, x_train, y_train, x_test, y_test):
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if not (
            np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating)
        ):
            raise LabError(f"{source}: {name} must be a real numeric array, got dtype {x.dtype}")
        if x.ndim not in (2, 3, 4):
            raise LabError(
                f"{source}: {name} must have shape (N, D), (N, H, W) or (N, C, H, W), got {x.shape}"
            )
        if not np.isfinite(x).all():
            raise LabError(f"{source}: {name} contains NaN or infinite values")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise LabError(
            f"{source}: x_train and x_test examples differ in shape: "
            f"{x_train.shape[1:]} vs {x_test.shape[1:]}"
        )
    for xname, yname, x, y in (
        ("x_train", "y_train", x_train, y_train),
        ("x_test", "y_test", x_test, y_test),
    ):
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise LabError(
                f"{source}: {yname} must be a 1-D array of integer class labels, "
                f"got shape {y.shape} dtype {y.dtype}"
            )
        if len(y) != len(x):
            raise LabError(
                f"{source}: {xname} has {len(x)} examples but {yname} has {len(y)} labels"
            )
        if len(y) and y.min() < 0:
            raise LabError(f"{source}: {yname} has negative labels (min {int(y.min())})")
        if len(y) == 0:
            raise LabError(f"{source}: {xname} is empty")
    if len(np.unique(y_train)) < 2:
        raise LabError(f"{source}: y_train needs at least two classes")
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)
