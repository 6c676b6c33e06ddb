"""inf/NaN: the kernels count what they store, training stops naming step, layer and tensor,
and no checkpoint with a non-finite value is written or resumed from (issue 13, items 2 and 10)."""
import numpy as np
import pytest

from zskip.host.runtime.accelerator import Accelerator
from zskip.host.cli import main
from zskip.models import checkpoint as C
from zskip.models.networks import get_model

F32_MAX = float(np.finfo(np.float32).max)
TINY = ["--model", "lenet5", "--data", "synthetic:1x28x28", "--limit-train", "256", "--limit-test", "32",
        "--batch-size", "64", "--epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def acc():
    return Accelerator.emulated()


def test_sgd_update_counts_the_non_finite_weights_it_stores(acc):
    param = np.array([1e30, 1.0, -1e30, 0.0, 2e30], np.float32)
    grad = np.array([1e30, 1.0, 1e30, 0.0, -1e30], np.float32)
    vel = np.zeros(5, np.float32)
    p, v = acc.sgd_update(param, grad, vel, lr=1e10, momentum=0.9, weight_decay=0.0)
    want = np.count_nonzero(~np.isfinite(p)) + np.count_nonzero(~np.isfinite(v))
    assert want > 0
    assert acc.last_stats["nonfinite"] == want
    acc.sgd_update(np.ones(5, np.float32), np.ones(5, np.float32), vel, lr=0.1, momentum=0.9, weight_decay=0.0)
    assert acc.last_stats["nonfinite"] == 0


def test_conv_forward_counts_non_finite_pre_activations_also_under_relu(acc, rng):
    x = np.where(rng.random((2, 1, 6, 6)) < 0.2, 1e20, 0.0).astype(np.float32)
    w = np.stack([np.full((1, 3, 3), 1e20), np.full((1, 3, 3), -1e20)]).astype(np.float32)  # K = 2
    b = np.zeros(2, np.float32)
    y, _ = acc.conv_forward(x, w, b, relu=True)
    # float64 has the range: a pre-activation is non-finite in float32 where it exceeds float32's maximum
    from zskip.models import reference as R
    y64 = R.conv2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    want = int(np.count_nonzero(np.abs(y64) > F32_MAX))
    assert want > 0
    assert acc.last_stats["nonfinite"] == want
    assert np.count_nonzero(~np.isfinite(y)) < want          # the ReLU zeroed the -inf ones


def test_backward_weight_counts_the_non_finite_gradients_it_stores(acc, rng):
    x = np.where(rng.random((4, 6)) < 0.5, 1e20, 1.0).astype(np.float32)
    dy = np.where(rng.random((4, 3)) < 0.5, 1e20, -1.0).astype(np.float32)
    dw, db = acc.linear_backward_weight(x, dy)
    dw64 = dy.astype(np.float64).T @ x.astype(np.float64)
    want = int(np.count_nonzero(np.abs(dw64) > F32_MAX))    # db (sums of dy) stays finite
    assert want > 0 and np.isfinite(db).all()
    assert acc.last_stats["nonfinite"] == want == np.count_nonzero(~np.isfinite(dw))


def test_the_host_refuses_a_non_finite_input(acc):
    with pytest.raises(ValueError, match="non-finite"):
        acc.softmax_xent(np.array([[np.inf, 0.0, 1.0]], np.float32), np.array([0]))


@pytest.mark.parametrize("backend", ["emu", "reference"])
def test_a_diverging_run_stops_naming_step_layer_and_tensor(backend, tmp_path, capsys):
    ckpt = tmp_path / "c.npz"
    status = main(["train", "--backend", backend, "--lr", "1e6", "--checkpoint", str(ckpt),
                   "--checkpoint-every", "1"] + TINY)
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("zskip: error: training diverged at step ")
    assert "layer " in err[0] or "parameter layer" in err[0]
    assert "non-finite" in err[0] and "lr=1e+06" in err[0]
    assert "contains a non-finite value" not in err[0]      # not about an internal activation
    if ckpt.exists():                                        # written before the diverging step: finite
        got = C.load_checkpoint(ckpt, get_model("lenet5"))
        assert all(np.isfinite(a).all() for a in list(got.params.values()) + list(got.velocities.values()))


def _ckpt(model):
    params = model.init_params(0)
    return C.Checkpoint(model.name, params, model.zero_velocities(), epoch=0, step=0, config={})


def test_a_checkpoint_with_a_nan_is_never_written(tmp_path):
    model = get_model("lenet5")
    ck = _ckpt(model)
    ck.params["layer0.w"][0, 0, 1, 2] = np.nan
    with pytest.raises(ValueError, match=r"refusing to write .*param layer0\.w .*1 non-finite.*\(0, 0, 1, 2\)"):
        C.save_checkpoint(tmp_path / "c.npz", ck)
    assert not list(tmp_path.iterdir())


def test_resuming_from_a_checkpoint_with_a_nan_is_refused(tmp_path, capsys):
    model = get_model("lenet5")
    path = tmp_path / "c.npz"
    C.save_checkpoint(path, _ckpt(model))
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["velocity/layer6.b"] = arrays["velocity/layer6.b"].copy()
    arrays["velocity/layer6.b"][3] = np.inf
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"c\.npz: velocity layer6\.b holds 1 non-finite"):
        C.load_checkpoint(path, model)
    assert main(["train", "--backend", "emu", "--checkpoint", str(path), "--resume"] + TINY) == 2
    err = capsys.readouterr().err
    assert "c.npz" in err and "velocity layer6.b" in err and "Traceback" not in err
