"""Bad dataset files: each one `data:` error naming the file and what is wrong (issue 13, items 3 and 8)."""
import gzip
import warnings

import numpy as np
import pytest

from zskip.host.cli import main
from zskip.models.datasets import load_dataset, read_idx


def _idx_bytes(a: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return header + a.astype(np.uint8).tobytes()


def test_a_missing_file_says_it_does_not_exist():
    for spec in ("/nonexistent/foo.npz", "npz:/nonexistent/foo.npz", "/nonexistent/dir/"):
        with pytest.raises(ValueError, match=r"^data: /nonexistent/(foo\.npz|dir/): .*(does not exist|no such file)"):
            load_dataset(spec)


def test_a_three_sample_npz_is_refused_saying_how_many(tmp_path, capsys):
    path = tmp_path / "three.npz"
    np.savez(path, x=np.zeros((3, 1, 28, 28), np.uint8), y=np.array([0, 1, 2]))
    assert main(["train", "--data", str(path), "--backend", "reference", "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "three.npz" in err[0] and "3 samples" in err[0] and "0 for testing" in err[0], err


@pytest.mark.parametrize("which", ["x_train", "x_test"])
def test_zero_length_arrays_are_refused(tmp_path, which):
    arrays = {"x_train": np.zeros((4, 1, 8, 8), np.uint8), "y_train": np.zeros(4, int),
              "x_test": np.zeros((2, 1, 8, 8), np.uint8), "y_test": np.zeros(2, int)}
    arrays[which] = arrays[which][:0]
    arrays["y" + which[1:]] = arrays["y" + which[1:]][:0]
    np.savez(tmp_path / "e.npz", **arrays)
    with pytest.raises(ValueError, match=rf"^data: .*e\.npz: {which} holds 0 samples"):
        load_dataset(str(tmp_path / "e.npz"))
    np.savez(tmp_path / "xy.npz", x=np.zeros((0, 1, 8, 8), np.uint8), y=np.zeros(0, int))
    with pytest.raises(ValueError, match=r"^data: .*xy\.npz: x and y hold 0 samples"):
        load_dataset(str(tmp_path / "xy.npz"))


def test_a_text_file_named_npz_is_not_an_npz(tmp_path):
    (tmp_path / "t.npz").write_text("hello\n")
    with pytest.raises(ValueError, match=r"^data: .*t\.npz: not an npz archive"):
        load_dataset(str(tmp_path / "t.npz"))
    (tmp_path / "z.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"^data: .*z\.npz: not an npz archive \(empty file\)"):
        load_dataset(str(tmp_path / "z.npz"))


def test_a_truncated_idx_header_is_named(tmp_path):
    data = _idx_bytes(np.zeros((2, 3, 3)))
    (tmp_path / "a-idx3-ubyte").write_bytes(data[:10])
    with pytest.raises(ValueError, match=r"^data: .*a-idx3-ubyte: truncated idx header \(3 dimensions need 16"):
        read_idx(tmp_path / "a-idx3-ubyte")
    (tmp_path / "b-idx3-ubyte").write_bytes(data[:-2])
    with pytest.raises(ValueError, match=r"^data: .*b-idx3-ubyte: header says shape \(2, 3, 3\) \(18 bytes\) but 16"):
        read_idx(tmp_path / "b-idx3-ubyte")


def test_a_truncated_or_non_gzip_gz_is_named(tmp_path):
    packed = gzip.compress(_idx_bytes(np.zeros((2, 3, 3))))
    (tmp_path / "t.gz").write_bytes(packed[:len(packed) // 2])
    with pytest.raises(ValueError, match=r"^data: .*t\.gz: a truncated gzip file"):
        read_idx(tmp_path / "t.gz")
    (tmp_path / "n.gz").write_bytes(_idx_bytes(np.zeros((2, 3, 3))))
    with pytest.raises(ValueError, match=r"^data: .*n\.gz: not a valid gzip file"):
        read_idx(tmp_path / "n.gz")


def test_float_images_in_0_255_are_scaled_with_a_warning(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "f.npz", x=x, y=np.arange(20) % 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(str(tmp_path / "f.npz"))
    assert any("scaled by 1/255" in str(w.message) for w in caught)
    assert 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    np.testing.assert_allclose(np.sort(np.concatenate([ds.x_train, ds.x_test]).ravel()),
                               np.sort(x.ravel() / 255), rtol=1e-6)
