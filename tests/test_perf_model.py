"""The analytic cycle model against the kernels' own counters, and PE-array sizing.

Tolerance: the model uses per-element averages, a rough rule for the lane
tokens of masked passes (bank conflicts) and a floor of ACC_LATENCY cycles
per element for accumulator hazards, so each pass may be off by up to 30 %
(worst seen: 25 %, dense, predicted low: operand-bank port conflicts between
tap rows, which the model leaves out); over all passes of the layer set the
sum must be within 10 % (worst seen: 8.3 %, dense at 64 lanes).
"""
from dataclasses import replace

import numpy as np
import pytest

from zskip.host.bench import perf_model as PM
from zskip.models import reference as R
from zskip.overlay.boards import load_boards

PASS_TOL = 0.30
TOTAL_TOL = 0.10

# (x shape, w shape, pad, input zero fraction): LeNet-5-like, a 3x3 padded layer and a fully-connected layer
LAYERS = [((4, 1, 28, 28), (6, 1, 5, 5), 0, 0.8),
          ((4, 6, 12, 12), (16, 6, 5, 5), 0, 0.6),
          ((4, 16, 16, 16), (32, 16, 3, 3), 1, 0.5),
          ((4, 256, 1, 1), (120, 256, 1, 1), 0, 0.5)]


def _accelerator(lanes, skip):
    from zskip.host.runtime.accelerator import Accelerator
    from zskip.host.ip.program import Limits
    return Accelerator.emulated(skip_zeros=skip, limits=replace(Limits.defaults(), pe_lanes=lanes))


def _layer_data(x_shape, w_shape, pad, zeros, seed):
    rng = np.random.default_rng(seed)
    x = np.abs(rng.standard_normal(x_shape)).astype(np.float32)
    x[rng.random(x_shape) < zeros] = 0
    w = (rng.standard_normal(w_shape) * 0.3).astype(np.float32)
    y = R.conv2d_forward(x, w, np.zeros(w_shape[0]), 1, pad)
    dy = (rng.standard_normal(y.shape) * (y > 0)).astype(np.float32)
    return x, w, dy


def _run_passes(acc, x, w, dy, pad, fc):
    """Kernel cycles per pass; a 1x1 layer on 1x1 images runs the fully-connected kernels."""
    mask = x > 0
    if fc:
        x2, dy2, w2 = x.reshape(len(x), -1), dy.reshape(len(dy), -1), w.reshape(w.shape[0], -1)
        acc.linear_forward(x2, w2, np.zeros(w.shape[0], np.float32))
        fwd = acc.last_stats["cycles"]
        acc.linear_backward_weight(x2, dy2)
        bw = acc.last_stats["cycles"]
        acc.linear_backward_data(dy2, w2, out_mask=mask.reshape(len(x), -1))
        return {"fwd": fwd, "bwd_weight": bw, "bwd_data": acc.last_stats["cycles"]}
    acc.conv_forward(x, w, np.zeros(w.shape[0], np.float32), 1, pad)
    fwd = acc.last_stats["cycles"]
    acc.conv_backward_weight(x, dy, w.shape, 1, pad)
    bw = acc.last_stats["cycles"]
    acc.conv_backward_data(dy, w, x.shape, 1, pad, out_mask=mask)
    return {"fwd": fwd, "bwd_weight": bw, "bwd_data": acc.last_stats["cycles"]}


@pytest.mark.parametrize("lanes", [16, 64])
@pytest.mark.parametrize("skip", [True, False])
def test_model_predicts_kernel_counters(lanes, skip):
    acc = _accelerator(lanes, skip)
    measured_total = predicted_total = 0.0
    for seed, (x_shape, w_shape, pad, zeros) in enumerate(LAYERS):
        x, w, dy = _layer_data(x_shape, w_shape, pad, zeros, seed)
        fc = x_shape[2:] == (1, 1) and w_shape[2:] == (1, 1)
        measured = _run_passes(acc, x, w, dy, pad, fc)
        macs = R.conv_macs(x, dy, w.shape, 1, pad, out_mask=x > 0)
        shape = PM.ConvPass(*x_shape, w_shape[0], w_shape[2], w_shape[3], 1, pad, has_mask=True)
        for pass_name, cycles in measured.items():
            scanned = x if pass_name == "fwd" else dy
            nonzero = np.count_nonzero(scanned) if skip else scanned.size
            items = macs[pass_name]["macs_nonzero"] if skip else macs[pass_name]["macs_dense"]
            pred = PM.predict_cycles(pass_name, shape, nonzero, items, macs[pass_name]["macs_dense"], lanes, skip)
            assert abs(pred / cycles - 1) <= PASS_TOL, (x_shape, w_shape, pass_name, pred, cycles)
            measured_total += cycles
            predicted_total += pred
    assert abs(predicted_total / measured_total - 1) <= TOTAL_TOL, (predicted_total, measured_total)


def test_model_reads_the_schedule_table():
    text = PM.SCHEDULE_H.read_text()
    consts = PM.kernel_constants()
    for name in ("LOAD_DEPTH", "SCAN_DEPTH", "MAC_DEPTH", "WB_DEPTH", "ACC_LATENCY"):
        assert f"{name} = {consts[name]};" in text
    rows = PM.schedule()
    assert rows["MAC_CYCLE"] == (1, consts["MAC_DEPTH"])
    # the float recurrences carry the adder latency as their II
    assert rows["SOFTMAX_EXP"][0] == rows["POOL_SCATTER_ADD"][0] == consts["ACC_LATENCY"] > 1


def test_more_lanes_never_predict_more_cycles():
    shape = PM.ConvPass(8, 16, 12, 12, 32, 3, 3, 1, 1, has_mask=True)
    dense = 8 * 32 * 16 * 12 * 12 * 9
    cycles = [PM.predict_cycles("bwd_data", shape, 8 * 32 * 144 // 2, dense // 4, dense, p) for p in (8, 16, 32, 64)]
    assert all(a >= b for a, b in zip(cycles, cycles[1:]))


def test_ideal_cycles_and_errors():
    assert PM.ideal_cycles(1600, 16) == 100
    with pytest.raises(ValueError, match="lanes"):
        PM.ideal_cycles(10, 0)
    with pytest.raises(ValueError, match="pass_name"):
        PM.predict_cycles("sideways", PM.ConvPass(1, 1, 4, 4, 1), 1, 1, 1, 16)


@pytest.mark.parametrize("precision", ["float32", "fixed16"])
def test_choose_pe_lanes_is_largest_fitting_dsp_budget(precision):
    for board in load_boards().values():
        per_lane = board.dsp_per_mac(precision)
        choice = PM.choose_pe_lanes(board, precision)
        lanes = choice["pe_lanes"]
        assert lanes * per_lane <= 0.8 * board.dsp
        # the next candidate size would break the 20 % margin (or there is none)
        assert 2 * lanes * per_lane > 0.8 * board.dsp or lanes == 512
        assert choice["predicted_cycles"] is None


def test_choose_pe_lanes_reports_predicted_speed_and_rejects_bad_margin():
    board = load_boards()["kv260"]
    work = [{"pass": "fwd", "shape": PM.ConvPass(4, 6, 12, 12, 16, 5, 5), "scanned_nonzero": 1000,
             "macs_nonzero": 200000, "macs_dense": 500000}]
    choice = PM.choose_pe_lanes(board, "float32", workload=work)
    expected = PM.predict_cycles("fwd", work[0]["shape"], 1000, 200000, 500000, choice["pe_lanes"])
    assert choice["predicted_cycles"] == pytest.approx(expected)
    assert choice["predicted_s"] == pytest.approx(expected / (board.clock_mhz * 1e6))
    sat = choice["saturation_lanes"]
    assert sat <= choice["pe_lanes"]
    assert PM.predict_cycles("fwd", work[0]["shape"], 1000, 200000, 500000, sat) <= PM.SATURATION * expected
    if sat > 8:  # the next smaller size is more than 5 % slower
        assert PM.predict_cycles("fwd", work[0]["shape"], 1000, 200000, 500000, sat // 2) > PM.SATURATION * expected
    with pytest.raises(ValueError, match="margin"):
        PM.choose_pe_lanes(board, "float32", margin=1.5)
