"""Batch normalisation kernels (hls/batchnorm, emulated) against the numpy reference.

Per op on a grid (N = 1, odd sizes, (N, C) and (N, C, H, W) inputs, ReLU on and off, with and
without the mask of the op's input), in float32 and in fixed point against a numpy model of the
same quantisation; the counters against the schedule table; a few training steps of a small
model with batch normalisation in program mode, checked against the reference at every step.
"""
import numpy as np
import pytest

from zskip.host.runtime.accelerator import Accelerator
from zskip.models.ops import ReferenceOps

REF = ReferenceOps()
SHAPES = [(1, 3, 5, 7), (2, 3, 5, 7), (3, 1, 1, 1), (2, 16, 4, 4), (5, 6), (2, 1), (9, 33)]


@pytest.fixture(scope="module")
def acc():
    return Accelerator.emulated()


def _close(got, want, rel=1e-5, scale=0.0):
    """max |got - want| <= rel * max(max |want|, scale) (the kernel tests' float32 tolerance; ``scale``:
    the size of the terms a result cancels from)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) <= rel * max(float(np.abs(want).max()), scale, 1e-30)


def _data(rng, shape):
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + rng.standard_normal((1, c) + (1,) * (len(shape) - 2))).astype(np.float32)
    gamma = (rng.random(c) + 0.5).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    return x, gamma, beta


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("relu", [True, False])
def test_forward_and_backward_equal_the_reference(acc, rng, shape, relu):
    x, gamma, beta = _data(rng, shape)
    y, mask, xhat, mean, var = acc.batchnorm_forward(x, gamma, beta, 1e-5, relu)
    y_r, mask_r, xhat_r, mean_r, var_r = REF.batchnorm_forward(x, gamma, beta, 1e-5, relu)
    for got, want in ((y, y_r), (xhat, xhat_r), (mean, mean_r), (var, var_r)):
        _close(got, want)
    if relu:
        assert np.array_equal(mask, mask_r)
    else:
        assert mask is None and mask_r is None
    dy = rng.standard_normal(shape).astype(np.float32)
    if relu:
        dy[~mask_r] = 0          # the next layer's backward applied this op's ReLU
    for out_mask in (None, rng.random(shape) > 0.4):
        dx, dgamma, dbeta = acc.batchnorm_backward(dy, xhat_r, var_r, gamma, 1e-5, out_mask)
        dx_r, dgamma_r, dbeta_r = REF.batchnorm_backward(dy, xhat_r, var_r, gamma, 1e-5, out_mask)
        # dx = gamma inv_std (dy - mean dy - xhat mean(dy xhat)): it cancels terms of gamma inv_std |dy|
        # (to zero exactly with two values per channel)
        terms = float(np.max(gamma / np.sqrt(var_r + 1e-5)) * np.abs(dy).max())
        _close(dx, dx_r, scale=terms)
        _close(dgamma, dgamma_r)
        _close(dbeta, dbeta_r)
        if out_mask is not None:
            assert not dx[~out_mask].any()


@pytest.mark.parametrize("shape", SHAPES + [(1, 4)])
@pytest.mark.parametrize("relu", [True, False])
def test_inference_equals_the_reference(acc, rng, shape, relu):
    x, gamma, beta = _data(rng, shape)
    c = shape[1]
    rm = rng.standard_normal(c).astype(np.float32)
    rv = (rng.random(c) * 3).astype(np.float32)
    rv[0] = 0.0                  # a constant channel: the variance is eps alone
    y, mask = acc.batchnorm_inference(x, gamma, beta, rm, rv, 1e-3, relu)
    y_r, mask_r = REF.batchnorm_inference(x, gamma, beta, rm, rv, 1e-3, relu)
    _close(y, y_r)
    assert (mask is None and mask_r is None) or np.array_equal(mask, mask_r)


@pytest.mark.parametrize("c, count, momentum", [(1, 2, 0.1), (7, 35, 0.1), (16, 1000, 0.0), (5, 3, 1.0)])
def test_running_statistics_update_equals_the_reference(acc, rng, c, count, momentum):
    rm, mean = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    rv, var = rng.random(c).astype(np.float32), rng.random(c).astype(np.float32)
    got = acc.batchnorm_update_stats(rm, rv, mean, var, count, momentum)
    want = REF.batchnorm_update_stats(rm, rv, mean, var, count, momentum)
    for g, w in zip(got, want):
        _close(g, w, rel=1e-6)


def test_bad_arguments_are_refused_with_their_name(acc):
    x = np.ones((1, 3, 1, 1), np.float32)
    one = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="x: training-mode batch normalisation needs more than one value"):
        acc.batchnorm_forward(x, one, one)
    with pytest.raises(ValueError, match=r"gamma: expected shape \(3,\)"):
        acc.batchnorm_forward(np.ones((2, 3), np.float32), np.ones(4, np.float32), one)
    with pytest.raises(ValueError, match=r"x channels: must be in \[1, "):
        c = acc.limits.max_ch + 1
        acc.batchnorm_forward(np.ones((2, c), np.float32), np.ones(c, np.float32), np.ones(c, np.float32))
    with pytest.raises(ValueError, match="eps: must be a finite number > 0"):
        acc.batchnorm_inference(x, one, one, one, one, eps=0.0)
    with pytest.raises(ValueError, match="running_var: must be >= 0"):
        acc.batchnorm_inference(x, one, one, one, -one)
    with pytest.raises(ValueError, match=r"count: must be an integer in \[2, "):
        acc.batchnorm_update_stats(one, one, one, one, 1, 0.1)
    with pytest.raises(ValueError, match=r"momentum: must lie in \[0, 1\]"):
        acc.batchnorm_update_stats(one, one, one, one, 4, 1.5)


# ----------------------------------------------------------------------------- fixed point
def _quantise(v, frac_bits, int_bits):
    """ap_fixed<int_bits + frac_bits, int_bits, AP_RND, AP_SAT>: round half up, saturate."""
    q = 2.0 ** -frac_bits
    lo, hi = -2.0 ** (int_bits - 1), 2.0 ** (int_bits - 1) - q
    return np.clip(np.floor(np.asarray(v, np.float64) / q + 0.5) * q, lo, hi)


def test_fixed16_within_one_step_of_a_model_of_its_rounding(rng):
    """fixed16 (act ap_fixed<16,6>, wgt <16,4>, grad <16,2>, statistics float32): x, gamma, beta, dy
    and xhat round on load, y, xhat, dx, dgamma, dbeta on store; the statistics are float32. A float64
    model of that rounding differs from the kernel only by float32 rounding before a store, so each
    stored value is within one step of its type (2^-10 act, 2^-14 grad) plus 1e-5 of its scale."""
    acc = Accelerator.emulated(precision="fixed16")
    qa = lambda v: _quantise(v, 10, 6)
    qw = lambda v: _quantise(v, 12, 4)
    qg = lambda v: _quantise(v, 14, 2)
    x, gamma, beta = _data(rng, (3, 4, 5, 5))
    y, mask, xhat, mean, var = acc.batchnorm_forward(x, gamma, beta, 1e-5, True)
    xq = qa(x)
    mean_m, var_m = xq.mean(axis=(0, 2, 3)), xq.var(axis=(0, 2, 3))
    c = lambda a: a.reshape(1, -1, 1, 1)
    xhat_m = (xq - c(mean_m)) / np.sqrt(c(var_m) + 1e-5)
    pre = c(qw(gamma)) * xhat_m + c(qw(beta))
    _close(mean, mean_m)
    _close(var, var_m)
    assert np.abs(xhat - qa(xhat_m)).max() <= 2.0 ** -10 + 1e-5 * np.abs(xhat_m).max()
    assert np.abs(y - qa(np.maximum(pre, 0))).max() <= 2.0 ** -10 + 1e-5 * np.abs(pre).max()
    assert np.array_equal(mask, y > 0)

    dy = (rng.standard_normal(x.shape) * 0.02).astype(np.float32) * mask
    dx, dgamma, dbeta = acc.batchnorm_backward(dy, xhat, var, gamma, 1e-5, None)
    m = x.size // x.shape[1]
    dyq, xhq = qg(dy), qa(xhat)
    dbeta_m, dgamma_m = qg(dyq.sum(axis=(0, 2, 3))), qg((dyq * xhq).sum(axis=(0, 2, 3)))
    step = 2.0 ** -14
    assert np.abs(dbeta - dbeta_m).max() <= step + 1e-5 * np.abs(dbeta_m).max()
    assert np.abs(dgamma - dgamma_m).max() <= step + 1e-5 * np.abs(dgamma_m).max()
    scale = c(qw(gamma) / np.sqrt(var.astype(np.float64) + 1e-5) / m)
    dx_m = scale * (m * dyq - c(dbeta) - xhq * c(dgamma))
    assert np.abs(dx - qg(dx_m)).max() <= step + 1e-5 * np.abs(dx_m).max()
    assert acc.last_stats["nonfinite"] == 0


# ----------------------------------------------------------------------------- counters
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (5, 6)])
def test_cycles_are_the_schedule_table_applied_to_the_shapes(acc, rng, shape):
    """Every loop of the four kernels runs once per descriptor with a trip count known from the shape
    (elements E = N*C*H*W, channels C), so the cycles are the table's trips x II + depth summed,
    plus the descriptor fetch."""
    from zskip.host.bench.perf_model import kernel_constants, schedule
    rows, d = schedule(), kernel_constants()

    def loop(label, trips):
        ii, depth = rows[label]
        return trips * ii + depth

    x, gamma, beta = _data(rng, shape)
    e, c = x.size, shape[1]
    fetch = loop("DESC_FETCH", d["D_WORDS"])
    _, _, xhat, mean, var = acc.batchnorm_forward(x, gamma, beta, 1e-5, True)
    assert acc.last_stats["cycles"] == fetch + loop("BN_LOAD_PARAM", c) + loop("BN_SUM", e) + loop("BN_MEAN", c) \
        + loop("BN_VAR_SUM", e) + loop("BN_VAR", c) + loop("BN_NORM", e)
    acc.batchnorm_inference(x, gamma, beta, mean, var, 1e-5, False)
    assert acc.last_stats["cycles"] == fetch + loop("BN_INFER_PARAM", c) + loop("BN_INFER", e)
    acc.batchnorm_backward(x, xhat, var, gamma, 1e-5, x > 0)
    assert acc.last_stats["cycles"] == fetch + loop("BN_BWD_PARAM", c) + loop("BN_BWD_SUM", e) \
        + loop("BN_BWD_REDUCE", c) + loop("BN_BWD_DX", e)
    acc.batchnorm_update_stats(mean, var, mean, var, e // c, 0.1)
    assert acc.last_stats["cycles"] == fetch + loop("BN_STATS", c)
    assert acc.last_stats["macs_executed"] == acc.last_stats["macs_dense"] == 0


# ----------------------------------------------------------------------------- training steps
def small_bn_model():
    """conv -> maxpool -> BN+ReLU -> conv -> BN -> fc -> BN+ReLU (on (N, C)) -> fc.

    No convolution feeds a batch normalisation without a ReLU between them: such a bias has an
    analytically zero gradient, which the relative comparison of the step check cannot judge.
    """
    from zskip.models import networks as M
    return M.Model("bn_small", (2, 9, 9), (M.conv(6, 3, pad=1), M.maxpool(2), M.batchnorm(), M.conv(5, 3),
                                           M.batchnorm(relu=False), M.flatten(), M.linear(7), M.batchnorm(),
                                           M.linear(4, relu=False)))


def test_a_bn_model_trains_on_emu_in_program_mode_and_follows_the_reference():
    from zskip.host.backends import make_backend
    from zskip.host.runtime.step_recorder import ProgramRecorder
    from zskip.host.runtime.streaming import Batch
    from zskip.models.step import unsupported_layers
    model = small_bn_model()
    assert unsupported_layers(ProgramRecorder, model) == []
    rng = np.random.default_rng(5)
    batches = [Batch(rng.standard_normal((5, 2, 9, 9)).astype(np.float32), rng.integers(0, 4, 5), check=True)
               for _ in range(4)]
    x_test = rng.standard_normal((3, 2, 9, 9)).astype(np.float32)
    final, losses, logits = {}, {}, {}
    for name in ("emu", "reference"):
        backend = make_backend(name, account=False)
        try:
            outs = list(backend.stream(model, model.init_params(1), model.zero_velocities(), batches, 0.05, 0.9,
                                       1e-4))
            final[name] = {k: np.array(v) for k, v in outs[-1].result.params.items()}
            losses[name] = [o.result.loss for o in outs]
            logits[name] = np.asarray(backend.predict(model, outs[-1].result.params, x_test))
            if name == "emu":
                # every step compared op by op with the reference (raises CheckFailed beyond the tolerance)
                assert all(o.check is not None and o.check.max_rel_error <= 1e-4 for o in outs)
        finally:
            backend.close()
    np.testing.assert_allclose(losses["emu"], losses["reference"], rtol=1e-4)
    assert set(final["emu"]) == set(model.state_shapes())
    for key in model.buffer_shapes():
        # the running statistics, updated on the device after every step
        _close(final["emu"][key], final["reference"][key], rel=1e-4)
    _close(logits["emu"], logits["reference"], rel=1e-3)
