"""Build a multiplier table for ``--precision float32,mul=lut:FILE`` (ApproxTrain's AMSim form).

    python bench/make_mul_lut.py --model mitchell --bits 7 -o mitchell7.bin [--header mitchell7.h]
    python bench/make_mul_lut.py --model mymodels:drum --bits 7 -o drum7.bin     # a Python function
    python bench/make_mul_lut.py --cxx my_mul.cpp --bits 8 -o my8.bin             # a C++ function

The functional model gives the approximate product p(x, y) in [1, 4) of two
significands x = 1 + i / 2^m, y = 1 + j / 2^m (the operands' fractions
truncated to m bits, as the table index truncates them):

- ``--model exact`` or ``mitchell`` (``zskip.models.multipliers.LUT_MODELS``),
  or ``MODULE:FUNCTION``, a Python function on float64 numpy arrays;
- ``--cxx FILE.cpp``: a C++ source defining
  ``extern "C" double zskip_mul_model(double x, double y)``, compiled with g++.

The table file is described in ``zskip.models.multipliers.read_lut``;
``--header`` also writes the C++ header (``struct mul_lut_table``) that
``zskip::mul_lut<mul_lut_table>`` of ``hls/common/multipliers.h`` reads as a ROM.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from zskip.models.multipliers import LUT_MODELS, LutTable, lut_cpp_header, lut_from_model, read_lut, write_lut

_CXX_DRIVER = r"""
extern "C" double zskip_mul_model(double x, double y);
extern "C" void zskip_mul_model_fill(const double *x, const double *y, double *p, long n) {
    for (long k = 0; k < n; ++k) p[k] = zskip_mul_model(x[k], y[k]);
}
"""


def python_model(spec: str):
    """A builtin model name or ``MODULE:FUNCTION``."""
    if spec in LUT_MODELS:
        return LUT_MODELS[spec]
    module, sep, func = spec.partition(":")
    if not sep or not module or not func:
        raise ValueError(f"--model: expected one of {', '.join(LUT_MODELS)} or MODULE:FUNCTION, got {spec!r}")
    return getattr(importlib.import_module(module), func)


def cxx_model(source):
    """The function ``zskip_mul_model`` of a C++ source, vectorised over numpy float64 arrays."""
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise ValueError(f"--cxx: C++ compiler {cxx!r} not found on PATH")
    tmp = Path(tempfile.mkdtemp(prefix="zskip_mul_model_"))
    driver, lib = tmp / "driver.cpp", tmp / "model.so"
    driver.write_text(_CXX_DRIVER)
    cmd = [cxx, "-O2", "-fPIC", "-shared", str(source), str(driver), "-o", str(lib)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ValueError(f"--cxx: compiling the model failed:\n{' '.join(cmd)}\n{proc.stderr.strip()}")
    fill = ctypes.CDLL(str(lib)).zskip_mul_model_fill
    ptr = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
    fill.argtypes = [ptr, ptr, ptr, ctypes.c_long]
    fill.restype = None

    def model(x, y):
        x, y = np.ascontiguousarray(x, np.float64), np.ascontiguousarray(y, np.float64)
        p = np.empty_like(x)
        fill(x, y, p, x.size)
        return p
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help=f"{', '.join(LUT_MODELS)} or MODULE:FUNCTION (Python functional model)")
    src.add_argument("--cxx", metavar="FILE.cpp", help="C++ functional model (extern \"C\" zskip_mul_model)")
    p.add_argument("--bits", type=int, default=7, help="m, mantissa bits of each operand (default 7, as ApproxTrain)")
    p.add_argument("-o", "--output", required=True, help="table file to write")
    p.add_argument("--header", default=None, help="also write the C++ header here")
    args = p.parse_args(argv)
    try:
        model = python_model(args.model) if args.model else cxx_model(args.cxx)
        write_lut(args.output, lut_from_model(model, args.bits), args.bits)
        table = read_lut(args.output)
        if args.header:
            Path(args.header).write_text(lut_cpp_header(LutTable(table.mant_bits, table.entries, args.output)))
    except ValueError as e:
        print(f"make_mul_lut: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.output}: m = {table.mant_bits}, {table.entries.size} entries", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
