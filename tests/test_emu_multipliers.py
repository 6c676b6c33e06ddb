"""The emulated engine with a pluggable multiplier (precision ``float32,mul=NAME``) against numpy models
of the same kernel arithmetic:

- fully-connected passes, bit for bit, against a numpy sequential float32 accumulation in the
  kernel's order (products by ``zskip.models.multipliers.multiply``, added one at a time into a
  float32 accumulator that starts at 0, in the order the scan streams the operands, then + bias);
- convolution passes against ``zskip.models.mul_reference`` (the same products, summed in float64
  and rounded once) within the float32 accumulation bound stated in ``conv_bound``;
- the counters do not depend on the multiplier (the same inputs give the same cycles and MACs);
- a LeNet-5 training step through the CLI with ``--check-every 1``: the check uses the reference
  with the same multiplier and its float32 tolerance holds.
"""
import json

import numpy as np
import pytest

from zskip.host import cli
from zskip.host.ip.precision import precision_types
from zskip.host.runtime.accelerator import Accelerator
from zskip.models import multipliers as M
from zskip.models import mul_reference as MR
from zskip.models.check import tolerance_for

from test_kernels_conv import GRID, _case

F32 = np.float32
U = 2.0 ** -24        # float32 unit roundoff


def _asymmetric(x, y):
    """A significand-product model with p(x, y) != p(y, x): a table of it catches swapped operands."""
    return np.clip(x * y * (1 + 0.02 * (x - y)), 1.0, 4.0 - 2.0 ** -20)


@pytest.fixture(scope="module")
def lut_file(tmp_path_factory):
    """A 5-bit table of an asymmetric model (1,024 one-byte entries)."""
    path = tmp_path_factory.mktemp("lut") / "asym5.bin"
    M.write_lut(path, M.lut_from_model(_asymmetric, 5), 5)
    t = M.read_lut(path)
    # the table really is asymmetric: T[i, j] != T[j, i] somewhere
    assert not np.array_equal(t.entries.reshape(32, 32), t.entries.reshape(32, 32).T)
    return path


def _spec(name, lut_file):
    return f"lut:{lut_file}" if name == "lut" else name


MULS = ["mitchell", "bf16", "lut"]


@pytest.fixture(scope="module")
def accelerators(lut_file):
    return {name: Accelerator.emulated(precision=f"float32,mul={_spec(name, lut_file)}") for name in MULS}


def _sequential(first, second, mul):
    """(M, K) float32: out[m, k] = float32 sum over l, in order l = 0, 1, ..., of multiply(mul, first[m, l],
    second[l, k]), added one at a time into a float32 accumulator starting at +0."""
    acc = np.zeros((first.shape[0], second.shape[1]), F32)
    for l in range(first.shape[1]):
        acc = (acc + M.multiply(mul, first[:, l:l + 1], second[l:l + 1, :])).astype(F32)
    return acc


def _fc_operands(seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((3, 40)) * 2).astype(F32)
    x[rng.random(x.shape) < 0.3] = 0
    w = rng.standard_normal((9, 40)).astype(F32)
    b = rng.standard_normal(9).astype(F32)
    dy = rng.standard_normal((3, 9)).astype(F32)
    dy[rng.random(dy.shape) < 0.3] = 0
    return x, w, b, dy


@pytest.mark.parametrize("name", MULS)
def test_fc_passes_bit_exact_against_sequential_float32(accelerators, lut_file, name):
    """fwd: y[n, j] = (sum over i of mul(x[n, i], w[j, i])) + b[j], i ascending (the scan's order);
    bwd_data: dx[n, i] = sum over j of mul(dy[n, j], w[j, i]), j ascending; bwd_weight: dw[j, i] = sum
    over n of mul(dy[n, j], x[n, i]), n ascending (one image after the other); all in float32."""
    acc, mul = accelerators[name], _spec(name, lut_file)
    x, w, b, dy = _fc_operands(1)
    y, _ = acc.linear_forward(x, w, b, relu=False)
    expected = (_sequential(x, w.T, mul) + b).astype(F32)
    assert np.array_equal(y.view(np.uint32), expected.view(np.uint32))
    dx = acc.linear_backward_data(dy, w)
    assert np.array_equal(dx.view(np.uint32), _sequential(dy, w, mul).view(np.uint32))
    dw, db = acc.linear_backward_weight(x, dy)
    assert np.array_equal(dw.view(np.uint32), _sequential(dy.T, x, mul).view(np.uint32))
    # the multiplier made a difference (the test would pass with exact products otherwise)
    assert not np.array_equal(y, (_sequential(x, w.T, "exact") + b).astype(F32))


def _abs_sum(fn, *args, **kw):
    return fn(*[np.abs(a) if isinstance(a, np.ndarray) else a for a in args], **kw)


def conv_bound(terms, abs_products, ref):
    """|emu - ref| <= gamma_(terms + 1) * sum |p| + 2u |ref|.

    Both sides form bit-identical products p (same multiplier, same operand order). The engine adds
    an output's at most ``terms`` products in float32 in its own order (partial copies included:
    any order of n - 1 float32 additions errs by at most gamma_(n-1) sum |p|, Higham 2002, 4.2); the
    reference adds them in float64 (error ~2^-53 n sum |p|, covered by the one extra gamma term) and
    rounds once (u |ref|); the forward's bias add rounds once on each side (the second u |ref|).
    gamma_k = k u / (1 - k u), u = 2^-24.
    """
    k = terms + 1
    return k * U / (1 - k * U) * abs_products + 2 * U * np.abs(ref)


@pytest.mark.parametrize("name", MULS)
def test_conv_passes_within_the_float32_accumulation_bound(accelerators, lut_file, name):
    acc, mul = accelerators[name], _spec(name, lut_file)
    exact = Accelerator.emulated(precision="float32")
    for params in GRID:
        x, w, b, dy, stride, pad = _case(params)
        k, c, r, s = w.shape
        n, _, oh, ow = dy.shape
        # |mul(a, b)| = mul(|a|, |b|) for every multiplier here (the sign is the xor, apart)
        y, _ = acc.conv_forward(x, w, b, stride, pad, relu=False)
        stats = dict(acc.last_stats)
        ref = MR.conv2d_forward(x, w, b, stride, pad, mul)
        bound = conv_bound(c * r * s, _abs_sum(MR.conv2d_forward, x, w, np.zeros_like(b), stride, pad, mul=mul), ref)
        assert np.all(np.abs(y.astype(np.float64) - ref) <= bound), params
        exact.conv_forward(x, w, b, stride, pad, relu=False)
        assert stats == dict(exact.last_stats), params   # the schedule does not depend on the multiplier

        dx = acc.conv_backward_data(dy, w, x.shape, stride, pad)
        ref = MR.conv2d_backward_data(dy, w, x.shape, stride, pad, mul)
        bound = conv_bound(k * r * s, _abs_sum(MR.conv2d_backward_data, dy, w, x.shape, stride, pad, mul=mul), ref)
        assert np.all(np.abs(dx.astype(np.float64) - ref) <= bound), params

        dw, db = acc.conv_backward_weight(x, dy, w.shape, stride, pad)
        ref, ref_db = MR.conv2d_backward_weight(x, dy, w.shape, stride, pad, mul)
        bound = conv_bound(n * oh * ow, _abs_sum(MR.conv2d_backward_weight, x, dy, w.shape, stride, pad,
                                                 mul=mul)[0], ref)
        assert np.all(np.abs(dw.astype(np.float64) - ref) <= bound), params
        np.testing.assert_allclose(db, ref_db, rtol=1e-5, atol=1e-6)   # db: a plain sum of dy, no multiplier
    exact.device.close()


def test_precision_macros_choose_the_functor_and_the_table_header(lut_file, tmp_path):
    assert precision_types("float32") == {}
    assert precision_types("float32,mul=mitchell") == {"ZSKIP_MUL_T": "mul_mitchell"}
    assert precision_types("mul=bf16") == {"ZSKIP_MUL_T": "mul_bf16"}
    macros = precision_types(f"float32,mul=lut:{lut_file}", table_dir=tmp_path)
    assert macros["ZSKIP_MUL_T"] == "mul_lut<mul_lut_table>"
    header = macros["ZSKIP_MUL_LUT_HEADER"].strip('"')
    assert header.startswith(str(tmp_path)) and "static const unsigned mant_bits = 5;" in open(header).read()
    # another table: another header name, hence another library hash
    other = tmp_path / "exact5.bin"
    M.write_lut(other, M.lut_from_model(M.LUT_MODELS["exact"], 5), 5)
    assert precision_types(f"float32,mul=lut:{other}", table_dir=tmp_path)["ZSKIP_MUL_LUT_HEADER"] != \
        macros["ZSKIP_MUL_LUT_HEADER"]
    with pytest.raises(ValueError, match="mul=mitchell is a float32 multiplier"):
        precision_types("fixed16,mul=mitchell")


def test_check_tolerance_carries_the_multiplier():
    assert tolerance_for("float32").mul == "exact"
    t = tolerance_for("float32,mul=mitchell")
    assert t.mul == "mitchell" and (t.rtol, t.floor) == (tolerance_for("float32").rtol,
                                                         tolerance_for("float32").floor)
    with pytest.raises(ValueError, match="mul: unknown multiplier 'log'"):
        tolerance_for("float32,mul=log")


@pytest.mark.parametrize("name", MULS)
def test_lenet5_training_with_check_every_step(tmp_path, lut_file, name):
    """``zskip train --backend emu --precision float32,mul=NAME --check-every 1``: every step compared op by
    op with the reference multiplying by NAME, within the float32 tolerance (rtol 1e-4)."""
    report = tmp_path / "r.json"
    args = ["train", "--model", "lenet5", "--data", "mnist5k", "--backend", "emu", "--precision",
            f"float32,mul={_spec(name, lut_file)}", "--epochs", "1", "--limit-train", "128", "--limit-test", "64",
            "--batch-size", "64", "--check-every", "1", "--quiet", "--report", str(report)]
    assert cli.main(args) == 0
    r = json.loads(report.read_text())
    assert r["check"]["batches_checked"] == 2
    assert r["check"]["max_rel_error"] <= tolerance_for("float32").rtol
    assert np.isfinite(r["epochs"][0]["train_loss"])


def test_resource_estimate_counts_a_rom_per_lane_pair_and_the_multipliers_dsp():
    """lut m = 7: 4^7 = 16,384 entries of 8 bits = 128 Kib per ROM, four BRAM36 (36 Kib each, 4K x 9 aspect);
    one ROM per two lanes (a BRAM's two read ports), in both engines (conv and fc)."""
    from zskip.overlay import resources as R
    from zskip.overlay.boards import load_boards
    board = load_boards()["pynq-z2"]
    per_rom = -(-16384 * 8 // (36 * 1024))
    assert per_rom == 4 and R.rom_bram36(16384, 8) == per_rom
    assert R.multiplier_resources(board, "lut", 7)["rom_bram36"] == 2 * (board.pe_lanes // 2) * per_rom
    assert R.multiplier_resources(board, "lut", 5)["rom_bram36"] == 0          # 1,024 x 6 bits: LUT ROM
    assert R.multiplier_resources(board, "exact")["rom_bram36"] == 0
    dsp = {m: R.multiplier_resources(board, m)["mac_dsp"] for m in ("exact", "bf16", "mitchell")}
    lanes = 2 * board.pe_lanes
    assert dsp["exact"] == lanes * board.dsp_per_mac("float32")
    assert dsp["exact"] - dsp["bf16"] == lanes * 2 and dsp["exact"] - dsp["mitchell"] == lanes * 3
    assert R.multiplier_resources(board, "exact")["dsp_total"] == R.dsp_total(board, "float32")
