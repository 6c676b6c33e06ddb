"""reference.conv_macs / linear_macs against a brute-force count over every tap."""
import numpy as np
import pytest

from zskip.models import reference as R


def sparse(rng, shape, zero_fraction):
    a = rng.standard_normal(shape)
    a[rng.random(shape) < zero_fraction] = 0.0
    return a


def brute_conv_counts(x, dy, w_shape, stride, pad, out_mask):
    n_, c_, h_, w_ = x.shape
    k_, _, r_, s_ = w_shape
    oh_, ow_ = dy.shape[2:]
    dense = fwd = bwd_data = bwd_weight = masked = 0
    for n in range(n_):
        for k in range(k_):
            for oh in range(oh_):
                for ow in range(ow_):
                    for c in range(c_):
                        for r in range(r_):
                            for s in range(s_):
                                h, w = oh * stride - pad + r, ow * stride - pad + s
                                if not (0 <= h < h_ and 0 <= w < w_):
                                    continue
                                dense += 1
                                x_nz, dy_nz = x[n, c, h, w] != 0, dy[n, k, oh, ow] != 0
                                fwd += x_nz
                                live = out_mask is None or out_mask[n, c, h, w]
                                bwd_data += dy_nz and live
                                masked += not live
                                bwd_weight += x_nz and dy_nz
    return dense, fwd, bwd_data, bwd_weight, masked


@pytest.mark.parametrize("n,c,h,w,k,r,s,stride,pad,with_mask", [
    (2, 3, 5, 6, 2, 3, 3, 1, 0, True),
    (1, 2, 7, 5, 3, 3, 2, 2, 1, True),
    (2, 2, 4, 4, 3, 3, 3, 1, 2, False),
    (1, 3, 6, 7, 2, 2, 3, 2, 2, True),
])
def test_conv_macs_equal_brute_force(rng, n, c, h, w, k, r, s, stride, pad, with_mask):
    x = sparse(rng, (n, c, h, w), 0.5)
    oh = (h + 2 * pad - r) // stride + 1
    ow = (w + 2 * pad - s) // stride + 1
    dy = sparse(rng, (n, k, oh, ow), 0.6)
    mask = rng.random(x.shape) < 0.5 if with_mask else None
    dense, fwd, bwd_data, bwd_weight, masked = brute_conv_counts(x, dy, (k, c, r, s), stride, pad, mask)
    got = R.conv_macs(x, dy, (k, c, r, s), stride, pad, out_mask=mask)
    # output-type skipping removes every tap of a masked output; input-type the
    # zero-operand taps of the outputs that are computed
    assert got == {"fwd": {"macs_dense": dense, "macs_nonzero": fwd,
                           "macs_skipped_input": dense - fwd, "macs_skipped_output": 0},
                   "bwd_data": {"macs_dense": dense, "macs_nonzero": bwd_data,
                                "macs_skipped_input": dense - masked - bwd_data, "macs_skipped_output": masked},
                   "bwd_weight": {"macs_dense": dense, "macs_nonzero": bwd_weight,
                                  "macs_skipped_input": dense - bwd_weight, "macs_skipped_output": 0}}
    assert 0 < bwd_weight < fwd < dense  # the random case really exercises skipping
    assert (masked > 0) == with_mask and dense - masked - bwd_data > 0


@pytest.mark.parametrize("with_mask", [True, False])
def test_linear_macs_equal_brute_force(rng, with_mask):
    x, dy = sparse(rng, (4, 7), 0.4), sparse(rng, (4, 5), 0.5)
    mask = rng.random(x.shape) < 0.6 if with_mask else None
    dense = fwd = bwd_data = bwd_weight = masked = 0
    for n in range(4):
        for j in range(5):
            for i in range(7):
                dense += 1
                fwd += x[n, i] != 0
                live = mask is None or mask[n, i]
                bwd_data += dy[n, j] != 0 and live
                masked += not live
                bwd_weight += x[n, i] != 0 and dy[n, j] != 0
    got = R.linear_macs(x, dy, out_mask=mask)
    assert got == {"fwd": {"macs_dense": dense, "macs_nonzero": fwd,
                           "macs_skipped_input": dense - fwd, "macs_skipped_output": 0},
                   "bwd_data": {"macs_dense": dense, "macs_nonzero": bwd_data,
                                "macs_skipped_input": dense - masked - bwd_data, "macs_skipped_output": masked},
                   "bwd_weight": {"macs_dense": dense, "macs_nonzero": bwd_weight,
                                  "macs_skipped_input": dense - bwd_weight, "macs_skipped_output": 0}}


def test_dense_count_excludes_padding_taps():
    # 1x1 image, 3x3 kernel, pad 1: only the centre tap of the single output is in the image
    got = R.conv_macs(np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), (1, 1, 3, 3), 1, 1)
    assert got["fwd"] == {"macs_dense": 1, "macs_nonzero": 1, "macs_skipped_input": 0, "macs_skipped_output": 0}


def test_dense_dy_leaves_only_output_type_skipping(rng):
    # the regime batch normalisation creates: dy dense, the previous ReLU's mask sparse
    x = sparse(rng, (2, 3, 6, 6), 0.5)
    dy = rng.standard_normal((2, 4, 6, 6))
    mask = x > 0
    got = R.conv_macs(x, dy, (4, 3, 3, 3), 1, 1, out_mask=mask)["bwd_data"]
    assert got["macs_skipped_input"] == 0 and got["macs_skipped_output"] > 0
    assert got["macs_skipped_output"] + got["macs_nonzero"] == got["macs_dense"]
