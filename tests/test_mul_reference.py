"""Training with a pluggable multiplier: the precision spec's mul=, the reference MAC passes with the
multiplier (against per-product loops), the reference backend and the emu backend."""
import json

import numpy as np
import pytest

from zskip.host import cli
from zskip.host.ip.precision import is_float32, multiplier, parse_precision, precision_types
from zskip.models import mul_reference as MR
from zskip.models import reference as R
from zskip.models.multipliers import multiply
from zskip.models.ops import ReferenceOps


def test_spec_with_a_multiplier():
    assert multiplier("float32,mul=mitchell") == "mitchell" and multiplier("float32") == "exact"
    assert multiplier("mul=bf16") == "bf16" and is_float32("float32,mul=bf16")
    assert parse_precision("float32, mul=mitchell") == parse_precision("float32")
    assert multiplier("act=float32,mul=bf16,opt=ap_fixed<24,4>") == "bf16"
    with pytest.raises(ValueError, match=r"mul=bf16 is a float32 multiplier; act, wgt, grad and acc must be float32"):
        parse_precision("fixed16,mul=bf16")
    with pytest.raises(ValueError, match=r"mul: unknown multiplier 'log'; allowed: exact, bf16, mitchell, lut:FILE"):
        parse_precision("float32,mul=log")
    with pytest.raises(ValueError, match=r"mul= given 2 times"):
        parse_precision("mul=bf16,mul=exact")
    assert precision_types("float32,mul=exact") == {}
    assert precision_types("float32,mul=mitchell") == {"ZSKIP_MUL_T": "mul_mitchell"}


def naive_conv_forward(x, w, b, stride, pad, mul):
    """Per output, the multiplier's product of every in-image tap, summed in float64 (the definition)."""
    n_, k_, oh_, ow_ = R.conv_output_shape(x.shape, w.shape, stride, pad)
    acc = np.zeros((n_, k_, oh_, ow_))
    for n, k, c, oh, ow, r, s, h, wi in R._taps(x.shape, w.shape, stride, pad):
        acc[n, k, oh, ow] += float(multiply(mul, x[n, c, h, wi:wi + 1], w[k, c, r, s:s + 1])[0])
    return acc.astype(np.float32) + b[None, :, None, None]


def naive_conv_backward(x, dy, w, stride, pad, mul):
    dx, dw = np.zeros(x.shape), np.zeros(w.shape)
    for n, k, c, oh, ow, r, s, h, wi in R._taps(x.shape, w.shape, stride, pad):
        dx[n, c, h, wi] += float(multiply(mul, dy[n, k, oh, ow:ow + 1], w[k, c, r, s:s + 1])[0])
        dw[k, c, r, s] += float(multiply(mul, dy[n, k, oh, ow:ow + 1], x[n, c, h, wi:wi + 1])[0])
    return dx.astype(np.float32), dw.astype(np.float32)


@pytest.mark.parametrize("mul", ["mitchell", "bf16"])
@pytest.mark.parametrize("stride,pad", [(1, 0), (2, 1)])
def test_conv_passes_with_a_multiplier_equal_per_product_loops(rng, mul, stride, pad):
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    x[x < 0.3] = 0
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    y = MR.conv2d_forward(x, w, b, stride, pad, mul)
    np.testing.assert_allclose(y, naive_conv_forward(x, w, b, stride, pad, mul), rtol=1e-6, atol=1e-6)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx_ref, dw_ref = naive_conv_backward(x, dy, w, stride, pad, mul)
    np.testing.assert_allclose(MR.conv2d_backward_data(dy, w, x.shape, stride, pad, mul), dx_ref, rtol=1e-6, atol=1e-6)
    dw, db = MR.conv2d_backward_weight(x, dy, w.shape, stride, pad, mul)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-6)
    # the multiplier is really used: not the exact result
    assert np.abs(y - R.conv2d_forward(x, w, b, stride, pad)).max() > 1e-3


def test_exact_multiplier_equals_the_reference(rng):
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    y = MR.conv2d_forward(x, w, b, 2, 1, "exact")
    np.testing.assert_allclose(y, R.conv2d_forward(x, w, b, 2, 1), rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_allclose(MR.conv2d_backward_data(dy, w, x.shape, 2, 1, "exact"),
                               R.conv2d_backward_data(dy, w, x.shape, 2, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(MR.conv2d_backward_weight(x, dy, w.shape, 2, 1, "exact")[0],
                               R.conv2d_backward_weight(x, dy, w.shape, 2, 1)[0], rtol=1e-5, atol=1e-5)
    xf, wf = rng.standard_normal((4, 9)).astype(np.float32), rng.standard_normal((3, 9)).astype(np.float32)
    np.testing.assert_allclose(MR.linear_forward(xf, wf, b[:3], "exact"), R.linear_forward(xf, wf, b[:3]),
                               rtol=1e-5, atol=1e-5)


def test_reference_ops_linear_with_a_multiplier(rng):
    x, w = rng.standard_normal((3, 7)).astype(np.float32), rng.standard_normal((4, 7)).astype(np.float32)
    b, dy = np.zeros(4, np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    ops = ReferenceOps(mul="mitchell")
    prods = lambda a, c: multiply("mitchell", a[:, :, None], c[None, :, :]).astype(np.float64).sum(axis=1)
    y, _ = ops.linear_forward(x, w, b, relu=False)
    np.testing.assert_allclose(y, prods(x, w.T).astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(ops.linear_backward_data(dy, w), prods(dy, w).astype(np.float32), rtol=1e-6)
    dw, _ = ops.linear_backward_weight(x, dy)
    np.testing.assert_allclose(dw, prods(dy.T, x).astype(np.float32), rtol=1e-6)


def test_cli_trains_the_reference_and_emu_with_a_multiplier(tmp_path, capsys):
    args = ["train", "--epochs", "1", "--limit-train", "64", "--limit-test", "32", "--batch-size", "32", "--quiet"]
    reports = {}
    for spec in ("float32", "float32,mul=mitchell"):
        path = tmp_path / f"{spec}.json"
        assert cli.main(args + ["--backend", "reference", "--precision", spec, "--report", str(path)]) == 0
        reports[spec] = json.loads(path.read_text())
    assert reports["float32,mul=mitchell"]["config"]["precision"] == "float32,mul=mitchell"
    loss = {s: r["epochs"][0]["train_loss"] for s, r in reports.items()}
    assert np.isfinite(loss["float32,mul=mitchell"]) and loss["float32,mul=mitchell"] != loss["float32"]
    # the emu backend trains with it too (tests/test_emu_multipliers.py compares it with the reference)
    path = tmp_path / "emu.json"
    assert cli.main(args + ["--backend", "emu", "--precision", "float32,mul=mitchell", "--report", str(path)]) == 0
    emu_loss = json.loads(path.read_text())["epochs"][0]["train_loss"]
    assert emu_loss == pytest.approx(loss["float32,mul=mitchell"], rel=1e-4)
