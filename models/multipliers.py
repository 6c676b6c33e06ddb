"""Pluggable float32 multipliers: the numpy reference of ``hls/common/multipliers.h``.

``multiply(name, a, b)`` multiplies float32 arrays elementwise (numpy
broadcasting) with one of these multipliers; the HLS functors of the same
name agree with it bit for bit (``tests/test_multipliers.py``):

``exact``
    IEEE-754 binary32 multiplication, round to nearest even, subnormal
    operands and results handled (numpy's and C++'s ``float *``).
``bf16``
    Both operands rounded to bfloat16 (the upper 16 bits of a float32) with
    round to nearest, ties to even; then the IEEE float32 product of the two
    rounded values. Two 8-bit significands give a 16-bit product, which
    float32 holds exactly, so the product rounds only where it is subnormal
    (IEEE rounding, as float32 would) or overflows (to inf). Rounding an
    operand can itself overflow to inf (|a| >= 0x1.ff8p127 in bf16's RNE).
    Subnormal operands round like any other value (bf16 has float32's
    exponent range); a NaN operand gives a NaN. This is a bf16 multiplier
    feeding a float32 accumulator (the widening is exact).
``mitchell``
    Mitchell's logarithmic multiplier (Mitchell 1962) on the float fields:
    sign = sign_a xor sign_b; with a = 2^ea (1 + fa), b = 2^eb (1 + fb),
    log2(1 + f) ~ f gives 2^(ea+eb) (1 + fa + fb) when fa + fb < 1 and
    2^(ea+eb+1) (fa + fb) otherwise. In bits: the 23-bit fractions add, and
    the carry out of the sum increments the exponent (the sum's low 23 bits
    are the result's fraction), so nothing is rounded. The result never
    exceeds the exact product and is at most 1/9 (11.1 %) below it (at
    fa = fb = 1/2: 2 against 2.25).
``lut:FILE``
    ApproxTrain's AMSim form (Gong et al.): the top m bits i of a's
    fraction and j of b's index a table of mantissa products; entry
    T[(i << m) | j] holds a carry bit (bit m: the product of the significands
    is in [2, 4), exponent + 1) and the m fraction bits of the result's
    significand (bits m-1..0; the lower 23 - m fraction bits are zero). File
    format: see :func:`read_lut`; build one with ``bench/make_mul_lut.py``.

Special values of ``mitchell`` and ``lut`` (integer datapaths, as an
approximate hardware multiplier is built; the same policy as ApproxTrain's
simulator, with its gaps closed):

- subnormal operands are read as zero of their sign (denormals-are-zero);
- a result exponent below the normal range gives zero of the result's sign
  (flush to zero), above it infinity of the result's sign (overflow);
- zero times a finite value: zero with sign_a xor sign_b;
- infinity times a nonzero (or infinite) value: infinity with the xor sign;
- infinity times zero (or a subnormal), and any NaN operand: the quiet NaN
  0x7FC00000.

``exact`` and ``bf16`` follow IEEE-754 for all of these (NaN payloads are
not specified; compare NaN as a class). On a board, the Xilinx
floating-point core of ``float *`` flushes subnormals; the C simulation
does not, for ``exact`` as before this module existed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Tuple

import numpy as np

__all__ = ["MULTIPLIERS", "multiply", "check_multiplier", "bf16_round", "LutTable", "read_lut", "write_lut",
           "lut_from_model", "LUT_MODELS", "lut_cpp_header", "LUT_MAX_MANT_BITS"]

#: multiplier names (``lut:FILE`` takes the path of a table file)
MULTIPLIERS = ("exact", "bf16", "mitchell", "lut:FILE")
#: largest m of a table (4^12 two-byte entries = 32 MiB)
LUT_MAX_MANT_BITS = 12

_U32 = np.uint32
_SIGN = _U32(0x80000000)
_INF = _U32(0x7F800000)
_QNAN = _U32(0x7FC00000)
_FRAC = _U32(0x007FFFFF)


def _as_f32(name: str, a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.float32:
        raise TypeError(f"{name}: multiply takes float32 arrays, got dtype {a.dtype}")
    return a


def bf16_round(a) -> np.ndarray:
    """float32 array -> float32 array holding a rounded to bfloat16 (round to nearest even; NaN stays NaN)."""
    a = _as_f32("a", a)
    u = np.ascontiguousarray(a).view(_U32)
    with np.errstate(over="ignore"):
        # adding 0x7FFF plus the lowest kept bit rounds half to even; a carry out of
        # the fraction moves into the exponent (up to inf), as bf16's RNE does
        r = (u + _U32(0x7FFF) + ((u >> _U32(16)) & _U32(1))) & _U32(0xFFFF0000)
    r = np.where(np.isnan(a), _QNAN, r).astype(_U32)
    return r.view(np.float32).reshape(a.shape)


def _approximate(a: np.ndarray, b: np.ndarray, fraction_product: Callable) -> np.ndarray:
    """The shared sign / exponent / special-value logic of mitchell and lut (module docstring).

    ``fraction_product(fa, fb)`` takes the 23-bit fraction fields (uint32) and
    returns (carry, fraction) of the approximate significand product. The
    normal case is computed everywhere; the few elements with a special
    operand or an out-of-range exponent are then redone by the full rules.
    """
    shape = np.broadcast_shapes(a.shape, b.shape)
    # fields of each operand at its own size (an im2col operand is broadcast many times over)
    ua, ub = np.ascontiguousarray(a).view(_U32), np.ascontiguousarray(b).view(_U32)
    ea, eb = (ua >> _U32(23)) & _U32(0xFF), (ub >> _U32(23)) & _U32(0xFF)
    fa, fb = ua & _FRAC, ub & _FRAC
    carry, frac = fraction_product(fa, fb)        # full shape from here on
    sign = (ua & _SIGN) ^ (ub & _SIGN)
    with np.errstate(over="ignore"):
        e = ea + eb + carry - _U32(127)           # wraps below zero: caught by the range test
        out = sign | (e << _U32(23)) | frac
    zero = (ea == 0) | (eb == 0)                  # zeros and subnormals (denormals-are-zero): common in ReLU nets
    out = np.where(zero, sign, out)
    # the rare rest: an inf/NaN operand, or a result outside the normal range ((e - 1) mod 2^32 >= 254)
    with np.errstate(over="ignore"):
        special = (ea == _U32(255)) | (eb == _U32(255)) | (((e - _U32(1)) >= _U32(254)) & ~zero)
    k = np.nonzero(special)
    if k[0].size:
        full = lambda v: np.broadcast_to(v, shape)[k]
        sk, eak, ebk, fak, fbk = sign[k], full(ea), full(eb), full(fa), full(fb)
        ek = eak.astype(np.int32) + ebk.astype(np.int32) - 127 + carry[k].astype(np.int32)
        fix = np.where(ek >= 255, sk | _INF, np.where(ek <= 0, sk, out[k]))
        zero_a, zero_b = eak == 0, ebk == 0
        inf_a, inf_b = (eak == 255) & (fak == 0), (ebk == 255) & (fbk == 0)
        nan = ((eak == 255) & (fak != 0)) | ((ebk == 255) & (fbk != 0)) | (inf_a & zero_b) | (inf_b & zero_a)
        fix = np.where(zero_a | zero_b, sk, fix)
        fix = np.where(inf_a | inf_b, sk | _INF, fix)
        out[k] = np.where(nan, _QNAN, fix)
    return out.view(np.float32).reshape(shape)


def _mitchell_fractions(fa, fb):
    s = fa + fb                                   # < 2^24: the carry is bit 23
    return s >> _U32(23), s & _FRAC


# ----------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class LutTable:
    """A table of mantissa products: ``entries`` uint16 (4^m,), index (i << m) | j (module docstring)."""
    mant_bits: int
    entries: np.ndarray
    source: str = ""

    def fraction_product(self, fa, fb):
        m = self.mant_bits
        shift = _U32(23 - m)
        e = self.entries[((fa >> shift) << _U32(m)) | (fb >> shift)].astype(_U32)
        return e >> _U32(m), (e & _U32((1 << m) - 1)) << shift


def _entry_bytes(m: int) -> int:
    return 1 if m <= 7 else 2


def _check_entries(entries: np.ndarray, m: int, where: str) -> np.ndarray:
    if not 1 <= m <= LUT_MAX_MANT_BITS:
        raise ValueError(f"{where}: mantissa bits m must be in [1, {LUT_MAX_MANT_BITS}], got {m}")
    entries = np.asarray(entries)
    if entries.shape != (4 ** m,):
        raise ValueError(f"{where}: a table for m = {m} has 4^m = {4 ** m} entries, got shape {entries.shape}")
    if entries.size and (entries.min() < 0 or entries.max() >= 2 ** (m + 1)):
        raise ValueError(f"{where}: entries must be (m + 1)-bit values in [0, {2 ** (m + 1) - 1}] "
                         f"(carry bit m, fraction bits m-1..0), got up to {int(entries.max())}")
    return entries.astype(np.uint16)


def write_lut(path, entries, mant_bits: int) -> Path:
    """Write a table file (format of :func:`read_lut`); returns the path."""
    entries = _check_entries(entries, int(mant_bits), "lut")
    dtype = "<u1" if _entry_bytes(mant_bits) == 1 else "<u2"
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    entries.astype(dtype).tofile(tmp)
    os.replace(tmp, path)
    return path


def read_lut(path) -> LutTable:
    """A table file: raw little-endian entries, 4^m of them, index (i << m) | j.

    One byte per entry for m <= 7 (ApproxTrain's uint8 tables: bit 7 the
    carry for m = 7), two bytes for 8 <= m <= 12; m follows from the size
    (4^m bytes or 2 * 4^m bytes, never both). Entry: bit m the carry, bits
    m-1..0 the result's top fraction bits.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"mul: lut table file {str(path)!r} not found")
    st = path.stat()
    return _read_lut_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=8)
def _read_lut_cached(path: str, size: int, mtime_ns: int) -> LutTable:
    for m in range(1, LUT_MAX_MANT_BITS + 1):
        if size == 4 ** m * _entry_bytes(m):
            raw = np.fromfile(path, dtype="<u1" if _entry_bytes(m) == 1 else "<u2")
            return LutTable(m, _check_entries(raw, m, f"mul: lut {path}"), path)
    sizes = ", ".join(f"{4 ** m * _entry_bytes(m)} (m={m})" for m in range(1, 9))
    raise ValueError(f"mul: lut {path} has {size} bytes; a table has 4^m entries of 1 byte (m <= 7) or 2 bytes "
                     f"(8 <= m <= {LUT_MAX_MANT_BITS}): {sizes}, ...")


def _model_exact(x, y):
    return x * y


def _model_mitchell(x, y):
    s = x + y - 1.0                               # 1 + fx + fy
    return np.where(s < 2.0, s, 2.0 * (s - 1.0))


#: functional models of the significand product p(x, y), x, y in [1, 2) -> [1, 4)
LUT_MODELS = {"exact": _model_exact, "mitchell": _model_mitchell}


def lut_from_model(model: Callable, mant_bits: int) -> np.ndarray:
    """Table entries (uint16, (4^m,)) of a functional model of the significand product.

    ``model(x, y)`` takes float64 arrays of significands x = 1 + i / 2^m,
    y = 1 + j / 2^m (the operands' fractions truncated to m bits, as the
    table index truncates them) and returns their approximate product in
    [1, 4). Products in [2, 4) set the carry and are halved; the fraction is
    truncated to m bits (a hardware unit keeps the top bits).
    """
    m = int(mant_bits)
    if not 1 <= m <= LUT_MAX_MANT_BITS:
        raise ValueError(f"mant_bits: must be in [1, {LUT_MAX_MANT_BITS}], got {mant_bits!r}")
    k = np.arange(2 ** m, dtype=np.float64)
    x = np.repeat(1.0 + k / 2 ** m, 2 ** m)      # index (i << m) | j: i the slow axis
    y = np.tile(1.0 + k / 2 ** m, 2 ** m)
    p = np.asarray(model(x, y), dtype=np.float64)
    if p.shape != x.shape or not np.all((p >= 1.0) & (p < 4.0)):
        bad = p[~((p >= 1.0) & (p < 4.0))] if p.shape == x.shape else p.shape
        raise ValueError(f"model: must return one product in [1, 4) per operand pair, got {bad!r:.80}")
    carry = (p >= 2.0).astype(np.int64)
    frac = np.floor((p / (1.0 + carry) - 1.0) * 2 ** m).astype(np.int64)
    return ((carry << m) | frac).astype(np.uint16)


def lut_cpp_header(table: LutTable, struct_name: str = "mul_lut_table") -> str:
    """C++ header text defining ``struct_name`` for ``zskip::mul_lut<struct_name>`` (hls/common/multipliers.h).

    The entries become a function-local ``static const`` array: a ROM in
    Vitis HLS, baked in at compile time.
    """
    m = table.mant_bits
    width = m + 1
    body = ",\n".join(", ".join(str(int(v)) for v in table.entries[r:r + 16])
                      for r in range(0, table.entries.size, 16))
    guard = f"ZSKIP_{struct_name.upper()}_H"
    return (f"// Generated by bench/make_mul_lut.py from {os.path.basename(table.source) or 'a model'}: "
            f"m = {m} mantissa bits.\n"
            f"#ifndef {guard}\n#define {guard}\n\n#include <ap_int.h>\n\n"
            f"struct {struct_name} {{\n"
            f"    static const unsigned mant_bits = {m};\n"
            f"    // entry (i << m) | j: bit m the carry, bits m-1..0 the result's top fraction bits\n"
            f"    static ap_uint<{width}> entry(ap_uint<{2 * m}> index) {{\n"
            f"        // a static const array is a ROM in Vitis HLS (UG1399, arrays)\n"
            f"        static const unsigned short rom[{table.entries.size}] = {{\n{body}}};\n"
            f"        return rom[index];\n"
            f"    }}\n}};\n\n#endif\n")


# ----------------------------------------------------------------------------- the entry point
def check_multiplier(name) -> str:
    """``name`` if it names a multiplier (loading a lut table checks the file); ValueError otherwise."""
    if isinstance(name, str) and name in ("exact", "bf16", "mitchell"):
        return name
    if isinstance(name, str) and name.startswith("lut:") and len(name) > 4:
        read_lut(name[4:])
        return name
    raise ValueError(f"mul: unknown multiplier {name!r}; allowed: {', '.join(MULTIPLIERS)}")


def multiply(name: str, a, b) -> np.ndarray:
    """Elementwise product of float32 arrays a and b (broadcast) with multiplier ``name`` (module docstring)."""
    name = check_multiplier(name)
    a, b = _as_f32("a", a), _as_f32("b", b)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):   # inf and NaN are results here
        if name == "exact":
            return np.multiply(a, b, dtype=np.float32)
        if name == "bf16":
            return np.multiply(bf16_round(a), bf16_round(b), dtype=np.float32)
    if name == "mitchell":
        return _approximate(a, b, _mitchell_fractions)
    return _approximate(a, b, read_lut(name[4:]).fraction_product)
