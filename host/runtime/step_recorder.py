"""The training step recorded as a device program, and replayed from the device's results.

The program is derived from ``zskip.models.step`` itself, not written a
second time: :class:`ProgramRecorder` is an :class:`~zskip.models.ops.Ops`
whose tensors are placeholder numpy arrays, each registered to an arena slot
by its data pointer (reshapes keep the pointer). Running
``step.train_step(recorder, ...)`` emits one descriptor per op call, in
step.py's order; ``sgd_update`` returns its own arguments, so the update is
in place in the ``wgt`` arena.

After a device run, ``step.train_step`` runs a second time on
:class:`ReplayOps`, which hands step.py the tensors read back from the
arenas (and each descriptor's stats record as ``last_stats``), so the loss,
logits, sparsity figures, reference MAC accounting and per-layer kernel
counters of the :class:`~zskip.models.step.StepResult` are computed by the
same code as on every other backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ...models import reference as R
from ...models.ops import OP_OUTPUTS
from ..ip.program import (OPCODES, ArenaLayout, bit_words, bwd_data_flags, check_bwd_data_form, encode,
                          gather_capacity_error)

__all__ = ["Out", "Call", "ProgramRecorder", "ReplayOps", "counters"]

def _pointer(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


@dataclass(frozen=True)
class Out:
    """Where an op's output lives: tensor ``name``, ``shape`` and kind ("f32", "bits", "index", "loss")."""
    name: str
    shape: tuple
    kind: str


@dataclass
class Call:
    """One op call of step.py: the op's name, its descriptor and how to read its outputs back.

    ``outputs``: the op's return value as a template: an :class:`Out`, a
    tuple of them, ``None`` for a None return, or ``"arg:N"`` for "return
    argument N unchanged" (the in-place SGD update).
    """
    op: str
    descriptor: int
    outputs: object


class ProgramRecorder:
    """An Ops that records descriptors instead of computing (see the module docstring).

    ``layout``: the program's :class:`ArenaLayout` (act, grad, bits arenas);
    ``weights``: the :class:`~zskip.host.runtime.device_weights.DeviceWeights` whose ``wgt`` slots hold params
    and velocities; ``skip_zeros``, ``limits`` and ``bwd_data_form`` as in the Accelerator
    (a convolution's dy is "from a batch normalisation backward" when a BN_BWD of this
    program wrote it).
    """

    def __init__(self, layout: ArenaLayout, weights, skip_zeros: bool, limits, bwd_data_form: str = "auto"):
        self.bwd_data_form = check_bwd_data_form(bwd_data_form)
        #: names of the tensors a batchnorm_backward of this program wrote (its dx)
        self._batchnorm_grads = set()
        self.layout = layout
        self.weights = weights
        self.skip_zeros = skip_zeros
        self.limits = limits
        self.descriptors: List[np.ndarray] = []
        self.calls: List[Call] = []
        self.last_stats: dict = {}
        self._by_pointer: Dict[int, str] = {}
        self._keep: List[np.ndarray] = []       # placeholders stay alive so no pointer is reused
        self._count = 0
        #: bits-arena tensors the program reads but never writes (connection patterns): name -> uint32 words
        self.constants: Dict[str, np.ndarray] = {}
        self._patterns: Dict[tuple, str] = {}

    # ------------------------------------------------------------------ tensors
    def placeholder(self, arena: str, shape, kind: str = "f32", name: Optional[str] = None) -> np.ndarray:
        """A new tensor of ``shape`` in ``arena``; kind "f32", "bits" (bool) or "index" (int32)."""
        shape = tuple(int(v) for v in shape)
        count = int(np.prod(shape))
        name = name or f"t{len(self._keep)}"
        words = bit_words(count) if kind == "bits" else count
        self.layout.alloc(arena, name, max(1, words))
        dtype = {"f32": np.float32, "bits": bool, "index": np.int32}[kind]
        # one spare element so that even an empty tensor has its own pointer
        a = np.zeros(count + 1, dtype=dtype)[:count].reshape(shape)
        self._register(a, name)
        return a

    def _register(self, a: np.ndarray, name: str) -> None:
        self._by_pointer[_pointer(a)] = name
        self._keep.append(a)

    def register_weights(self, params: Dict[str, np.ndarray], velocities: Dict[str, np.ndarray]) -> None:
        """Make the placeholder params/velocities known under their wgt slot names."""
        for key in params:
            self._register(params[key], self.weights.param_slot(key))
        for key in velocities:
            self._register(velocities[key], self.weights.velocity_slot(key))

    def _within(self, a: np.ndarray):
        """(name, word offset) of the registered tensor that view ``a`` starts inside, or (None, 0)."""
        ptr = _pointer(a)
        for t in self._keep:
            start = _pointer(t)
            if start <= ptr < start + t.nbytes and t.itemsize == a.itemsize == 4:
                return self._by_pointer[start], (ptr - start) // 4
        return None, 0

    def _slot(self, arg: str, a, arena: str) -> int:
        a = np.asarray(a)
        name, within = self._by_pointer.get(_pointer(a)), 0
        if name is None:
            name, within = self._within(a)
        if name is None:
            raise RuntimeError(f"{arg}: not a tensor of this program (was it computed outside the Ops?)")
        if name in self.layout.entries:
            where, offset, _ = self.layout.entries[name]
            offset += within
        else:
            where, offset, _ = self.weights.layout.entries[name]
        if where != arena:
            raise RuntimeError(f"{arg}: lives in the {where} arena, the kernel reads it from {arena}")
        return offset

    def _emit(self, op: str, outputs, opcode: str, flags=(), **fields) -> None:
        self.descriptors.append(encode(opcode, flags=flags, limits=self.limits, **fields))
        self.calls.append(Call(op, len(self.descriptors) - 1, outputs))
        # step.py copies last_stats into the StepResult: the descriptor index
        # tells ReplayOps which stats record belongs to which layer and pass
        self.last_stats = {"descriptor": len(self.descriptors) - 1}

    def _flags(self, relu=False, has_mask=False):
        return (["SKIP_ZEROS"] if self.skip_zeros else []) + (["RELU"] if relu else []) + \
            (["HAS_OUT_MASK"] if has_mask else [])

    # ------------------------------------------------------------------ ops
    def conv_forward(self, x, w, b, stride=1, pad=0, relu=True):
        n, c, h, wd = x.shape
        k, _, r, s = w.shape
        y_shape = R.conv_output_shape(x.shape, w.shape, stride, pad)
        y = self.placeholder("act", y_shape)
        mask = self.placeholder("bits", y_shape, "bits") if relu else None
        outputs = (self._spec(y), self._spec(mask))
        self._emit("conv_forward", outputs, "CONV_FWD", self._flags(relu=relu), n=n, c=c, h=h, w=wd, k=k, r=r,
                   s=s, stride=stride, pad=pad, x=self._slot("x", x, "act"), wgt=self._slot("w", w, "wgt"),
                   bias=self._slot("b", b, "wgt"), y=self._slot("y", y, "act"),
                   **({"mask_out": self._slot("mask", mask, "bits")} if relu else {}))
        return y, mask

    def conv_backward_data(self, dy, w, x_shape, stride=1, pad=0, out_mask=None):
        n, c, h, wd = x_shape
        k, _, r, s = w.shape
        dx = self.placeholder("grad", x_shape)
        extra = {} if out_mask is None else {"mask_in": self._slot("out_mask", out_mask, "bits")}
        flags = self._flags(has_mask=out_mask is not None) + bwd_data_flags(
            self.bwd_data_form, out_mask is not None, self._by_pointer.get(_pointer(dy)) in self._batchnorm_grads,
            gather_capacity_error(self.limits, x_shape, w.shape, stride, pad))
        self._emit("conv_backward_data", self._spec(dx), "CONV_BWD_DATA", flags,
                   n=n, c=c, h=h, w=wd, k=k, r=r, s=s, stride=stride, pad=pad, dy=self._slot("dy", dy, "grad"),
                   wgt=self._slot("w", w, "wgt"), dx=self._slot("dx", dx, "grad"), **extra)
        return dx

    def conv_backward_weight(self, x, dy, w_shape, stride=1, pad=0):
        n, c, h, wd = x.shape
        k, _, r, s = w_shape
        dw, db = self.placeholder("grad", w_shape), self.placeholder("grad", (k,))
        self._emit("conv_backward_weight", (self._spec(dw), self._spec(db)), "CONV_BWD_WEIGHT", self._flags(),
                   n=n, c=c, h=h, w=wd, k=k, r=r, s=s, stride=stride, pad=pad, x=self._slot("x", x, "act"),
                   dy=self._slot("dy", dy, "grad"), dw=self._slot("dw", dw, "grad"), db=self._slot("db", db, "grad"))
        return dw, db

    def maxpool_forward(self, x, size=2, stride=2):
        n, c, h, wd = x.shape
        y_shape = (n, c, (h - size) // stride + 1, (wd - size) // stride + 1)
        y = self.placeholder("act", y_shape)
        argmax = self.placeholder("bits", y_shape, "index")
        mask = self.placeholder("bits", y_shape, "bits")
        self._emit("maxpool_forward", (self._spec(y), self._spec(argmax), self._spec(mask)), "MAXPOOL_FWD", ["RELU"],
                   n=n, c=c, h=h, w=wd, r=size, stride=stride, x=self._slot("x", x, "act"),
                   y=self._slot("y", y, "act"), argmax=self._slot("argmax", argmax, "bits"),
                   mask_out=self._slot("mask", mask, "bits"))
        return y, argmax, mask

    def maxpool_backward(self, dy, argmax, x_shape, size=2, stride=2):
        n, c, h, wd = x_shape
        dx = self.placeholder("grad", x_shape)
        self._emit("maxpool_backward", self._spec(dx), "MAXPOOL_BWD", [], n=n, c=c, h=h, w=wd, r=size,
                   stride=stride, dy=self._slot("dy", dy, "grad"), argmax=self._slot("argmax", argmax, "bits"),
                   dx=self._slot("dx", dx, "grad"))
        return dx

    def _fc(self, n, i, j):
        return dict(n=n, c=i, k=j, h=1, w=1, r=1, s=1, stride=1, pad=0)

    def linear_forward(self, x, w, b, relu=True):
        n, i = x.shape
        j = w.shape[0]
        y = self.placeholder("act", (n, j))
        mask = self.placeholder("bits", (n, j), "bits") if relu else None
        self._emit("linear_forward", (self._spec(y), self._spec(mask)), "FC_FWD", self._flags(relu=relu),
                   **self._fc(n, i, j), x=self._slot("x", x, "act"), wgt=self._slot("w", w, "wgt"),
                   bias=self._slot("b", b, "wgt"), y=self._slot("y", y, "act"),
                   **({"mask_out": self._slot("mask", mask, "bits")} if relu else {}))
        return y, mask

    def linear_backward_data(self, dy, w, out_mask=None):
        n, j = dy.shape
        i = w.shape[1]
        dx = self.placeholder("grad", (n, i))
        extra = {} if out_mask is None else {"mask_in": self._slot("out_mask", out_mask, "bits")}
        self._emit("linear_backward_data", self._spec(dx), "FC_BWD_DATA", self._flags(has_mask=out_mask is not None),
                   **self._fc(n, i, j), dy=self._slot("dy", dy, "grad"), wgt=self._slot("w", w, "wgt"),
                   dx=self._slot("dx", dx, "grad"), **extra)
        return dx

    def linear_backward_weight(self, x, dy):
        n, i = x.shape
        j = dy.shape[1]
        dw, db = self.placeholder("grad", (j, i)), self.placeholder("grad", (j,))
        self._emit("linear_backward_weight", (self._spec(dw), self._spec(db)), "FC_BWD_WEIGHT", self._flags(),
                   **self._fc(n, i, j), x=self._slot("x", x, "act"), dy=self._slot("dy", dy, "grad"),
                   dw=self._slot("dw", dw, "grad"), db=self._slot("db", db, "grad"))
        return dw, db

    # ------------------------------------------------------------------ pre-defined sparse junctions
    def _pattern(self, pattern) -> int:
        """Offset of ``pattern``'s (J, fan_in) uint32 input indices in the bits arena (allocated once per pattern).

        The indices are constants of the program: :attr:`constants` holds them, written into every
        buffer set when it is allocated (``program_backend``).
        """
        if pattern.lanes != self.limits.pe_lanes:
            raise ValueError(f"pattern: made clash-free for {pattern.lanes} lanes, the accelerator has "
                             f"pe_lanes={self.limits.pe_lanes} (build the model with lanes={self.limits.pe_lanes})")
        key = (pattern.n_in, pattern.n_out, pattern.fan_in, pattern.lanes, pattern.seed)
        name = self._patterns.get(key)
        if name is None:
            name = self._patterns[key] = f"pattern{len(self._patterns)}"
            self.layout.alloc("bits", name, pattern.edges)
            self.constants[name] = pattern.idx.astype(np.uint32)
        return self.layout.entries[name][1]

    def _sparse_fc(self, n, pattern):
        return dict(n=n, c=pattern.n_in, k=pattern.n_out, h=1, w=1, r=1, s=1, stride=1, pad=0,
                    fan_in=pattern.fan_in, pattern=self._pattern(pattern))

    def sparse_linear_forward(self, x, w, b, pattern, relu=True):
        n, j = x.shape[0], pattern.n_out
        y = self.placeholder("act", (n, j))
        mask = self.placeholder("bits", (n, j), "bits") if relu else None
        self._emit("sparse_linear_forward", (self._spec(y), self._spec(mask)), "SPARSE_FC_FWD",
                   self._flags(relu=relu), **self._sparse_fc(n, pattern), x=self._slot("x", x, "act"),
                   wgt=self._slot("w", w, "wgt"), bias=self._slot("b", b, "wgt"), y=self._slot("y", y, "act"),
                   **({"mask_out": self._slot("mask", mask, "bits")} if relu else {}))
        return y, mask

    def sparse_linear_backward_data(self, dy, w, pattern, out_mask=None):
        n = dy.shape[0]
        dx = self.placeholder("grad", (n, pattern.n_in))
        extra = {} if out_mask is None else {"mask_in": self._slot("out_mask", out_mask, "bits")}
        self._emit("sparse_linear_backward_data", self._spec(dx), "SPARSE_FC_BWD_DATA",
                   self._flags(has_mask=out_mask is not None), **self._sparse_fc(n, pattern),
                   dy=self._slot("dy", dy, "grad"), wgt=self._slot("w", w, "wgt"), dx=self._slot("dx", dx, "grad"),
                   **extra)
        return dx

    def sparse_linear_backward_weight(self, x, dy, pattern):
        n = x.shape[0]
        dw, db = self.placeholder("grad", (pattern.n_out, pattern.fan_in)), self.placeholder("grad", (pattern.n_out,))
        self._emit("sparse_linear_backward_weight", (self._spec(dw), self._spec(db)), "SPARSE_FC_BWD_WEIGHT",
                   self._flags(), **self._sparse_fc(n, pattern), x=self._slot("x", x, "act"),
                   dy=self._slot("dy", dy, "grad"), dw=self._slot("dw", dw, "grad"), db=self._slot("db", db, "grad"))
        return dw, db

    def softmax_xent(self, logits, labels, grad_scale=1.0):
        n, j = logits.shape
        dlogits = self.placeholder("grad", (n, j))
        loss = self.placeholder("grad", (1,))
        self._emit("softmax_xent", (Out(self.name_of(loss), (1,), "loss"), self._spec(dlogits)), "SOFTMAX_XENT",
                   n=n, c=j, grad_scale=float(grad_scale), x=self._slot("logits", logits, "act"),
                   labels=self._slot("labels", labels, "bits"),
                   dx=self._slot("dlogits", dlogits, "grad"), loss=self._slot("loss", loss, "grad"))
        return 0.0, dlogits

    def sgd_update(self, param, grad, velocity, lr, momentum, weight_decay, grad_scale=1.0, nesterov=False):
        self._emit("sgd_update", ("arg:0", "arg:2"), "SGD_UPDATE", ("NESTEROV",) if nesterov else (),
                   count=int(np.size(param)), lr=float(lr),
                   momentum=float(momentum), weight_decay=float(weight_decay), grad_scale=float(grad_scale),
                   wgt=self._slot("param", param, "wgt"), vel=self._slot("velocity", velocity, "vel"),
                   dw=self._slot("grad", grad, "grad"))
        return param, velocity

    def prune_grad(self, g, rate, seed):
        out = self.placeholder("grad", g.shape)
        tau_scale = float(R.prune_tau_scale(rate))
        self._emit("prune_grad", self._spec(out), "PRUNE_GRAD", count=int(np.size(g)), tau=0.0,
                   tau_scale=tau_scale, dy=self._slot("g", g, "grad"), dx=self._slot("g'", out, "grad"),
                   seed=self._slot("seed", seed, "bits"))
        return out

    # batch normalisation: x (N, C, H, W) or (N, C); statistics (C,) in act, running ones in wgt
    @staticmethod
    def _bn_fields(shape) -> dict:
        n, c, h, w = (tuple(int(v) for v in shape) + (1, 1))[:4]
        return dict(n=n, c=c, h=h, w=w)

    def batchnorm_forward(self, x, gamma, beta, eps=1e-5, relu=True):
        c = x.shape[1]
        y, xhat = self.placeholder("act", x.shape), self.placeholder("act", x.shape)
        mean, var = self.placeholder("act", (c,)), self.placeholder("act", (c,))
        mask = self.placeholder("bits", x.shape, "bits") if relu else None
        outputs = tuple(self._spec(a) for a in (y, mask, xhat, mean, var))
        self._emit("batchnorm_forward", outputs, "BN_FWD", self._flags(relu=relu), **self._bn_fields(x.shape),
                   eps=float(eps), x=self._slot("x", x, "act"), wgt=self._slot("gamma", gamma, "wgt"),
                   bias=self._slot("beta", beta, "wgt"), y=self._slot("y", y, "act"),
                   xhat=self._slot("xhat", xhat, "act"), mean=self._slot("mean", mean, "act"),
                   var=self._slot("var", var, "act"),
                   **({"mask_out": self._slot("mask", mask, "bits")} if relu else {}))
        return y, mask, xhat, mean, var

    def _running(self, running_mean, running_var) -> int:
        """The D_RUNNING offset: running_var must sit directly after running_mean (DeviceWeights does so)."""
        offset = self._slot("running_mean", running_mean, "wgt")
        if self._slot("running_var", running_var, "wgt") != offset + np.size(running_mean):
            raise RuntimeError("running_var: must follow running_mean directly in the wgt arena "
                               "(one DeviceWeights slot per batch normalisation)")
        return offset

    def batchnorm_inference(self, x, gamma, beta, running_mean, running_var, eps=1e-5, relu=True):
        y = self.placeholder("act", x.shape)
        mask = self.placeholder("bits", x.shape, "bits") if relu else None
        self._emit("batchnorm_inference", (self._spec(y), self._spec(mask)), "BN_INFER", self._flags(relu=relu),
                   **self._bn_fields(x.shape), eps=float(eps), x=self._slot("x", x, "act"),
                   wgt=self._slot("gamma", gamma, "wgt"), bias=self._slot("beta", beta, "wgt"),
                   running=self._running(running_mean, running_var), y=self._slot("y", y, "act"),
                   **({"mask_out": self._slot("mask", mask, "bits")} if relu else {}))
        return y, mask

    def batchnorm_backward(self, dy, xhat, var, gamma, eps=1e-5, out_mask=None):
        c = dy.shape[1]
        dx = self.placeholder("grad", dy.shape)
        self._batchnorm_grads.add(self._by_pointer[_pointer(dx)])
        dgamma, dbeta = self.placeholder("grad", (c,)), self.placeholder("grad", (c,))
        extra = {} if out_mask is None else {"mask_in": self._slot("out_mask", out_mask, "bits")}
        self._emit("batchnorm_backward", (self._spec(dx), self._spec(dgamma), self._spec(dbeta)), "BN_BWD",
                   self._flags(has_mask=out_mask is not None), **self._bn_fields(dy.shape), eps=float(eps),
                   dy=self._slot("dy", dy, "grad"), xhat=self._slot("xhat", xhat, "act"),
                   var=self._slot("var", var, "act"), wgt=self._slot("gamma", gamma, "wgt"),
                   dx=self._slot("dx", dx, "grad"), dw=self._slot("dgamma", dgamma, "grad"),
                   db=self._slot("dbeta", dbeta, "grad"), **extra)
        return dx, dgamma, dbeta

    def batchnorm_update_stats(self, running_mean, running_var, mean, var, count, momentum):
        # in place, like sgd_update: the running statistics stay in the wgt arena
        self._emit("batchnorm_update_stats", ("arg:0", "arg:1"), "BN_STATS", c=int(np.size(running_mean)),
                   count=int(count), momentum=float(momentum), running=self._running(running_mean, running_var),
                   mean=self._slot("mean", mean, "act"), var=self._slot("var", var, "act"))
        return running_mean, running_var

    def add_forward(self, a, b, relu=True):
        y = self.placeholder("act", a.shape)
        mask = self.placeholder("bits", a.shape, "bits") if relu else None
        self._emit("add_forward", (self._spec(y), self._spec(mask)), "ADD_FWD", self._flags(relu=relu),
                   count=int(np.size(a)), x=self._slot("a", a, "act"), x2=self._slot("b", b, "act"),
                   y=self._slot("y", y, "act"), **({"mask_out": self._slot("mask", mask, "bits")} if relu else {}))
        return y, mask

    def add_backward(self, da, db, out_mask=None):
        dx = self.placeholder("grad", da.shape)
        extra = {} if out_mask is None else {"mask_in": self._slot("out_mask", out_mask, "bits")}
        self._emit("add_backward", self._spec(dx), "ADD_BWD", self._flags(has_mask=out_mask is not None),
                   count=int(np.size(da)), dy=self._slot("da", da, "grad"), dy2=self._slot("db", db, "grad"),
                   dx=self._slot("dx", dx, "grad"), **extra)
        return dx

    def global_avgpool_forward(self, x):
        n, c, h, wd = x.shape
        y = self.placeholder("act", (n, c))
        self._emit("global_avgpool_forward", self._spec(y), "GAP_FWD", [], n=n, c=c, h=h, w=wd,
                   x=self._slot("x", x, "act"), y=self._slot("y", y, "act"))
        return y

    def global_avgpool_backward(self, dy, x_shape, out_mask=None):
        n, c, h, wd = x_shape
        dx = self.placeholder("grad", x_shape)
        extra = {} if out_mask is None else {"mask_in": self._slot("out_mask", out_mask, "bits")}
        self._emit("global_avgpool_backward", self._spec(dx), "GAP_BWD",
                   ["HAS_OUT_MASK"] if out_mask is not None else [], n=n, c=c, h=h, w=wd,
                   dy=self._slot("dy", dy, "grad"), dx=self._slot("dx", dx, "grad"), **extra)
        return dx

    # ------------------------------------------------------------------ helpers
    def name_of(self, a) -> str:
        return self._by_pointer[_pointer(np.asarray(a))]

    def _spec(self, a):
        if a is None:
            return None
        kind = "bits" if a.dtype == bool else "index" if a.dtype == np.int32 else "f32"
        return Out(self.name_of(a), tuple(a.shape), kind)


class ReplayOps:
    """An Ops that returns, call by call, what a recorded program computed on the device.

    ``calls``: the recorder's :class:`Call` list; ``read``: (name, shape,
    kind) -> array read back from the arenas; ``records``: the device stats
    record of every descriptor. Each method checks it is the call step.py
    made when the program was recorded. ``outputs`` collects every call's
    return value (for the comparison with the reference).
    """

    def __init__(self, calls: List[Call], read, records: List[dict]):
        self._calls = calls
        self._read = read
        self._records = records
        self._next = 0
        self.last_stats: dict = {}
        self.outputs: List[Tuple[str, object]] = []

    def _replay(self, op: str, args: tuple):
        if self._next >= len(self._calls) or self._calls[self._next].op != op:
            expected = self._calls[self._next].op if self._next < len(self._calls) else "no more calls"
            raise RuntimeError(f"replay: step.py called {op} where the recorded program has {expected}")
        call = self._calls[self._next]
        self._next += 1
        self.last_stats = counters(self._records[call.descriptor])

        def value(spec):
            if spec is None:
                return None
            if isinstance(spec, str):
                return args[int(spec.split(":")[1])]
            if spec.kind == "loss":
                return float(self._read(spec.name, spec.shape, "f32")[0])
            return self._read(spec.name, spec.shape, spec.kind)

        out = tuple(value(s) for s in call.outputs) if isinstance(call.outputs, tuple) else value(call.outputs)
        self.outputs.append((op, out))
        return out

    def __getattr__(self, op):
        # every op of the interface replays the same way (keywords were bound at recording)
        if op not in OP_OUTPUTS:
            raise AttributeError(op)
        return lambda *args, **kw: self._replay(op, args)

def counters(record: dict) -> Dict[str, int]:
    """The numeric counters of a stats record (``opcode`` and ``error`` are not counters).

    ``tau`` (a float) is kept only for a PRUNE_GRAD record, the one op that sets it.
    """
    out = {k: int(v) for k, v in record.items() if k not in ("opcode", "error", "tau")}
    if record.get("opcode") == OPCODES["PRUNE_GRAD"]:
        out["tau"] = float(record["tau"])
    return out
