"""One training step, written once against the :class:`~zskip.models.ops.Ops` interface.

Every tensor operation goes through ``ops`` (so the same code drives the numpy
reference and the accelerators); between ops only reshapes happen
(flatten/unflatten). The backward pass follows the zero-skipping dataflow:

- ReLU backward is fused: the backward-data of layer L+1 gets
  ``out_mask`` = ReLU mask of its input (layer L's output), so it returns the
  gradient with respect to L's pre-activation output directly;
- a max-pool after a ReLU passes its own mask (``y > 0``) on as the ReLU
  mask of its output, and its backward scatters an already masked gradient,
  which stays masked;
- no backward-data is run for a layer with no parameters before it (the
  gradient with respect to the image is never needed);
- batch normalisation fuses its ReLU the same way, and its backward gets
  the mask of its own input (None after a convolution without ReLU): its dx
  is dense, so the convolution before it sees a dense dy, and only the
  output-type skipping of that convolution's backward-data remains;
- a residual block adds its body's and its shortcut's outputs (ReLU fused
  into the add); backward, the add's gradient goes to both paths unchanged,
  and ``add_backward`` sums the two paths' gradients where they forked,
  masked with the block input's ReLU mask;
- global average pooling forgets the mask (a mean is no ReLU output); its
  backward spreads the gradient over each plane under the input's mask.

With ``prune_rate`` > 0, each layer's dy (the gradient of its pre-activation
output, before its backward-weight and backward-data) is stochastically
pruned (``ops.prune_grad``, SparseTrain) with that layer's word of
``prune_seeds`` (:func:`prune_seeds`: a function of the run's seed, the step
and the layer number), and the backward kernels skip the zeros it creates. The first layer with
parameters is not pruned: its dy feeds only its weight gradient, whose
kernel is bound by the scan of the input image rather than by dy's nonzeros
(LeNet-5, batch 64: 58.9k cycles at 88 % and at 94 % zeros of dy), while
pruning costs two passes over that gradient, the network's largest (110k
cycles).

Every op's outputs are checked for inf/NaN as they come (:class:`NonFinite`
names the layer, the op and the tensor): a backend whose kernels count the
non-finite values they store (``last_stats["nonfinite"]``, the device's own
counter) is believed when it counts none; otherwise the outputs are scanned.

Statistics (fractions of zeros, the reference MAC accounting, the ops'
``last_stats``) are read from the tensors after the fact and never feed back
into the arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import reference as R
from .networks import (BatchNorm, Conv, Flatten, GlobalAvgPool, Linear, MaxPool, Model, Node, Residual,
                       param_key)
from .structured import sparse_linear_macs
from .ops import OP_OUTPUTS, NonFinite, check_finite

__all__ = ["Batch", "StepResult", "NonFinite", "check_prune_rate", "train_step", "predict", "forward",
           "prune_seeds", "OPS_BY_KIND", "unsupported_layers"]


@dataclass
class Batch:
    """One mini-batch: x (N, C, H, W) float32, y (N,) labels; ``check``: compare this step with the reference.

    ``prune_seeds``: uint32 (len(model.flat_layers),), the step's gradient-pruning
    seeds (``zskip.models.step.prune_seeds``); needed when the backend prunes.
    ``lr``: this step's learning rate (a schedule's, ``zskip.models.lr_schedule``);
    None: the ``lr`` the stream was given.
    """
    x: np.ndarray
    y: np.ndarray
    check: bool = False
    prune_seeds: Optional[np.ndarray] = None
    lr: Optional[float] = None

    def step_lr(self, default: float) -> float:
        """The learning rate this batch trains with: its own, else ``default``."""
        return float(default if self.lr is None else self.lr)


def _run(ops, where: str, op: str, *args, **kw):
    """``ops.<op>(*args, **kw)``, refusing outputs that hold inf or NaN (see the module docstring)."""
    try:
        # overflow is detected below and reported with the layer, not as a numpy warning
        with np.errstate(over="ignore", invalid="ignore"):
            out = getattr(ops, op)(*args, **kw)
    except NonFinite as e:
        raise NonFinite(f"{where}: {e}") from None
    stats = getattr(ops, "last_stats", None)
    counted = stats.get("nonfinite") if isinstance(stats, dict) else None
    if counted == 0:
        return out
    values = out if isinstance(out, tuple) else (out,)
    try:
        # a sparse op returns what its dense form does
        for name, value in zip(OP_OUTPUTS[op.replace("sparse_", "", 1)], values):
            check_finite(op, name, value)
    except NonFinite as e:
        detail = f" (the kernel counted {counted})" if counted else ""
        raise NonFinite(f"{where}: {e}{detail}") from None
    if counted:
        # counted by the kernel but in no stored tensor: a forward pre-activation the ReLU turned into 0
        raise NonFinite(f"{where}: {op} produced {counted} non-finite values (inf/NaN) in y (pre-activation, "
                        f"counted by the kernel)")
    return out


@dataclass
class StepResult:
    """What one training step returns.

    ``params`` / ``velocities``: the updated dicts (new arrays, inputs untouched).
    ``loss``: mean softmax cross-entropy of the batch before the update.
    ``logits``: (N, classes) of the forward pass before the update.
    ``layers``: per conv or linear layer (the layers with MACs), a dict with ``index`` (layer number), ``kind``,
    ``density`` (1, or a sparse junction's fan_in / inputs), ``edges`` (stored weights),
    ``input_sparsity`` (fraction of zeros of its input activation),
    ``grad_sparsity`` (fraction of zeros of dy, the gradient of its
    pre-activation output, before pruning), ``pruned_grad_sparsity`` and
    ``prune`` (the prune op's ``last_stats``, with ``tau`` on backends that
    report it) when pruning is on, ``macs`` (reference accounting per pass:
    ``{"fwd"|"bwd_data"|"bwd_weight": {"macs_dense", "macs_nonzero", "macs_skipped_input",
    "macs_skipped_output"}}``, see ``reference.conv_macs``;
    ``bwd_data`` absent when the pass is not run) and ``kernel`` (the ops'
    ``last_stats`` per pass).
    """
    loss: float
    logits: np.ndarray
    params: Dict[str, np.ndarray]
    velocities: Dict[str, np.ndarray]
    layers: List[dict] = field(default_factory=list)


@dataclass
class _Record:
    """What the forward pass keeps of one layer for the backward pass."""
    x: np.ndarray                       # the layer's input
    in_mask: Optional[np.ndarray]       # ReLU mask of the input, None if no ReLU before
    argmax: Optional[np.ndarray] = None
    fwd_stats: Optional[dict] = None
    xhat: Optional[np.ndarray] = None   # batch normalisation: normalised input and batch statistics
    mean: Optional[np.ndarray] = None
    var: Optional[np.ndarray] = None


#: the ops the step calls for each layer kind (training and inference); an Ops
#: that lacks one cannot run a model with that kind of layer
OPS_BY_KIND = {
    "conv": ("conv_forward", "conv_backward_weight", "conv_backward_data"),
    "linear": ("linear_forward", "linear_backward_weight", "linear_backward_data"),
    "maxpool": ("maxpool_forward", "maxpool_backward"),
    "flatten": (),
    "batchnorm": ("batchnorm_forward", "batchnorm_backward", "batchnorm_inference", "batchnorm_update_stats"),
    "avgpool": ("global_avgpool_forward", "global_avgpool_backward"),
    "residual": ("add_forward", "add_backward"),
}


def unsupported_layers(ops, model: Model) -> List[Tuple[str, str]]:
    """(layer kind, op) for every op ``model``'s layers need that ``ops`` (an Ops or its class) lacks."""
    missing = []
    for kind in dict.fromkeys(layer.kind for layer in model.flat_layers):
        missing += [(kind, op) for op in OPS_BY_KIND[kind] if not hasattr(ops, op)]
    return missing


def _require_ops(ops, model: Model) -> None:
    missing = unsupported_layers(ops, model)
    if missing:
        kind, op = missing[0]
        raise ValueError(f"model: {kind} is not supported by the {getattr(ops, 'name', type(ops).__name__)} "
                         f"backend (it has no {op}; model {model.name!r}); use --backend reference")


def _fmix32(h: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint32(16))
        h = h * np.uint32(0x85EBCA6B)
        h = h ^ (h >> np.uint32(13))
        h = h * np.uint32(0xC2B2AE35)
        return h ^ (h >> np.uint32(16))


def prune_seeds(seed: int, step: int, n_layers: int) -> np.ndarray:
    """(n_layers,) uint32: the pruning seed of each layer number at training ``step`` of a run seeded ``seed``.

    murmur3's finaliser mixes (seed, step, layer), so every layer and every
    step draws different random numbers and a resumed run draws the same ones.
    """
    for name, value in (("seed", seed), ("step", step), ("n_layers", n_layers)):
        if not isinstance(value, (int, np.integer)) or not 0 <= int(value) < 2 ** 32:
            raise ValueError(f"{name}: must be an integer in [0, {2 ** 32 - 1}], got {value!r}")
    per_step = _fmix32(np.uint32(seed) ^ _fmix32(np.uint32(step)))
    return _fmix32(per_step ^ _fmix32(np.arange(1, int(n_layers) + 1, dtype=np.uint32))).astype(np.uint32)


def _zero_fraction(a: np.ndarray) -> float:
    return float(np.count_nonzero(a == 0)) / a.size if a.size else 0.0


#: the ops a pre-defined sparse junction needs (zskip.models.ops docstring)
SPARSE_OPS = ("sparse_linear_forward", "sparse_linear_backward_data", "sparse_linear_backward_weight")


def _sparse_pattern(ops, model: Model, index: int):
    """Layer ``index``'s connection pattern (None when dense); refuses Ops without the sparse ops."""
    pattern = model.pattern(index)
    if pattern is not None and not all(hasattr(ops, op) for op in SPARSE_OPS):
        raise ValueError(f"density: layer {model.layer_names()[index]} of model {model.name!r} is a pre-defined "
                         f"sparse junction "
                         f"(density {model.flat_layers[index].density:g}), which {type(ops).__name__} cannot run "
                         f"(it has no {', '.join(SPARSE_OPS)}); use the reference or emu backend")
    return pattern


def forward(ops, model: Model, params: Dict[str, np.ndarray], x: np.ndarray, training: bool = True):
    """Run the forward pass; returns (logits (N, classes), per-layer records by layer number).

    ``training``: batch normalisation with batch statistics (False: with the
    running statistics in ``params``, as :func:`predict` does).
    """
    x = R.check_array("x", x, 4)
    if tuple(x.shape[1:]) != tuple(model.input_shape):
        raise ValueError(f"x: expected samples of shape {tuple(model.input_shape)} for model "
                         f"{model.name!r}, got batch shape {x.shape}")
    records: List[Optional[_Record]] = [None] * len(model.flat_layers)
    act, _ = _forward_nodes(ops, model, model.nodes, params, x, None, records, training)
    return act, records


def _forward_nodes(ops, model: Model, nodes: Sequence[Node], params, act, mask, records, training: bool):
    """(output, its ReLU mask or None) of a layer list; fills ``records``."""
    names = model.layer_names()
    for node in nodes:
        i, layer = node.index, node.layer
        rec = records[i] = _Record(act, mask)
        where = f"layer {names[i]}"
        if isinstance(layer, Conv):
            act, mask = _run(ops, where, "conv_forward", act, params[param_key(i, "w")], params[param_key(i, "b")],
                                         stride=layer.stride, pad=layer.pad, relu=layer.relu)
            rec.fwd_stats = dict(ops.last_stats)
        elif isinstance(layer, Linear):
            pattern = _sparse_pattern(ops, model, i)
            if pattern is None:
                act, mask = _run(ops, where, "linear_forward", act, params[param_key(i, "w")], params[param_key(i, "b")],
                                               relu=layer.relu)
            else:
                act, mask = _run(ops, where, "sparse_linear_forward", act, params[param_key(i, "w")], params[param_key(i, "b")],
                                                      pattern, relu=layer.relu)
            rec.fwd_stats = dict(ops.last_stats)
        elif isinstance(layer, MaxPool):
            act, rec.argmax, pool_mask = _run(ops, where, "maxpool_forward", act, size=layer.size, stride=layer.stride)
            # max of non-negative values is zero exactly where the ReLU derivative
            # of its argmax is zero, so y > 0 is the ReLU mask of the pooled output
            mask = pool_mask if mask is not None else None
        elif isinstance(layer, Flatten):
            act = act.reshape(act.shape[0], -1)
            mask = None if mask is None else mask.reshape(mask.shape[0], -1)
        elif isinstance(layer, BatchNorm):
            gamma, beta = params[param_key(i, "gamma")], params[param_key(i, "beta")]
            if training:
                act, mask, rec.xhat, rec.mean, rec.var = _run(ops, where, "batchnorm_forward", act, gamma, beta,
                                                              eps=layer.eps, relu=layer.relu)
            else:
                act, mask = _run(ops, where, "batchnorm_inference", act, gamma, beta, params[param_key(i, "running_mean")],
                                 params[param_key(i, "running_var")], eps=layer.eps, relu=layer.relu)
            rec.fwd_stats = dict(ops.last_stats)
        elif isinstance(layer, GlobalAvgPool):
            # a mean is no ReLU output: the next layer's gradient is computed everywhere
            act, mask = _run(ops, where, "global_avgpool_forward", act), None
        elif isinstance(layer, Residual):
            # the fork: both paths read the block's input
            body, _ = _forward_nodes(ops, model, node.body, params, act, mask, records, training)
            skip = _forward_nodes(ops, model, node.shortcut, params, act, mask, records, training)[0] \
                if node.shortcut else act
            act, mask = _run(ops, where, "add_forward", body, skip, relu=layer.relu)
    return act, mask


def predict(ops, model: Model, params: Dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Logits (N, classes) for a batch x (N, C, H, W); batch normalisation uses its running statistics."""
    _require_ops(ops, model)
    return forward(ops, model, params, x, training=False)[0]


def _first_with_params(model: Model) -> Optional[int]:
    """Number of the first top-level layer with parameters, if nothing before it has any (else None).

    Nothing needs the gradient with respect to that layer's input, so its
    backward-data is never run and the backward pass ends with it.
    """
    for node in model.nodes:
        if isinstance(node.layer, (Conv, Linear, BatchNorm)):
            return node.index
        if isinstance(node.layer, Residual):
            return None
    return None


@dataclass
class _Backward:
    """What the backward walk shares: the ops, the model's params, the step's settings and its outputs."""
    ops: object
    model: Model
    names: Tuple[str, ...]
    params: Dict[str, np.ndarray]
    records: List[Optional[_Record]]
    first: Optional[int]
    account: bool
    prune_rate: float
    prune_seeds: Optional[np.ndarray]
    grads: Dict[str, np.ndarray] = field(default_factory=dict)
    layer_stats: List[dict] = field(default_factory=list)


def _backward_nodes(b: _Backward, nodes: Sequence[Node], grad):
    """The gradient with respect to the input of a layer list (pre-activation of whatever produced it)."""
    ops = b.ops
    for node in reversed(nodes):
        i, layer, rec = node.index, node.layer, b.records[node.index]
        where = f"layer {b.names[i]}"
        if isinstance(layer, Flatten):
            grad = grad.reshape(rec.x.shape)
        elif isinstance(layer, MaxPool):
            grad = _run(ops, where, "maxpool_backward", grad, rec.argmax, rec.x.shape, size=layer.size,
                        stride=layer.stride)
        elif isinstance(layer, GlobalAvgPool):
            grad = _run(ops, where, "global_avgpool_backward", grad, rec.x.shape, out_mask=rec.in_mask)
        elif isinstance(layer, Residual):
            # the add fans the gradient out to both paths; where they forked, their gradients meet
            skip = _backward_nodes(b, node.shortcut, grad) if node.shortcut else grad
            body = _backward_nodes(b, node.body, grad)
            grad = _run(ops, where, "add_backward", body, skip, out_mask=rec.in_mask)
        elif isinstance(layer, BatchNorm):
            gamma = b.params[param_key(i, "gamma")]
            grad, b.grads[param_key(i, "gamma")], b.grads[param_key(i, "beta")] = _run(
                ops, where, "batchnorm_backward", grad, rec.xhat, rec.var, gamma, eps=layer.eps, out_mask=rec.in_mask)
        else:
            grad = _backward_weighted(b, i, layer, rec, grad)
        if i == b.first:
            break
    return grad


def _backward_weighted(b: _Backward, i: int, layer, rec: _Record, grad):
    """Backward-weight and (unless ``i`` is the first layer with params) backward-data of a conv or linear layer."""
    ops = b.ops
    w = b.params[param_key(i, "w")]
    pattern = _sparse_pattern(ops, b.model, i)
    where = f"layer {b.names[i]}"
    kernel = {"fwd": rec.fwd_stats}
    info = {"index": i, "name": b.names[i], "kind": layer.kind,
            "input_sparsity": _zero_fraction(rec.x), "grad_sparsity": _zero_fraction(grad),
            "density": 1.0 if pattern is None else pattern.density, "edges": int(w.size)}
    if b.prune_rate and i != b.first:
        # a one-word view: on a device program the seed is a word of memory the host rewrites per batch
        grad = _run(ops, where, "prune_grad", grad, b.prune_rate, b.prune_seeds[i:i + 1])
        info["prune"] = dict(ops.last_stats)
        info["pruned_grad_sparsity"] = _zero_fraction(grad)
    if b.account:
        if isinstance(layer, Conv):
            macs = R.conv_macs(rec.x, grad, w.shape, layer.stride, layer.pad, out_mask=rec.in_mask)
        elif pattern is not None:
            macs = sparse_linear_macs(rec.x, grad, pattern, out_mask=rec.in_mask)
        else:
            macs = R.linear_macs(rec.x, grad, out_mask=rec.in_mask)
        if i == b.first:
            del macs["bwd_data"]
        info["macs"] = macs
    if isinstance(layer, Conv):
        dw, db = _run(ops, where, "conv_backward_weight", rec.x, grad, w.shape, stride=layer.stride, pad=layer.pad)
        kernel["bwd_weight"] = dict(ops.last_stats)
        if i != b.first:
            grad = _run(ops, where, "conv_backward_data", grad, w, rec.x.shape, stride=layer.stride, pad=layer.pad,
                        out_mask=rec.in_mask)
            kernel["bwd_data"] = dict(ops.last_stats)
    elif pattern is not None:
        dw, db = _run(ops, where, "sparse_linear_backward_weight", rec.x, grad, pattern)
        kernel["bwd_weight"] = dict(ops.last_stats)
        if i != b.first:
            grad = _run(ops, where, "sparse_linear_backward_data", grad, w, pattern, out_mask=rec.in_mask)
            kernel["bwd_data"] = dict(ops.last_stats)
    else:
        dw, db = _run(ops, where, "linear_backward_weight", rec.x, grad)
        kernel["bwd_weight"] = dict(ops.last_stats)
        if i != b.first:
            grad = _run(ops, where, "linear_backward_data", grad, w, out_mask=rec.in_mask)
            kernel["bwd_data"] = dict(ops.last_stats)
    info["kernel"] = kernel
    b.grads[param_key(i, "w")], b.grads[param_key(i, "b")] = dw, db
    b.layer_stats.append(info)
    return grad


def check_prune_rate(prune_rate) -> float:
    """``prune_rate`` as a float in [0, 1); ValueError naming it otherwise."""
    if isinstance(prune_rate, bool) or not isinstance(prune_rate, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(prune_rate) < 1.0:
        raise ValueError(f"prune_rate: must be a number in [0, 1) (0: no pruning), got {prune_rate!r}")
    return float(prune_rate)


def train_step(ops, model: Model, params: Dict[str, np.ndarray], velocities: Dict[str, np.ndarray],
               x: np.ndarray, y: np.ndarray, lr: float, momentum: float, weight_decay: float,
               account: bool = True, prune_rate: float = 0.0,
               prune_seeds: Optional[np.ndarray] = None, grad_scale: float = 1.0,
               nesterov: bool = False) -> StepResult:
    """Forward, softmax cross-entropy, backward and SGD on one batch.

    x (N, C, H, W) float32, y (N,) integer labels. ``params``: the trained
    parameters and, for batch normalisation, the running statistics (see
    ``zskip.models.networks``); ``velocities``: one momentum buffer per
    trained parameter. ``account=False`` skips the
    reference MAC accounting (the costliest statistic) and leaves ``macs``
    empty; the arithmetic is the same either way. ``prune_rate`` in [0, 1):
    target pruning rate of each conv/linear layer's dy (0: off); ``prune_seeds``: uint32
    (len(model.flat_layers),), one seed word per layer number (:func:`prune_seeds`).
    ``grad_scale``: the loss scale (a power of two): every gradient of the
    backward pass carries it (the ops scale dlogits and unscale in the SGD
    update), so fixed-point gradients keep their resolution; the loss and
    the updates do not depend on it. ``nesterov``: the updates use Nesterov
    momentum (``reference.sgd_update``).

    Order of the ops: forward, loss, backward (layers in reverse; in a
    residual block the shortcut before the body), one ``sgd_update`` per
    trained parameter (in ``params``' order), then one
    ``batchnorm_update_stats`` per batch normalisation (by layer number).
    """
    for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
    prune_rate = check_prune_rate(prune_rate)
    n_layers = len(model.flat_layers)
    if prune_rate and (prune_seeds is None or np.shape(prune_seeds) != (n_layers,)):
        raise ValueError(f"prune_seeds: pruning needs one uint32 seed per layer, shape ({n_layers},), "
                         f"got {None if prune_seeds is None else np.shape(prune_seeds)}")
    missing = [k for k in model.state_shapes() if k not in params]
    if missing:
        raise ValueError(f"params: missing {', '.join(missing)} for model {model.name!r} "
                         f"(Model.init_params makes every entry)")
    _require_ops(ops, model)
    logits, records = forward(ops, model, params, x)
    # passed only when used, so Ops written before loss scaling keep working
    scaled = {} if grad_scale == 1.0 else {"grad_scale": grad_scale}
    update_kw = dict(scaled, nesterov=True) if nesterov else scaled
    loss, grad = _run(ops, "loss", "softmax_xent", logits, y, **scaled)

    back = _Backward(ops, model, model.layer_names(), params, records, _first_with_params(model), account,
                     prune_rate, prune_seeds)
    _backward_nodes(back, model.nodes, grad)

    trained = model.param_shapes()
    names = back.names
    new_params, new_velocities = {}, {}
    for key in params:
        if key in trained:
            new_params[key], new_velocities[key] = _run(
                ops, f"parameter {key} ({names[int(key[5:].split('.')[0])]})", "sgd_update", params[key],
                back.grads[key], velocities[key], lr, momentum, weight_decay, **update_kw)
    for i, layer in enumerate(model.flat_layers):
        if isinstance(layer, BatchNorm):
            rec = records[i]
            mean_key, var_key = param_key(i, "running_mean"), param_key(i, "running_var")
            new_params[mean_key], new_params[var_key] = _run(
                ops, f"layer {names[i]} running statistics", "batchnorm_update_stats", params[mean_key],
                params[var_key], rec.mean, rec.var, count=rec.x.size // rec.x.shape[1], momentum=layer.momentum)
    new_params = {key: new_params[key] for key in params}       # the caller's order
    back.layer_stats.reverse()
    return StepResult(loss=float(loss), logits=logits, params=new_params,
                      velocities=new_velocities, layers=back.layer_stats)
