"""The kernels' own counters are honest.

- macs_executed / macs_dense equal the reference accounting (also checked
  over the whole grid in test_kernels_conv.py);
- sparse-mode cycles fall as sparsity rises; dense-mode cycles do not depend
  on the data;
- sparse-mode cycles stay within the stated factor of the ideal
  ``macs_nonzero / pe_lanes``:
      ideal <= cycles <= 2 * ideal + streaming floor
  where the streaming floor counts every operand element read once and every
  result element written once (one per cycle), the work no skipping can
  remove; and where MACs dominate (sparsity <= 60 %, >= 16 channels) the
  forward pass stays within 1.5 x ideal.
"""
import numpy as np
import pytest

from zskip.host.runtime.accelerator import Accelerator
from zskip.host.bench.perf_model import kernel_constants
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


def _floor(x, wt, dy):
    """Elements every pass must stream once (operands in, results out, weights)."""
    return {"fwd": x.size + dy.size + wt.size,
            "bwd_data": dy.size + x.size + wt.size + x.size // 32,
            "bwd_weight": x.size + dy.size + wt.size}


def test_sparse_cycles_fall_with_sparsity_within_factor_of_ideal(sparse):
    lanes = sparse.limits.pe_lanes
    previous = None
    for sp in SPARSITIES:
        x, wt, dy, stride, pad = _data(sp)
        stats = _run_all(sparse, x, wt, dy, stride, pad)
        macs = R.conv_macs(x, dy, wt.shape, stride, pad, out_mask=x > 0)
        floor = _floor(x, wt, dy)
        for name, st in stats.items():
            assert st["macs_executed"] == macs[name]["macs_nonzero"]
            ideal = macs[name]["macs_nonzero"] / lanes
            assert ideal <= st["cycles"] <= 2 * ideal + floor[name], (name, sp, st["cycles"], ideal)
            if previous is not None:
                assert st["cycles"] < previous[name]["cycles"], (name, sp)
        if sp <= 0.6:
            ideal = macs["fwd"]["macs_nonzero"] / lanes
            assert stats["fwd"]["cycles"] <= 1.5 * ideal, (sp, stats["fwd"]["cycles"], ideal)
        previous = stats


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
    for name in s:
        assert s[name]["cycles"] < d[name]["cycles"] / 2, name


def test_counters_from_every_stage_are_reported(sparse):
    x, wt, dy, stride, pad = _data(0.3)
    sparse.conv_forward(x, wt, np.zeros(wt.shape[0], np.float32), stride, pad)
    st = sparse.last_stats
    # the compaction stage reads every input element once and write-back writes every output once,
    # BEAT_WORDS words per beat (a plane's beats never span two planes; an image's outputs are one run)
    beat = kernel_constants()["BEAT_WORDS"]
    n, c, h, w = x.shape
    assert st["scan_iters"] == n * c * -(-h * w // beat)
    assert st["wb_iters"] == n * -(-dy[0].size // beat)
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
    2 MAC iterations, fewer than the adder latency; the partial banks take the stalls away
    (what remains is one drain of ACC_LATENCY per plane before the banks are summed), the
    banks' sum costs ceil(taps / lanes) write-back iterations per plane, and dw stays within
    1e-5 of the reference."""
    acc = Accelerator.emulated(skip_zeros=True)
    lat = kernel_constants()["ACC_LATENCY"]
    lanes = acc.limits.pe_lanes
    rng = np.random.default_rng(3)
    x = np.abs(rng.standard_normal((2, 1, 16, 16))).astype(np.float32)
    x[rng.random(x.shape) < 0.5] = 0
    k, r = 6, 5
    dy = rng.standard_normal((2, k, 12, 12)).astype(np.float32)
    dw, db = acc.conv_backward_weight(x, dy, (k, 1, r, r), 1, 0)
    st = acc.last_stats
    planes = 2 * k
    assert st["mac_stalls"] == planes * lat
    beat = kernel_constants()["BEAT_WORDS"]
    assert st["wb_iters"] == planes * -(-r * r // lanes) + -(-k * r * r // beat) + -(-k // beat)
    dw_ref, db_ref = R.conv2d_backward_weight(x, dy, (k, 1, r, r), 1, 0)
    assert np.max(np.abs(dw - dw_ref)) <= 1e-5 * np.max(np.abs(dw_ref))
    assert np.max(np.abs(db - db_ref)) <= 1e-5 * np.max(np.abs(db_ref))


@pytest.mark.parametrize("precision", ["float32", "ap_fixed<16,6>", "fixed16"])
def test_direct_csim_scatter_equals_the_item_list_form(monkeypatch, precision):
    """C simulation runs the MAC stage without materialising item lists (sparse_scatter.h,
    scatter_element_direct); built with -DZSKIP_CSIM_ITEM_LISTS it runs the item-list form
    that mirrors the synthesised loops. Results and every counter must agree bit for bit, on
    banked (one-channel backward-weight, narrow fc forward) and unbanked passes, sparse and dense,
    and with saturating fixed-point accumulators."""
    from zskip.host.devices import emu
    fast = {skip: Accelerator.emulated(precision=precision, skip_zeros=skip) for skip in (True, False)}
    real_build = emu.build_library
    monkeypatch.setattr(emu, "build_library", lambda defines, cxx=None: real_build(
        dict(defines, ZSKIP_CSIM_ITEM_LISTS=1), cxx))
    lists = {skip: Accelerator.emulated(precision=precision, skip_zeros=skip) for skip in (True, False)}
    assert lists[True].device.library_path != fast[True].device.library_path
    rng = np.random.default_rng(5)
    x1 = np.abs(rng.standard_normal((2, 1, 14, 14))).astype(np.float32)
    x1[rng.random(x1.shape) < 0.7] = 0
    dy1 = rng.standard_normal((2, 6, 10, 10)).astype(np.float32)
    dy1[rng.random(dy1.shape) < 0.6] = 0
    x, wt, dy, stride, pad = _data(0.5, n=2, c=12, h=9, w=9, k=40, r=3)
    xf = np.abs(rng.standard_normal((3, 50))).astype(np.float32)
    xf[rng.random(xf.shape) < 0.5] = 0
    wf = rng.standard_normal((10, 50)).astype(np.float32)
    for skip in (True, False):
        outs = []
        for acc in (fast[skip], lists[skip]):
            run = [acc.conv_backward_weight(x1, dy1, (6, 1, 5, 5), 1, 0), dict(acc.last_stats)]
            run += [_run_all(acc, x, wt, dy, stride, pad)]
            run += [acc.conv_forward(x, wt, np.zeros(40, np.float32), stride, pad)[0]]
            run += [acc.linear_forward(xf, wf, np.zeros(10, np.float32))[0], dict(acc.last_stats)]
            # fixed point: the first 6 channels drive the accumulators past their range
            # (saturating), the last 6 pull them back below zero only if they saturated
            big_w = np.concatenate([np.full((40, 6, 3, 3), 20.0), np.full((40, 6, 3, 3), -2.0)], 1)
            run += [acc.conv_forward(np.full_like(x, 20.0), big_w.astype(np.float32), np.zeros(40, np.float32),
                                     stride, pad)[0]]
            outs.append(run)
        a, b = outs
        for got, want in zip(a, b):
            if isinstance(got, dict):
                assert got == want
            else:
                for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
                    assert np.array_equal(np.asarray(g).view(np.uint32), np.asarray(w).view(np.uint32))
