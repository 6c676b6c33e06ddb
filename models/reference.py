"""numpy software reference: the ground truth every backend is compared with.

Each forward sits next to its backward. Tensors are NCHW; convolution weights
are (K, C, R, S) (K output channels, C input channels, R x S kernel); linear
weights are (J, I) (J outputs, I inputs), as in PyTorch. Arithmetic happens in
the dtype of the inputs (float64 for gradient checks, float32 elsewhere).

The naive loop versions (``*_naive``) are kept as ground truth for the
vectorised ones; tests check that the two agree.

The sparsity accounting at the end (``conv_macs``, ``linear_macs``) defines the
figures every later report uses. A MAC is counted once per (output, tap) pair
whose input tap lies inside the image: taps that land in the zero padding are
never fetched by any mode of the kernels, so they are in neither count.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "conv_output_shape", "conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight",
    "conv2d_forward_naive", "conv2d_backward_data_naive", "conv2d_backward_weight_naive",
    "relu_forward", "relu_backward", "maxpool2d_forward", "maxpool2d_backward",
    "linear_forward", "linear_backward", "softmax_cross_entropy", "sgd_update",
    "BatchNormSaved", "batchnorm_forward", "batchnorm_backward", "batchnorm_forward_naive",
    "batchnorm_backward_naive", "batchnorm_inference", "batchnorm_running_update",
    "residual_add_forward", "residual_add_backward", "fork_backward",
    "global_avgpool_forward", "global_avgpool_backward", "global_avgpool_forward_naive",
    "conv_macs", "linear_macs",
]


# --------------------------------------------------------------------------- checks
def check_array(name: str, a, ndim: int | None = None, finite: bool = True) -> np.ndarray:
    """Return ``a`` as a float ndarray, or raise a ValueError/TypeError naming ``name``."""
    a = np.asarray(a)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected a rank-{ndim} array, got shape {a.shape}")
    if finite and a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{name}: contains a non-finite value at index {tuple(int(i) for i in bad)}")
    return a


def _float(a: np.ndarray) -> np.ndarray:
    return a if a.dtype.kind == "f" else a.astype(np.float32)


def conv_output_shape(x_shape, w_shape, stride: int = 1, pad: int = 0) -> tuple:
    """Output shape (N, K, OH, OW) of a convolution; validates every argument.

    x_shape (N, C, H, W), w_shape (K, C, R, S).
    """
    if len(x_shape) != 4:
        raise ValueError(f"x: expected a rank-4 NCHW shape, got {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ValueError(f"w: expected a rank-4 (K, C, R, S) shape, got {tuple(w_shape)}")
    n, c, h, wd = (int(v) for v in x_shape)
    k, cw, r, s = (int(v) for v in w_shape)
    if c != cw:
        raise ValueError(f"w: has {cw} input channels but x has {c} (w shape {tuple(w_shape)}, x shape {tuple(x_shape)})")
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride: must be an integer >= 1, got {stride!r}")
    if not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"pad: must be an integer >= 0, got {pad!r}")
    if r > h + 2 * pad or s > wd + 2 * pad:
        raise ValueError(f"w: kernel {r}x{s} is larger than the padded input {h + 2 * pad}x{wd + 2 * pad}")
    return (n, k, (h + 2 * pad - r) // stride + 1, (wd + 2 * pad - s) // stride + 1)


def _windows(x: np.ndarray, r: int, s: int, stride: int, pad: int) -> np.ndarray:
    """View (N, C, OH, OW, R, S) of the padded input's receptive fields."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    win = np.lib.stride_tricks.sliding_window_view(xp, (r, s), axis=(2, 3))
    return win[:, :, ::stride, ::stride]


# --------------------------------------------------------------------------- convolution
def conv2d_forward(x, w, b, stride: int = 1, pad: int = 0) -> np.ndarray:
    """y (N, K, OH, OW) = conv(x (N, C, H, W), w (K, C, R, S)) + b (K,)."""
    x, w, b = check_array("x", x, 4), check_array("w", w, 4), check_array("b", b, 1)
    n, k, oh, ow = conv_output_shape(x.shape, w.shape, stride, pad)
    if b.shape != (k,):
        raise ValueError(f"b: expected shape ({k},), got {b.shape}")
    win = _windows(_float(x), w.shape[2], w.shape[3], stride, pad)[:, :, :oh, :ow]
    y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))      # (N, OH, OW, K)
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) + b[None, :, None, None]


def conv2d_backward_data(dy, w, x_shape, stride: int = 1, pad: int = 0) -> np.ndarray:
    """dx (N, C, H, W) from dy (N, K, OH, OW) and w (K, C, R, S)."""
    dy, w = check_array("dy", dy, 4), check_array("w", w, 4)
    n, k, oh, ow = conv_output_shape(x_shape, w.shape, stride, pad)
    if dy.shape != (n, k, oh, ow):
        raise ValueError(f"dy: expected shape {(n, k, oh, ow)}, got {dy.shape}")
    _, c, h, wd = x_shape
    r, s = w.shape[2:]
    cols = np.tensordot(_float(dy), w, axes=([1], [0]))           # (N, OH, OW, C, R, S)
    cols = cols.transpose(0, 3, 4, 5, 1, 2)                        # (N, C, R, S, OH, OW)
    dxp = np.zeros((n, c, h + 2 * pad + stride, wd + 2 * pad + stride), dtype=cols.dtype)
    for i in range(r):
        for j in range(s):
            dxp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += cols[:, :, i, j]
    return np.ascontiguousarray(dxp[:, :, pad:pad + h, pad:pad + wd])


def conv2d_backward_weight(x, dy, w_shape, stride: int = 1, pad: int = 0):
    """(dw (K, C, R, S), db (K,)) from x (N, C, H, W) and dy (N, K, OH, OW)."""
    x, dy = check_array("x", x, 4), check_array("dy", dy, 4)
    n, k, oh, ow = conv_output_shape(x.shape, w_shape, stride, pad)
    if dy.shape != (n, k, oh, ow):
        raise ValueError(f"dy: expected shape {(n, k, oh, ow)}, got {dy.shape}")
    win = _windows(_float(x), w_shape[2], w_shape[3], stride, pad)[:, :, :oh, :ow]
    dw = np.tensordot(_float(dy), win, axes=([0, 2, 3], [0, 2, 3]))  # (K, C, R, S)
    return dw, dy.sum(axis=(0, 2, 3))


def _taps(x_shape, w_shape, stride, pad):
    """Yield (n, k, c, oh, ow, r, s, h, w) for every tap that lies inside the image."""
    n_, k_, oh_, ow_ = conv_output_shape(x_shape, w_shape, stride, pad)
    _, c_, h_, w_ = x_shape
    r_, s_ = w_shape[2:]
    for n in range(n_):
        for k in range(k_):
            for c in range(c_):
                for oh in range(oh_):
                    for ow in range(ow_):
                        for r in range(r_):
                            for s in range(s_):
                                h, w = oh * stride + r - pad, ow * stride + s - pad
                                if 0 <= h < h_ and 0 <= w < w_:
                                    yield n, k, c, oh, ow, r, s, h, w


def conv2d_forward_naive(x, w, b, stride=1, pad=0):
    """Loop version of :func:`conv2d_forward` (ground truth, small shapes only)."""
    x, w, b = np.asarray(x), np.asarray(w), np.asarray(b)
    y = np.zeros(conv_output_shape(x.shape, w.shape, stride, pad), dtype=np.result_type(x, w, b))
    y += b[None, :, None, None]
    for n, k, c, oh, ow, r, s, h, wi in _taps(x.shape, w.shape, stride, pad):
        y[n, k, oh, ow] += w[k, c, r, s] * x[n, c, h, wi]
    return y


def conv2d_backward_data_naive(dy, w, x_shape, stride=1, pad=0):
    """Loop version of :func:`conv2d_backward_data`."""
    dx = np.zeros(x_shape, dtype=np.result_type(dy, w))
    for n, k, c, oh, ow, r, s, h, wi in _taps(x_shape, w.shape, stride, pad):
        dx[n, c, h, wi] += w[k, c, r, s] * dy[n, k, oh, ow]
    return dx


def conv2d_backward_weight_naive(x, dy, w_shape, stride=1, pad=0):
    """Loop version of :func:`conv2d_backward_weight`."""
    dw = np.zeros(w_shape, dtype=np.result_type(x, dy))
    for n, k, c, oh, ow, r, s, h, wi in _taps(x.shape, w_shape, stride, pad):
        dw[k, c, r, s] += x[n, c, h, wi] * dy[n, k, oh, ow]
    return dw, dy.sum(axis=(0, 2, 3))


# --------------------------------------------------------------------------- ReLU
def relu_forward(x):
    """(y, mask): y = max(x, 0), mask = y > 0 (bool, same shape)."""
    x = check_array("x", x)
    mask = x > 0
    return np.where(mask, x, 0).astype(x.dtype, copy=False), mask


def relu_backward(dy, mask):
    """dx = dy where mask else 0."""
    dy = check_array("dy", dy)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != dy.shape:
        raise ValueError(f"mask: expected shape {dy.shape}, got {mask.shape}")
    return np.where(mask, dy, 0).astype(dy.dtype, copy=False)


# --------------------------------------------------------------------------- max pooling
def _pool_shape(x_shape, size, stride):
    if len(x_shape) != 4:
        raise ValueError(f"x: expected a rank-4 NCHW shape, got {tuple(x_shape)}")
    if size < 1 or stride < 1:
        raise ValueError(f"size/stride: must be >= 1, got size={size}, stride={stride}")
    n, c, h, w = x_shape
    if size > h or size > w:
        raise ValueError(f"size: pooling window {size} is larger than the input {h}x{w}")
    return n, c, (h - size) // stride + 1, (w - size) // stride + 1


def maxpool2d_forward(x, size: int = 2, stride: int = 2):
    """(y (N, C, OH, OW), argmax (N, C, OH, OW) int32).

    argmax is the flat index h * W + w of the maximum inside its input plane;
    ties go to the first element in row-major window order.
    """
    x = check_array("x", x, 4)
    n, c, oh, ow = _pool_shape(x.shape, size, stride)
    win = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(2, 3))
    win = win[:, :, ::stride, ::stride][:, :, :oh, :ow].reshape(n, c, oh, ow, size * size)
    j = win.argmax(axis=-1)
    y = np.take_along_axis(win, j[..., None], axis=-1)[..., 0]
    rows = np.arange(oh)[:, None] * stride + j // size
    cols = np.arange(ow)[None, :] * stride + j % size
    return y, (rows * x.shape[3] + cols).astype(np.int32)


def maxpool2d_backward(dy, argmax, x_shape, size: int = 2, stride: int = 2):
    """dx (N, C, H, W): dy scattered (accumulated) to the argmax positions."""
    dy = check_array("dy", dy, 4)
    n, c, oh, ow = _pool_shape(x_shape, size, stride)
    if dy.shape != (n, c, oh, ow) or np.shape(argmax) != dy.shape:
        raise ValueError(f"dy/argmax: expected shape {(n, c, oh, ow)}, got {dy.shape} and {np.shape(argmax)}")
    dx = np.zeros((n * c, x_shape[2] * x_shape[3]), dtype=dy.dtype)
    rows = np.repeat(np.arange(n * c), oh * ow)
    np.add.at(dx, (rows, np.asarray(argmax).reshape(-1)), dy.reshape(-1))
    return dx.reshape(x_shape)


# --------------------------------------------------------------------------- fully connected
def linear_forward(x, w, b):
    """y (N, J) = x (N, I) @ w (J, I).T + b (J,)."""
    x, w, b = check_array("x", x, 2), check_array("w", w, 2), check_array("b", b, 1)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"w: has {w.shape[1]} inputs but x has {x.shape[1]} features")
    if b.shape != (w.shape[0],):
        raise ValueError(f"b: expected shape ({w.shape[0]},), got {b.shape}")
    return x @ w.T + b


def linear_backward(dy, x, w):
    """(dx (N, I), dw (J, I), db (J,)) from dy (N, J), x (N, I), w (J, I)."""
    dy, x, w = check_array("dy", dy, 2), check_array("x", x, 2), check_array("w", w, 2)
    if dy.shape != (x.shape[0], w.shape[0]):
        raise ValueError(f"dy: expected shape {(x.shape[0], w.shape[0])}, got {dy.shape}")
    return dy @ w, dy.T @ x, dy.sum(axis=0)


# --------------------------------------------------------------------------- loss, optimiser
def softmax_cross_entropy(logits, labels):
    """(mean loss, dlogits (N, J)) for logits (N, J) and integer labels (N,)."""
    logits = check_array("logits", logits, 2)
    labels = np.asarray(labels)
    if labels.shape != (logits.shape[0],) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels: expected {logits.shape[0]} integer labels, got shape {labels.shape} dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels: must lie in [0, {logits.shape[1] - 1}]")
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = logits.shape[0]
    loss = -np.log(np.maximum(p[np.arange(n), labels], np.finfo(p.dtype).tiny)).mean()
    p[np.arange(n), labels] -= 1
    return float(loss), p / n


def sgd_update(param, grad, velocity, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
               nesterov: bool = False):
    """(param', velocity') with PyTorch's SGD rule; param, grad, velocity of one shape.

    g = grad + weight_decay * param;  v' = momentum * v + g;
    param' = param - lr * v'                      (heavy ball, the default)
    param' = param - lr * (g + momentum * v')     (``nesterov``: Sutskever et al.'s
    Nesterov momentum in PyTorch's form, which looks one velocity step ahead).
    """
    param, grad, velocity = check_array("param", param), check_array("grad", grad), check_array("velocity", velocity)
    if not (param.shape == grad.shape == velocity.shape):
        raise ValueError(f"grad/velocity: expected shape {param.shape}, got {grad.shape} and {velocity.shape}")
    g = grad + weight_decay * param
    v = momentum * velocity + g
    step = g + momentum * v if nesterov else v
    return (param - lr * step).astype(param.dtype, copy=False), v.astype(velocity.dtype, copy=False)


# --------------------------------------------------------------------------- batch normalisation
# Training mode normalises with the batch's own statistics (the biased variance,
# divided by the count, as PyTorch does); inference mode with running statistics
# that training mode updates with momentum (the unbiased variance, as PyTorch does).
class BatchNormSaved(NamedTuple):
    """What :func:`batchnorm_forward` keeps for its backward.

    xhat: the normalised input (shape of x); mean, var (biased), inv_std =
    1 / sqrt(var + eps) and gamma: per channel (C,).
    """
    xhat: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray


def _bn_input(x):
    """x as a (N, C, H, W) or (N, C) array; its reduction axes (all but the channel axis)."""
    x = check_array("x", x)
    if x.ndim not in (2, 4):
        raise ValueError(f"x: expected a rank-4 NCHW or rank-2 (N, C) array, got shape {x.shape}")
    return _float(x), (0,) + tuple(range(2, x.ndim))


def _per_channel(name: str, a, x: np.ndarray) -> np.ndarray:
    """(C,) array ``a`` shaped to broadcast against x (N, C, ...); ValueError naming it if not (C,)."""
    a = check_array(name, a, 1)
    if a.shape != (x.shape[1],):
        raise ValueError(f"{name}: expected shape ({x.shape[1]},) (one value per channel of x), got {a.shape}")
    return a.reshape((1, -1) + (1,) * (x.ndim - 2))


def _check_eps(eps) -> float:
    if not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps: must be a finite number > 0, got {eps!r}")
    return eps


def batchnorm_forward(x, gamma, beta, eps: float = 1e-5):
    """(y, saved): training-mode batch normalisation of x (N, C, H, W) or (N, C).

    Per channel c, over the N*H*W values: mean, biased variance var;
    y = gamma * (x - mean) / sqrt(var + eps) + beta. gamma, beta (C,).
    saved: a :class:`BatchNormSaved` for :func:`batchnorm_backward`.
    A fused ReLU is ``relu_forward(y)`` (its mask goes to the next backward).
    """
    x, axes = _bn_input(x)
    count = x.size // x.shape[1]
    if count < 2:
        raise ValueError(f"x: training-mode batch normalisation needs more than one value per channel, "
                         f"got shape {x.shape}")
    g, b = _per_channel("gamma", gamma, x), _per_channel("beta", beta, x)
    eps = _check_eps(eps)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + np.asarray(eps, x.dtype))
    xhat = (x - mean) * inv_std
    y = (g * xhat + b).astype(x.dtype, copy=False)
    flat = lambda a: a.reshape(-1).astype(x.dtype, copy=False)
    return y, BatchNormSaved(xhat.astype(x.dtype, copy=False), flat(mean), flat(var), flat(inv_std),
                             flat(g))


def batchnorm_backward(dy, saved: BatchNormSaved):
    """(dx (shape of dy), dgamma (C,), dbeta (C,)) from dy, the gradient of y (before any ReLU mask).

    With m values per channel: dbeta = sum dy, dgamma = sum dy * xhat and
    dx = gamma * inv_std / m * (m * dy - dbeta - xhat * dgamma): the batch
    statistics depend on every input, so dx is dense even where dy is zero.
    """
    dy, axes = _bn_input(check_array("dy", dy))
    if dy.shape != saved.xhat.shape:
        raise ValueError(f"dy: expected shape {saved.xhat.shape} (the forward's x), got {dy.shape}")
    m = dy.size // dy.shape[1]
    xhat = saved.xhat
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * xhat).sum(axis=axes)
    scale = _per_channel("gamma", saved.gamma * saved.inv_std, dy) / m
    dx = scale * (m * dy - _per_channel("dbeta", dbeta, dy) - xhat * _per_channel("dgamma", dgamma, dy))
    return dx.astype(dy.dtype, copy=False), dgamma, dbeta


def batchnorm_forward_naive(x, gamma, beta, eps: float = 1e-5):
    """Loop version of :func:`batchnorm_forward` (ground truth, small shapes only): one channel at a time."""
    x = np.asarray(x)
    y = np.zeros_like(x)
    xhat = np.zeros_like(x)
    c_ = x.shape[1]
    mean, var, inv_std = np.zeros(c_, x.dtype), np.zeros(c_, x.dtype), np.zeros(c_, x.dtype)
    for c in range(c_):
        values = [v for v in np.moveaxis(x, 1, 0)[c].reshape(-1)]
        mean[c] = sum(values) / len(values)
        var[c] = sum((v - mean[c]) ** 2 for v in values) / len(values)
        inv_std[c] = 1.0 / np.sqrt(var[c] + eps)
        xhat[:, c] = (x[:, c] - mean[c]) * inv_std[c]
        y[:, c] = gamma[c] * xhat[:, c] + beta[c]
    return y, BatchNormSaved(xhat, mean, var, inv_std, np.asarray(gamma, x.dtype))


def batchnorm_backward_naive(dy, saved: BatchNormSaved):
    """Loop version of :func:`batchnorm_backward` by the chain rule through mean and variance.

    dL/dvar = sum dxhat * (x - mean) * -1/2 (var + eps)^-3/2, with
    (x - mean) = xhat / inv_std; dL/dmean = -sum dxhat * inv_std (the
    variance term vanishes: sum (x - mean) = 0); dx = dxhat * inv_std +
    dL/dvar * 2 (x - mean) / m + dL/dmean / m.
    """
    dy = np.asarray(dy)
    dx = np.zeros_like(dy)
    c_ = dy.shape[1]
    dgamma, dbeta = np.zeros(c_, dy.dtype), np.zeros(c_, dy.dtype)
    for c in range(c_):
        g, xh = dy[:, c], saved.xhat[:, c]
        m = g.size
        dbeta[c] = g.sum()
        dgamma[c] = (g * xh).sum()
        dxhat = g * saved.gamma[c]
        centred = xh / saved.inv_std[c]
        dvar = (dxhat * centred).sum() * -0.5 * saved.inv_std[c] ** 3
        dmean = -(dxhat * saved.inv_std[c]).sum()
        dx[:, c] = dxhat * saved.inv_std[c] + dvar * 2.0 * centred / m + dmean / m
    return dx, dgamma, dbeta


def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps: float = 1e-5) -> np.ndarray:
    """y (shape of x): x (N, C, H, W) or (N, C) normalised with running statistics (C,) each."""
    x, _ = _bn_input(x)
    eps = _check_eps(eps)
    mean, var = _per_channel("running_mean", running_mean, x), _per_channel("running_var", running_var, x)
    if np.any(var < 0):
        raise ValueError("running_var: must be >= 0 everywhere")
    g, b = _per_channel("gamma", gamma, x), _per_channel("beta", beta, x)
    return ((x - mean) / np.sqrt(var + eps) * g + b).astype(x.dtype, copy=False)


def batchnorm_running_update(running_mean, running_var, mean, var, count: int, momentum: float = 0.1):
    """(running_mean', running_var') (C,) each, PyTorch's rule.

    running' = (1 - momentum) * running + momentum * batch, where the batch
    variance is the unbiased one, var * count / (count - 1); ``mean`` and
    ``var`` (biased) are :class:`BatchNormSaved`'s, ``count`` the values per
    channel they were taken over (N*H*W).
    """
    rm, rv = check_array("running_mean", running_mean, 1), check_array("running_var", running_var, 1)
    mean, var = check_array("mean", mean, 1), check_array("var", var, 1)
    if not (rm.shape == rv.shape == mean.shape == var.shape):
        raise ValueError(f"running_var/mean/var: expected shape {rm.shape}, got {rv.shape}, {mean.shape}, {var.shape}")
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 2:
        raise ValueError(f"count: must be an integer >= 2 (values per channel), got {count!r}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum: must lie in [0, 1], got {momentum!r}")
    unbiased = var * (count / (count - 1))
    return (((1 - momentum) * rm + momentum * mean).astype(rm.dtype, copy=False),
            ((1 - momentum) * rv + momentum * unbiased).astype(rv.dtype, copy=False))


# --------------------------------------------------------------------------- residual connections
# A residual block forks its input into a body and a shortcut and adds their
# outputs. Forward: the fork costs nothing, the join is an add. Backward the roles
# swap: the add's gradient fans out unchanged to both summands, and where the
# two paths of the fork meet again their gradients are summed.
def residual_add_forward(a, b) -> np.ndarray:
    """y = a + b, both of the same shape (the join of a residual block)."""
    a, b = check_array("a", a), check_array("b", b)
    if a.shape != b.shape:
        raise ValueError(f"b: expected the shape of a {a.shape}, got {b.shape}")
    return a + b


def residual_add_backward(dy):
    """(da, db): the gradient of a sum reaches both summands unchanged (fan-out)."""
    dy = check_array("dy", dy)
    return dy, dy


def fork_backward(da, db) -> np.ndarray:
    """dx = da + db: the gradients of the two paths a tensor was forked into, summed where they meet."""
    da, db = check_array("da", da), check_array("db", db)
    if da.shape != db.shape:
        raise ValueError(f"db: expected the shape of da {da.shape}, got {db.shape}")
    return da + db


# --------------------------------------------------------------------------- global average pooling
def global_avgpool_forward(x) -> np.ndarray:
    """y (N, C): the mean of each (H, W) plane of x (N, C, H, W)."""
    x = _float(check_array("x", x, 4))
    return x.mean(axis=(2, 3))


def global_avgpool_backward(dy, x_shape) -> np.ndarray:
    """dx (N, C, H, W): each dy (N, C) spread evenly, dy / (H * W), over its plane."""
    dy = check_array("dy", dy, 2)
    if len(x_shape) != 4 or dy.shape != tuple(x_shape[:2]):
        raise ValueError(f"dy: expected shape {tuple(x_shape[:2])} for x of shape {tuple(x_shape)}, got {dy.shape}")
    h, w = x_shape[2:]
    return np.broadcast_to((dy / (h * w))[:, :, None, None], tuple(x_shape)).astype(dy.dtype)


def global_avgpool_forward_naive(x) -> np.ndarray:
    """Loop version of :func:`global_avgpool_forward`."""
    n_, c_, h_, w_ = np.shape(x)
    y = np.zeros((n_, c_), dtype=np.asarray(x).dtype)
    for n in range(n_):
        for c in range(c_):
            y[n, c] = sum(x[n, c, h, w] for h in range(h_) for w in range(w_)) / (h_ * w_)
    return y


# --------------------------------------------------------------------------- sparsity accounting
def _pass_counts(dense, nonzero, skipped_output=0) -> dict:
    """One pass's counters; what skipping removes split by type (output-type first, see conv_macs)."""
    dense, nonzero, skipped_output = (int(round(float(v))) for v in (dense, nonzero, skipped_output))
    return {"macs_dense": dense, "macs_nonzero": nonzero,
            "macs_skipped_input": dense - skipped_output - nonzero, "macs_skipped_output": skipped_output}


def conv_macs(x, dy, w_shape, stride: int = 1, pad: int = 0, out_mask=None) -> dict:
    """MAC counts of a convolution's three passes for one batch.

    x (N, C, H, W) the layer input, dy (N, K, OH, OW) the gradient of its
    pre-activation output, out_mask (N, C, H, W) bool or None: the ReLU mask of
    the previous layer, whose False outputs backward-data never computes.

    Returns ``{"fwd": {...}, "bwd_data": {...}, "bwd_weight": {...}}``, each
    with ``macs_dense`` (every in-image tap) and ``macs_nonzero``:
    forward skips zero inputs; backward-data skips zero ``dy`` and masked
    outputs; backward-weight skips pairs with a zero operand.

    What skipping removes, ``macs_dense - macs_nonzero``, is split by type:
    ``macs_skipped_output`` (output-type skipping: every tap of an output the
    mask says is never computed; backward-data only, 0 elsewhere) and
    ``macs_skipped_input`` (input-type skipping: taps with a zero operand,
    x in forward, dy in backward-data, either in backward-weight, among the
    outputs that are computed). Output-type skipping is counted first because
    the kernels build their work list of outputs from the mask before they
    look at any operand, so a masked tap whose dy is also zero is output-type.
    """
    x, dy = np.asarray(x), np.asarray(dy)
    nz_x = (x != 0).astype(np.float64)
    nz_dy = (dy != 0).astype(np.float64)
    k, c = w_shape[0], w_shape[1]
    ones = np.ones((1, c) + tuple(w_shape[2:]))
    # taps per output position, summed: a conv of an all-ones image
    dense = k * conv2d_forward(np.ones_like(nz_x), ones, np.zeros(1), stride, pad).sum()
    fwd = k * conv2d_forward(nz_x, ones, np.zeros(1), stride, pad).sum()
    ones_k = np.ones((k, c) + tuple(w_shape[2:]))
    reach = conv2d_backward_data(nz_dy, ones_k, x.shape, stride, pad)
    masked_taps = 0.0
    if out_mask is not None:
        live = np.asarray(out_mask, dtype=bool)
        reach = reach * live
        taps_per_input = conv2d_backward_data(np.ones_like(nz_dy), ones_k, x.shape, stride, pad)
        masked_taps = (taps_per_input * ~live).sum()
    bwd_w = conv2d_backward_weight(nz_x, nz_dy, (k, c) + tuple(w_shape[2:]), stride, pad)[0].sum()
    return {"fwd": _pass_counts(dense, fwd),
            "bwd_data": _pass_counts(dense, reach.sum(), masked_taps),
            "bwd_weight": _pass_counts(dense, bwd_w)}


def linear_macs(x, dy, out_mask=None) -> dict:
    """MAC counts of a fully-connected layer's passes; x (N, I), dy (N, J), out_mask (N, I).

    Same fields and split as :func:`conv_macs`.
    """
    nz_x = (np.asarray(x) != 0).sum(axis=1)
    nz_dy = (np.asarray(dy) != 0).sum(axis=1)
    n, i = np.shape(x)
    j = np.shape(dy)[1]
    live = np.full(n, i) if out_mask is None else np.asarray(out_mask, dtype=bool).sum(axis=1)
    d = int(n * i * j)
    return {"fwd": _pass_counts(d, j * nz_x.sum()),
            "bwd_data": _pass_counts(d, (nz_dy * live).sum(), j * (n * i - live.sum())),
            "bwd_weight": _pass_counts(d, (nz_dy * nz_x).sum())}


# --------------------------------------------------------------------------- gradient pruning
# Stochastic pruning of activation gradients (SparseTrain, Dai et al. 2020; rule of
# Ye et al. 2019): |g| < tau becomes sign(g) * tau with probability |g| / tau and 0
# otherwise, so E[pruned] = g. The random numbers mirror hls/prune_grad bit for bit:
# the flattened tensor is cut into blocks of PRUNE_BLOCK elements, each block walked
# by its own xorshift32 generator (a linear-feedback shift register, Marsaglia 2003)
# seeded from (seed, block) through murmur3's finaliser. The block is the unit a PE
# lane owns in hardware; here it is the axis numpy vectorises over.
def _prune_constant(name: str) -> int:
    """A constant of hls/prune_grad/prune_grad.h (the kernel is where it is defined)."""
    import re
    from zskip import HLS_DIR
    text = (HLS_DIR / "prune_grad" / "prune_grad.h").read_text()
    m = re.search(rf"static const unsigned {name} = (\d+);", text)
    if m is None:
        raise RuntimeError(f"{name} not found in hls/prune_grad/prune_grad.h")
    return int(m.group(1))


PRUNE_BLOCK = _prune_constant("PRUNE_BLOCK")

_U32 = np.uint32


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _U32(16))
    h = h * _U32(0x85EBCA6B)
    h = h ^ (h >> _U32(13))
    h = h * _U32(0xC2B2AE35)
    return h ^ (h >> _U32(16))


def prune_uniforms(n: int, seed: int) -> np.ndarray:
    """The n float32 uniforms in [0, 1) that prune_gradients draws for seed (flat order)."""
    nb = max(1, -(-n // PRUNE_BLOCK))
    with np.errstate(over="ignore"):
        state = _fmix32(_U32(seed & 0xFFFFFFFF) ^ _fmix32(np.arange(nb, dtype=_U32)))
        state = np.where(state == 0, _U32(0x9E3779B9), state)
        out = np.empty((PRUNE_BLOCK, nb), dtype=_U32)
        for t in range(PRUNE_BLOCK):
            state = state ^ (state << _U32(13))
            state = state ^ (state >> _U32(17))
            state = state ^ (state << _U32(5))
            out[t] = state
    u = (out.T.reshape(-1)[:n] >> _U32(8)).astype(np.float32) * np.float32(2.0 ** -24)
    return u


def prune_gradients(g, tau: float, seed: int) -> np.ndarray:
    """Stochastically pruned copy of g (any shape, float32) for threshold tau >= 0."""
    g = check_array("g", g).astype(np.float32, copy=False)
    tau32 = np.float32(tau)
    if not np.isfinite(tau32) or tau32 < 0:
        raise ValueError(f"tau: must be a finite value >= 0, got {tau!r}")
    a = np.abs(g)
    u = prune_uniforms(g.size, seed).reshape(g.shape)
    promoted = np.where(g < 0, -tau32, tau32).astype(np.float32)
    pruned = np.where(u * tau32 < a, promoted, np.float32(0))
    return np.where(a < tau32, pruned, g).astype(np.float32)


def prune_tau_scale(rate: float) -> np.float32:
    """Multiplier turning mean |g| into the threshold for a target pruning rate.

    Ye et al. (2019, sec. 3) model the nonzero gradients as N(0, sigma^2), with
    sigma estimated from the mean absolute value (E|g| = sigma * sqrt(2 / pi)),
    so the fraction below tau is ``rate`` for tau = sigma * Phi^-1((1 + rate) / 2).
    """
    from statistics import NormalDist
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate: the target pruning rate must lie in [0, 1), got {rate!r}")
    if rate == 0.0:
        return np.float32(0.0)
    return np.float32(NormalDist().inv_cdf((1.0 + rate) / 2.0) * np.sqrt(np.pi / 2.0))


def prune_threshold(g, rate: float) -> np.float32:
    """tau for ``g`` at a target pruning rate, in float32 exactly as the kernel computes it.

    mean |g| over the nonzeros times :func:`prune_tau_scale`. The kernel sums
    |g| as unsigned fixed point with PRUNE_SUM_FRAC_BITS fractional bits
    (exact integer addition, so the order of its lanes does not matter); the
    same sum is formed here in uint64.
    """
    a = np.abs(check_array("g", g).astype(np.float32, copy=False).reshape(-1))
    nonzeros = np.count_nonzero(a)
    if nonzeros == 0:
        return np.float32(0.0)
    unit = float(2 ** _prune_constant("PRUNE_SUM_FRAC_BITS"))
    total = np.floor(a.astype(np.float64) * unit).astype(np.uint64).sum(dtype=np.uint64)
    mean = np.float32(np.float64(total) / np.float64(nonzeros) / unit)
    return np.float32(mean * prune_tau_scale(rate))
