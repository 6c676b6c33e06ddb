"""The kernels' own counters are honest.

- macs_executed / macs_dense equal the reference accounting (also checked
  over the whole grid in test_kernels_conv.py);
- sparse-mode cycles fall as sparsity rises and never exceed the dense
  mode's; dense-mode cycles do not depend on the data;
- sparse-mode cycles are at least the ideal ``macs_nonzero / pe_lanes``, and
  where MACs dominate (forward, sparsity <= 60 %, 16 channels) at most 1.5 x it;
- the cycles follow the schedule rule of hls/common/counters.h: a case whose
  every trip count is known in advance is recomputed here from the schedule
  table alone.
"""
import numpy as np
import pytest

from zskip.host.runtime.accelerator import Accelerator
from zskip.models import reference as R

SHAPE = dict(n=2, c=16, h=12, w=12, k=16, r=3, stride=1, pad=1)
SPARSITIES = (0.0, 0.3, 0.6, 0.9)


@pytest.fixture(scope="module")
def sparse():
    return Accelerator.emulated(skip_zeros=True)


@pytest.fixture(scope="module")
def dense():
    return Accelerator.emulated(skip_zeros=False)


def _data(sparsity, seed=0, n=2, c=16, h=12, w=12, k=16, r=3, stride=1, pad=1):
    rng = np.random.default_rng(seed)
    x = np.abs(rng.standard_normal((n, c, h, w))).astype(np.float32) + 0.1
    x[rng.random(x.shape) < sparsity] = 0
    wt = rng.standard_normal((k, c, r, r)).astype(np.float32)
    y_shape = R.conv_output_shape(x.shape, wt.shape, stride, pad)
    dy = rng.standard_normal(y_shape).astype(np.float32)
    dy[rng.random(y_shape) < sparsity] = 0
    return x, wt, dy, stride, pad


def _run_all(acc, x, wt, dy, stride, pad):
    """{pass: last_stats} of the three convolution passes (backward-data with out_mask = x > 0)."""
    b = np.zeros(wt.shape[0], np.float32)
    out = {}
    acc.conv_forward(x, wt, b, stride, pad)
    out["fwd"] = dict(acc.last_stats)
    acc.conv_backward_data(dy, wt, x.shape, stride, pad, out_mask=x > 0)
    out["bwd_data"] = dict(acc.last_stats)
    acc.conv_backward_weight(x, dy, wt.shape, stride, pad)
    out["bwd_weight"] = dict(acc.last_stats)
    return out


def test_sparse_cycles_fall_with_sparsity_and_stay_within_dense_and_ideal(sparse, dense):
    lanes = sparse.limits.pe_lanes
    previous = None
    for sp in SPARSITIES:
        x, wt, dy, stride, pad = _data(sp)
        stats = _run_all(sparse, x, wt, dy, stride, pad)
        dense_stats = _run_all(dense, x, wt, dy, stride, pad)
        macs = R.conv_macs(x, dy, wt.shape, stride, pad, out_mask=x > 0)
        for name, st in stats.items():
            assert st["macs_executed"] == macs[name]["macs_nonzero"]
            ideal = macs[name]["macs_nonzero"] / lanes
            assert ideal <= st["cycles"] <= dense_stats[name]["cycles"], (name, sp, st["cycles"], ideal)
            if previous is not None:
                assert st["cycles"] < previous[name]["cycles"], (name, sp)
        if sp <= 0.6:
            ideal = macs["fwd"]["macs_nonzero"] / lanes
            assert stats["fwd"]["cycles"] <= 1.5 * ideal, (sp, stats["fwd"]["cycles"], ideal)
        previous = stats


def test_cycles_follow_the_schedule_rule():
    """Dense forward 1x1 convolution with K = pe_lanes output channels: every element is one
    encoder window and one lane token (its K accumulators are K consecutive words, one per
    bank), and no accumulator is reused within ACC_LATENCY cycles. So every trip count is
    known, and the cycles are the schedule table applied to them: loads, then per image the
    DATAFLOW region (slowest stage + the three fills) and the write-back, plus the descriptor
    fetch."""
    from zskip.host.bench.perf_model import kernel_constants, schedule
    acc = Accelerator.emulated(skip_zeros=False)
    P = acc.limits.pe_lanes
    n, c, h, w, k = 2, 3, 5, 6, P
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    acc.conv_forward(x, rng.standard_normal((k, c, 1, 1)).astype(np.float32), np.zeros(k, np.float32), 1, 0)
    st = acc.last_stats
    rows, d = schedule(), kernel_constants()

    def loop(label, trips):
        ii, depth = rows[label]
        return trips * ii + depth

    elements = c * h * w
    assert (st["scan_iters"], st["enc_iters"], st["mac_iters"], st["mac_stalls"]) == (n * elements,) * 3 + (0,)
    region = elements + rows["SCAN"][1] + rows["ENC_WINDOW"][1] + rows["MAC_CYCLE"][1]
    load = (loop("LOAD_W", k * c) + loop("FWD_LOAD_B", k) + loop("CLEAR_ACC", -(-h * w * k // P))
            + loop("AXIS_IN", h) + loop("AXIS_IN", w))
    expected = loop("DESC_FETCH", d["D_WORDS"]) + load + n * (region + loop("FWD_WB", k * h * w))
    assert st["cycles"] == expected


def test_dense_cycles_do_not_depend_on_data(dense):
    runs = [_run_all(dense, *_data(sp, seed=sp_i)) for sp_i, sp in enumerate(SPARSITIES)]
    for name in ("fwd", "bwd_data", "bwd_weight"):
        cycles = {r[name]["cycles"] for r in runs}
        executed = {r[name]["macs_executed"] for r in runs}
        assert len(cycles) == 1, (name, cycles)
        assert executed == {runs[0][name]["macs_dense"]}


def test_sparse_beats_dense_and_matches_it_on_dense_data(sparse, dense):
    x, wt, dy, stride, pad = _data(0.0)
    s = _run_all(sparse, x, wt, dy, stride, pad)
    d = _run_all(dense, x, wt, dy, stride, pad)
    # no zeros in x or dy: forward and backward-weight do the same work
    assert s["fwd"]["macs_executed"] == d["fwd"]["macs_executed"]
    assert s["bwd_weight"]["macs_executed"] == d["bwd_weight"]["macs_executed"]
    x, wt, dy, stride, pad = _data(0.6)
    s = _run_all(sparse, x, wt, dy, stride, pad)
    d = _run_all(dense, x, wt, dy, stride, pad)
    # 60 % zeros in x and dy: at most 40 % of the MACs (16 % for the backward passes) are live;
    # scan, write-back and loads stay, so the margin is below the ideal 2.5x
    for name in s:
        assert s[name]["cycles"] < d[name]["cycles"] / 1.5, name


def test_counters_from_every_stage_are_reported(sparse):
    x, wt, dy, stride, pad = _data(0.3)
    sparse.conv_forward(x, wt, np.zeros(wt.shape[0], np.float32), stride, pad)
    st = sparse.last_stats
    # the compaction stage reads every input word once and write-back writes every output once,
    # one 32-bit word per cycle
    n, c, h, w = x.shape
    assert st["scan_iters"] == n * c * h * w
    assert st["wb_iters"] == dy.size
    assert st["mac_iters"] >= st["macs_executed"] / sparse.limits.pe_lanes
    assert st["cycles"] == st["cycles_register"]


def test_pe_lanes_set_the_mac_stage_width(sparse):
    """A 4-lane build needs about four times the MAC iterations of the 16-lane default."""
    from zskip.host.ip.program import Limits
    base = Limits.defaults()
    narrow = Accelerator.emulated(limits=Limits(4, base.max_ch, base.max_dim, base.max_ksize, base.max_features))
    assert narrow.device.config["pe_lanes"] == 4
    x, wt, dy, stride, pad = _data(0.0, k=32)
    b = np.zeros(32, np.float32)
    y4, _ = narrow.conv_forward(x, wt, b, stride, pad)
    s4 = dict(narrow.last_stats)
    y16, _ = sparse.conv_forward(x, wt, b, stride, pad)
    s16 = dict(sparse.last_stats)
    assert np.array_equal(y4, y16)
    assert s4["macs_executed"] == s16["macs_executed"]
    # every element's item count here is a multiple of 16 (taps x 32 channels)
    assert s4["mac_iters"] == 4 * s16["mac_iters"]


def test_board_build_rejects_what_its_buffers_cannot_hold():
    acc = Accelerator.emulated(board="pynq-z2")
    lim = acc.limits
    assert acc.device.config["max_ch"] == lim.max_ch
    c = lim.max_ch
    x = np.ones((1, c, 8, 8), np.float32)
    acc.conv_forward(x, np.ones((c, c, 3, 3), np.float32), np.zeros(c, np.float32), 1, 1)
    with pytest.raises(ValueError, match=rf"w output channels: must be in \[1, {c}\]"):
        acc.conv_forward(x, np.ones((c + 1, c, 3, 3), np.float32), np.zeros(c + 1, np.float32), 1, 1)


def test_counts_do_not_depend_on_what_ran_before(sparse):
    """The engine memory is shared by all passes; a pass's counters must not carry history."""
    x, wt, dy, stride, pad = _data(0.5)
    b = np.zeros(wt.shape[0], np.float32)
    sparse.conv_forward(x, wt, b, stride, pad)
    first = dict(sparse.last_stats)
    sparse.conv_backward_weight(x, dy, wt.shape, stride, pad)
    sparse.conv_backward_data(dy, wt, x.shape, stride, pad, out_mask=x > 0)
    sparse.conv_forward(x, wt, b, stride, pad)
    assert sparse.last_stats == first


def test_backward_weight_of_one_channel_input_does_not_stall_on_dw():
    """One input channel: every dy element of plane k updates the same <= 25 dw[k] words in
    one or two lane tokens, fewer cycles than the adder latency; consecutive elements rotate
    over ACC_LATENCY partial copies of dw, so no element waits for an accumulator, the
    write-back adds the copies (dw_words + K words written) and dw stays within 1e-5 of the
    reference."""
    acc = Accelerator.emulated(skip_zeros=True)
    rng = np.random.default_rng(3)
    x = np.abs(rng.standard_normal((2, 1, 16, 16))).astype(np.float32)
    x[rng.random(x.shape) < 0.5] = 0
    k, r = 6, 5
    dy = rng.standard_normal((2, k, 12, 12)).astype(np.float32)
    dw, db = acc.conv_backward_weight(x, dy, (k, 1, r, r), 1, 0)
    st = acc.last_stats
    assert st["mac_stalls"] == 0
    assert st["wb_iters"] == k * r * r + k
    dw_ref, db_ref = R.conv2d_backward_weight(x, dy, (k, 1, r, r), 1, 0)
    assert np.max(np.abs(dw - dw_ref)) <= 1e-5 * np.max(np.abs(dw_ref))
    assert np.max(np.abs(db - db_ref)) <= 1e-5 * np.max(np.abs(db_ref))
