"""The sparse_fc kernels (hls/sparse_fc): pre-defined sparse junctions on the emulated engine.

Every pass is compared with the dense numpy reference on the expanded weights (zeros off the
edges) and the ReLU mask, never with the kernels; the MAC counter with a count made here from the
pattern and the operands' zeros; the pattern's clash-freedom with the assertion build.
"""
import json

import numpy as np
import pytest

from zskip.host import cli
from zskip.host.devices.device import DeviceError
from zskip.host.ip.program import Limits
from zskip.host.runtime.accelerator import Accelerator
from zskip.models import reference as R
from zskip.models import structured as S

#: (inputs, outputs, density, batch, lanes): odd sizes, N = 1, fan_in below and above the lanes, rows on and
#: off a beat (the beat-wide loads and write-backs and their word forms), 2 lanes (no beat-wide loop)
CASES = [(400, 120, 0.25, 3, 16), (37, 23, 0.6, 1, 16), (33, 7, 0.3, 2, 8), (64, 10, 0.1, 5, 4),
         (20, 9, 0.5, 1, 16), (120, 84, 0.05, 2, 16), (24, 8, 0.5, 2, 2)]


def _acc(lanes, skip=True, precision="float32"):
    limits = Limits(pe_lanes=lanes, max_ch=16, max_dim=8, max_ksize=3, max_features=512)
    return Accelerator.emulated(precision=precision, skip_zeros=skip, limits=limits)


def _case(i, j, d, n, lanes, seed=0):
    rng = np.random.default_rng(seed)
    p = S.connection_pattern(i, j, d, seed=seed + 1, lanes=lanes)
    x = np.maximum(rng.standard_normal((n, i)), 0).astype(np.float32)     # ReLU activations: about half zero
    w = rng.standard_normal((j, p.fan_in)).astype(np.float32)
    b = rng.standard_normal(j).astype(np.float32)
    dy = (rng.standard_normal((n, j)) * (rng.random((n, j)) < 0.6)).astype(np.float32)
    mask = rng.random((n, i)) < 0.7
    return p, x, w, b, dy, mask


def _expected(p, x, w, b, dy, mask):
    """The masked dense reference: the junction as a dense layer whose missing edges are zero."""
    dense = p.expand(w).astype(np.float64)
    y = R.linear_forward(x.astype(np.float64), dense, b.astype(np.float64))
    dx, dw_dense, db = R.linear_backward(dy.astype(np.float64), x.astype(np.float64), dense)
    return y, dx * mask, p.compress(dw_dense), db


@pytest.mark.parametrize("skip", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(str(v) for v in c))
def test_three_passes_equal_the_masked_dense_reference(case, skip):
    p, x, w, b, dy, mask = _case(*case)
    acc = _acc(case[4], skip)
    y_ref, dx_ref, dw_ref, db_ref = _expected(p, x, w, b, dy, mask)
    y, m = acc.sparse_linear_forward(x, w, b, p, relu=True)
    np.testing.assert_allclose(y, np.maximum(y_ref, 0), rtol=1e-5, atol=1e-5)
    assert np.array_equal(m, y > 0)
    y_lin, none = acc.sparse_linear_forward(x, w, b, p, relu=False)
    assert none is None
    np.testing.assert_allclose(y_lin, y_ref, rtol=1e-5, atol=1e-5)
    dx = acc.sparse_linear_backward_data(dy, w, p, out_mask=mask)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)
    assert np.all(dx[~mask] == 0)
    np.testing.assert_allclose(acc.sparse_linear_backward_data(dy, w, p), dy.astype(np.float64) @ p.expand(w),
                               rtol=1e-5, atol=1e-5)
    dw, db = acc.sparse_linear_backward_weight(x, dy, p)
    assert dw.shape == (p.n_out, p.fan_in)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db, db_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES[:3], ids=lambda c: "x".join(str(v) for v in c))
def test_fixed_point_equals_the_dense_fc_engine_and_the_reference_within_quantisation(case):
    """In ap_fixed<16,6> the products and the exact fixed-point sums make the sparse passes bit-identical to the
    dense fc engine on the expanded weights (zero weights add exact zeros), and near the float64 reference."""
    p, x, w, b, dy, mask = _case(*case, seed=3)
    x, w, b, dy = (a * 0.25 for a in (x, w, b, dy))
    acc = _acc(case[4], precision="ap_fixed<16,6>")
    dense = p.expand(w)
    y, _ = acc.sparse_linear_forward(x, w, b, p, relu=False)
    y_d, _ = acc.linear_forward(x, dense, b, relu=False)
    assert np.array_equal(y, y_d)
    dx = acc.sparse_linear_backward_data(dy, w, p, out_mask=mask)
    assert np.array_equal(dx, acc.linear_backward_data(dy, dense, out_mask=mask))
    dw, db = acc.sparse_linear_backward_weight(x, dy, p)
    dw_d, db_d = acc.linear_backward_weight(x, dy)
    assert np.array_equal(dw, p.compress(dw_d)) and np.array_equal(db, db_d)
    y_ref, dx_ref, dw_ref, _ = _expected(p, x, w, b, dy, mask)
    step = 2.0 ** -10   # ap_fixed<16,6>: 10 fraction bits
    bound = lambda k: (k + 2) * step * 4
    assert np.abs(y - y_ref).max() <= bound(p.fan_in)
    assert np.abs(dx - dx_ref).max() <= bound(p.fan_in * p.n_out)
    assert np.abs(dw - dw_ref).max() <= bound(x.shape[0])


def _independent_macs(p, x, dy, mask):
    """MACs over the stored edges with both operands nonzero (and the dx unmasked), by loops over the pattern."""
    fwd = bwd_d = bwd_w = 0
    for n in range(x.shape[0]):
        for j in range(p.n_out):
            for i in p.idx[j]:
                fwd += x[n, i] != 0
                bwd_d += dy[n, j] != 0 and mask[n, i]
                bwd_w += dy[n, j] != 0 and x[n, i] != 0
    return fwd, bwd_d, bwd_w


@pytest.mark.parametrize("density", [0.5, 0.25, 0.1])
def test_macs_executed_scale_with_the_density(density):
    p, x, w, b, dy, mask = _case(120, 84, density, 4, 16, seed=5)
    fwd, bwd_d, bwd_w = _independent_macs(p, x, dy, mask)
    dense_macs = 4 * 120 * 84
    for skip in (True, False):
        acc = _acc(16, skip)
        acc.sparse_linear_forward(x, w, b, p)
        s_fwd = dict(acc.last_stats)
        acc.sparse_linear_backward_data(dy, w, p, out_mask=mask)
        s_bwd_d = dict(acc.last_stats)
        acc.sparse_linear_backward_weight(x, dy, p)
        s_bwd_w = dict(acc.last_stats)
        # macs_dense: the dense junction's N * J * I, whatever the density
        assert s_fwd["macs_dense"] == s_bwd_d["macs_dense"] == s_bwd_w["macs_dense"] == dense_macs
        if skip:
            assert (s_fwd["macs_executed"], s_bwd_d["macs_executed"], s_bwd_w["macs_executed"]) == (fwd, bwd_d, bwd_w)
        else:
            edges = 4 * p.edges   # every stored edge, nothing more: density x the dense MACs
            assert s_fwd["macs_executed"] == s_bwd_d["macs_executed"] == s_bwd_w["macs_executed"] == edges
            assert edges == pytest.approx(density * dense_macs, rel=0.05)


def _chunks(p, outputs, lanes):
    """Lane cycles of the edges of ``outputs`` in pieces of at most ``lanes`` edges of one round (of n_in edges)."""
    count = 0
    for j in outputs:
        e, end = j * p.fan_in, (j + 1) * p.fan_in
        while e < end:
            e = min(e + lanes, end, (e // p.n_in + 1) * p.n_in)
            count += 1
    return count


def test_mac_cycles_count_the_chunks_of_the_live_outputs():
    """The MAC loops run one cycle per chunk of stored edges; backward skips the outputs whose dy is zero."""
    p, x, w, b, dy, mask = _case(100, 30, 0.3, 3, 16, seed=7)
    acc = _acc(16)
    acc.sparse_linear_forward(x, w, b, p)
    assert acc.last_stats["mac_iters"] == 3 * _chunks(p, range(30), 16)
    acc.sparse_linear_backward_weight(x, dy, p)
    live = sum(_chunks(p, np.flatnonzero(dy[n]), 16) for n in range(3))
    assert acc.last_stats["mac_iters"] == live < 3 * _chunks(p, range(30), 16)


def test_a_clashing_pattern_is_caught_by_the_assertion_build(monkeypatch):
    """Two edges of one chunk on inputs 16 apart share an input bank of the 16 lanes: a hardware-rule violation."""
    monkeypatch.setenv("ZSKIP_EMU_ASSERTS", "1")
    idx = np.tile(np.array([[0, 16, 1, 17]], np.int32), (8, 1))
    clash = S.ConnectionPattern(32, 8, 4, 16, 0, idx)
    acc = _acc(16)
    x = np.ones((1, 32), np.float32)
    w = np.ones((8, 4), np.float32)
    with pytest.raises(DeviceError, match=r"kernel sparse_fc_fwd, loop SPFC_FWD_MAC: two lanes touch one input "
                                          r"bank in one cycle \(the connection pattern clashes\)"):
        acc.sparse_linear_forward(x, w, np.zeros(8, np.float32), clash)
    with pytest.raises(DeviceError, match=r"kernel sparse_fc_bwd_weight, loop SPFC_BWD_W_MAC"):
        acc.sparse_linear_backward_weight(x, np.ones((1, 8), np.float32), clash)
    # a generated pattern runs clean in the same build
    p, x, w, b, dy, mask = _case(64, 12, 0.25, 2, 16)
    acc.sparse_linear_forward(x, w, b, p)
    acc.sparse_linear_backward_data(dy, w, p, out_mask=mask)
    acc.sparse_linear_backward_weight(x, dy, p)


def test_bad_patterns_are_refused_by_name():
    acc = _acc(16)
    p = S.connection_pattern(64, 12, 0.25, lanes=8)
    with pytest.raises(ValueError, match="pattern: made clash-free for 8 lanes, this accelerator has pe_lanes=16"):
        acc.sparse_linear_forward(np.ones((1, 64), np.float32), np.ones((12, 16), np.float32),
                                  np.zeros(12, np.float32), p)
    p = S.connection_pattern(64, 12, 0.25, lanes=16)
    with pytest.raises(ValueError, match=r"w: a sparse junction stores \(outputs, fan_in\)"):
        acc.sparse_linear_forward(np.ones((1, 64), np.float32), np.ones((12, 64), np.float32),
                                  np.zeros(12, np.float32), p)


def test_lenet5_density_quarter_trains_on_emu_with_per_op_checks(tmp_path):
    report = tmp_path / "r.json"
    assert cli.main(["train", "--backend", "emu", "--density", "0.25", "--epochs", "1", "--limit-train", "96",
                     "--limit-test", "32", "--batch-size", "32", "--check-every", "1", "--quiet",
                     "--report", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["check"]["batches_checked"] == 3 and r["check"]["max_rel_error"] < 1e-4
    layers = {l["name"]: l for l in r["epochs"][0]["layers"]}
    assert (layers["fc1"]["density"], layers["fc1"]["edges"]) == (0.25, 120 * 64)   # 256 inputs
    for name in ("fc1", "fc2"):
        k = layers[name]["kernel"]
        for pass_name in ("fwd", "bwd_data", "bwd_weight"):
            assert k[pass_name]["macs_dense"] == layers[name]["macs"][pass_name]["macs_dense"]
            assert 0 < k[pass_name]["macs_executed"] <= layers[name]["edges"] * 96


def test_cli_makes_the_patterns_for_the_backends_lanes(tmp_path):
    """With pe_lanes=8 the CLI builds 8-lane patterns (a 16-lane pattern would be refused by the accelerator)."""
    report = tmp_path / "r.json"
    assert cli.main(["train", "--backend", "emu", "--backend-opt", "pe_lanes=8", "--density", "0.25", "--epochs", "1",
                     "--limit-train", "32", "--limit-test", "32", "--batch-size", "32", "--check-every", "1",
                     "--quiet", "--report", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["config"]["sparse_junctions"] == {"fc1": [0.25, 0, 8], "fc2": [0.25, 0, 8]}
    assert r["check"]["max_rel_error"] < 1e-4
