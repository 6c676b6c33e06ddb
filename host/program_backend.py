"""Program mode: a whole training step (or forward pass) as one device program.

The program is derived from ``zskip.models.step`` itself, not written a
second time: :class:`ProgramRecorder` is an :class:`~zskip.models.ops.Ops`
whose tensors are placeholder numpy arrays, each registered to an arena slot
by its data pointer (reshapes keep the pointer). Running
``step.train_step(recorder, ...)`` once per (model, batch size, optimiser
settings) emits one descriptor per op call, in step.py's order; ``sgd_update``
returns its own arguments, so the update is in place in the ``wgt`` arena.

After a device run, ``step.train_step`` runs a second time on
:class:`ReplayOps`, which hands step.py the tensors read back from the
arenas (and each descriptor's stats record as ``last_stats``), so the loss,
logits, sparsity figures, reference MAC accounting and per-layer kernel
counters of the :class:`~zskip.models.step.StepResult` are computed by the
same code as on every other backend.

Device-held state: weights, biases and momentum buffers live in the ``wgt``
arena between steps (:class:`DeviceWeights`). A step returns *mirrors*
(:class:`DeviceTensors`), mappings that read the arena back only when an
item is asked for (checkpoint, comparison with the reference, end of
training), once per device generation. A mirror passed back in is
recognised and nothing is uploaded; any other dict is uploaded first. A
mirror of a superseded generation refuses to be read (its values are gone
from the device); :meth:`ProgramBackend.close` reads the last one back so it
stays valid after the device is released.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from ..models import reference as R
from ..models import step as _step
from ..models.networks import Model
from .program import ArenaLayout, bit_words, encode

__all__ = ["ProgramRecorder", "ReplayOps", "DeviceWeights", "DeviceTensors", "StepProgram",
           "ProgramBackend", "record_program"]


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
    ``weights``: the :class:`DeviceWeights` whose ``wgt`` slots hold params
    and velocities; ``skip_zeros`` and ``limits`` as in the Accelerator.
    """

    def __init__(self, layout: ArenaLayout, weights: "DeviceWeights", skip_zeros: bool, limits):
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
            self._register(velocities[key], self.weights.velocity_slot(key))

    def _slot(self, arg: str, a, arena: str) -> int:
        name = self._by_pointer.get(_pointer(np.asarray(a)))
        if name is None:
            raise RuntimeError(f"{arg}: not a tensor of this program (was it computed outside the Ops?)")
        if name in self.layout.entries:
            where, offset, _ = self.layout.entries[name]
        else:
            where, offset = "wgt", self.weights.layout.offset(name)
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
        self._emit("conv_backward_data", self._spec(dx), "CONV_BWD_DATA", self._flags(has_mask=out_mask is not None),
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

    def softmax_xent(self, logits, labels):
        n, j = logits.shape
        dlogits = self.placeholder("grad", (n, j))
        loss = self.placeholder("grad", (1,))
        self._emit("softmax_xent", (Out(self.name_of(loss), (1,), "loss"), self._spec(dlogits)), "SOFTMAX_XENT",
                   n=n, c=j, x=self._slot("logits", logits, "act"), labels=self._slot("labels", labels, "bits"),
                   dx=self._slot("dlogits", dlogits, "grad"), loss=self._slot("loss", loss, "grad"))
        return 0.0, dlogits

    def sgd_update(self, param, grad, velocity, lr, momentum, weight_decay):
        self._emit("sgd_update", ("arg:0", "arg:2"), "SGD_UPDATE", count=int(np.size(param)), lr=float(lr),
                   momentum=float(momentum), weight_decay=float(weight_decay),
                   wgt=self._slot("param", param, "wgt"), vel=self._slot("velocity", velocity, "wgt"),
                   dw=self._slot("grad", grad, "grad"))
        return param, velocity

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
        self.last_stats = _counters(self._records[call.descriptor])

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

    def conv_forward(self, *args, **kw):
        return self._replay("conv_forward", args)

    def conv_backward_data(self, *args, **kw):
        return self._replay("conv_backward_data", args)

    def conv_backward_weight(self, *args, **kw):
        return self._replay("conv_backward_weight", args)

    def maxpool_forward(self, *args, **kw):
        return self._replay("maxpool_forward", args)

    def maxpool_backward(self, *args, **kw):
        return self._replay("maxpool_backward", args)

    def linear_forward(self, *args, **kw):
        return self._replay("linear_forward", args)

    def linear_backward_data(self, *args, **kw):
        return self._replay("linear_backward_data", args)

    def linear_backward_weight(self, *args, **kw):
        return self._replay("linear_backward_weight", args)

    def softmax_xent(self, *args, **kw):
        return self._replay("softmax_xent", args)

    def sgd_update(self, *args, **kw):
        return self._replay("sgd_update", args)


def _counters(record: dict) -> Dict[str, int]:
    """The numeric counters of a stats record (``opcode`` and ``error`` are not counters)."""
    return {k: int(v) for k, v in record.items() if k not in ("opcode", "error")}


class DeviceWeights:
    """The ``wgt`` arena of one model: every parameter and its momentum buffer.

    ``generation`` counts the states of the arena; a mirror
    (:class:`DeviceTensors`) is valid while its generation is current.
    """

    def __init__(self, accelerator, model: Model):
        self.model = model
        self.shapes = model.param_shapes()
        self.layout = ArenaLayout()
        for key, shape in self.shapes.items():
            self.layout.alloc("wgt", self.param_slot(key), max(1, int(np.prod(shape))))
            self.layout.alloc("wgt", self.velocity_slot(key), max(1, int(np.prod(shape))))
        self.buffer = accelerator.device.allocate((self.layout.size("wgt"),), np.float32)
        self.generation = 0
        self.mirror: Tuple[Optional[DeviceTensors], Optional[DeviceTensors]] = (None, None)
        self._host: Optional[Tuple[dict, dict]] = None     # read-back copy of the current generation
        self.closed = False

    @staticmethod
    def param_slot(key: str) -> str:
        return "param/" + key

    @staticmethod
    def velocity_slot(key: str) -> str:
        return "velocity/" + key

    def placeholders(self) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
        """Placeholder (params, velocities) for recording, float32 of the model's shapes."""
        return ({k: np.zeros(int(np.prod(s)) + 1, np.float32)[:int(np.prod(s))].reshape(s)
                 for k, s in self.shapes.items()},
                {k: np.zeros(int(np.prod(s)) + 1, np.float32)[:int(np.prod(s))].reshape(s)
                 for k, s in self.shapes.items()})

    def is_current(self, params, velocities) -> bool:
        """Whether (params, velocities) are the mirrors of what the device holds now."""
        p, v = self.mirror
        return p is not None and params is p and (velocities is None or velocities is v)

    def upload(self, params: Mapping, velocities: Optional[Mapping]) -> None:
        """Write params (and velocities; None keeps the device's) into the arena and flush it."""
        for what, arrays in (("params", params), ("velocities", velocities)):
            if arrays is None:
                continue
            if set(arrays) != set(self.shapes):
                raise ValueError(f"{what}: expected keys {sorted(self.shapes)}, got {sorted(arrays)}")
            for key, shape in self.shapes.items():
                a = np.asarray(arrays[key])
                if a.shape != shape:
                    raise ValueError(f"{what}: {key} must have shape {shape}, got {a.shape}")
        host = self.buffer
        if velocities is None and self.generation:
            host.sync_from_device()        # keep the device's momentum buffers: the flush writes all of them
        for key in self.shapes:
            self.layout.put({"wgt": host}, self.param_slot(key), np.asarray(params[key], dtype=np.float32))
            if velocities is not None:
                self.layout.put({"wgt": host}, self.velocity_slot(key), np.asarray(velocities[key], np.float32))
        host.sync_to_device()
        self.advance()

    def advance(self) -> Tuple["DeviceTensors", "DeviceTensors"]:
        """A new device state (after an upload or a step): new mirrors, old ones become stale."""
        self.generation += 1
        self._host = None
        self.mirror = (DeviceTensors(self, "param", self.generation), DeviceTensors(self, "velocity", self.generation))
        return self.mirror

    def read(self, generation: int) -> Tuple[dict, dict]:
        """(params, velocities) of ``generation`` read back from the device (once per generation)."""
        if generation != self.generation:
            raise RuntimeError(f"device weights: generation {generation} was superseded by {self.generation} "
                               f"(a later step or upload changed them on the device); read a step's params "
                               f"before running the next one")
        if self._host is None:
            if self.closed:
                raise RuntimeError("device weights: the backend was closed before they were read back")
            self.buffer.sync_from_device()
            bufs = {"wgt": self.buffer}
            self._host = tuple({k: self.layout.get(bufs, slot(k), s) for k, s in self.shapes.items()}
                               for slot in (self.param_slot, self.velocity_slot))
        return self._host

    def close(self) -> None:
        """Read the current state back (its mirrors stay valid), then free the arena."""
        if not self.closed:
            if self.generation:
                self.read(self.generation)
            self.buffer.freebuffer()
            self.closed = True


class DeviceTensors(Mapping):
    """Params or velocities held on the device, read back lazily (see the module docstring)."""

    def __init__(self, weights: DeviceWeights, which: str, generation: int):
        self._weights, self._which, self.generation = weights, which, generation

    def __getitem__(self, key: str) -> np.ndarray:
        params, velocities = self._weights.read(self.generation)
        return (params if self._which == "param" else velocities)[key]

    def __iter__(self):
        return iter(self._weights.shapes)

    def __len__(self) -> int:
        return len(self._weights.shapes)

    def __repr__(self) -> str:
        return f"DeviceTensors({self._which}, generation {self.generation}, keys {list(self)})"


@dataclass
class StepProgram:
    """A recorded program and the device buffers it runs on.

    ``kind``: "train" or "predict"; ``slots``: one buffer set per ping-pong
    slot (program, act, grad, bits, stats; ``wgt`` is the shared
    DeviceWeights arena); ``x``/``labels``: names of the input tensors.
    """
    kind: str
    batch: int
    layout: ArenaLayout
    words: np.ndarray
    calls: List[Call]
    x: str
    labels: Optional[str]
    logits: Optional[str] = None
    slots: List[Dict[str, object]] = field(default_factory=list)

    @property
    def n_desc(self) -> int:
        return len(self.calls)


def record_program(accelerator, weights: DeviceWeights, kind: str, batch: int, lr: float = 0.0,
                   momentum: float = 0.0, weight_decay: float = 0.0) -> StepProgram:
    """Record ``step.train_step`` (kind "train") or ``step.predict`` ("predict") for ``batch`` samples."""
    model = weights.model
    layout = ArenaLayout()
    rec = ProgramRecorder(layout, weights, accelerator.skip_zeros, accelerator.limits)
    params, velocities = weights.placeholders()
    rec.register_weights(params, velocities)
    x = rec.placeholder("act", (batch, *model.input_shape), name="x")
    labels, logits = None, None
    if kind == "train":
        labels = rec.placeholder("bits", (batch,), "index", name="labels")
        # account=False: the MAC accounting would read the placeholders; it is
        # computed on the read-back tensors when the step is replayed
        _step.train_step(rec, model, params, velocities, x, labels, lr, momentum, weight_decay, account=False)
    elif kind == "predict":
        logits = rec.name_of(_step.predict(rec, model, params, x))
    else:
        raise ValueError(f"kind must be 'train' or 'predict', got {kind!r}")
    return StepProgram(kind, batch, layout, np.stack(rec.descriptors), rec.calls, "x",
                       "labels" if labels is not None else None, logits)


class ProgramBackend:
    """The training loop's backend running each step as one program on an Accelerator.

    ``accelerator``: a :class:`zskip.host.accelerator.Accelerator` on any
    Device; ``account``: compute the reference MAC accounting from the
    read-back tensors; ``precision``: the device arithmetic, which picks the
    comparison's tolerance. Programs are recorded once per (kind, batch
    size, optimiser settings) and written to device memory once.
    """

    def __init__(self, accelerator, name: Optional[str] = None, account: bool = True, precision: str = "float32"):
        from .streaming import DeviceRunner
        self.accelerator = accelerator
        self.name = name or accelerator.name
        self.account = bool(account)
        self.precision = precision
        self.runner = DeviceRunner(accelerator.device)
        self.weights: Optional[DeviceWeights] = None
        self._programs: Dict[tuple, StepProgram] = {}
        #: stage timings (seconds) of the last step
        self.last_timings: Dict[str, float] = {}

    # ------------------------------------------------------------------ state
    def _weights_for(self, model: Model) -> DeviceWeights:
        if self.weights is None or self.weights.model.name != model.name or \
                self.weights.shapes != model.param_shapes():
            self._free_programs()
            if self.weights is not None:
                self.weights.close()
            self.weights = DeviceWeights(self.accelerator, model)
        return self.weights

    def _sync_weights(self, model: Model, params, velocities) -> DeviceWeights:
        weights = self._weights_for(model)
        if not weights.is_current(params, velocities):
            weights.upload(params, velocities)
        return weights

    def read_weights(self) -> Tuple[dict, dict]:
        """(params, velocities) as the device holds them now, read back (host copies)."""
        if self.weights is None or not self.weights.generation:
            raise RuntimeError("read_weights: no weights were uploaded yet")
        p, v = self.weights.read(self.weights.generation)
        return {k: a.copy() for k, a in p.items()}, {k: a.copy() for k, a in v.items()}

    def program(self, model: Model, kind: str, batch: int, lr: float = 0.0, momentum: float = 0.0,
                weight_decay: float = 0.0) -> StepProgram:
        """The recorded program for ``kind`` and ``batch``, with its device buffers (cached)."""
        weights = self._weights_for(model)
        key = (kind, batch, lr, momentum, weight_decay) if kind == "train" else (kind, batch)
        prog = self._programs.get(key)
        if prog is None:
            prog = record_program(self.accelerator, weights, kind, batch, lr, momentum, weight_decay)
            for _ in range(2 if kind == "train" else 1):
                bufs = self.accelerator.allocate_arenas(prog.layout, prog.n_desc)
                bufs["wgt"].freebuffer()
                bufs["wgt"] = weights.buffer
                bufs["program"][:] = prog.words.reshape(-1)
                bufs["program"].sync_to_device()          # written once, run many times
                prog.slots.append(bufs)
            self._programs[key] = prog
        return prog

    def _free_programs(self) -> None:
        for prog in self._programs.values():
            for bufs in prog.slots:
                for name, buf in bufs.items():
                    if name != "wgt":
                        buf.freebuffer()
        self._programs.clear()

    # ------------------------------------------------------------------ one run, in stages
    def _stage(self, prog: StepProgram, slot: int, x, y=None) -> Dict[str, float]:
        """Pack x (and labels y) into buffer set ``slot`` and flush it; the IP may be running the other."""
        t0 = time.perf_counter()
        bufs = prog.slots[slot]
        prog.layout.put(bufs, prog.x, np.ascontiguousarray(x, dtype=np.float32))
        if prog.labels is not None:
            y = np.asarray(y)
            if y.shape != (prog.batch,) or y.dtype.kind not in "iu":
                raise ValueError(f"y: expected {prog.batch} integer labels, got shape {y.shape} dtype {y.dtype}")
            classes = self.weights.model.num_classes
            if y.size and (y.min() < 0 or y.max() >= classes):
                raise ValueError(f"y: labels must lie in [0, {classes - 1}]")
            prog.layout.put(bufs, prog.labels, y.astype(np.uint32))
        t1 = time.perf_counter()
        bufs["act"].sync_to_device()
        bufs["bits"].sync_to_device()
        return {"pack": t1 - t0, "flush": time.perf_counter() - t1}

    def _collect(self, prog: StepProgram, slot: int, records: List[dict]):
        """Invalidate buffer set ``slot``; a reader of its tensors."""
        t0 = time.perf_counter()
        bufs = prog.slots[slot]
        for name in ("act", "grad", "bits"):
            bufs[name].sync_from_device()
        return (lambda name, shape, kind: prog.layout.get(bufs, name, shape, kind)), time.perf_counter() - t0

    # ------------------------------------------------------------------ backend protocol
    def stream(self, model: Model, params, velocities, batches: Iterable, lr: float, momentum: float,
               weight_decay: float) -> Iterator:
        """Ping-pong training: yields a :class:`~zskip.host.streaming.StreamedStep` per batch, in order.

        Batch i+1 is taken from ``batches``, packed and flushed into the other
        buffer set while batch i runs; the device is idle whenever a result
        is yielded (batch i+1 starts when the next one is asked for).
        """
        from ..models.check import check_step, tolerance_for
        from .streaming import StreamedStep
        weights = self._sync_weights(model, params, velocities)
        tolerance = None
        items = iter(batches)

        def stage(batch, slot):
            n = int(np.shape(batch.x)[0]) if np.ndim(batch.x) else 0
            if n < 1:
                raise ValueError(f"x: a batch needs at least one sample, got shape {np.shape(batch.x)}")
            prog = self.program(model, "train", n, float(lr), float(momentum), float(weight_decay))
            return prog, slot, batch, self._stage(prog, slot, batch.x, batch.y)

        batch = next(items, None)
        staged = stage(batch, 0) if batch is not None else None
        while staged is not None:
            prog, slot, batch, timings = staged
            before = None
            if batch.check:
                tolerance = tolerance or tolerance_for(self.precision)
                before = self.read_weights()
            t0 = time.perf_counter()
            self.runner.start(prog.slots[slot], prog.n_desc)
            try:
                following = next(items, None)
                staged = stage(following, 1 - slot) if following is not None else None
            except BaseException:
                self.runner.wait()          # never leave the IP running on buffers we give up
                raise
            records = self.runner.wait()
            timings["run"] = time.perf_counter() - t0
            read, timings["invalidate"] = self._collect(prog, slot, records)
            t1 = time.perf_counter()
            new_params, new_velocities = weights.advance()
            replay = ReplayOps(prog.calls, read, records)
            shapes = weights.placeholders()
            result = _step.train_step(replay, model, shapes[0], shapes[1], batch.x, batch.y, lr, momentum,
                                      weight_decay, account=self.account)
            result.params, result.velocities = new_params, new_velocities
            timings["unpack"] = time.perf_counter() - t1
            report = None
            if before is not None:
                outputs = _with_updated_weights(replay.outputs, new_params, new_velocities)
                report = check_step(model, before[0], before[1], batch.x, batch.y, lr, momentum, weight_decay,
                                    outputs, tolerance)
            self.last_timings = dict(timings)
            yield StreamedStep(result, report, timings)

    def train_step(self, model, params, velocities, x, y, lr, momentum, weight_decay):
        """One step as one program run (see :meth:`stream`); returns a StepResult whose params are mirrors."""
        from .streaming import Batch
        (out,) = list(self.stream(model, params, velocities, [Batch(x, y)], lr, momentum, weight_decay))
        return out.result

    def predict(self, model, params, x):
        """Logits (N, classes) for x (N, C, H, W) from the forward program; params stay on the device."""
        weights = self._weights_for(model)
        if not weights.is_current(params, None):
            weights.upload(params, None)
        x = R.check_array("x", x, 4)
        if tuple(x.shape[1:]) != tuple(model.input_shape) or x.shape[0] < 1:
            raise ValueError(f"x: expected a batch of samples of shape {tuple(model.input_shape)}, got {x.shape}")
        prog = self.program(model, "predict", x.shape[0])
        self._stage(prog, 0, x)
        self.runner.start(prog.slots[0], prog.n_desc)
        records = self.runner.wait()
        read, _ = self._collect(prog, 0, records)
        return read(prog.logits, (x.shape[0], model.num_classes), "f32")

    def close(self) -> None:
        """Read the device weights back (mirrors stay valid), free every buffer and the device."""
        self.runner.close()
        if self.weights is not None:
            self.weights.close()
        self._free_programs()
        close = getattr(self.accelerator.device, "close", None)
        if close is not None:
            close()


def _with_updated_weights(outputs, params: Mapping, velocities: Mapping):
    """Replayed op outputs with each sgd_update's return replaced by the read-back updated weights."""
    keys = iter(list(params))
    fixed = []
    for op, out in outputs:
        if op == "sgd_update":
            key = next(keys)
            out = (params[key], velocities[key])
        fixed.append((op, out))
    return fixed
