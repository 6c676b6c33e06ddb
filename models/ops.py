"""The operation interface every backend implements.

The training step (``zskip.models.step``) is written once against this
interface. ``ReferenceOps`` computes it with the numpy reference; the
accelerator backends run the HLS kernels (one call per op, or the whole step
recorded as one device program). Nothing outside the backend factory asks
which backend it holds.

Shapes: activations NCHW (N, C, H, W) or (N, I) after flattening; conv
weights (K, C, R, S); linear weights (J, I). ``dy`` is always the gradient
with respect to the layer's pre-activation output. Masks are bool arrays:
``mask = y > 0`` of the op's output. ``out_mask`` given to a backward-data op
is the ReLU mask of that op's *input* (the previous layer's output): the
gradient is never computed (left zero) where it is False.

Pre-defined sparse junctions (``Linear`` layers with density < 1,
``zskip.models.structured``) need three more ops, ``sparse_linear_forward(x,
w, b, pattern, relu)``, ``sparse_linear_backward_data(dy, w, pattern,
out_mask)`` and ``sparse_linear_backward_weight(x, dy, pattern)``, with ``w``
the compressed (J, fan_in) weights; ``ReferenceOps`` and the accelerator
backends (the ``sparse_fc`` kernels) have them, and the training step refuses
a sparse model on Ops without them.
"""
from __future__ import annotations

from typing import Optional, Protocol, Tuple

import numpy as np

from . import reference as R


#: every op of the interface and the names of what it returns (reports and
#: checks label tensors with them; recording/replaying Ops dispatch on them)
OP_OUTPUTS = {
    "conv_forward": ("y", "mask"), "linear_forward": ("y", "mask"), "maxpool_forward": ("y", "argmax", "mask"),
    "conv_backward_data": ("dx",), "linear_backward_data": ("dx",), "maxpool_backward": ("dx",),
    "conv_backward_weight": ("dw", "db"), "linear_backward_weight": ("dw", "db"),
    "softmax_xent": ("loss", "dlogits"), "sgd_update": ("param", "velocity"), "prune_grad": ("dy pruned",),
    "batchnorm_forward": ("y", "mask", "xhat", "mean", "var"), "batchnorm_inference": ("y", "mask"),
    "batchnorm_backward": ("dx", "dgamma", "dbeta"), "batchnorm_update_stats": ("running_mean", "running_var"),
    "add_forward": ("y", "mask"), "add_backward": ("dx",),
    "sparse_linear_forward": ("y", "mask"), "sparse_linear_backward_data": ("dx",),
    "sparse_linear_backward_weight": ("dw", "db"),
    "global_avgpool_forward": ("y",), "global_avgpool_backward": ("dx",),
}


class NonFinite(ValueError):
    """An op produced inf or NaN; the message names the tensor (and, from ``zskip.models.step``, the layer)."""


def check_finite(op: str, name: str, a) -> None:
    """Raise :class:`NonFinite` when float array ``a``, output ``name`` of ``op``, holds inf or NaN."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        return
    bad = ~np.isfinite(a)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0]) if a.ndim else ()
        raise NonFinite(f"{op} produced {int(bad.sum())} non-finite values (inf/NaN) in {name}, "
                        f"the first at index {first}")


class Ops(Protocol):
    """What a backend must provide for one training step."""

    #: counters of the last call: ``cycles``, ``macs_executed``, ``macs_dense``
    #: (zeros on backends that have no kernel counters)
    last_stats: dict

    def conv_forward(self, x, w, b, stride: int = 1, pad: int = 0, relu: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(y (N, K, OH, OW), mask or None when relu is False)."""

    def conv_backward_data(self, dy, w, x_shape, stride: int = 1, pad: int = 0, out_mask=None) -> np.ndarray:
        """dx (N, C, H, W), zero where out_mask is False."""

    def conv_backward_weight(self, x, dy, w_shape, stride: int = 1, pad: int = 0) -> Tuple[np.ndarray, np.ndarray]:
        """(dw (K, C, R, S), db (K,))."""

    def maxpool_forward(self, x, size: int = 2, stride: int = 2) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(y (N, C, OH, OW), argmax int32 flat index h * W + w in the plane, mask = y > 0)."""

    def maxpool_backward(self, dy, argmax, x_shape, size: int = 2, stride: int = 2) -> np.ndarray:
        """dx (N, C, H, W): dy scattered to the argmax positions."""

    def linear_forward(self, x, w, b, relu: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(y (N, J), mask or None when relu is False)."""

    def linear_backward_data(self, dy, w, out_mask=None) -> np.ndarray:
        """dx (N, I), zero where out_mask (N, I) is False."""

    def linear_backward_weight(self, x, dy) -> Tuple[np.ndarray, np.ndarray]:
        """(dw (J, I), db (J,))."""

    def softmax_xent(self, logits, labels, grad_scale: float = 1.0) -> Tuple[float, np.ndarray]:
        """(mean loss, dlogits (N, J) * grad_scale); ``grad_scale``: the loss scale, a power of two."""

    def sgd_update(self, param, grad, velocity, lr: float, momentum: float, weight_decay: float,
                   grad_scale: float = 1.0, nesterov: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """(param', velocity'), PyTorch's rule (see reference.sgd_update) on grad / grad_scale;
        ``nesterov``: Nesterov momentum (passed only when True)."""

    def prune_grad(self, g, rate: float, seed) -> np.ndarray:
        """g' (shape of g): stochastic pruning at target ``rate`` in [0, 1), tau derived from g.

        ``reference.prune_gradients(g, reference.prune_threshold(g, rate), seed)``;
        ``seed`` is an integer or a one-word uint32 array (the word a device
        program reads, so the host can change it per mini-batch).
        """

    def batchnorm_forward(self, x, gamma, beta, eps: float = 1e-5, relu: bool = True):
        """(y, mask or None, xhat, mean (C,), var (C,)): training mode on x (N, C, H, W) or (N, C).

        Batch statistics per channel, var biased; ``xhat`` (shape of x) and
        ``var`` are what the backward needs, ``mean``/``var`` what the
        running statistics are updated from.
        """

    def batchnorm_backward(self, dy, xhat, var, gamma, eps: float = 1e-5, out_mask=None):
        """(dx (shape of dy), dgamma (C,), dbeta (C,)); dx zero where out_mask is False."""

    def batchnorm_inference(self, x, gamma, beta, running_mean, running_var, eps: float = 1e-5, relu: bool = True):
        """(y, mask or None): x normalised with the running statistics (C,)."""

    def batchnorm_update_stats(self, running_mean, running_var, mean, var, count: int, momentum: float):
        """(running_mean', running_var') (C,): reference.batchnorm_running_update; in place on a device."""

    def add_forward(self, a, b, relu: bool = True):
        """(y = a + b, mask or None): the join of a residual block."""

    def add_backward(self, da, db, out_mask=None):
        """dx = da + db (two paths of a fork meet), zero where out_mask is False."""

    def global_avgpool_forward(self, x):
        """y (N, C): the mean of each plane of x (N, C, H, W)."""

    def global_avgpool_backward(self, dy, x_shape, out_mask=None):
        """dx (N, C, H, W) = dy (N, C) / (H * W) over each plane, zero where out_mask is False."""


def _relu(op: str, y):
    """The fused ReLU of a forward op; its pre-activation must be finite (as the kernels count it)."""
    check_finite(op, "y (pre-activation)", y)
    return R.relu_forward(y)


def _masked(op: str, dx, out_mask):
    check_finite(op, "dx", dx)
    return R.relu_backward(dx, out_mask)


_NO_STATS = {"cycles": 0, "macs_executed": 0, "macs_dense": 0}


class ReferenceOps:
    """:class:`Ops` computed by the numpy reference (the ``reference`` backend).

    ``mul``: the multiplier of the convolution and fully-connected MACs
    (``zskip.models.multipliers``); other than "exact" these passes run
    ``zskip.models.mul_reference`` (products by the multiplier, float64 sums).
    """

    name = "reference"

    def __init__(self, mul: str = "exact"):
        from .multipliers import check_multiplier
        self.mul = check_multiplier(mul)
        self.last_stats = dict(_NO_STATS)

    @property
    def _mac(self):
        """The module computing the MAC passes: the reference, or its pluggable-multiplier form."""
        from . import mul_reference
        return R if self.mul == "exact" else mul_reference

    def _mul(self) -> dict:
        return {} if self.mul == "exact" else {"mul": self.mul}

    def conv_forward(self, x, w, b, stride=1, pad=0, relu=True):
        y = self._mac.conv2d_forward(x, w, b, stride, pad, **self._mul())
        return _relu("linear_forward", y) if relu else (y, None)

    def conv_backward_data(self, dy, w, x_shape, stride=1, pad=0, out_mask=None):
        dx = self._mac.conv2d_backward_data(dy, w, x_shape, stride, pad, **self._mul())
        return dx if out_mask is None else _masked("linear_backward_data", dx, out_mask)

    def conv_backward_weight(self, x, dy, w_shape, stride=1, pad=0):
        return self._mac.conv2d_backward_weight(x, dy, w_shape, stride, pad, **self._mul())

    def maxpool_forward(self, x, size=2, stride=2):
        y, argmax = R.maxpool2d_forward(x, size, stride)
        return y, argmax, y > 0

    def maxpool_backward(self, dy, argmax, x_shape, size=2, stride=2):
        return R.maxpool2d_backward(dy, argmax, x_shape, size, stride)

    def linear_forward(self, x, w, b, relu=True):
        y = R.linear_forward(x, w, b) if self.mul == "exact" else self._mac.linear_forward(x, w, b, self.mul)
        return _relu("linear_forward", y) if relu else (y, None)

    def linear_backward_data(self, dy, w, out_mask=None):
        if self.mul == "exact":
            dx = R.check_array("dy", dy, 2) @ R.check_array("w", w, 2)
        else:
            dx = self._mac.linear_backward_data(dy, w, self.mul)
        return dx if out_mask is None else _masked("linear_backward_data", dx, out_mask)

    def linear_backward_weight(self, x, dy):
        if self.mul != "exact":
            return self._mac.linear_backward_weight(x, dy, self.mul)
        dy, x = R.check_array("dy", dy, 2), R.check_array("x", x, 2)
        return dy.T @ x, dy.sum(axis=0)

    # pre-defined sparse junctions (zskip.models.structured): w is the compressed (J, fan_in) values
    def sparse_linear_forward(self, x, w, b, pattern, relu=True):
        from .structured import sparse_linear_forward
        y = sparse_linear_forward(x, w, b, pattern, self.mul)
        return _relu("sparse_linear_forward", y) if relu else (y, None)

    def sparse_linear_backward_data(self, dy, w, pattern, out_mask=None):
        from .structured import sparse_linear_backward_data
        dx = sparse_linear_backward_data(dy, w, pattern, self.mul)
        return dx if out_mask is None else _masked("sparse_linear_backward_data", dx, out_mask)

    def sparse_linear_backward_weight(self, x, dy, pattern):
        from .structured import sparse_linear_backward_weight
        return sparse_linear_backward_weight(x, dy, pattern, self.mul)

    def softmax_xent(self, logits, labels, grad_scale=1.0):
        loss, dlogits = R.softmax_cross_entropy(logits, labels)
        return loss, dlogits if grad_scale == 1.0 else (dlogits * np.float32(grad_scale)).astype(dlogits.dtype)

    def sgd_update(self, param, grad, velocity, lr, momentum, weight_decay, grad_scale=1.0, nesterov=False):
        if grad_scale != 1.0:
            grad = (np.asarray(grad) * np.float32(1.0 / grad_scale)).astype(np.asarray(grad).dtype)
        return R.sgd_update(param, grad, velocity, lr, momentum, weight_decay, nesterov=nesterov)

    def batchnorm_forward(self, x, gamma, beta, eps=1e-5, relu=True):
        y, saved = R.batchnorm_forward(x, gamma, beta, eps)
        y, mask = R.relu_forward(y) if relu else (y, None)
        return y, mask, saved.xhat, saved.mean, saved.var

    def batchnorm_backward(self, dy, xhat, var, gamma, eps=1e-5, out_mask=None):
        var, gamma = R.check_array("var", var, 1), R.check_array("gamma", gamma, 1)
        inv_std = (1.0 / np.sqrt(var + np.asarray(eps, var.dtype))).astype(var.dtype)
        saved = R.BatchNormSaved(R.check_array("xhat", xhat), None, var, inv_std, gamma)
        dx, dgamma, dbeta = R.batchnorm_backward(dy, saved)
        return (dx if out_mask is None else R.relu_backward(dx, out_mask)), dgamma, dbeta

    def batchnorm_inference(self, x, gamma, beta, running_mean, running_var, eps=1e-5, relu=True):
        y = R.batchnorm_inference(x, gamma, beta, running_mean, running_var, eps)
        return R.relu_forward(y) if relu else (y, None)

    def batchnorm_update_stats(self, running_mean, running_var, mean, var, count, momentum):
        return R.batchnorm_running_update(running_mean, running_var, mean, var, count, momentum)

    def add_forward(self, a, b, relu=True):
        y = R.residual_add_forward(a, b)
        return R.relu_forward(y) if relu else (y, None)

    def add_backward(self, da, db, out_mask=None):
        dx = R.fork_backward(da, db)
        return dx if out_mask is None else R.relu_backward(dx, out_mask)

    def global_avgpool_forward(self, x):
        return R.global_avgpool_forward(x)

    def global_avgpool_backward(self, dy, x_shape, out_mask=None):
        dx = R.global_avgpool_backward(dy, x_shape)
        return dx if out_mask is None else R.relu_backward(dx, out_mask)

    def prune_grad(self, g, rate, seed):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate: must be in [0, 1), got {rate!r}")
        seed = int(np.asarray(seed).reshape(-1)[0])
        self.last_stats = dict(_NO_STATS)
        if rate == 0.0:
            return np.array(g, dtype=np.float32)
        tau = R.prune_threshold(g, rate)
        self.last_stats["tau"] = float(tau)
        return R.prune_gradients(g, tau, seed)
