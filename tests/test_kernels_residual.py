"""Residual add and global average pooling kernels (emulated HLS, hls/residual, hls/avgpool) against the
numpy reference: results per op on a grid of shapes, fixed point within its quantisation bound, counters
recomputed from the schedule table, the non-finite counter, bad input, and a small residual network
training on the emulated device with the per-op check against the reference."""
import numpy as np
import pytest

from zskip.host.devices.device import DeviceError
from zskip.host.ip.program import ArenaLayout, bit_words, encode
from zskip.host.runtime.accelerator import Accelerator
from zskip.models import reference as R
from zskip.models.networks import (Model, conv, flatten, global_avgpool, linear, residual)

#: (N, C, H, W): N = 1, odd planes, a plane of one pixel, a 32-bit mask word boundary inside a plane,
#: element counts that are and are not whole beats
SHAPES = [(1, 1, 1, 1), (1, 3, 5, 7), (2, 16, 8, 8), (3, 5, 3, 3), (1, 2, 1, 3), (2, 7, 9, 11)]


@pytest.fixture(scope="module", params=[True, False], ids=["sparse", "dense"])
def acc(request):
    return Accelerator.emulated(skip_zeros=request.param)


def _data(rng, shape, sparsity=0.3, scale=1.0):
    a = (rng.standard_normal(shape) * scale).astype(np.float32)
    a[rng.random(shape) < sparsity] = 0
    return a


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "linear"])
def test_add_forward_equals_the_reference(acc, rng, shape, relu):
    a, b = _data(rng, shape), _data(rng, shape)
    b.reshape(-1)[0] = -a.reshape(-1)[0]      # an exact zero sum: ReLU mask False
    y, mask = acc.add_forward(a, b, relu=relu)
    y_ref = R.residual_add_forward(a, b)
    if relu:
        y_ref, mask_ref = R.relu_forward(y_ref)
        assert np.array_equal(mask, mask_ref)
    else:
        assert mask is None
    assert y.shape == shape and np.array_equal(y, y_ref)     # one float32 add: bit for bit
    assert acc.last_stats["macs_executed"] == acc.last_stats["macs_dense"] == 0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("masked", [True, False], ids=["mask", "nomask"])
def test_add_backward_equals_the_reference(acc, rng, shape, masked):
    da, db = _data(rng, shape), _data(rng, shape)
    out_mask = rng.random(shape) < 0.6 if masked else None
    dx = acc.add_backward(da, db, out_mask=out_mask)
    ref = R.fork_backward(da, db)
    if masked:
        ref = R.relu_backward(ref, out_mask)
    assert dx.shape == shape and np.array_equal(dx, ref)


@pytest.mark.parametrize("shape", SHAPES)
def test_global_avgpool_forward_equals_the_reference(acc, rng, shape):
    x = np.abs(_data(rng, shape, 0.5))
    y = acc.global_avgpool_forward(x)
    y_naive = R.global_avgpool_forward_naive(x.astype(np.float64))
    assert y.shape == shape[:2]
    # float32 sums of at most 99 values (rotated over 5 partials), scaled by a float32 1/(H W)
    assert np.abs(y - y_naive).max() <= 1e-6 * max(np.abs(x).max(), 1e-30)
    np.testing.assert_allclose(y, R.global_avgpool_forward(x), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("masked", [True, False], ids=["mask", "nomask"])
def test_global_avgpool_backward_equals_the_reference(acc, rng, shape, masked):
    dy = _data(rng, shape[:2], 0.2)
    out_mask = rng.random(shape) < 0.5 if masked else None
    dx = acc.global_avgpool_backward(dy, shape, out_mask=out_mask)
    ref = R.global_avgpool_backward(dy, shape)
    if masked:
        ref = R.relu_backward(ref, out_mask)
        assert np.all(dx[~out_mask] == 0)
    assert dx.shape == shape
    # dy * float32(1 / (H W)) against dy / (H W): one rounding apart
    np.testing.assert_allclose(dx, ref, rtol=2.5e-7, atol=0)


def test_fixed16_within_the_quantisation_bound(rng):
    """act ap_fixed<16,6>, grad ap_fixed<16,2> (q = 2^-10, 2^-14), acc ap_fixed<32,12>: each operand rounds
    once on load (<= q/2) and each result once on store (<= q/2); sums of two values and of a plane are exact
    in acc_t, and the float32 scale by 1/(H W) adds a relative 2^-24."""
    acc = Accelerator.emulated(precision="fixed16")
    qa, qg = 2.0 ** -10, 2.0 ** -14
    shape = (2, 5, 7, 9)
    a, b = _data(rng, shape, scale=2.0), _data(rng, shape, scale=2.0)
    y, mask = acc.add_forward(a, b, relu=True)
    y_ref = np.maximum(a.astype(np.float64) + b, 0)
    assert np.abs(y - y_ref).max() <= qa + 1e-9
    assert np.abs(y - y_ref).max() > 0                     # it is fixed point
    assert np.array_equal(mask, y > 0)
    da, db = _data(rng, shape, scale=0.3), _data(rng, shape, scale=0.3)
    m = rng.random(shape) < 0.5
    dx = acc.add_backward(da, db, out_mask=m)
    assert np.abs(dx - (da.astype(np.float64) + db) * m).max() <= qg + 1e-9
    x = np.abs(_data(rng, shape, 0.4, scale=3.0))
    g = acc.global_avgpool_forward(x)
    g_ref = x.astype(np.float64).mean(axis=(2, 3))
    assert np.abs(g - g_ref).max() <= qa / 2 + qa / 2 + 2.0 ** -24 * np.abs(g_ref).max() + 1e-9
    dy = _data(rng, shape[:2], scale=0.5)
    d = acc.global_avgpool_backward(dy, shape, out_mask=m)
    d_ref = (dy.astype(np.float64) / (7 * 9))[:, :, None, None] * m
    assert np.abs(d - d_ref).max() <= qg / 2 / (7 * 9) + qg / 2 + 1e-9


# --------------------------------------------------------------------------- counters
def _rows():
    from zskip.host.bench.perf_model import kernel_constants, schedule
    rows = schedule()

    def loop(label, trips):
        ii, depth = rows[label]
        return trips * ii + depth if trips else 0
    fetch = loop("DESC_FETCH", kernel_constants()["D_WORDS"])
    return loop, fetch


@pytest.mark.parametrize("count", [1, 3, 4, 210, 2048])
def test_add_cycles_follow_the_schedule_rule(rng, count):
    """Whole beats at the beat loop's II, the count % 4 words after them at the word loop's, each loop
    invocation plus its depth, plus the descriptor fetch; one load and one write-back iteration per trip."""
    acc = Accelerator.emulated()
    loop, fetch = _rows()
    a, b = _data(rng, (count,)), _data(rng, (count,))
    beats, tail = count // 4, count % 4
    acc.add_forward(a, b, relu=True)
    st = acc.last_stats
    assert st["cycles"] == fetch + loop("ADD_FWD_BEAT", beats) + loop("ADD_FWD_WORD", tail)
    assert st["load_iters"] == st["wb_iters"] == beats + tail
    acc.add_backward(a, b, out_mask=a > 0)
    st = acc.last_stats
    assert st["cycles"] == fetch + loop("ADD_BWD_BEAT", beats) + loop("ADD_BWD_WORD", tail)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (4, 64, 8, 8)])
def test_global_avgpool_cycles_follow_the_schedule_rule(rng, shape):
    """Forward: per image a loop over its C x H x W words, then a loop over its C channels; backward: one
    loop over every dx word. Nothing depends on the data."""
    acc = Accelerator.emulated()
    loop, fetch = _rows()
    n, c, h, w = shape
    x = np.abs(_data(rng, shape))
    acc.global_avgpool_forward(x)
    st = acc.last_stats
    assert st["cycles"] == fetch + n * (loop("GAP_FWD_ACC", c * h * w) + loop("GAP_FWD_SUM", c))
    assert (st["load_iters"], st["wb_iters"]) == (n * c * h * w, n * c)
    acc.global_avgpool_backward(_data(rng, (n, c)), shape, out_mask=x > 0)
    st = acc.last_stats
    assert st["cycles"] == fetch + loop("GAP_BWD", n * c * h * w)
    assert (st["load_iters"], st["wb_iters"]) == (n * c, n * c * h * w)


def test_non_finite_results_are_counted(rng):
    """Sums that overflow float32: the add's pre-activations are counted before the ReLU (which would store 0
    for -inf); a masked-off gradient is stored as 0 and not counted; an overflowing plane sum is counted."""
    acc = Accelerator.emulated()
    a, b = _data(rng, (2, 3, 4, 4)), _data(rng, (2, 3, 4, 4))
    big = np.float32(3e38)
    a[0, 0, 0, 0], b[0, 0, 0, 0] = big, big
    a[1, 2, 3, 3], b[1, 2, 3, 3] = -big, -big
    y, _ = acc.add_forward(a, b, relu=True)
    assert acc.last_stats["nonfinite"] == 2 and y[1, 2, 3, 3] == 0
    mask = np.ones(a.shape, bool)
    mask[1, 2, 3, 3] = False
    dx = acc.add_backward(a, b, out_mask=mask)
    assert acc.last_stats["nonfinite"] == 1 and dx[1, 2, 3, 3] == 0 and np.isinf(dx[0, 0, 0, 0])
    x = np.abs(b)
    x[0, 1] = big
    acc.global_avgpool_forward(x)
    assert acc.last_stats["nonfinite"] == 1


def test_bad_input_is_refused_naming_the_argument(rng):
    acc = Accelerator.emulated()
    a = _data(rng, (1, 2, 3, 3))
    with pytest.raises(ValueError, match=r"^b: expected the shape of a \(1, 2, 3, 3\)"):
        acc.add_forward(a, a[:, :1])
    with pytest.raises(ValueError, match=r"^db: expected the shape of da"):
        acc.add_backward(a, a.reshape(2, 9))
    with pytest.raises(ValueError, match=r"^out_mask: expected shape \(1, 2, 3, 3\)"):
        acc.add_backward(a, a, out_mask=np.ones((1, 2, 3), bool))
    with pytest.raises(ValueError, match=r"^x channels: must be in \[1, 128\]"):
        acc.global_avgpool_forward(np.zeros((1, 129, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"^dy: expected shape \(1, 2\)"):
        acc.global_avgpool_backward(np.zeros((1, 3), np.float32), (1, 2, 3, 3))
    with pytest.raises(ValueError, match=r"^GAP_FWD: field 'h' must be in \[1, 32\]"):
        encode("GAP_FWD", n=1, c=1, h=33, w=1)
    with pytest.raises(ValueError, match=r"^ADD_BWD: field 'count' must be in \[1, "):
        encode("ADD_BWD", count=0)


def test_a_second_operand_off_a_beat_is_refused_by_the_ip(rng):
    acc = Accelerator.emulated()
    lay = ArenaLayout()
    off = dict(x=lay.alloc("act", "a", 8), x2=lay.alloc("act", "b", 8) + 1, y=lay.alloc("act", "y", 8),
               mask_out=lay.alloc("bits", "m", bit_words(8)))
    bufs = acc.allocate_arenas(lay, 1)
    with pytest.raises(DeviceError, match="ERR_ALIGN"):
        acc.run_program([encode("ADD_FWD", count=8, **off)], bufs)


# --------------------------------------------------------------------------- a residual network on the device
def small_resnet() -> Model:
    """Two residual blocks (identity and projection shortcut, ReLU fused into the add), global average
    pooling and a linear layer; no batch normalisation."""
    return Model("tiny_residual", (2, 9, 9), (
        conv(4, 3, pad=1),
        residual((conv(4, 3, pad=1), conv(4, 3, pad=1, relu=False))),
        residual((conv(6, 3, stride=2, pad=1), conv(6, 3, pad=1, relu=False)), (conv(6, 1, stride=2, relu=False),)),
        global_avgpool(), linear(3, relu=False)))


@pytest.mark.parametrize("mode", ["program", "ops"])
def test_a_residual_network_trains_on_the_device_with_the_per_op_check(rng, mode):
    from zskip.host.backends import make_backend
    from zskip.host.runtime.streaming import Batch
    from zskip.models.check import TOLERANCES
    model = small_resnet()
    batches = [Batch(rng.random((4, 2, 9, 9), dtype=np.float32), rng.integers(0, 3, 4), check=True)
               for _ in range(3)]
    backend = make_backend("emu", mode=mode)
    try:
        params, velocities = model.init_params(1), model.zero_velocities()
        outs = list(backend.stream(model, params, velocities, batches, 0.05, 0.9, 1e-4))
    finally:
        backend.close()
    assert len(outs) == 3
    for out in outs:
        labels = {(t.layer, t.tensor) for t in out.check.tensors}
        assert out.check.max_rel_error <= TOLERANCES["float32"].rtol
        assert np.isfinite(out.result.loss)
        # the new ops were run on the device and compared
        for layer in ("block1 add", "block2 add", "block2 bwd", "block1 bwd", "avgpool1 fwd", "avgpool1 bwd"):
            assert any(name == layer for name, _ in labels), (layer, sorted(labels))
