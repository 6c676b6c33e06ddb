"""Max pooling, fully-connected, SGD and softmax kernels (emulated HLS) against the reference."""
import numpy as np
import pytest

from zskip.host.runtime.accelerator import Accelerator
from zskip.models import reference as R
from zskip.models.ops import ReferenceOps


@pytest.fixture(scope="module", params=[True, False], ids=["sparse", "dense"])
def acc(request):
    return Accelerator.emulated(skip_zeros=request.param)


def _close(got, want, rel=1e-5):
    scale = max(float(np.abs(want).max()), 1e-30)
    assert got.shape == np.shape(want)
    assert float(np.abs(got - want).max()) <= rel * scale


@pytest.mark.parametrize("shape, size, stride", [((2, 3, 8, 8), 2, 2), ((1, 2, 7, 9), 3, 2), ((3, 1, 6, 6), 2, 1)])
def test_maxpool(acc, rng, shape, size, stride):
    x = rng.standard_normal(shape).astype(np.float32)
    x = np.maximum(x, 0)  # post-ReLU input, with ties at zero
    x[0, 0, :2, :2] = 1.5  # a tie inside one window: the first maximum wins
    y, argmax, mask = acc.maxpool_forward(x, size, stride)
    y_ref, a_ref = R.maxpool2d_forward(x, size, stride)
    assert np.array_equal(y, y_ref) and np.array_equal(argmax, a_ref) and np.array_equal(mask, y_ref > 0)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = acc.maxpool_backward(dy, argmax, shape, size, stride)
    _close(dx, R.maxpool2d_backward(dy, a_ref, shape, size, stride))
    assert acc.last_stats["macs_executed"] == 0


@pytest.mark.parametrize("n, i, j, sparsity", [(1, 1, 1, 0.0), (4, 50, 33, 0.5), (3, 256, 120, 0.9), (2, 40, 1024, 0.3)])
def test_linear(acc, rng, n, i, j, sparsity):
    x = rng.standard_normal((n, i)).astype(np.float32)
    x[rng.random(x.shape) < sparsity] = 0
    w = rng.standard_normal((j, i)).astype(np.float32)
    b = rng.standard_normal(j).astype(np.float32)
    dy = rng.standard_normal((n, j)).astype(np.float32)
    dy[rng.random(dy.shape) < sparsity] = 0
    out_mask = x > 0
    macs = R.linear_macs(x, dy, out_mask=out_mask)

    y, mask = acc.linear_forward(x, w, b, relu=True)
    y_ref, mask_ref = R.relu_forward(R.linear_forward(x, w, b))
    _close(y, y_ref)
    assert np.array_equal(mask, mask_ref)
    _macs(acc, macs["fwd"])
    y_lin, none = acc.linear_forward(x, w, b, relu=False)
    assert none is None
    _close(y_lin, R.linear_forward(x, w, b))

    dx = acc.linear_backward_data(dy, w, out_mask=out_mask)
    _close(dx, R.relu_backward(dy @ w, out_mask))
    _macs(acc, macs["bwd_data"])

    dw, db = acc.linear_backward_weight(x, dy)
    _close(dw, dy.T @ x)
    _close(db, dy.sum(axis=0))
    _macs(acc, macs["bwd_weight"])


def _macs(acc, ref):
    assert acc.last_stats["macs_dense"] == ref["macs_dense"]
    assert acc.last_stats["macs_executed"] == (ref["macs_nonzero"] if acc.skip_zeros else ref["macs_dense"])


def test_sgd_update_matches_pytorch_rule(acc, rng):
    p = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    g = rng.standard_normal(p.shape).astype(np.float32)
    v = rng.standard_normal(p.shape).astype(np.float32)
    p2, v2 = acc.sgd_update(p, g, v, lr=0.05, momentum=0.9, weight_decay=1e-3)
    p_ref, v_ref = R.sgd_update(p, g, v, 0.05, 0.9, 1e-3)
    np.testing.assert_allclose(v2, v_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(p2, p_ref, rtol=1e-6, atol=1e-6)
    assert p2.shape == p.shape
    with pytest.raises(ValueError, match="lr: must be a finite number >= 0"):
        acc.sgd_update(p, g, v, lr=-1, momentum=0.9, weight_decay=0)


def test_softmax_xent(acc, rng):
    logits = (rng.standard_normal((5, 10)) * 3).astype(np.float32)
    labels = rng.integers(0, 10, 5)
    loss, d = acc.softmax_xent(logits, labels)
    loss_ref, d_ref = R.softmax_cross_entropy(logits, labels)
    assert abs(loss - loss_ref) <= 1e-5 * abs(loss_ref)
    np.testing.assert_allclose(d, d_ref, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"labels: must lie in \[0, 9\]"):
        acc.softmax_xent(logits, np.full(5, 10))


def test_a_lenet_training_step_matches_the_reference_backend():
    """The whole step through models.step on the accelerator equals the numpy reference."""
    from zskip.models.networks import get_model
    from zskip.models.step import train_step
    model = get_model("lenet5")
    rng = np.random.default_rng(7)
    x = rng.random((4, 1, 28, 28)).astype(np.float32)
    x[rng.random(x.shape) < 0.7] = 0
    y = rng.integers(0, 10, 4)
    params, vel = model.init_params(3), model.zero_velocities()
    ref = train_step(ReferenceOps(), model, params, vel, x, y, 0.05, 0.9, 1e-4, account=False)
    got = train_step(Accelerator.emulated(), model, params, vel, x, y, 0.05, 0.9, 1e-4, account=False)
    assert abs(got.loss - ref.loss) <= 1e-5 * ref.loss
    for key in params:
        _close(got.params[key], ref.params[key], rel=1e-5)
        _close(got.velocities[key], ref.velocities[key], rel=1e-4)


def test_fixed16_linear_within_quantisation_bound(rng):
    """ap_fixed<16,6>: each operand rounds to q = 2^-10 (error <= q/2), so
    |y - y_float| <= sum_i (|w_ji| + |x_i|) q/2 + I (q^2/4 + q_acc/2) + q (bias and output rounding)."""
    acc = Accelerator.emulated(precision="ap_fixed<16,6>")
    q, q_acc = 2.0 ** -10, 2.0 ** -20
    x = (rng.random((3, 64)) * (rng.random((3, 64)) > 0.5)).astype(np.float32)
    w = (rng.standard_normal((10, 64)) * 0.2).astype(np.float32)
    b = (rng.standard_normal(10) * 0.2).astype(np.float32)
    y, _ = acc.linear_forward(x, w, b, relu=False)
    y_ref = x.astype(np.float64) @ w.T.astype(np.float64) + b
    bound = (np.abs(x).sum(1, keepdims=True) + np.abs(w).sum(1)[None, :]) * q / 2 + 64 * (q * q / 4 + q_acc / 2) + q
    assert np.all(np.abs(y - y_ref) <= bound)
    assert np.abs(y - y_ref).max() > 0
