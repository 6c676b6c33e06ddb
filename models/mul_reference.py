"""The convolution and fully-connected passes with a pluggable multiplier (``zskip.models.multipliers``).

The same functions as ``zskip.models.reference`` with a multiplier name
``mul`` as last argument, written as im2col + a matrix product whose
elementwise products come from ``multipliers.multiply``:

- operands: float32 (inputs are converted); each product is the
  multiplier's float32 result for (first operand, second operand) =
  (x, w) forward, (dy, w) backward-data, (dy, x) backward-weight;
- summation order: every product of one output is added in float64 and the
  sum is rounded once to float32 (so the result does not depend on the order
  of the additions, to float64 rounding; an engine adding in float32 in its
  own order differs from it by float32 rounding only); backward-data's
  col2im adds in float64 too; the bias is added to the rounded sum in
  float32; ``db`` is a plain float32 sum of dy (no multiplier).

With ``mul="exact"`` the results equal the reference to float32 rounding
(test). Memory: products are formed in chunks of at most 2^22.
"""
from __future__ import annotations

import numpy as np

from . import reference as R
from .multipliers import multiply

__all__ = ["matmul", "conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight", "linear_forward",
           "linear_backward_data", "linear_backward_weight"]

_CHUNK = 1 << 22


def matmul(a, b, mul: str) -> np.ndarray:
    """float64 (M, K): out[m, k] = sum over l of multiply(mul, a[m, l], b[l, k]); a (M, L), b (L, K) float32."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: expected (M, L) and (L, K) operands, got {a.shape} and {b.shape}")
    m, l = a.shape
    k = b.shape[1]
    out = np.empty((m, k), np.float64)
    step = max(1, _CHUNK // max(1, l * k))
    for s in range(0, m, step):
        out[s:s + step] = multiply(mul, a[s:s + step, :, None], b[None, :, :]).sum(axis=1, dtype=np.float64)
    return out


def _cols(x, r, s, stride, pad, oh, ow):
    """im2col: (N * OH * OW, C * R * S) of x's receptive fields, rows (n, oh, ow), columns (c, r, s)."""
    win = R._windows(np.asarray(x, np.float32), r, s, stride, pad)[:, :, :oh, :ow]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(x.shape[0] * oh * ow, -1)


def conv2d_forward(x, w, b, stride: int = 1, pad: int = 0, mul: str = "exact") -> np.ndarray:
    """y (N, K, OH, OW) float32 = conv(x (N, C, H, W), w (K, C, R, S)) + b (K,), products by ``mul``."""
    x, w, b = R.check_array("x", x, 4), R.check_array("w", w, 4), R.check_array("b", b, 1)
    n, k, oh, ow = R.conv_output_shape(x.shape, w.shape, stride, pad)
    if b.shape != (k,):
        raise ValueError(f"b: expected shape ({k},), got {b.shape}")
    y = matmul(_cols(x, w.shape[2], w.shape[3], stride, pad, oh, ow), w.reshape(k, -1).T, mul)
    y = y.astype(np.float32).reshape(n, oh, ow, k).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(y) + b.astype(np.float32)[None, :, None, None]


def conv2d_backward_data(dy, w, x_shape, stride: int = 1, pad: int = 0, mul: str = "exact") -> np.ndarray:
    """dx (N, C, H, W) float32 from dy (N, K, OH, OW) and w (K, C, R, S), products by ``mul``."""
    dy, w = R.check_array("dy", dy, 4), R.check_array("w", w, 4)
    n, k, oh, ow = R.conv_output_shape(x_shape, w.shape, stride, pad)
    if dy.shape != (n, k, oh, ow):
        raise ValueError(f"dy: expected shape {(n, k, oh, ow)}, got {dy.shape}")
    _, c, h, wd = x_shape
    r, s = w.shape[2:]
    cols = matmul(dy.transpose(0, 2, 3, 1).reshape(-1, k), w.reshape(k, -1), mul)   # (N OH OW, C R S)
    cols = cols.reshape(n, oh, ow, c, r, s).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((n, c, h + 2 * pad + stride, wd + 2 * pad + stride), np.float64)
    for i in range(r):
        for j in range(s):
            dxp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += cols[:, :, i, j]
    return np.ascontiguousarray(dxp[:, :, pad:pad + h, pad:pad + wd]).astype(np.float32)


def conv2d_backward_weight(x, dy, w_shape, stride: int = 1, pad: int = 0, mul: str = "exact"):
    """(dw (K, C, R, S), db (K,)) float32 from x (N, C, H, W) and dy (N, K, OH, OW), products by ``mul``."""
    x, dy = R.check_array("x", x, 4), R.check_array("dy", dy, 4)
    n, k, oh, ow = R.conv_output_shape(x.shape, w_shape, stride, pad)
    if dy.shape != (n, k, oh, ow):
        raise ValueError(f"dy: expected shape {(n, k, oh, ow)}, got {dy.shape}")
    cols = _cols(x, w_shape[2], w_shape[3], stride, pad, oh, ow)
    dw = matmul(dy.transpose(1, 0, 2, 3).reshape(k, -1), cols, mul)
    return dw.astype(np.float32).reshape(w_shape), dy.astype(np.float32).sum(axis=(0, 2, 3))


def linear_forward(x, w, b, mul: str = "exact") -> np.ndarray:
    """y (N, J) = x (N, I) w (J, I)^T + b (J,), products by ``mul``."""
    x, w, b = R.check_array("x", x, 2), R.check_array("w", w, 2), R.check_array("b", b, 1)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"w: has {w.shape[1]} inputs but x has {x.shape[1]} features")
    if b.shape != (w.shape[0],):
        raise ValueError(f"b: expected shape ({w.shape[0]},), got {b.shape}")
    return matmul(x, w.T, mul).astype(np.float32) + b.astype(np.float32)


def linear_backward_data(dy, w, mul: str = "exact") -> np.ndarray:
    """dx (N, I) = dy (N, J) w (J, I), products by ``mul``."""
    dy, w = R.check_array("dy", dy, 2), R.check_array("w", w, 2)
    return matmul(dy, w, mul).astype(np.float32)


def linear_backward_weight(x, dy, mul: str = "exact"):
    """(dw (J, I), db (J,)) from x (N, I) and dy (N, J), products by ``mul``."""
    x, dy = R.check_array("x", x, 2), R.check_array("dy", dy, 2)
    return matmul(dy.T, x, mul).astype(np.float32), dy.astype(np.float32).sum(axis=0)
