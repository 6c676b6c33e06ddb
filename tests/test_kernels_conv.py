"""The three convolution kernels (emulated HLS) against the numpy reference.

float32 emulation must match the reference within 1e-5 of the output's
largest magnitude; ap_fixed<16,6> stays within the quantisation bound
derived in :func:`fixed_conv_bound`. The kernels' own MAC counters must equal
the reference accounting (models.reference.conv_macs) exactly.
"""
import numpy as np
import pytest

from zskip.host.runtime.accelerator import Accelerator
from zskip.models import reference as R

# (n, c, h, w, k, r, stride, pad, sparsity): stride 1/2, pad 0..r-1, kernel
# 1..7, K != C, batch 1..5, sparsity 0 %..95 %
GRID = [
    (1, 1, 8, 8, 1, 1, 1, 0, 0.0),
    (2, 3, 9, 9, 4, 2, 1, 1, 0.5),
    (3, 2, 7, 10, 5, 3, 1, 2, 0.3),
    (1, 4, 11, 11, 2, 3, 2, 1, 0.95),
    (5, 3, 6, 6, 3, 3, 2, 0, 0.7),
    (2, 5, 12, 12, 6, 5, 1, 2, 0.8),
    (1, 6, 13, 9, 7, 5, 2, 4, 0.0),
    (2, 2, 10, 10, 3, 7, 1, 3, 0.6),
    (1, 3, 14, 14, 4, 7, 2, 6, 0.9),
    (4, 8, 5, 5, 8, 4, 1, 3, 0.4),
    (1, 33, 4, 4, 35, 3, 1, 1, 0.5),  # channel sets longer than one 32-bit word
]


def _case(params, seed=0):
    n, c, h, w, k, r, stride, pad, sp = params
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    x[rng.random(x.shape) < sp] = 0
    wt = (rng.standard_normal((k, c, r, r)) * 0.5).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    y_shape = R.conv_output_shape(x.shape, wt.shape, stride, pad)
    dy = rng.standard_normal(y_shape).astype(np.float32)
    dy[rng.random(y_shape) < sp] = 0
    return x, wt, b, dy, stride, pad


def _close(got, want, rel=1e-5):
    scale = max(float(np.abs(want).max()), 1e-30)
    assert got.shape == want.shape
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= rel * scale, f"max abs error {err} > {rel} * {scale}"


@pytest.fixture(scope="module", params=[True, False], ids=["sparse", "dense"])
def acc(request):
    return Accelerator.emulated(precision="float32", skip_zeros=request.param)


@pytest.mark.parametrize("params", GRID, ids=[str(g) for g in GRID])
def test_float32_matches_reference_and_counts_macs(acc, params):
    x, wt, b, dy, stride, pad = _case(params)
    out_mask = x > 0
    macs = R.conv_macs(x, dy, wt.shape, stride, pad, out_mask=out_mask)

    y, mask = acc.conv_forward(x, wt, b, stride, pad, relu=True)
    y_ref, mask_ref = R.relu_forward(R.conv2d_forward(x, wt, b, stride, pad))
    _close(y, y_ref)
    assert np.array_equal(mask, mask_ref)
    _check_macs(acc, macs["fwd"])

    y_lin, none = acc.conv_forward(x, wt, b, stride, pad, relu=False)
    assert none is None
    _close(y_lin, R.conv2d_forward(x, wt, b, stride, pad))

    dx = acc.conv_backward_data(dy, wt, x.shape, stride, pad, out_mask=out_mask)
    dx_ref = R.relu_backward(R.conv2d_backward_data(dy, wt, x.shape, stride, pad), out_mask)
    _close(dx, dx_ref)
    assert not dx[~out_mask].any(), "a masked gradient was not left at zero"
    _check_macs(acc, macs["bwd_data"])

    dx_nomask = acc.conv_backward_data(dy, wt, x.shape, stride, pad)
    _close(dx_nomask, R.conv2d_backward_data(dy, wt, x.shape, stride, pad))
    _check_macs(acc, R.conv_macs(x, dy, wt.shape, stride, pad)["bwd_data"])

    dw, db = acc.conv_backward_weight(x, dy, wt.shape, stride, pad)
    dw_ref, db_ref = R.conv2d_backward_weight(x, dy, wt.shape, stride, pad)
    _close(dw, dw_ref)
    _close(db, db_ref)
    _check_macs(acc, macs["bwd_weight"])


def _check_macs(acc, ref):
    assert acc.last_stats["macs_dense"] == ref["macs_dense"]
    want = ref["macs_nonzero"] if acc.skip_zeros else ref["macs_dense"]
    assert acc.last_stats["macs_executed"] == want


Q16_6 = 2.0 ** -10  # resolution of ap_fixed<16,6>


def fixed_conv_bound(x, wt, stride, pad, q=Q16_6, acc_q=2.0 ** -20):
    """Per-output bound of |conv_fixed - conv_float| for ap_fixed<16,6> operands.

    Each operand is rounded to q (error <= q/2), so one product errs by at most
    (|w| + |x|) q/2 + q^2/4; summed over the output's T in-image taps, plus
    the accumulator's rounding (T additions at acc_q/2 each), the bias
    rounding (q/2) and the output rounding (q/2). Valid without saturation
    (the test keeps |values| well below 32).
    """
    ax, aw = np.abs(x).astype(np.float64), np.abs(wt).astype(np.float64)
    zero_b = np.zeros(wt.shape[0])
    sum_x = R.conv2d_forward(ax, np.ones_like(aw), zero_b, stride, pad)
    sum_w = R.conv2d_forward(np.ones_like(ax), aw, zero_b, stride, pad)
    taps = R.conv2d_forward(np.ones_like(ax), np.ones_like(aw), zero_b, stride, pad)
    return (sum_x + sum_w) * q / 2 + taps * (q * q / 4 + acc_q / 2) + q


@pytest.mark.parametrize("params", [GRID[1], GRID[4], GRID[5]], ids=str)
def test_fixed16_within_quantisation_bound(params):
    acc = Accelerator.emulated(precision="ap_fixed<16,6>", skip_zeros=True)
    x, wt, b, dy, stride, pad = _case(params, seed=3)
    x, wt, b = x * 0.5, wt * 0.5, b * 0.5
    y, _ = acc.conv_forward(x, wt, b, stride, pad, relu=False)
    y_ref = R.conv2d_forward(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64), stride, pad)
    bound = fixed_conv_bound(x, wt, stride, pad)
    assert np.all(np.abs(y - y_ref) <= bound), float(np.max(np.abs(y - y_ref) - bound))
    # the bound is not vacuous: the fixed-point result really differs from float
    assert np.abs(y - y_ref).max() > 0
    assert bound.max() < 0.1 * np.abs(y_ref).max()

    # backward-data is the same sum with dy in place of x (transposed taps)
    dy = dy * 0.5
    dx = acc.conv_backward_data(dy, wt, x.shape, stride, pad)
    dx_ref = R.conv2d_backward_data(dy.astype(np.float64), wt.astype(np.float64), x.shape, stride, pad)
    ones_dy = np.ones_like(dy, dtype=np.float64)
    taps = R.conv2d_backward_data(ones_dy, np.ones(wt.shape), x.shape, stride, pad)
    bound_dx = (R.conv2d_backward_data(np.abs(dy).astype(np.float64), np.ones(wt.shape), x.shape, stride, pad)
                + R.conv2d_backward_data(ones_dy, np.abs(wt).astype(np.float64), x.shape, stride, pad)) * Q16_6 / 2 \
        + taps * (Q16_6 ** 2 / 4 + 2.0 ** -21) + Q16_6 / 2
    assert np.all(np.abs(dx - dx_ref) <= bound_dx)
