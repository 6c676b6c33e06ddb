"""Pluggable multipliers: the numpy reference against independent float64 computations, and the HLS
functors (hls/common/multipliers.h, compiled by g++ like the emulator) against the reference bit for bit."""
import ctypes
import importlib.util
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from zskip.models import multipliers as M

ROOT = Path(__file__).resolve().parents[1]
U32 = np.uint32

#: every class of float32 value, both signs
SPECIALS = np.array([0x00000000, 0x00000001, 0x00400000, 0x007FFFFF, 0x00800000, 0x00800001, 0x3F800000,
                     0x3FC00000, 0x3FFFFFFF, 0x3F808000, 0x3F818000, 0x3F817FFF, 0x1F800000, 0x20000000,
                     0x5F800000, 0x60000000, 0x7F7FFFFF, 0x7F7F8000, 0x7F7F7FFF, 0x7F800000, 0x7FC00000,
                     0x7F800001, 0x7FFFFFFF, 0x7F808000], U32)
SPECIALS = np.concatenate([SPECIALS, SPECIALS | U32(0x80000000)]).view(np.float32)


def operands(n=20000, seed=0):
    """(a, b) float32: every pair of SPECIALS, random bit patterns (all classes) and random normal values."""
    rng = np.random.default_rng(seed)
    a_s, b_s = (g.reshape(-1) for g in np.meshgrid(SPECIALS, SPECIALS))
    bits = rng.integers(0, 2 ** 32, (2, n), dtype=np.uint64).astype(U32).view(np.float32)
    # exponents near the bias so that most products are normal, fractions random
    normal = (rng.standard_normal((2, n)) * np.exp2(rng.integers(-20, 20, (2, n)))).astype(np.float32)
    a = np.concatenate([a_s, bits[0], normal[0]])
    b = np.concatenate([b_s, bits[1], normal[1]])
    return a, b


def same_bits(x, y):
    """Equal bit patterns, or both NaN (NaN payloads are not specified)."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    return (x.view(U32) == y.view(U32)) | (np.isnan(x) & np.isnan(y))


def assert_same(x, y, a, b):
    ok = same_bits(x, y)
    if not ok.all():
        k = int(np.argmin(ok))
        raise AssertionError(f"{(~ok).sum()} mismatches; first: a={a[k]!r} ({a[k:k+1].view(U32)[0]:#010x}), "
                             f"b={b[k]!r} ({b[k:k+1].view(U32)[0]:#010x}): {x[k]!r} vs {y[k]!r}")


# ----------------------------------------------------------------------------- independent float64 models
def ftz_f32(v: float) -> float:
    """A float64 value that is exact in float32's normal range, flushed / saturated as the integer multipliers do."""
    if v != 0 and abs(v) < 2.0 ** -126:
        return math.copysign(0.0, v)
    if abs(v) >= 2.0 ** 128:
        return math.copysign(math.inf, v)
    return v


def approximate_scalar(a: float, b: float, significand_product) -> float:
    """Special-value policy of mitchell/lut written with float64 arithmetic (module docstring of multipliers)."""
    sign = -1.0 if (math.copysign(1, a) < 0) != (math.copysign(1, b) < 0) else 1.0
    za, zb = abs(a) < 2.0 ** -126, abs(b) < 2.0 ** -126      # zeros and subnormals
    if math.isnan(a) or math.isnan(b) or (math.isinf(a) and zb) or (math.isinf(b) and za):
        return math.nan
    if math.isinf(a) or math.isinf(b):
        return sign * math.inf
    if za or zb:
        return sign * 0.0
    ma, ea = math.frexp(abs(a))       # |a| = ma 2^ea, ma in [0.5, 1): significand 2 ma, exponent ea - 1
    mb, eb = math.frexp(abs(b))
    return ftz_f32(sign * math.ldexp(significand_product(2 * ma - 1, 2 * mb - 1), ea + eb - 2))


def mitchell_significands(fa, fb):
    return 1 + fa + fb if fa + fb < 1 else 2 * (fa + fb)


def bf16_independent(a: float) -> float:
    """a rounded to bfloat16 with float64 arithmetic: 8 significant bits, ties to even, bf16 subnormals below 2^-126."""
    if math.isnan(a) or math.isinf(a) or a == 0:
        return a
    m, e = math.frexp(abs(a))
    ulp = 2.0 ** (max(e, -125) - 8)   # 8 significant bits; the subnormal ulp 2^-133 below 2^-126
    q = abs(a) / ulp
    r = math.floor(q)
    if q - r > 0.5 or (q - r == 0.5 and r % 2 == 1):
        r += 1
    v = r * ulp
    if v >= 2.0 ** 128:
        v = math.inf
    return math.copysign(v, a)


# ----------------------------------------------------------------------------- numpy reference
def test_exact_is_ieee_float32():
    a, b = operands()
    with np.errstate(all="ignore"):
        expected = (a.astype(np.float64) * b.astype(np.float64)).astype(np.float32)
    assert_same(M.multiply("exact", a, b), expected, a, b)


def test_bf16_matches_an_independent_rounding():
    a, b = operands(5000)
    ra = np.array([bf16_independent(float(v)) for v in a])
    rb = np.array([bf16_independent(float(v)) for v in b])
    assert np.all((M.bf16_round(a).view(U32) & U32(0xFFFF)) == 0)
    assert_same(M.bf16_round(a), ra.astype(np.float32), a, a)
    with np.errstate(all="ignore"):
        # a product of two 8-bit significands is exact in float64; one rounding to float32 follows
        expected = (ra * rb).astype(np.float32)
    assert_same(M.multiply("bf16", a, b), expected, a, b)
    # ties to even and the carry into the exponent
    t = np.array([0x3F808000, 0x3F818000, 0x3F817FFF, 0x7F7FFFFF], U32).view(np.float32)
    assert list(M.bf16_round(t).view(U32)) == [0x3F800000, 0x3F820000, 0x3F810000, 0x7F800000]


def test_mitchell_matches_the_logarithmic_formula():
    a, b = operands(5000)
    expected = np.array([approximate_scalar(float(x), float(y), mitchell_significands) for x, y in zip(a, b)])
    assert_same(M.multiply("mitchell", a, b), expected.astype(np.float32), a, b)


def test_mitchell_special_values():
    f = np.float32
    mul = lambda x, y: M.multiply("mitchell", np.array([x], f), np.array([y], f))[0]
    sub = np.array([1], U32).view(f)[0]
    assert mul(-0.0, 3.0) == 0 and np.signbit(mul(-0.0, 3.0)) and not np.signbit(mul(-0.0, -3.0))
    assert mul(sub, 2.0 ** 100) == 0                    # a subnormal reads as zero
    assert np.isnan(mul(np.inf, 0.0)) and np.isnan(mul(np.inf, -sub)) and np.isnan(mul(np.nan, 1.0))
    assert mul(-np.inf, 2.0) == -np.inf and mul(-np.inf, -np.inf) == np.inf
    assert mul(2.0 ** 100, 2.0 ** 100) == np.inf and mul(-(2.0 ** 100), 2.0 ** 100) == -np.inf
    r = mul(2.0 ** -70, -(2.0 ** -70))                  # 2^-140 flushes to -0
    assert r == 0 and np.signbit(r)
    assert mul(2.0 ** -63, 2.0 ** -63) == f(2.0 ** -126)  # the smallest normal stays
    assert mul(1.5, 1.5) == 2.0 and mul(1.25, 1.5) == 1.75 and mul(3.0, 0.5) == 1.5


def test_mitchell_error_bound():
    """Mitchell never overestimates and stays within 1/9 (11.1 %) below the exact product; 1.5 x 1.5 reaches it."""
    rng = np.random.default_rng(5)
    a = (rng.uniform(-4, 4, 200000) * np.exp2(rng.integers(-30, 30, 200000))).astype(np.float32)
    b = (rng.uniform(-4, 4, 200000) * np.exp2(rng.integers(-30, 30, 200000))).astype(np.float32)
    exact = a.astype(np.float64) * b.astype(np.float64)
    rel = (M.multiply("mitchell", a, b).astype(np.float64) - exact) / exact
    assert rel.max() <= 0 and rel.min() >= -1 / 9 - 1e-12 and rel.min() < -0.11
    assert M.multiply("mitchell", np.float32([1.5]), np.float32([-3.0]))[0] == -4.0  # -4.5 exact: -1/9


def test_multiply_rejects_bad_names_and_dtypes(tmp_path):
    with pytest.raises(ValueError, match=r"mul: unknown multiplier 'log'; allowed: exact, bf16, mitchell, lut:FILE"):
        M.multiply("log", np.ones(1, np.float32), np.ones(1, np.float32))
    with pytest.raises(TypeError, match=r"a: multiply takes float32 arrays, got dtype float64"):
        M.multiply("exact", np.ones(1), np.ones(1, np.float32))
    with pytest.raises(ValueError, match=r"mul: lut table file .* not found"):
        M.multiply("lut:" + str(tmp_path / "none.bin"), np.ones(1, np.float32), np.ones(1, np.float32))
    (tmp_path / "bad.bin").write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match=r"has 100 bytes; a table has 4\^m entries"):
        M.read_lut(tmp_path / "bad.bin")


# ----------------------------------------------------------------------------- tables
def make_table(tmp_path, model, m):
    path = tmp_path / f"{model}{m}.bin"
    M.write_lut(path, M.lut_from_model(M.LUT_MODELS[model], m), m)
    return path


@pytest.mark.parametrize("m", [3, 7, 8])
def test_lut_file_round_trip_and_size(tmp_path, m):
    path = make_table(tmp_path, "exact", m)
    assert path.stat().st_size == 4 ** m * (1 if m <= 7 else 2)
    t = M.read_lut(path)
    assert t.mant_bits == m and np.array_equal(t.entries, M.lut_from_model(M.LUT_MODELS["exact"], m))


@pytest.mark.parametrize("m", [4, 7])
def test_lut_of_the_exact_model_is_a_truncating_multiplier(tmp_path, m):
    """lut from the exact model: the product of the operands' significands truncated to m fraction bits,
    normalised and truncated to m fraction bits (float64 formula)."""
    path = make_table(tmp_path, "exact", m)
    a, b = operands(3000, seed=1)

    def trunc_product(fa, fb):
        p = (1 + math.floor(fa * 2 ** m) / 2 ** m) * (1 + math.floor(fb * 2 ** m) / 2 ** m)
        scale = 2.0 if p >= 2 else 1.0
        return scale * (1 + math.floor((p / scale - 1) * 2 ** m) / 2 ** m)
    expected = np.array([approximate_scalar(float(x), float(y), trunc_product) for x, y in zip(a, b)])
    assert_same(M.multiply(f"lut:{path}", a, b), expected.astype(np.float32), a, b)


def test_lut_of_the_mitchell_model_is_mitchell_on_truncated_operands(tmp_path):
    m = 6
    path = make_table(tmp_path, "mitchell", m)
    a, b = operands(seed=2)
    keep = U32(~((1 << (23 - m)) - 1) & 0xFFFFFFFF)
    trunc = lambda v: np.where(np.isnan(v), v, (v.view(U32) & keep).view(np.float32))
    assert_same(M.multiply(f"lut:{path}", a, b), M.multiply("mitchell", trunc(a), trunc(b)), a, b)


def _load_script():
    spec = importlib.util.spec_from_file_location("make_mul_lut", ROOT / "bench" / "make_mul_lut.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generator_script_from_a_cxx_model_and_a_python_model(tmp_path):
    script = _load_script()
    src = tmp_path / "model.cpp"
    src.write_text('extern "C" double zskip_mul_model(double x, double y) { return x + y - 1.0 < 2.0 ? '
                   'x + y - 1.0 : 2.0 * (x + y - 2.0); }\n')
    assert script.main(["--cxx", str(src), "--bits", "5", "-o", str(tmp_path / "c.bin")]) == 0
    assert script.main(["--model", "mitchell", "--bits", "5", "-o", str(tmp_path / "p.bin"),
                        "--header", str(tmp_path / "p.h")]) == 0
    assert (tmp_path / "c.bin").read_bytes() == (tmp_path / "p.bin").read_bytes()
    assert "static const unsigned mant_bits = 5;" in (tmp_path / "p.h").read_text()
    assert script.main(["--model", "nomodule", "--bits", "5", "-o", str(tmp_path / "x.bin")]) == 2


# ----------------------------------------------------------------------------- HLS functors
MUL_IDS = {"exact": 0, "bf16": 1, "mitchell": 2, "lut": 3}


@pytest.fixture(scope="module")
def hls_multipliers(tmp_path_factory):
    """hls/emu/multipliers_bridge.cpp compiled with g++ and the emulator's ap_types, a 7-bit exact-model table baked in."""
    from zskip.overlay.toolchain import ap_types_dir
    tmp = tmp_path_factory.mktemp("mul")
    table = make_table(tmp, "exact", 7)
    (tmp / "table.h").write_text(M.lut_cpp_header(M.read_lut(table)))
    lib = tmp / "libmul.so"
    cmd = ["g++", "-O2", "-fPIC", "-shared", "-std=c++14", f"-I{ap_types_dir()}",
           f'-DZSKIP_MUL_LUT_HEADER="{tmp / "table.h"}"', str(ROOT / "hls" / "emu" / "multipliers_bridge.cpp"),
           "-o", str(lib)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    dll = ctypes.CDLL(str(lib))
    ptr = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
    dll.zskip_multiply.argtypes = [ctypes.c_uint32, ptr, ptr, ptr, ctypes.c_uint32]
    dll.zskip_multiply.restype = ctypes.c_int

    def run(name, a, b):
        out = np.empty_like(a)
        assert dll.zskip_multiply(MUL_IDS[name], a, b, out, a.size) == 0
        return out
    return run, table


@pytest.mark.parametrize("name", ["exact", "bf16", "mitchell", "lut"])
def test_hls_functor_equals_the_reference_bit_for_bit(hls_multipliers, name):
    run, table = hls_multipliers
    a, b = operands(50000, seed=3)
    ref = M.multiply(f"lut:{table}" if name == "lut" else name, a, b)
    assert_same(run(name, a, b), ref, a, b)
