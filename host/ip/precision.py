"""Precision specs: the numeric type of each tensor class of the accelerator.

A spec names a type per class (the macros of ``hls/common/types.h``):

- ``act`` activations, ``wgt`` weights as the MAC kernels read them,
  ``grad`` gradients, ``acc`` MAC accumulators, ``opt`` optimiser state
  (momentum and the master copy of the weights that ``sgd_update`` keeps);
- each is ``float32`` or ``ap_fixed<W,I>`` / ``ap_fixed<W,I,Q,O>`` with a
  quantisation mode Q (default ``AP_RND``) and an overflow mode O (default
  ``AP_SAT``) of the ap_types library.

Accepted forms: ``float32``; a shorthand ``fixed16`` / ``fixed12`` /
``fixed8`` (:data:`SHORTHANDS`); a single ``ap_fixed<W,I>`` for act, wgt and
grad with acc ``ap_fixed<2W,2I>`` and opt float32; or ``class=type`` pairs
separated by commas (unnamed classes are float32), e.g.
``act=ap_fixed<16,6>,wgt=ap_fixed<16,4>,grad=ap_fixed<16,2>,acc=ap_fixed<32,12>,opt=float32``.

A spec may add ``mul=NAME`` (anywhere among its pairs, e.g. ``float32,mul=mitchell``): the
multiplier of the MAC lanes, one of ``zskip.models.multipliers.MULTIPLIERS``
(``exact`` by default, ``bf16``, ``mitchell``, ``lut:FILE``). The multipliers
are float32 units, so ``mul`` other than ``exact`` needs float32 act, wgt,
grad and acc. Every backend trains with any of them: the HLS engine's MAC
lanes take the multiplier as a type (``mul_t``, chosen by the macros of
:func:`precision_types`).

Why the classes differ (the gradient scaling rule): each class has its own
binary point, chosen from the range of its values in LeNet-5 / MNIST training.
Activations reach tens (inputs are normalised images, ReLU outputs grow layer
by layer); weights stay within a few units; gradients of the mean loss are
below 1/batch at the logits and smaller further down, so ``grad`` spends its
bits on fraction (I = 1 or 2). That is a static per-class power-of-two scale;
the kernels' arithmetic is unchanged. The optimiser state stays float32 by
default: with a 16-bit ``wgt`` an SGD step below one wgt ulp (2^-12 for
``ap_fixed<16,4>``) would round to zero, so ``sgd_update`` keeps a float32
master copy and the MAC kernels narrow it on load (mixed-precision training,
Micikevicius et al., ICLR 2018).
"""
from __future__ import annotations

import os
import re
from typing import Dict

import numpy as np

__all__ = ["CLASSES", "SHORTHANDS", "parse_precision", "precision_types", "is_float32", "loss_scale",
           "LOSS_SCALE_HEADROOM_BITS", "multiplier", "multiplier_macros", "MUL_FUNCTORS"]

#: tensor class -> the type macro of hls/common/types.h
CLASSES = {"act": "ZSKIP_ACT_T", "wgt": "ZSKIP_WGT_T", "grad": "ZSKIP_GRAD_T", "acc": "ZSKIP_ACC_T",
           "opt": "ZSKIP_OPT_T"}
QUANT_MODES = ("AP_RND", "AP_RND_ZERO", "AP_RND_MIN_INF", "AP_RND_INF", "AP_RND_CONV", "AP_TRN", "AP_TRN_ZERO")
OVERFLOW_MODES = ("AP_SAT", "AP_SAT_ZERO", "AP_SAT_SYM", "AP_WRAP", "AP_WRAP_SM")

#: shorthand -> full spec
SHORTHANDS = {
    "fixed16": "act=ap_fixed<16,6>,wgt=ap_fixed<16,4>,grad=ap_fixed<16,2>,acc=ap_fixed<32,12>,opt=float32",
    "fixed12": "act=ap_fixed<12,5>,wgt=ap_fixed<12,3>,grad=ap_fixed<12,1>,acc=ap_fixed<32,12>,opt=float32",
    # act with 5 integer bits: with 4, LeNet-5's fc activations reach the limit 8 in the second
    # mnist5k epoch (~10^6 saturations per epoch, the run diverges to ~20 % accuracy)
    "fixed8": "act=ap_fixed<8,5>,wgt=ap_fixed<8,2>,grad=ap_fixed<8,1>,acc=ap_fixed<24,10>,opt=float32",
}

_FIXED = re.compile(r"^ap_fixed<(\d+),(-?\d+)(?:,(\w+),(\w+))?>$")


def _parse_type(cls: str, text: str) -> str:
    """The C++ type for class ``cls`` ("" for the single-type form); ValueError naming it and the allowed values."""
    who = f"precision: {cls}" if cls else "precision"
    max_w = 64 if cls == "acc" else 32
    t = text.replace(" ", "")
    if t == "float32":
        return "float"
    m = _FIXED.match(t)
    if not m:
        extra = "" if cls else f", a shorthand ({', '.join(SHORTHANDS)}) or class=type pairs ({', '.join(CLASSES)})"
        raise ValueError(f"{who} must be 'float32' or 'ap_fixed<W,I>' / 'ap_fixed<W,I,Q,O>'{extra}, got {text!r}")
    w, i = int(m.group(1)), int(m.group(2))
    if not (2 <= w <= max_w and 1 <= i <= w):
        raise ValueError(f"{who}: ap_fixed<W,I> needs 2 <= W <= {max_w} and 1 <= I <= W, got {text!r}")
    q, o = m.group(3) or "AP_RND", m.group(4) or "AP_SAT"
    if q not in QUANT_MODES:
        raise ValueError(f"{who}: quantisation mode must be one of {', '.join(QUANT_MODES)}, got {q!r}")
    if o not in OVERFLOW_MODES:
        raise ValueError(f"{who}: overflow mode must be one of {', '.join(OVERFLOW_MODES)}, got {o!r}")
    return f"ap_fixed<{w},{i},{q},{o}>"


_PAIR_SPLIT = re.compile(r",(?=\s*\w+\s*=)")   # the commas between pairs, not those inside ap_fixed<...>


def _split_multiplier(spec: str):
    """(spec without its ``mul=`` pair, the multiplier name: "exact" when absent)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"precision: expected a spec string such as 'float32', 'fixed16' or "
                         f"'act=ap_fixed<16,6>,...', got {spec!r}")
    parts = _PAIR_SPLIT.split(spec.strip())
    muls = [p.split("=", 1)[1].strip() for p in parts if p.split("=", 1)[0].strip() == "mul"]
    if len(muls) > 1:
        raise ValueError(f"precision: mul= given {len(muls)} times in {spec!r}; give it once")
    rest = ",".join(p for p in parts if p.split("=", 1)[0].strip() != "mul").strip()
    return rest or "float32", muls[0] if muls else "exact"


def multiplier(spec: str) -> str:
    """The MAC multiplier of ``spec`` (its ``mul=`` pair; "exact" when absent), validated."""
    parse_precision(spec)
    return _split_multiplier(spec)[1]


def parse_precision(spec: str) -> Dict[str, str]:
    """``{class: C++ type}`` for every class of :data:`CLASSES` (see the module docstring).

    A ``mul=`` pair is checked (a known multiplier, float32 MAC classes) and
    left out of the result; :func:`multiplier` returns it.
    """
    from ...models.multipliers import check_multiplier
    types_spec, mul = _split_multiplier(spec)
    out = _parse_types(types_spec, spec)
    check_multiplier(mul)
    if mul != "exact" and any(out[c] != "float" for c in ("act", "wgt", "grad", "acc")):
        raise ValueError(f"precision: mul={mul} is a float32 multiplier; act, wgt, grad and acc must be float32, "
                         f"got {spec!r}")
    return out


def _parse_types(text: str, spec: str) -> Dict[str, str]:
    text = SHORTHANDS.get(text, text)
    out = {c: "float" for c in CLASSES}
    if "=" not in text:
        t = _parse_type("", text)
        if t == "float":
            return out
        w, i, q, o = _FIXED.match(t).groups()
        wide = f"ap_fixed<{min(64, 2 * int(w))},{min(64, 2 * int(i))},{q},{o}>"
        return {"act": t, "wgt": t, "grad": t, "acc": wide, "opt": "float"}
    # split on the commas between pairs, not those inside ap_fixed<...>
    for pair in _PAIR_SPLIT.split(text):
        if "=" not in pair:
            raise ValueError(f"precision: expected class=type pairs separated by commas, got {pair!r} in {spec!r}")
        cls, value = (p.strip() for p in pair.split("=", 1))
        if cls not in CLASSES:
            raise ValueError(f"precision: unknown tensor class {cls!r}; allowed: {', '.join(CLASSES)}")
        out[cls] = _parse_type(cls, value)
    mac = ("act", "wgt", "grad", "acc")
    if len({out[c] == "float" for c in mac}) > 1:
        raise ValueError(f"precision: act, wgt, grad and acc must be all float32 or all ap_fixed (the MAC engines "
                         f"add products of act/wgt/grad into acc_t; only opt may differ), got "
                         f"{', '.join(f'{c}={out[c]}' for c in mac)}")
    return out


def precision_types(spec: str, table_dir=None) -> Dict[str, str]:
    """The macros (``ZSKIP_*_T`` -> type) to compile the kernels for ``spec``; float32 classes omitted.

    A ``mul=`` other than exact adds ``ZSKIP_MUL_T`` (the multiplier functor of
    ``hls/common/multipliers.h`` that ``types.h`` makes ``mul_t``); ``lut:FILE``
    also ``ZSKIP_MUL_LUT_HEADER``, the table's C++ header (its ROM), written to
    ``table_dir`` (default: the compiled-library cache) under a name carrying a
    hash of the table, so the library's hash changes with the table.
    """
    mul = multiplier(spec)
    out = {CLASSES[c]: t for c, t in parse_precision(spec).items() if t != "float"}
    if mul != "exact":
        out.update(multiplier_macros(mul, table_dir))
    return out


#: multiplier name -> its functor in hls/common/multipliers.h (namespace zskip)
MUL_FUNCTORS = {"exact": "mul_exact", "bf16": "mul_bf16", "mitchell": "mul_mitchell", "lut": "mul_lut<mul_lut_table>"}


def multiplier_macros(mul: str, table_dir=None) -> Dict[str, str]:
    """``{ZSKIP_MUL_T: functor}`` for multiplier ``mul`` (plus ``ZSKIP_MUL_LUT_HEADER`` for ``lut:FILE``)."""
    import hashlib
    from pathlib import Path
    from ...models.multipliers import check_multiplier, lut_cpp_header, read_lut
    mul = check_multiplier(mul)
    if not mul.startswith("lut:"):
        return {"ZSKIP_MUL_T": MUL_FUNCTORS[mul]}
    text = lut_cpp_header(read_lut(mul[4:]))
    if table_dir is None:
        from ...overlay.toolchain import cache_dir
        table_dir = cache_dir()
    header = Path(table_dir) / f"mul_lut_{hashlib.sha256(text.encode()).hexdigest()[:16]}.h"
    if not header.is_file() or header.read_text() != text:
        header.parent.mkdir(parents=True, exist_ok=True)
        tmp = header.with_name(f"{header.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, header)
    return {"ZSKIP_MUL_T": MUL_FUNCTORS["lut"], "ZSKIP_MUL_LUT_HEADER": f'"{header}"'}


#: integer bits of grad_t left above the largest scaled dlogit, for the gradients that grow
#: along the backward pass (weight gradients sum over the batch and the positions)
LOSS_SCALE_HEADROOM_BITS = 3

_GRAD_FIXED = re.compile(r"^ap_fixed<(\d+),(-?\d+),")


def loss_scale(spec: str, batch: int) -> float:
    """The loss scale (a power of two) for ``spec`` and a batch of ``batch`` samples.

    float32 gradients: 1. ap_fixed<W,I> gradients: |dlogits| <= 1 / batch, so
    S = 2^(floor(log2 batch) + I - 1 - LOSS_SCALE_HEADROOM_BITS) puts the largest
    possible dlogit LOSS_SCALE_HEADROOM_BITS bits below grad_t's limit 2^(I-1);
    the gradients then use grad_t's fraction bits instead of underflowing
    (static loss scaling, as in mixed-precision training, Micikevicius et al. 2018).
    """
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch: must be an integer >= 1, got {batch!r}")
    grad = parse_precision(spec)["grad"]
    if grad == "float":
        return 1.0
    i = int(_GRAD_FIXED.match(grad).group(2))
    return float(2.0 ** (int(np.floor(np.log2(batch))) + i - 1 - LOSS_SCALE_HEADROOM_BITS))


def is_float32(spec: str) -> bool:
    """Whether every class of ``spec`` is float32 (whatever its multiplier)."""
    return all(t == "float" for t in parse_precision(spec).values())
