"""Generate the C-simulation testbench data headers from the numpy reference.

    python hls/gen_tb_data.py            # rewrites hls/<kernel>/<kernel>_tb_data.h
    python hls/gen_tb_data.py --check    # exit 1 if a header is out of date

Each case builds a small program with zskip.host.ip.program (the same encoder
and arena layout the driver uses), fills the arenas with seeded random
inputs, and records the expected outputs computed by
zskip.models.reference, never by the kernels. hls/common/tb_runner.h reads
the header's arrays; see its comment for the names.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

from zskip.host.ip.program import ARENA_DTYPES, ARENAS, ArenaLayout, bit_words, encode, pack_bits
from zskip.models import reference as R

HLS_DIR = Path(__file__).resolve().parent
#: relative tolerance of float comparisons (float32 accumulation order differs from numpy's)
REL_TOL = 1e-5


class Case:
    """A program, its initial arenas and the expected regions."""

    def __init__(self):
        self.layout = ArenaLayout()
        self.inputs: Dict[str, np.ndarray] = {}
        self.program: List[np.ndarray] = []
        self.f32_checks: List[Tuple[str, np.ndarray]] = []
        self.bits_checks: List[Tuple[str, np.ndarray]] = []

    def tensor(self, arena: str, name: str, value=None, words: int = 0) -> int:
        """Allocate ``name``; with ``value`` also its initial contents."""
        size = words or int(np.size(value))
        off = self.layout.alloc(arena, name, size)
        if value is not None:
            self.inputs[name] = np.asarray(value).reshape(-1)
        return off

    def expect(self, name: str, value, bits: bool = False):
        (self.bits_checks if bits else self.f32_checks).append((name, np.asarray(value).reshape(-1)))

    def arenas(self) -> Dict[str, np.ndarray]:
        out = {a: np.zeros(self.layout.size(a), dtype=ARENA_DTYPES[a]) for a in ARENAS}
        for name, value in self.inputs.items():
            arena, off, n = self.layout.entries[name]
            out[arena][off:off + value.size] = value
        return out


def _sparse(rng, shape, sparsity, positive=False):
    a = rng.standard_normal(shape).astype(np.float32)
    if positive:
        a = np.abs(a)
    a[rng.random(shape) < sparsity] = 0
    return a


def _conv_shape(x, w, stride, pad):
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    return dict(n=n, c=c, h=h, w=wd, k=k, r=r, s=s, stride=stride, pad=pad)


def case_conv_fwd() -> Case:
    rng = np.random.default_rng(11)
    cs = Case()
    x, w, b = _sparse(rng, (2, 3, 8, 7), 0.5), _sparse(rng, (4, 3, 3, 3), 0), _sparse(rng, (4,), 0)
    stride, pad = 2, 1
    y, mask = R.relu_forward(R.conv2d_forward(x, w, b, stride, pad))
    off = dict(x=cs.tensor("act", "x", x), wgt=cs.tensor("wgt", "w", w), bias=cs.tensor("wgt", "b", b),
               y=cs.tensor("act", "y", words=y.size), mask_out=cs.tensor("bits", "mask", words=bit_words(y.size)))
    cs.program.append(encode("CONV_FWD", flags=("SKIP_ZEROS", "RELU"), **_conv_shape(x, w, stride, pad), **off))
    cs.expect("y", y)
    cs.expect("mask", pack_bits(mask), bits=True)
    return cs


def case_conv_bwd_data() -> Case:
    rng = np.random.default_rng(12)
    cs = Case()
    x = _sparse(rng, (2, 5, 6, 6), 0.4)
    w = _sparse(rng, (3, 5, 5, 5), 0)
    stride, pad = 1, 2
    dy = _sparse(rng, R.conv_output_shape(x.shape, w.shape, stride, pad), 0.5)
    out_mask = x > 0
    dx = R.relu_backward(R.conv2d_backward_data(dy, w, x.shape, stride, pad), out_mask)
    off = dict(dy=cs.tensor("grad", "dy", dy), wgt=cs.tensor("wgt", "w", w), dx=cs.tensor("grad", "dx", words=x.size),
               mask_in=cs.tensor("bits", "mask", pack_bits(out_mask)))
    cs.program.append(encode("CONV_BWD_DATA", flags=("SKIP_ZEROS", "HAS_OUT_MASK"),
                             **_conv_shape(x, w, stride, pad), **off))
    cs.expect("dx", dx)
    # the gather form (FLAG_GATHER) on a dense dy, stride 2, K not a multiple of the lanes
    xg = _sparse(rng, (2, 4, 8, 8), 0.5)
    wg = _sparse(rng, (6, 4, 3, 3), 0)
    dyg = _sparse(rng, R.conv_output_shape(xg.shape, wg.shape, 2, 1), 0)
    maskg = xg > 0
    dxg = R.relu_backward(R.conv2d_backward_data(dyg, wg, xg.shape, 2, 1), maskg)
    offg = dict(dy=cs.tensor("grad", "dy_gather", dyg), wgt=cs.tensor("wgt", "w_gather", wg),
                dx=cs.tensor("grad", "dx_gather", words=xg.size),
                mask_in=cs.tensor("bits", "mask_gather", pack_bits(maskg)))
    cs.program.append(encode("CONV_BWD_DATA", flags=("SKIP_ZEROS", "HAS_OUT_MASK", "GATHER"),
                             **_conv_shape(xg, wg, 2, 1), **offg))
    cs.expect("dx_gather", dxg)
    return cs


def case_conv_bwd_weight() -> Case:
    rng = np.random.default_rng(13)
    cs = Case()
    x = _sparse(rng, (3, 2, 9, 9), 0.6)
    w_shape = (4, 2, 4, 4)
    stride, pad = 2, 3
    dy = _sparse(rng, R.conv_output_shape(x.shape, w_shape, stride, pad), 0.3)
    dw, db = R.conv2d_backward_weight(x, dy, w_shape, stride, pad)
    off = dict(x=cs.tensor("act", "x", x), dy=cs.tensor("grad", "dy", dy),
               dw=cs.tensor("grad", "dw", words=dw.size), db=cs.tensor("grad", "db", words=db.size))
    cs.program.append(encode("CONV_BWD_WEIGHT", flags=("SKIP_ZEROS",), **_conv_shape(x, np.empty(w_shape), stride, pad),
                             **off))
    cs.expect("dw", dw)
    cs.expect("db", db)
    return cs


def case_fc() -> Case:
    rng = np.random.default_rng(14)
    cs = Case()
    n, i, j = 3, 40, 12
    x, w, b = _sparse(rng, (n, i), 0.5, positive=True), _sparse(rng, (j, i), 0), _sparse(rng, (j,), 0)
    dy = _sparse(rng, (n, j), 0.3)
    y, ymask = R.relu_forward(R.linear_forward(x, w, b))
    out_mask = x > 0
    dx, dw, db = R.linear_backward(dy, x, w)
    dx = R.relu_backward(dx, out_mask)
    shape = dict(n=n, c=i, k=j, h=1, w=1, r=1, s=1, stride=1, pad=0)
    xo, wo = cs.tensor("act", "x", x), cs.tensor("wgt", "w", w)
    dyo = cs.tensor("grad", "dy", dy)
    cs.program.append(encode("FC_FWD", flags=("SKIP_ZEROS", "RELU"), x=xo, wgt=wo, bias=cs.tensor("wgt", "b", b),
                             y=cs.tensor("act", "y", words=n * j),
                             mask_out=cs.tensor("bits", "ymask", words=bit_words(n * j)), **shape))
    cs.program.append(encode("FC_BWD_DATA", flags=("SKIP_ZEROS", "HAS_OUT_MASK"), dy=dyo, wgt=wo,
                             dx=cs.tensor("grad", "dx", words=n * i),
                             mask_in=cs.tensor("bits", "xmask", pack_bits(out_mask)), **shape))
    cs.program.append(encode("FC_BWD_WEIGHT", flags=("SKIP_ZEROS",), x=xo, dy=dyo,
                             dw=cs.tensor("grad", "dw", words=j * i), db=cs.tensor("grad", "db", words=j), **shape))
    cs.expect("y", y)
    cs.expect("ymask", pack_bits(ymask), bits=True)
    cs.expect("dx", dx)
    cs.expect("dw", dw)
    cs.expect("db", db)
    return cs


def case_maxpool() -> Case:
    rng = np.random.default_rng(15)
    cs = Case()
    x = _sparse(rng, (2, 3, 7, 8), 0.5, positive=True)
    size, stride = 3, 2
    y, argmax = R.maxpool2d_forward(x, size, stride)
    dy = _sparse(rng, y.shape, 0.2)
    dx = R.maxpool2d_backward(dy, argmax, x.shape, size, stride)
    n, c, h, w = x.shape
    shape = dict(n=n, c=c, h=h, w=w, r=size, stride=stride)
    am = cs.tensor("bits", "argmax", words=y.size)
    cs.program.append(encode("MAXPOOL_FWD", flags=("RELU",), x=cs.tensor("act", "x", x),
                             y=cs.tensor("act", "y", words=y.size), argmax=am,
                             mask_out=cs.tensor("bits", "mask", words=bit_words(y.size)), **shape))
    cs.program.append(encode("MAXPOOL_BWD", dy=cs.tensor("grad", "dy", dy), argmax=am,
                             dx=cs.tensor("grad", "dx", words=x.size), **shape))
    cs.expect("y", y)
    cs.expect("argmax", argmax.astype(np.uint32), bits=True)
    cs.expect("mask", pack_bits(y > 0), bits=True)
    cs.expect("dx", dx)
    return cs


def case_sgd_update() -> Case:
    rng = np.random.default_rng(16)
    cs = Case()
    p, g, v = (rng.standard_normal(50).astype(np.float32) for _ in range(3))
    lr, momentum, wd = 0.05, 0.9, 1e-3
    p2, v2 = R.sgd_update(p, g, v, lr, momentum, wd)
    cs.program.append(encode("SGD_UPDATE", count=p.size, wgt=cs.tensor("wgt", "p", p), vel=cs.tensor("vel", "v", v),
                             dw=cs.tensor("grad", "g", g), lr=lr, momentum=momentum, weight_decay=wd))
    cs.expect("p", p2)
    cs.expect("v", v2)
    # the same update with Nesterov momentum (FLAG_NESTEROV) on a second parameter
    pn, gn, vn = (rng.standard_normal(13).astype(np.float32) for _ in range(3))
    pn2, vn2 = R.sgd_update(pn, gn, vn, lr, momentum, wd, nesterov=True)
    cs.program.append(encode("SGD_UPDATE", ("NESTEROV",), count=pn.size, wgt=cs.tensor("wgt", "pn", pn),
                             vel=cs.tensor("vel", "vn", vn), dw=cs.tensor("grad", "gn", gn), lr=lr,
                             momentum=momentum, weight_decay=wd))
    cs.expect("pn", pn2)
    cs.expect("vn", vn2)
    return cs


def case_softmax_xent() -> Case:
    rng = np.random.default_rng(17)
    cs = Case()
    logits = (rng.standard_normal((4, 10)) * 2).astype(np.float32)
    labels = rng.integers(0, 10, 4)
    loss, d = R.softmax_cross_entropy(logits, labels)
    cs.program.append(encode("SOFTMAX_XENT", n=4, c=10, x=cs.tensor("act", "logits", logits),
                             labels=cs.tensor("bits", "labels", labels.astype(np.uint32)),
                             dx=cs.tensor("grad", "dlogits", words=logits.size),
                             loss=cs.tensor("grad", "loss", words=1)))
    cs.expect("dlogits", d)
    cs.expect("loss", np.float32(loss))
    return cs


def case_batchnorm() -> Case:
    """Training forward with ReLU, backward through the input's mask, inference, running-statistics update."""
    rng = np.random.default_rng(19)
    cs = Case()
    x = (rng.standard_normal((2, 3, 4, 5)) * 2 + 1).astype(np.float32)
    gamma, beta = (rng.random(3) + 0.5).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    eps, momentum = 1e-5, 0.1
    y, saved = R.batchnorm_forward(x, gamma, beta, eps)
    y, mask = R.relu_forward(y)
    dy = rng.standard_normal(x.shape).astype(np.float32) * mask
    in_mask = rng.random(x.shape) > 0.3
    dx, dgamma, dbeta = R.batchnorm_backward(dy, saved)
    dx = R.relu_backward(dx, in_mask)
    rm, rv = rng.standard_normal(3).astype(np.float32), (rng.random(3) + 0.5).astype(np.float32)
    y_inf = R.batchnorm_inference(x, gamma, beta, rm, rv, eps)
    rm2, rv2 = R.batchnorm_running_update(rm, rv, saved.mean, saved.var, x.size // 3, momentum)
    shape = dict(n=2, c=3, h=4, w=5)
    xo, go, bo = cs.tensor("act", "x", x), cs.tensor("wgt", "gamma", gamma), cs.tensor("wgt", "beta", beta)
    xh, vo = cs.tensor("act", "xhat", words=x.size), cs.tensor("act", "var", words=3)
    mo, ro = cs.tensor("act", "mean", words=3), cs.tensor("wgt", "running", np.concatenate([rm, rv]))
    cs.program.append(encode("BN_FWD", flags=("RELU",), eps=eps, x=xo, wgt=go, bias=bo,
                             y=cs.tensor("act", "y", words=x.size), xhat=xh, mean=mo, var=vo,
                             mask_out=cs.tensor("bits", "mask", words=bit_words(x.size)), **shape))
    cs.program.append(encode("BN_BWD", flags=("HAS_OUT_MASK",), eps=eps, dy=cs.tensor("grad", "dy", dy), xhat=xh,
                             var=vo, wgt=go, dx=cs.tensor("grad", "dx", words=x.size),
                             dw=cs.tensor("grad", "dgamma", words=3), db=cs.tensor("grad", "dbeta", words=3),
                             mask_in=cs.tensor("bits", "in_mask", pack_bits(in_mask)), **shape))
    cs.program.append(encode("BN_INFER", eps=eps, x=xo, wgt=go, bias=bo, running=ro,
                             y=cs.tensor("act", "y_inf", words=x.size), **shape))
    cs.program.append(encode("BN_STATS", c=3, count=x.size // 3, momentum=momentum, running=ro, mean=mo, var=vo))
    cs.expect("y", y)
    cs.expect("mask", pack_bits(mask), bits=True)
    cs.expect("xhat", saved.xhat)
    cs.expect("mean", saved.mean)
    cs.expect("var", saved.var)
    cs.expect("dx", dx)
    cs.expect("dgamma", dgamma)
    cs.expect("dbeta", dbeta)
    cs.expect("y_inf", y_inf)
    cs.expect("running", np.concatenate([rm2, rv2]))
    return cs


def case_zskip_top() -> Case:
    """A small forward chain in one program: conv + ReLU -> maxpool -> fc -> softmax cross-entropy."""
    rng = np.random.default_rng(18)
    cs = Case()
    x = _sparse(rng, (2, 1, 8, 8), 0.6, positive=True)
    w1, b1 = _sparse(rng, (3, 1, 3, 3), 0), _sparse(rng, (3,), 0)
    y1, m1 = R.relu_forward(R.conv2d_forward(x, w1, b1, 1, 1))
    p1, a1 = R.maxpool2d_forward(y1, 2, 2)
    flat = p1.reshape(2, -1)
    w2, b2 = _sparse(rng, (5, flat.shape[1]), 0), _sparse(rng, (5,), 0)
    logits = R.linear_forward(flat, w2, b2)
    labels = np.array([1, 4], dtype=np.uint32)
    loss, d = R.softmax_cross_entropy(logits, labels.astype(np.int64))
    y1o, p1o = cs.tensor("act", "y1", words=y1.size), cs.tensor("act", "p1", words=p1.size)
    lo = cs.tensor("act", "logits", words=logits.size)
    cs.program.append(encode("CONV_FWD", flags=("SKIP_ZEROS", "RELU"), **_conv_shape(x, w1, 1, 1),
                             x=cs.tensor("act", "x", x), wgt=cs.tensor("wgt", "w1", w1),
                             bias=cs.tensor("wgt", "b1", b1), y=y1o,
                             mask_out=cs.tensor("bits", "m1", words=bit_words(y1.size))))
    cs.program.append(encode("MAXPOOL_FWD", flags=("RELU",), n=2, c=3, h=8, w=8, r=2, stride=2, x=y1o, y=p1o,
                             argmax=cs.tensor("bits", "a1", words=p1.size),
                             mask_out=cs.tensor("bits", "pm", words=bit_words(p1.size))))
    cs.program.append(encode("FC_FWD", flags=("SKIP_ZEROS",), n=2, c=flat.shape[1], k=5, h=1, w=1, r=1, s=1,
                             stride=1, x=p1o, wgt=cs.tensor("wgt", "w2", w2), bias=cs.tensor("wgt", "b2", b2), y=lo))
    cs.program.append(encode("SOFTMAX_XENT", n=2, c=5, x=lo, labels=cs.tensor("bits", "labels", labels),
                             dx=cs.tensor("grad", "dlogits", words=d.size), loss=cs.tensor("grad", "loss", words=1)))
    cs.expect("y1", y1)
    cs.expect("m1", pack_bits(m1), bits=True)
    cs.expect("a1", a1.astype(np.uint32), bits=True)
    cs.expect("logits", logits)
    cs.expect("dlogits", d)
    cs.expect("loss", np.float32(loss))
    return cs


def case_residual() -> Case:
    """Add forward with ReLU (210 elements: 52 beats and a 2-word tail) and add backward under its mask."""
    rng = np.random.default_rng(19)
    cs = Case()
    a, b = _sparse(rng, (2, 3, 5, 7), 0.3), _sparse(rng, (2, 3, 5, 7), 0.3)
    y, mask = R.relu_forward(R.residual_add_forward(a, b))
    da, db = _sparse(rng, a.shape, 0.2), _sparse(rng, a.shape, 0.2)
    dx = R.relu_backward(R.fork_backward(da, db), mask)
    m = cs.tensor("bits", "mask", words=bit_words(a.size))
    cs.program.append(encode("ADD_FWD", flags=("RELU",), count=a.size, x=cs.tensor("act", "a", a),
                             x2=cs.tensor("act", "b", b), y=cs.tensor("act", "y", words=a.size), mask_out=m))
    cs.program.append(encode("ADD_BWD", flags=("HAS_OUT_MASK",), count=a.size, dy=cs.tensor("grad", "da", da),
                             dy2=cs.tensor("grad", "db", db), dx=cs.tensor("grad", "dx", words=a.size), mask_in=m))
    cs.expect("y", y)
    cs.expect("mask", pack_bits(mask), bits=True)
    cs.expect("dx", dx)
    return cs


def case_avgpool() -> Case:
    """Global average pooling of odd planes (5 x 7), and its backward under the input's ReLU mask."""
    rng = np.random.default_rng(20)
    cs = Case()
    x = _sparse(rng, (2, 3, 5, 7), 0.4, positive=True)
    y = R.global_avgpool_forward(x)
    dy = _sparse(rng, y.shape, 0.2)
    dx = R.relu_backward(R.global_avgpool_backward(dy, x.shape), x > 0)
    n, c, h, w = x.shape
    cs.program.append(encode("GAP_FWD", n=n, c=c, h=h, w=w, x=cs.tensor("act", "x", x),
                             y=cs.tensor("act", "y", words=y.size)))
    cs.program.append(encode("GAP_BWD", flags=("HAS_OUT_MASK",), n=n, c=c, h=h, w=w, dy=cs.tensor("grad", "dy", dy),
                             mask_in=cs.tensor("bits", "mask", pack_bits(x > 0)),
                             dx=cs.tensor("grad", "dx", words=x.size)))
    cs.expect("y", y)
    cs.expect("dx", dx)
    return cs


CASES: Dict[str, Callable[[], Case]] = {
    "conv_fwd": case_conv_fwd, "conv_bwd_data": case_conv_bwd_data, "conv_bwd_weight": case_conv_bwd_weight,
    "fc": case_fc, "maxpool": case_maxpool, "sgd_update": case_sgd_update, "softmax_xent": case_softmax_xent,
    "zskip_top": case_zskip_top, "residual": case_residual, "avgpool": case_avgpool,
    "batchnorm": case_batchnorm,
}

_ARENA_IDS = {a: i for i, a in enumerate(ARENAS)}


def _floats(values) -> str:
    return ",\n".join(", ".join(f"{float(v):.9e}f" for v in values[i:i + 8]) for i in range(0, len(values), 8)) or "0.0f"


def _words(values) -> str:
    return ",\n".join(", ".join(f"0x{int(v):08x}u" for v in values[i:i + 8]) for i in range(0, len(values), 8)) or "0u"


def render(kernel: str, case: Case) -> str:
    """The header text for ``case`` (deterministic: same inputs, same bytes)."""
    arenas = case.arenas()
    program = np.concatenate(case.program)
    lines = ["// Generated by hls/gen_tb_data.py from the numpy reference; do not edit.",
             f"// Testbench data of {kernel} (read by hls/common/tb_runner.h).",
             f"#ifndef ZSKIP_{kernel.upper()}_TB_DATA_H", f"#define ZSKIP_{kernel.upper()}_TB_DATA_H",
             "#include <stdint.h>", "",
             f"static const unsigned TB_N_DESC = {len(case.program)};",
             f"static const double TB_REL_TOL = {REL_TOL!r};",
             f"static const uint32_t tb_program[{program.size}] = {{\n{_words(program)}}};"]
    for arena in ("act", "wgt", "grad", "vel"):
        lines.append(f"static const float tb_{arena}[{arenas[arena].size}] = {{\n{_floats(arenas[arena])}}};")
    lines.append(f"static const uint32_t tb_bits[{arenas['bits'].size}] = {{\n{_words(arenas['bits'])}}};")
    for kind, checks, fmt, ctype in (("f32", case.f32_checks, _floats, "float"),
                                     ("bits", case.bits_checks, _words, "uint32_t")):
        regions = []
        for name, value in checks:
            arena, off, _ = case.layout.entries[name]
            regions.append(f"{{{_ARENA_IDS[arena]}, {off}, {value.size}}}")
        values = np.concatenate([v for _, v in checks]) if checks else np.zeros(0)
        lines.append(f"#define ZSKIP_TB_{kind.upper()}_REGIONS {{{', '.join(regions) or '{0, 0, 0}'}}}")
        lines.append(f"static const {ctype} tb_{kind}_expect[{max(1, values.size)}] = {{\n{fmt(values)}}};")
    lines += ["#endif", ""]
    return "\n".join(lines)


_EXPECT_F32 = re.compile(r"(static const float tb_f32_expect\[\d+\] = \{)(.*?)(\};)", re.S)


def same_header(old: str, new: str) -> bool:
    """True when ``old`` equals ``new`` up to float32 rounding of the expected values.

    The program and the inputs must match exactly; the expected values come
    from numpy's float32 sums, whose last bits may differ between machines.
    """
    mo, mn = _EXPECT_F32.search(old), _EXPECT_F32.search(new)
    if not mo or not mn or _EXPECT_F32.sub("", old) != _EXPECT_F32.sub("", new):
        return False
    a = np.array([float(v.rstrip("f")) for v in mo.group(2).replace("\n", "").split(",")])
    b = np.array([float(v.rstrip("f")) for v in mn.group(2).replace("\n", "").split(",")])
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= REL_TOL / 10 * max(np.abs(b).max(), 1e-30)))


def header_path(kernel: str) -> Path:
    return HLS_DIR / kernel / f"{kernel}_tb_data.h"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="generate the testbench data headers")
    parser.add_argument("--check", action="store_true", help="only check that the headers are current")
    parser.add_argument("--out", type=Path, help="write the headers under this folder instead of hls/")
    args = parser.parse_args(argv)
    stale = []
    for kernel, make in CASES.items():
        text = render(kernel, make())
        path = header_path(kernel) if args.out is None else args.out / kernel / f"{kernel}_tb_data.h"
        if args.check:
            if not path.is_file() or not same_header(path.read_text(), text):
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if stale:
        print("out of date (run python hls/gen_tb_data.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
