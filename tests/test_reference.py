"""The numpy reference against finite differences (float64) and its naive loops.

Every analytic backward is checked by central differences of a scalar
projection L = sum(forward(...) * P), P random, so that each output element
weighs differently.
"""
import numpy as np
import pytest

from zskip.models import reference as R

EPS = 1e-6


def numerical_grad(f, a):
    """dL/da by central differences; f() reads a in place."""
    g = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = a[i]
        a[i] = old + EPS
        plus = f()
        a[i] = old - EPS
        minus = f()
        a[i] = old
        g[i] = (plus - minus) / (2 * EPS)
    return g


def assert_close(analytic, numeric):
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


# (N, C, H, W, K, R, S, stride, pad): stride 1 and 2, pad 0/1/2, non-square
# inputs and kernels, K != C
CONV_CASES = [
    (2, 3, 5, 7, 4, 3, 3, 1, 0),
    (1, 2, 6, 5, 3, 3, 2, 2, 1),
    (2, 1, 4, 6, 2, 3, 3, 1, 2),
    (1, 3, 7, 6, 2, 2, 3, 2, 2),
    (1, 2, 5, 5, 5, 5, 5, 1, 1),
    (2, 4, 7, 9, 1, 3, 3, 2, 0),
]


@pytest.mark.parametrize("n,c,h,w,k,r,s,stride,pad", CONV_CASES)
def test_conv_gradients_match_finite_differences(rng, n, c, h, w, k, r, s, stride, pad):
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((k, c, r, s))
    b = rng.standard_normal(k)
    y_shape = R.conv_output_shape(x.shape, wt.shape, stride, pad)
    proj = rng.standard_normal(y_shape)

    def loss():
        return float((R.conv2d_forward(x, wt, b, stride, pad) * proj).sum())

    dx = R.conv2d_backward_data(proj, wt, x.shape, stride, pad)
    dw, db = R.conv2d_backward_weight(x, proj, wt.shape, stride, pad)
    assert_close(dx, numerical_grad(loss, x))
    assert_close(dw, numerical_grad(loss, wt))
    assert_close(db, numerical_grad(loss, b))


@pytest.mark.parametrize("n,c,h,w,k,r,s,stride,pad", CONV_CASES)
def test_vectorised_convolutions_equal_naive_loops(rng, n, c, h, w, k, r, s, stride, pad):
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((k, c, r, s))
    b = rng.standard_normal(k)
    dy = rng.standard_normal(R.conv_output_shape(x.shape, wt.shape, stride, pad))
    np.testing.assert_allclose(R.conv2d_forward(x, wt, b, stride, pad),
                               R.conv2d_forward_naive(x, wt, b, stride, pad), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(R.conv2d_backward_data(dy, wt, x.shape, stride, pad),
                               R.conv2d_backward_data_naive(dy, wt, x.shape, stride, pad), rtol=1e-12, atol=1e-12)
    for got, want in zip(R.conv2d_backward_weight(x, dy, wt.shape, stride, pad),
                         R.conv2d_backward_weight_naive(x, dy, wt.shape, stride, pad)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_conv_forward_known_value():
    # a hand-computed 3x3 input with a 2x2 kernel of ones: each output is a window sum
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    y = R.conv2d_forward(x, np.ones((1, 1, 2, 2)), np.array([0.5]))
    np.testing.assert_array_equal(y[0, 0], [[8.5, 12.5], [20.5, 24.5]])


@pytest.mark.parametrize("size,stride,h,w", [(2, 2, 6, 8), (3, 2, 7, 5), (2, 1, 4, 5)])
def test_maxpool_gradient_matches_finite_differences(rng, size, stride, h, w):
    # distinct values spaced far more than EPS: no ties, the argmax is stable
    x = rng.permutation(2 * 3 * h * w).reshape(2, 3, h, w).astype(np.float64) * 0.01
    y, argmax = R.maxpool2d_forward(x, size, stride)
    proj = rng.standard_normal(y.shape)

    def loss():
        return float((R.maxpool2d_forward(x, size, stride)[0] * proj).sum())

    assert_close(R.maxpool2d_backward(proj, argmax, x.shape, size, stride), numerical_grad(loss, x))


def test_maxpool_forward_against_loops(rng):
    x = rng.standard_normal((2, 2, 5, 6))
    y, argmax = R.maxpool2d_forward(x, 2, 2)
    for n in range(2):
        for c in range(2):
            for i in range(2):
                for j in range(3):
                    win = x[n, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                    assert y[n, c, i, j] == win.max()
                    r, s = np.unravel_index(win.argmax(), win.shape)
                    assert argmax[n, c, i, j] == (2 * i + r) * 6 + 2 * j + s


def test_linear_gradients_match_finite_differences(rng):
    x, w, b = rng.standard_normal((3, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    proj = rng.standard_normal((3, 4))

    def loss():
        return float((R.linear_forward(x, w, b) * proj).sum())

    dx, dw, db = R.linear_backward(proj, x, w)
    assert_close(dx, numerical_grad(loss, x))
    assert_close(dw, numerical_grad(loss, w))
    assert_close(db, numerical_grad(loss, b))


def test_relu_gradient_matches_finite_differences(rng):
    # keep every value at least 0.05 away from the kink
    x = rng.standard_normal((3, 4))
    x = np.where(np.abs(x) < 0.05, 0.5, x)
    proj = rng.standard_normal(x.shape)

    def loss():
        return float((R.relu_forward(x)[0] * proj).sum())

    y, mask = R.relu_forward(x)
    np.testing.assert_array_equal(mask, x > 0)
    assert_close(R.relu_backward(proj, mask), numerical_grad(loss, x))


def test_softmax_cross_entropy_value_and_gradient(rng):
    logits = rng.standard_normal((4, 6)) * 3
    labels = np.array([0, 5, 2, 2])
    loss, dlogits = R.softmax_cross_entropy(logits, labels)
    # independent value: log-sum-exp minus the true logit, averaged
    expected = np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(4), labels])
    assert loss == pytest.approx(expected, rel=1e-12)
    assert_close(dlogits, numerical_grad(lambda: R.softmax_cross_entropy(logits, labels)[0], logits))


def test_sgd_update_follows_the_momentum_rule():
    p, g, v = np.array([1.0, -2.0]), np.array([0.5, 0.25]), np.array([0.1, 0.0])
    p2, v2 = R.sgd_update(p, g, v, lr=0.1, momentum=0.9, weight_decay=0.01)
    # v' = 0.9 v + g + 0.01 p ; p' = p - 0.1 v'
    np.testing.assert_allclose(v2, [0.09 + 0.5 + 0.01, 0.25 - 0.02])
    np.testing.assert_allclose(p2, [1.0 - 0.1 * 0.60, -2.0 - 0.1 * 0.23])


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call,argument", [
    (lambda: R.conv2d_forward(np.ones((1, 4, 4)), np.ones((1, 1, 3, 3)), np.ones(1)), "x"),
    (lambda: R.conv2d_forward(np.ones((1, 1, 4, 4)), np.ones((1, 3, 3)), np.ones(1)), "w"),
    (lambda: R.conv2d_forward(np.ones((1, 2, 4, 4)), np.ones((1, 3, 3, 3)), np.ones(1)), "w"),
    (lambda: R.conv2d_forward(np.ones((1, 1, 4, 4)), np.ones((1, 1, 7, 3)), np.ones(1), pad=1), "w"),
    (lambda: R.conv2d_forward(np.ones((1, 1, 4, 4)), np.ones((2, 1, 3, 3)), np.ones(3)), "b"),
    (lambda: R.conv2d_forward(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), np.ones(1), stride=0), "stride"),
    (lambda: R.conv2d_forward(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), np.ones(1), pad=-1), "pad"),
    (lambda: R.conv2d_forward(np.full((1, 1, 4, 4), np.nan), np.ones((1, 1, 3, 3)), np.ones(1)), "x"),
    (lambda: R.conv2d_forward(np.ones((1, 1, 4, 4)), np.full((1, 1, 3, 3), np.inf), np.ones(1)), "w"),
    (lambda: R.conv2d_backward_data(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), (1, 1, 4, 4)), "dy"),
    (lambda: R.linear_forward(np.ones((2, 3)), np.ones((4, 5)), np.ones(4)), "w"),
    (lambda: R.linear_forward(np.ones(3), np.ones((4, 3)), np.ones(4)), "x"),
    (lambda: R.maxpool2d_forward(np.ones((1, 1, 2, 2)), 3, 1), "size"),
    (lambda: R.softmax_cross_entropy(np.ones((2, 3)), np.array([0, 3])), "labels"),
    (lambda: R.softmax_cross_entropy(np.array([[0.0, np.inf]]), np.array([0])), "logits"),
])
def test_bad_input_raises_an_error_naming_the_argument(call, argument):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value).startswith(f"{argument}:") or f"{argument}/" in str(info.value)


# --------------------------------------------------------------------------- batch normalisation, residual, avg pool
@pytest.mark.parametrize("shape", [(3, 2, 4, 5), (1, 3, 3, 3), (5, 4)])
def test_batchnorm_gradients_match_finite_differences(rng, shape):
    x = rng.standard_normal(shape) * 2 + 0.5
    c = shape[1]
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    proj = rng.standard_normal(shape)

    def loss():
        return float((R.batchnorm_forward(x, gamma, beta)[0] * proj).sum())

    y, saved = R.batchnorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = R.batchnorm_backward(proj, saved)
    assert_close(dx, numerical_grad(loss, x))
    assert_close(dgamma, numerical_grad(loss, gamma))
    assert_close(dbeta, numerical_grad(loss, beta))


def test_batchnorm_with_fused_relu_gradient_matches_finite_differences(rng):
    # the ReLU mask of y applied to dy before the BN backward: the step's dataflow
    x = rng.standard_normal((4, 3, 3, 2))
    gamma, beta = rng.uniform(0.5, 1.5, 3), rng.standard_normal(3) * 0.3
    y, _ = R.batchnorm_forward(x, gamma, beta)
    assert np.abs(y).min() > 1e-3          # no value at the kink
    proj = rng.standard_normal(x.shape)

    def loss():
        return float((R.relu_forward(R.batchnorm_forward(x, gamma, beta)[0])[0] * proj).sum())

    y, saved = R.batchnorm_forward(x, gamma, beta)
    _, mask = R.relu_forward(y)
    dx, dgamma, dbeta = R.batchnorm_backward(R.relu_backward(proj, mask), saved)
    assert_close(dx, numerical_grad(loss, x))
    assert_close(dgamma, numerical_grad(loss, gamma))


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 3, 1), (6, 3)])
def test_batchnorm_vectorised_equals_naive_loops(rng, shape):
    x = rng.standard_normal(shape)
    gamma, beta = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    dy = rng.standard_normal(shape)
    y, saved = R.batchnorm_forward(x, gamma, beta, eps=1e-3)
    y_n, saved_n = R.batchnorm_forward_naive(x, gamma, beta, eps=1e-3)
    np.testing.assert_allclose(y, y_n, rtol=1e-12, atol=1e-12)
    for a, b in zip(saved, saved_n):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(R.batchnorm_backward(dy, saved), R.batchnorm_backward_naive(dy, saved_n)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_batchnorm_forward_statistics_are_biased_per_channel(rng):
    x = rng.standard_normal((4, 2, 3, 3)) * np.array([1.0, 3.0])[None, :, None, None]
    y, saved = R.batchnorm_forward(x, np.ones(2), np.zeros(2), eps=1e-5)
    per_channel = x.transpose(1, 0, 2, 3).reshape(2, -1)
    np.testing.assert_allclose(saved.mean, per_channel.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(saved.var, per_channel.var(axis=1, ddof=0), rtol=1e-12)
    out = y.transpose(1, 0, 2, 3).reshape(2, -1)
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=1), per_channel.var(axis=1) / (per_channel.var(axis=1) + 1e-5), rtol=1e-12)


def test_batchnorm_running_update_and_inference_follow_pytorch_rules(rng):
    x = rng.standard_normal((3, 2, 2, 2)) + 4.0
    gamma, beta = np.array([2.0, 0.5]), np.array([0.1, -0.3])
    _, saved = R.batchnorm_forward(x, gamma, beta)
    rm, rv = np.array([1.0, -1.0]), np.array([2.0, 0.5])
    rm2, rv2 = R.batchnorm_running_update(rm, rv, saved.mean, saved.var, count=12, momentum=0.1)
    per_channel = x.transpose(1, 0, 2, 3).reshape(2, -1)
    np.testing.assert_allclose(rm2, 0.9 * rm + 0.1 * per_channel.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(rv2, 0.9 * rv + 0.1 * per_channel.var(axis=1, ddof=1), rtol=1e-12)
    y = R.batchnorm_inference(x, gamma, beta, rm2, rv2, eps=1e-5)
    for c in range(2):
        np.testing.assert_allclose(y[:, c], (x[:, c] - rm2[c]) / np.sqrt(rv2[c] + 1e-5) * gamma[c] + beta[c],
                                   rtol=1e-12)


def test_residual_add_and_fork_gradients_match_finite_differences(rng):
    # y = relu-free block: y = f(x) + x with f(x) = x * w, so the fork's two gradients meet at x
    x, w = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    proj = rng.standard_normal((2, 3))

    def loss():
        return float((R.residual_add_forward(x * w, x) * proj).sum())

    d_body, d_short = R.residual_add_backward(proj)
    np.testing.assert_array_equal(d_body, proj)
    np.testing.assert_array_equal(d_short, proj)
    assert_close(R.fork_backward(d_body * w, d_short), numerical_grad(loss, x))


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 1, 1), (3, 2, 7, 3)])
def test_global_avgpool_against_loops_and_finite_differences(rng, shape):
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(R.global_avgpool_forward(x), R.global_avgpool_forward_naive(x), rtol=1e-12)
    proj = rng.standard_normal(shape[:2])

    def loss():
        return float((R.global_avgpool_forward(x) * proj).sum())

    assert_close(R.global_avgpool_backward(proj, x.shape), numerical_grad(loss, x))


@pytest.mark.parametrize("call,argument", [
    (lambda: R.batchnorm_forward(np.ones((2, 3, 4)), np.ones(3), np.zeros(3)), "x"),
    (lambda: R.batchnorm_forward(np.ones((2, 3, 4, 4)), np.ones(2), np.zeros(3)), "gamma"),
    (lambda: R.batchnorm_forward(np.ones((2, 3, 4, 4)), np.ones(3), np.zeros((3, 1))), "beta"),
    (lambda: R.batchnorm_forward(np.ones((1, 3, 1, 1)), np.ones(3), np.zeros(3)), "x"),
    (lambda: R.batchnorm_forward(np.ones((2, 3)), np.ones(3), np.zeros(3), eps=0.0), "eps"),
    (lambda: R.batchnorm_running_update(np.zeros(2), np.ones(2), np.zeros(2), np.ones(2), 1), "count"),
    (lambda: R.batchnorm_running_update(np.zeros(2), np.ones(2), np.zeros(2), np.ones(2), 4, 1.5), "momentum"),
    (lambda: R.batchnorm_inference(np.ones((2, 2)), np.ones(2), np.zeros(2), np.zeros(2), -np.ones(2)), "running_var"),
    (lambda: R.residual_add_forward(np.ones((2, 3)), np.ones((3, 2))), "b"),
    (lambda: R.global_avgpool_backward(np.ones((2, 3)), (2, 4, 5, 5)), "dy"),
])
def test_new_ops_refuse_bad_input_naming_the_argument(call, argument):
    with pytest.raises(ValueError, match=f"^{argument}:"):
        call()
