"""Comparison of a backend's training step with the numpy reference, op by op.

:func:`check_step` runs ``zskip.models.step.train_step`` on the same batch
and the same weights (as they were before the step) through
:class:`~zskip.models.ops.ReferenceOps`, with the backend's outputs of every
op call given (``device_outputs``, in step.py's call order). Each reference
op computes from the backend's inputs (the wrapper hands step.py the
backend's outputs, not its own), so every error is the error of one kernel
call and does not accumulate along the network.

Per layer and tensor it reports the max absolute and max relative error;
beyond the tolerance it raises :class:`CheckFailed` naming the layer, the
tensor and the worst index of the first tensor (in step order) that fails.

Relative error of an element: ``|d - r| / max(|r|, floor * max|r|)`` where
the maximum runs over the tensor, so near-zero elements (where float32
summation order decides the last bits) are measured against the tensor's
scale. float32: ``rtol = 1e-4``, ``floor = 0.1`` (measured on LeNet-5 and
vgg_tiny steps: worst relative errors 1e-5 to 5e-5 with floor 0.01). The
outputs of the MAC ops (convolution and fully-connected passes) are sums
whose float32 rounding grows with the sum of the *magnitudes* of their terms,
not with the result: an element is also measured against that magnitude M
(the same op run on |inputs|) times ``max(floor, n 2^-24 / rtol)`` for a sum
of n terms, so the allowed error is at least the worst-case bound of float32
summation in any order, n 2^-24 M (Higham, *Accuracy and Stability of
Numerical Algorithms*, sec. 4.2; a statistical sqrt(n) bound at 8 standard
deviations was exceeded by the engine's accumulators on resnet8). A wrong
index, a missing tap or a lost image still errs by a share of M far above
it. It matters where the terms
cancel, e.g. a convolution's bias gradient under a batch normalisation is
zero up to rounding (BN's dx sums to zero over each channel), so its result
is all noise while M is not, and for the long sums of a weight gradient (N x
OH x OW = 50,176 terms for a 28x28 layer at batch 64). Batch normalisation's
outputs are measured the same way against the magnitudes its per-channel sums
carry into them (its mean moves xhat by the rounding of mean|x| times
1/std, which dominates where |mean| is many standard deviations). A spec with ``mul=NAME``
(``float32,mul=mitchell``) keeps that tolerance and checks against the reference multiplying
with NAME (``zskip.models.mul_reference``): the products are the backend's bit for bit, so only
the summation order is left to the tolerance, as with the exact multiplier. A ReLU mask may differ
only where the reference pre-activation is within the tolerance of zero; an
argmax may differ only between equal window values (ties).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import step as _step
from .multipliers import check_multiplier
from .networks import BatchNorm, Conv, GlobalAvgPool, Linear, MaxPool, Model, Residual
from .ops import OP_OUTPUTS, ReferenceOps

__all__ = ["Tolerance", "TOLERANCES", "TensorError", "CheckReport", "CheckFailed", "check_step", "tolerance_for",
           "CapturingOps", "op_labels"]


@dataclass(frozen=True)
class Tolerance:
    """``rtol``: allowed relative error; ``floor``: fraction of the tensor's max |r| below which
    an element's relative error is measured against that fraction instead of itself; ``mul``: the
    multiplier of the reference's convolution and fully-connected MACs (the backend's own, so the
    tolerance covers only the order of the float32 additions)."""
    rtol: float
    floor: float
    mul: str = "exact"


#: tolerance per precision of the backend's arithmetic
TOLERANCES = {"float32": Tolerance(rtol=1e-4, floor=0.1)}


_MUL_PAIR = re.compile(r"^\s*mul\s*=\s*(.+?)\s*$")


def tolerance_for(precision: str) -> Tolerance:
    """The comparison tolerance of ``precision``; ValueError when none is defined for it.

    A ``mul=NAME`` pair (e.g. ``float32,mul=mitchell``) keeps the tolerance of
    the rest of the spec and makes the reference multiply with NAME: the
    products are then bit-identical to the backend's, and what remains is the
    float32 summation order, as with the exact multiplier.
    """
    parts = [p for p in re.split(r",(?=\s*\w+\s*=)", precision)] if isinstance(precision, str) else [precision]
    muls = [m.group(1) for m in map(lambda p: _MUL_PAIR.match(p) if isinstance(p, str) else None, parts) if m]
    rest = ",".join(p for p in parts if not (isinstance(p, str) and _MUL_PAIR.match(p))).strip() or "float32"
    if rest not in TOLERANCES or len(muls) > 1:
        raise ValueError(f"precision: the comparison with the reference has tolerances for "
                         f"{sorted(TOLERANCES)} (with an optional mul=), not {precision!r}")
    tol = TOLERANCES[rest]
    return Tolerance(tol.rtol, tol.floor, check_multiplier(muls[0])) if muls else tol


@dataclass
class TensorError:
    """Error of one tensor of one op call; ``index`` is the worst element's index."""
    layer: str
    tensor: str
    max_abs: float
    max_rel: float
    index: Tuple[int, ...]
    device: float
    reference: float

    def as_dict(self) -> dict:
        return {"layer": self.layer, "tensor": self.tensor, "max_abs": self.max_abs, "max_rel": self.max_rel,
                "index": list(self.index)}


@dataclass
class CheckReport:
    """Every compared tensor of one step; ``max_rel_error`` / ``max_abs_error`` over all of them."""
    tensors: List[TensorError] = field(default_factory=list)
    tolerance: Optional[Tolerance] = None

    @property
    def max_rel_error(self) -> float:
        return max((t.max_rel for t in self.tensors), default=0.0)

    @property
    def max_abs_error(self) -> float:
        return max((t.max_abs for t in self.tensors), default=0.0)

    @property
    def worst(self) -> Optional[TensorError]:
        return max(self.tensors, key=lambda t: t.max_rel, default=None)


class CheckFailed(RuntimeError):
    """A tensor differs from the reference beyond the tolerance; ``report`` has every tensor."""

    def __init__(self, message: str, report: CheckReport):
        super().__init__(message)
        self.report = report


def op_labels(model: Model, param_keys: Sequence[str]) -> Dict[str, List[str]]:
    """Per op name, the label ("NAME pass", e.g. "conv2 bwd_data") of its k-th call in one train_step.

    Mirrors step.py's walk: the forward visits the layers by number (a
    residual block: body, shortcut, then its add); the backward visits them
    in reverse (a block: shortcut, body, then the sum of their gradients)
    down to the first layer with parameters (which gets no backward-data);
    ``sgd_update`` follows the order of ``param_keys`` (entries that SGD does
    not train are left out); the running statistics of every batch
    normalisation are updated last, by layer number.
    """
    labels: Dict[str, List[str]] = {op: [] for op in OP_OUTPUTS}
    first = _step._first_with_params(model)
    names = model.layer_names()
    put = lambda op, node, p: labels[op].append(f"{names[node.index]} {p}")
    # a pre-defined sparse junction runs the sparse_ form of the linear ops
    _sparse = lambda node, op: "sparse_" + op if model.pattern(node.index) is not None else op
    forward_op = {Conv: "conv_forward", Linear: "linear_forward", MaxPool: "maxpool_forward",
                  BatchNorm: "batchnorm_forward", GlobalAvgPool: "global_avgpool_forward"}

    def forward(nodes):
        for node in nodes:
            if isinstance(node.layer, Residual):
                forward(node.body)
                forward(node.shortcut)
                put("add_forward", node, "add")
            elif type(node.layer) in forward_op:
                put(_sparse(node, forward_op[type(node.layer)]), node, "fwd")

    def backward(nodes):
        for node in reversed(nodes):
            layer, i = node.layer, node.index
            if isinstance(layer, Residual):
                backward(node.shortcut)
                backward(node.body)
                put("add_backward", node, "bwd")
            elif isinstance(layer, MaxPool):
                put("maxpool_backward", node, "bwd")
            elif isinstance(layer, GlobalAvgPool):
                put("global_avgpool_backward", node, "bwd")
            elif isinstance(layer, BatchNorm):
                put("batchnorm_backward", node, "bwd")
            elif isinstance(layer, (Conv, Linear)):
                if i != first:
                    put("prune_grad", node, "prune")
                put(_sparse(node, f"{layer.kind}_backward_weight"), node, "bwd_weight")
                if i != first:
                    put(_sparse(node, f"{layer.kind}_backward_data"), node, "bwd_data")
            if i == first:
                return True
        return False

    forward(model.nodes)
    labels["softmax_xent"] = ["loss"]
    backward(model.nodes)
    trained = model.param_shapes()
    labels["sgd_update"] = [f"sgd {k}" for k in param_keys if k in trained]
    labels["batchnorm_update_stats"] = [f"{names[i]} running stats"
                                        for i, layer in enumerate(model.flat_layers) if isinstance(layer, BatchNorm)]
    return labels


class CapturingOps:
    """Wraps any Ops and keeps ``(op name, return value)`` of every call in ``outputs``."""

    def __init__(self, ops):
        self._ops = ops
        self.outputs: List[Tuple[str, object]] = []

    @property
    def last_stats(self):
        return self._ops.last_stats

    def __getattr__(self, op):
        method = getattr(self._ops, op)
        if op not in OP_OUTPUTS:
            return method

        def call(*args, **kw):
            out = method(*args, **kw)
            self.outputs.append((op, out))
            return out
        return call


#: ops whose float outputs are sums of products (see the module docstring: their magnitude scale) ->
#: the most terms an output element sums, from the op's arguments
_SUM_TERMS = {
    "conv_forward": lambda x, w, *a: int(np.prod(np.shape(w)[1:])),
    "conv_backward_data": lambda dy, w, *a: int(np.shape(w)[0] * np.prod(np.shape(w)[2:])),
    "conv_backward_weight": lambda x, dy, *a: int(np.shape(dy)[0] * np.prod(np.shape(dy)[2:])),
    "linear_forward": lambda x, w, *a: int(np.shape(w)[1]),
    "linear_backward_data": lambda dy, w, *a: int(np.shape(w)[0]),
    "linear_backward_weight": lambda x, dy, *a: int(np.shape(x)[0]),
    "sparse_linear_forward": lambda x, w, *a: int(np.shape(w)[1]),
    "sparse_linear_backward_data": lambda dy, w, *a: int(np.shape(w)[0]),
    "sparse_linear_backward_weight": lambda x, dy, *a: int(np.shape(x)[0]),
}
#: the unit roundoff of float32 (round to nearest)
_F32_UNIT_ROUNDOFF = 2.0 ** -24


def _channel_shape(a: np.ndarray) -> tuple:
    """The shape that broadcasts a per-channel (C,) vector against ``a`` (N, C[, H, W])."""
    return (1, -1) + (1,) * (np.ndim(a) - 2)


def _bn_forward_magnitudes(x, gamma, beta, eps=1e-5, relu=True):
    """Batch normalisation forward: mean is a sum of m terms of size mean|x|, so its rounding moves
    xhat by up to that size times inv_std; y scales it by |gamma|; var sums m positive terms (its
    magnitude is itself)."""
    x = np.asarray(x, np.float64)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    var = x.var(axis=axes)
    inv_std = 1.0 / np.sqrt(var + eps)
    x = np.abs(x)
    mean_abs = x.mean(axis=axes)
    xhat = np.broadcast_to((mean_abs * inv_std).reshape(_channel_shape(x)), x.shape) + x * inv_std.reshape(
        _channel_shape(x))
    y = np.abs(np.asarray(gamma, np.float64)).reshape(_channel_shape(x)) * xhat + \
        np.abs(np.asarray(beta, np.float64)).reshape(_channel_shape(x))
    return {"y": y, "xhat": xhat, "mean": mean_abs, "var": var}, x.size // x.shape[1]


def _bn_backward_magnitudes(dy, xhat, var, gamma, eps=1e-5, out_mask=None):
    """Batch normalisation backward: dbeta and dgamma are sums of m terms (|dy|, |dy xhat|); dx
    combines m dy with both sums, each scaled by gamma inv_std / m."""
    dy, xhat = np.abs(np.asarray(dy, np.float64)), np.abs(np.asarray(xhat, np.float64))
    axes = tuple(i for i in range(dy.ndim) if i != 1)
    m = dy.size // dy.shape[1]
    dbeta, dgamma = dy.sum(axis=axes), (dy * xhat).sum(axis=axes)
    scale = np.abs(np.asarray(gamma, np.float64)) / np.sqrt(np.asarray(var, np.float64) + eps) / m
    per = lambda v: np.asarray(v).reshape(_channel_shape(dy))
    dx = per(scale) * (m * dy + per(dbeta) + xhat * per(dgamma))
    return {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}, m


def _float_error(d: np.ndarray, r: np.ndarray, tol: Tolerance, magnitude: Optional[np.ndarray] = None,
                 terms: int = 1):
    """(max abs error, max rel error, worst index, device and reference value there); ``magnitude``
    (shape of r): the sum of |terms| of each element of a sum of ``terms`` terms, a further floor of
    the denominator (see the module docstring)."""
    d, r = np.asarray(d, np.float64), np.asarray(r, np.float64)
    if d.shape != r.shape:
        raise ValueError(f"shape {d.shape} differs from the reference's {r.shape}")
    if d.size == 0:
        return 0.0, 0.0, (), 0.0, 0.0
    diff = np.abs(d - r)
    diff = np.where(np.isnan(d) != np.isnan(r), np.inf, np.nan_to_num(diff, nan=0.0))
    denom = np.maximum(np.abs(r), tol.floor * float(np.max(np.abs(r))))
    if magnitude is not None:
        factor = max(tol.floor, terms * _F32_UNIT_ROUNDOFF / tol.rtol) if tol.rtol > 0 else tol.floor
        denom = np.maximum(denom, factor * np.abs(np.asarray(magnitude, np.float64)))
    rel = np.where(diff == 0, 0.0, diff / np.where(denom > 0, denom, 1.0))
    rel = np.where((denom == 0) & (diff > 0), np.inf, rel)
    worst = np.unravel_index(int(np.argmax(rel)), rel.shape)
    return float(diff.max()), float(rel[worst]), tuple(int(i) for i in worst), float(d[worst]), float(r[worst])


class _CheckingOps:
    """ReferenceOps on the backend's inputs: each call compares and then returns the backend's outputs."""

    def __init__(self, labels: Dict[str, List[str]], device_outputs: Sequence[Tuple[str, object]], tol: Tolerance):
        self._ref = ReferenceOps(mul=tol.mul)
        self._labels = labels
        self._device = list(device_outputs)
        self._next = 0
        self._seen: Dict[str, int] = {}
        self._tol = tol
        self.last_stats = dict(self._ref.last_stats)
        self.report = CheckReport(tolerance=tol)

    def _take(self, op: str):
        if self._next >= len(self._device) or self._device[self._next][0] != op:
            got = self._device[self._next][0] if self._next < len(self._device) else "nothing"
            raise RuntimeError(f"check: the reference step calls {op} where the backend's calls have {got}")
        out = self._device[self._next][1]
        self._next += 1
        k = self._seen.get(op, 0)
        self._seen[op] = k + 1
        names = self._labels.get(op, [])
        return out, names[k] if k < len(names) else f"{op} #{k}"

    def _add(self, label, name, d, r, magnitude=None, terms=1):
        max_abs, max_rel, index, dv, rv = _float_error(d, r, self._tol, magnitude, terms)
        self.report.tensors.append(TensorError(label, name, max_abs, max_rel, index, dv, rv))

    def _magnitudes(self, op, args, kw) -> Tuple[dict, int]:
        """(output name -> the magnitude its float32 rounding scales with, per element; the terms of the
        longest sum behind it) for the ops that sum (see the module docstring); ({}, 1) for the others."""
        if op == "batchnorm_forward":
            return _bn_forward_magnitudes(*args, **kw)
        if op == "batchnorm_backward":
            return _bn_backward_magnitudes(*args, **kw)
        if op not in _SUM_TERMS:
            return {}, 1
        absolute = lambda a: np.abs(a) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
        out = getattr(self._ref, op)(*map(absolute, args), **{k: absolute(v) for k, v in kw.items()})
        return dict(zip(OP_OUTPUTS[op], out if isinstance(out, tuple) else (out,))), _SUM_TERMS[op](*args)

    def _compare(self, op, label, dev, ref, args, kw):
        dev_t = dev if isinstance(dev, tuple) else (dev,)
        ref_t = ref if isinstance(ref, tuple) else (ref,)
        magnitudes, terms = self._magnitudes(op, args, kw)
        values = dict(zip(OP_OUTPUTS[op], zip(dev_t, ref_t)))
        for name, (d, r) in values.items():
            if d is None and r is None:
                continue
            if name == "mask":
                self._mask(label, d, r, values["y"][1])
            elif name == "argmax":
                self._argmax(label, d, r, args[0])
            else:
                self._add(label, name, np.asarray(d), np.asarray(r), magnitudes.get(name), terms)

    def _mask(self, label, d, r, y_ref):
        d, r = np.asarray(d, bool), np.asarray(r, bool)
        y = np.abs(np.asarray(y_ref, np.float64))
        # a sign can flip only where the allowed error of y reaches zero
        band = self._tol.rtol * self._tol.floor * (float(y.max()) if y.size else 0.0)
        wrong = (d != r) & (y > band)
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(wrong)), wrong.shape)) if wrong.size else ()
        bad = float(wrong.any())
        self.report.tensors.append(TensorError(label, "mask", bad, np.inf if bad else 0.0, index,
                                               float(d[index]) if wrong.size else 0.0,
                                               float(r[index]) if wrong.size else 0.0))

    def _argmax(self, label, d, r, x):
        # ties: both are right when they pick windows' positions of equal value
        x = np.asarray(x)
        n, c = x.shape[:2]
        planes = x.reshape(n, c, -1)
        pick = lambda a: np.take_along_axis(planes, np.asarray(a, np.int64).reshape(n, c, -1), axis=2)
        self._add(label, "argmax (value at)", pick(d).reshape(np.shape(d)), pick(r).reshape(np.shape(r)))

    def __getattr__(self, op):
        if op not in OP_OUTPUTS:
            raise AttributeError(op)

        def call(*args, **kw):
            dev, label = self._take(op)
            ref = getattr(self._ref, op)(*args, **kw)
            self._compare(op, label, dev, ref, args, kw)
            return dev
        return call


def check_step(model: Model, params: Dict[str, np.ndarray], velocities: Dict[str, np.ndarray], x: np.ndarray,
               y: np.ndarray, lr: float, momentum: float, weight_decay: float,
               device_outputs: Sequence[Tuple[str, object]], tolerance: Tolerance = TOLERANCES["float32"],
               raise_on_failure: bool = True, prune_rate: float = 0.0,
               prune_seeds: Optional[np.ndarray] = None, grad_scale: float = 1.0,
               nesterov: bool = False) -> CheckReport:
    """Compare a backend's step on batch x (N, C, H, W), y (N,) with the reference, op by op.

    ``params`` / ``velocities``: the weights before the step (host arrays);
    ``device_outputs``: the backend's ``(op name, return value)`` of every op
    call of that step, in order (:class:`CapturingOps` collects them on any
    Ops); ``prune_rate`` / ``prune_seeds`` / ``grad_scale`` / ``nesterov`` as given to that step. Raises :class:`CheckFailed` when a tensor's relative error exceeds
    ``tolerance.rtol`` (unless ``raise_on_failure`` is False).
    """
    checking = _CheckingOps(op_labels(model, list(params)), device_outputs, tolerance)
    params = {k: np.array(v, dtype=np.float32) for k, v in params.items()}
    velocities = {k: np.array(v, dtype=np.float32) for k, v in velocities.items()}
    _step.train_step(checking, model, params, velocities, x, y, lr, momentum, weight_decay, account=False,
                     prune_rate=prune_rate, prune_seeds=prune_seeds, grad_scale=grad_scale, nesterov=nesterov)
    if checking._next != len(checking._device):
        raise RuntimeError(f"check: the backend made {len(checking._device)} op calls, the reference step "
                           f"{checking._next}")
    report = checking.report
    # the first failing tensor in step order: later ones may only inherit its error
    first = next((t for t in report.tensors if not t.max_rel <= tolerance.rtol), None)
    if raise_on_failure and first is not None:
        raise CheckFailed(
            f"check failed: {first.layer}, tensor {first.tensor}: max relative error {first.max_rel:.3g} > "
            f"{tolerance.rtol:g} (max abs {first.max_abs:.3g}) at index {first.index}: backend {first.device!r}, "
            f"reference {first.reference!r}", report)
    return report
