"""The two emulation forms agree: ``ZSKIP_EMU_FORM=synthesis`` compiles the kernels' synthesis
branch (-D__SYNTHESIS__: DATAFLOW stages joined by hls::stream, the per-lane hazard history
registers, the plain ap_types MAC expression), the default form the C-simulation speed paths
(fused encoder and MAC, per-address hazard stamps, the raw-integer fixed-point MAC). Results
must be bit-identical and every counter equal, on the kernel test grid and on a full LeNet-5
training step with pruning, in float32, fixed point and float32 with approximate multipliers
(Mitchell's, bf16 and a table: the uint32 C-sim multipliers of csim_mac.h against the ap_uint
functors of the synthesis MAC). This is the proof that each C-sim speed
path equals the synthesis form (hls/README.md)."""
import numpy as np
import pytest

from zskip.host.runtime.accelerator import Accelerator
from zskip.host.devices import emu
from zskip.models import multipliers as M
from zskip.models import step as S
from zskip.models.networks import get_model

from test_kernels_batchnorm import small_bn_model
from test_kernels_conv import GRID, _case


def _pair(monkeypatch, precision, skip):
    """(default-form, synthesis-form) accelerators."""
    monkeypatch.delenv("ZSKIP_EMU_FORM", raising=False)
    csim = Accelerator.emulated(precision=precision, skip_zeros=skip)
    monkeypatch.setenv("ZSKIP_EMU_FORM", "synthesis")
    synth = Accelerator.emulated(precision=precision, skip_zeros=skip)
    monkeypatch.delenv("ZSKIP_EMU_FORM")
    assert csim.device.library_path != synth.device.library_path
    return csim, synth


class _Recorder:
    """Forwards every op and records its outputs and last_stats."""

    def __init__(self, acc):
        self.acc, self.log = acc, []

    @property
    def last_stats(self):
        return self.acc.last_stats

    def __getattr__(self, name):
        op = getattr(self.acc, name)

        def call(*args, **kwargs):
            out = op(*args, **kwargs)
            self.log.append((name, out, dict(self.acc.last_stats)))
            return out
        return call


def _same(a, b):
    for (na, oa, sa), (nb, ob, sb) in zip(a, b):
        assert na == nb
        assert sa == sb, (na, {k: (sa[k], sb.get(k)) for k in sa if sa[k] != sb.get(k)})
        for x, y in zip(oa if isinstance(oa, tuple) else (oa,), ob if isinstance(ob, tuple) else (ob,)):
            if isinstance(x, np.ndarray):
                assert x.dtype == y.dtype and np.array_equal(x.view(np.uint8), y.view(np.uint8)), na
            else:
                assert x == y, na
    assert len(a) == len(b)


@pytest.mark.parametrize("precision", ["float32", "ap_fixed<16,6>", "float32,mul=mitchell", "float32,mul=bf16"])
@pytest.mark.parametrize("skip", [True, False], ids=["sparse", "dense"])
def test_kernel_grid_equal_in_both_forms(monkeypatch, precision, skip):
    csim, synth = _pair(monkeypatch, precision, skip)
    logs = []
    for acc in (csim, synth):
        ops = _Recorder(acc)
        for params in GRID:
            x, wt, b, dy, stride, pad = _case(params)
            ops.conv_forward(x, wt, b, stride, pad)
            ops.conv_backward_data(dy, wt, x.shape, stride, pad, out_mask=x > 0)
            ops.conv_backward_weight(x, dy, wt.shape, stride, pad)
        rng = np.random.default_rng(1)
        xf = np.abs(rng.standard_normal((3, 50))).astype(np.float32)
        xf[rng.random(xf.shape) < 0.5] = 0
        ops.linear_forward(xf, rng.standard_normal((10, 50)).astype(np.float32), np.zeros(10, np.float32))
        # one input channel: backward-weight on partial dw copies
        x1 = np.abs(rng.standard_normal((2, 1, 14, 14))).astype(np.float32)
        x1[rng.random(x1.shape) < 0.7] = 0
        ops.conv_backward_weight(x1, rng.standard_normal((2, 6, 10, 10)).astype(np.float32), (6, 1, 5, 5), 1, 0)
        # residual add (whole beats and a tail) and global average pooling (odd planes, N = 1)
        for shape in ((1, 3, 5, 7), (2, 4, 4, 4)):
            a, b = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
            _, mask = ops.add_forward(a, b, relu=True)
            ops.add_forward(a, b, relu=False)
            ops.add_backward(a, b, out_mask=mask)
            ops.add_backward(b, a)
            ops.global_avgpool_forward(np.abs(a))
            ops.global_avgpool_backward(rng.standard_normal(shape[:2]).astype(np.float32), shape, out_mask=mask)
            ops.global_avgpool_backward(rng.standard_normal(shape[:2]).astype(np.float32), shape)
        # batch normalisation: (N, C, H, W) and (N, C), ReLU on and off, with and without the input mask
        for shape, relu in (((2, 3, 5, 7), True), ((5, 6), False)):
            xb = rng.standard_normal(shape).astype(np.float32)
            gamma, beta = rng.random(shape[1]).astype(np.float32) + 0.5, rng.standard_normal(shape[1]).astype(np.float32)
            _, _, xhat, mean, var = ops.batchnorm_forward(xb, gamma, beta, 1e-5, relu)
            ops.batchnorm_backward(xb, xhat, var, gamma, 1e-5, xb > 0 if relu else None)
            ops.batchnorm_inference(xb, gamma, beta, mean, var, 1e-5, relu)
            ops.batchnorm_update_stats(mean, var, mean, var, xb.size // shape[1], 0.1)
        logs.append(ops.log)
    _same(*logs)


@pytest.mark.parametrize("precision", ["float32", "ap_fixed<16,6>"])
def test_bn_model_training_step_equal_in_both_forms(monkeypatch, precision):
    csim, synth = _pair(monkeypatch, precision, True)
    model = small_bn_model()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, *model.input_shape)).astype(np.float32)
    y = rng.integers(0, model.num_classes, 4)
    logs = []
    for acc in (csim, synth):
        ops = _Recorder(acc)
        S.train_step(ops, model, model.init_params(0), model.zero_velocities(), x, y, lr=0.01, momentum=0.9,
                     weight_decay=1e-4, account=False)
        logs.append(ops.log)
    _same(*logs)


@pytest.mark.parametrize("precision", ["float32", "ap_fixed<16,6>"])
@pytest.mark.parametrize("skip", [True, False], ids=["sparse", "dense"])
def test_sparse_fc_passes_equal_in_both_forms(monkeypatch, precision, skip):
    """The sparse_fc kernels have no C-sim path of their own: one source, compiled both ways."""
    from zskip.models import structured as ST
    csim, synth = _pair(monkeypatch, precision, skip)
    logs = []
    for acc in (csim, synth):
        ops = _Recorder(acc)
        rng = np.random.default_rng(2)
        for i, j, d, n in ((400, 120, 0.25, 3), (37, 23, 0.6, 1), (120, 84, 0.1, 2)):
            p = ST.connection_pattern(i, j, d, seed=1)
            x = np.maximum(rng.standard_normal((n, i)), 0).astype(np.float32) * 0.5
            w = (rng.standard_normal((j, p.fan_in)) * 0.5).astype(np.float32)
            dy = (rng.standard_normal((n, j)) * (rng.random((n, j)) < 0.5)).astype(np.float32)
            ops.sparse_linear_forward(x, w, np.zeros(j, np.float32), p)
            ops.sparse_linear_backward_data(dy, w, p, out_mask=rng.random((n, i)) < 0.7)
            ops.sparse_linear_backward_weight(x, dy, p)
        logs.append(ops.log)
    _same(*logs)


@pytest.mark.parametrize("precision", ["float32", "ap_fixed<16,6>", "float32,mul=mitchell", "float32,mul=lut"])
def test_lenet5_training_step_equal_in_both_forms(monkeypatch, tmp_path, precision):
    if precision.endswith("mul=lut"):
        # the C-sim path's uint32 table lookup (csim_mac.h) against the functor: a 6-bit table of Mitchell's model
        table = tmp_path / "mitchell6.bin"
        M.write_lut(table, M.lut_from_model(M.LUT_MODELS["mitchell"], 6), 6)
        precision += f":{table}"
    csim, synth = _pair(monkeypatch, precision, True)
    model = get_model("lenet5")
    rng = np.random.default_rng(0)
    x = rng.random((8, 1, 28, 28)).astype(np.float32)
    x[rng.random(x.shape) < 0.8] = 0
    y = rng.integers(0, 10, 8)
    logs = []
    for acc in (csim, synth):
        ops = _Recorder(acc)
        params, vel = model.init_params(0), model.zero_velocities()
        S.train_step(ops, model, params, vel, x, y, lr=0.01, momentum=0.9, weight_decay=1e-4, account=False,
                     prune_rate=0.5, prune_seeds=S.prune_seeds(7, 0, len(model.layers)))
        logs.append(ops.log)
    _same(*logs)


def test_form_variable_is_checked(monkeypatch):
    monkeypatch.setenv("ZSKIP_EMU_FORM", "vitis")
    with pytest.raises(emu.DeviceError, match="ZSKIP_EMU_FORM: must be one of"):
        emu.compile_flags({})
