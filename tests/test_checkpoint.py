"""Checkpoint files: round trip, atomic replacement, validation, no pickle."""
import os

import numpy as np
import pytest

from zskip.models import checkpoint as C
from zskip.models.networks import get_model


def _ckpt(model, seed=0):
    params = model.init_params(seed)
    vel = {k: np.full_like(v, 0.5) for k, v in params.items()}
    return C.Checkpoint(model.name, params, vel, epoch=2, step=7, config={"lr": 0.02}, state={"totals": {"seen": 3}})


def test_round_trip_is_exact(tmp_path):
    model = get_model("lenet5")
    path = tmp_path / "c.npz"
    C.save_checkpoint(path, _ckpt(model))
    got = C.load_checkpoint(path, model)
    want = _ckpt(model)
    assert (got.model, got.epoch, got.step, got.config, got.state) == ("lenet5", 2, 7, {"lr": 0.02}, {"totals": {"seen": 3}})
    for k in want.params:
        assert got.params[k].dtype == want.params[k].dtype
        assert np.array_equal(got.params[k], want.params[k]) and np.array_equal(got.velocities[k], want.velocities[k])


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    model = get_model("lenet5")
    path = tmp_path / "c.npz"
    C.save_checkpoint(path, _ckpt(model, seed=0))
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(C.np, "savez", crash)
    with pytest.raises(OSError):
        C.save_checkpoint(path, _ckpt(model, seed=1))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]       # no temporary file left behind


def test_wrong_model_or_shape_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    C.save_checkpoint(path, _ckpt(get_model("lenet5")))
    with pytest.raises(ValueError, match="^checkpoint: .*'lenet5', not 'vgg_tiny'"):
        C.load_checkpoint(path, get_model("vgg_tiny"))
    bad = _ckpt(get_model("lenet5"))
    bad.params["layer0.w"] = np.zeros((6, 1, 3, 3), np.float32)
    C.save_checkpoint(path, bad)
    with pytest.raises(ValueError, match=r"^checkpoint: .*layer0.w has shape \(6, 1, 3, 3\)"):
        C.load_checkpoint(path, get_model("lenet5"))


def test_other_files_are_refused(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(3))
    with pytest.raises(ValueError, match="^checkpoint: .*not a zskip checkpoint"):
        C.load_checkpoint(plain)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="^checkpoint: cannot read"):
        C.load_checkpoint(text)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, format=np.array(C.FORMAT_VERSION), meta=np.array([{"model": "x"}], dtype=object))
    with pytest.raises(ValueError, match="^checkpoint: cannot read"):
        C.load_checkpoint(pickled)
