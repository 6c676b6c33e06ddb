"""Program mode: the training loop's backend running a whole step as one device program.

The program is recorded from ``zskip.models.step`` (``step_recorder``) once
per (model, batch size, optimiser settings), written once into two buffer
sets (ping-pong), and run with one start per mini-batch; the weights and
momentum stay in device memory (``device_weights``) and are read back only
when asked for. While batch i runs, batch i+1 is packed and flushed into the
other buffer set (``streaming``).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from ...models import reference as R
from ...models import step as _step
from ...models.networks import Model
from ...models.step import check_prune_rate
from .device_weights import WEIGHT_ARENAS, DeviceWeights
from ..ip.program import D_WORDS, FIELDS, OPCODES, ArenaLayout
from .step_recorder import Call, ProgramRecorder, ReplayOps

__all__ = ["StepProgram", "ProgramBackend", "record_program", "MAX_PROGRAMS"]

#: programs (with their device buffers) a backend keeps, least recently used out first
MAX_PROGRAMS = 4


@dataclass
class StepProgram:
    """A recorded program and the device buffers it runs on.

    ``kind``: "train" or "predict"; ``slots``: one buffer set per ping-pong
    slot (program, act, grad, bits, stats; ``wgt`` and ``vel`` are the shared
    DeviceWeights arenas); ``x``/``labels``: names of the input tensors;
    ``prune_seeds``: name of the per-layer pruning seed words in the bits
    arena (written with every batch, so one program prunes differently at
    every step), None when the program does not prune.
    """
    kind: str
    batch: int
    layout: ArenaLayout
    words: np.ndarray
    calls: List[Call]
    x: str
    labels: Optional[str]
    logits: Optional[str] = None
    prune_seeds: Optional[str] = None
    grad_scale: float = 1.0
    slots: List[Dict[str, object]] = field(default_factory=list)
    #: the learning rate each slot's program buffer holds now (a schedule rewrites it between runs)
    slot_lr: List[float] = field(default_factory=list)
    #: bits-arena constants (connection patterns): name -> uint32 words, written once per buffer set
    constants: Dict[str, np.ndarray] = field(default_factory=dict)

    def set_lr(self, slot: int, lr: float) -> None:
        """Write ``lr`` into every SGD_UPDATE descriptor of buffer set ``slot`` (no-op when it holds it)."""
        if self.slot_lr[slot] == lr:
            return
        words = self.slots[slot]["program"]
        rows = np.flatnonzero(self.words.reshape(-1, D_WORDS)[:, FIELDS["opcode"]] == OPCODES["SGD_UPDATE"])
        words[rows * D_WORDS + FIELDS["lr"]] = np.float32(lr).view(np.uint32)
        words.sync_to_device()
        self.slot_lr[slot] = lr

    @property
    def n_desc(self) -> int:
        return len(self.calls)


def record_program(accelerator, weights: DeviceWeights, kind: str, batch: int, lr: float = 0.0,
                   momentum: float = 0.0, weight_decay: float = 0.0, prune_rate: float = 0.0,
                   grad_scale: float = 1.0, nesterov: bool = False) -> StepProgram:
    """Record ``step.train_step`` (kind "train") or ``step.predict`` ("predict") for ``batch`` samples."""
    model = weights.model
    layout = ArenaLayout()
    rec = ProgramRecorder(layout, weights, accelerator.skip_zeros, accelerator.limits,
                          getattr(accelerator, "bwd_data_form", "auto"))
    params, velocities = weights.placeholders()
    rec.register_weights(params, velocities)
    x = rec.placeholder("act", (batch, *model.input_shape), name="x")
    labels, logits, seeds = None, None, None
    if kind == "train":
        labels = rec.placeholder("bits", (batch,), "index", name="labels")
        if prune_rate:
            seeds = rec.placeholder("bits", (len(model.layers),), "index", name="prune_seeds")
        # account=False: the MAC accounting would read the placeholders; it is
        # computed on the read-back tensors when the step is replayed
        _step.train_step(rec, model, params, velocities, x, labels, lr, momentum, weight_decay, account=False,
                         prune_rate=prune_rate, prune_seeds=seeds, grad_scale=grad_scale, nesterov=nesterov)
    elif kind == "predict":
        logits = rec.name_of(_step.predict(rec, model, params, x))
    else:
        raise ValueError(f"kind must be 'train' or 'predict', got {kind!r}")
    return StepProgram(kind, batch, layout, np.stack(rec.descriptors), rec.calls, "x",
                       "labels" if labels is not None else None, logits,
                       "prune_seeds" if seeds is not None else None, grad_scale, constants=rec.constants)


class ProgramBackend:
    """The training loop's backend running each step as one program on an Accelerator.

    ``accelerator``: a :class:`zskip.host.runtime.accelerator.Accelerator` on any
    Device; ``account``: compute the reference MAC accounting from the
    read-back tensors; ``precision``: the device arithmetic, which picks the
    comparison's tolerance. Programs are recorded once per (kind, batch
    size, optimiser settings) and written to device memory once.
    """

    def __init__(self, accelerator, name: Optional[str] = None, account: bool = True, precision: str = "float32",
                 prune_rate: float = 0.0):
        from .streaming import DeviceRunner
        #: target gradient pruning rate of every training step (0: off)
        self.prune_rate = check_prune_rate(prune_rate)
        self.accelerator = accelerator
        self.name = name or accelerator.name
        self.account = bool(account)
        self.precision = precision
        self.runner = DeviceRunner(accelerator.device)
        self.weights: Optional[DeviceWeights] = None
        # least recently used last-out: every batch size (predict) or optimiser setting (train) records its
        # own program and buffers, so the cache is bounded
        self._programs: "OrderedDict[tuple, StepProgram]" = OrderedDict()
        #: stage timings (seconds) of the last step
        self.last_timings: Dict[str, float] = {}
        #: the last step's program: ``cycles`` (the counters, summed over its descriptors) and, on a
        #: device with a hardware timer, ``measured_cycles`` (the board's own count of the same run)
        self.last_cycles: Dict[str, int] = {}
        self._closed = False

    # ------------------------------------------------------------------ state
    def _weights_for(self, model: Model) -> DeviceWeights:
        if self._closed:
            from ..devices.device import DeviceError
            raise DeviceError(f"{self.name}: the backend was closed; make a new one (make_backend)")
        missing = _step.unsupported_layers(ProgramRecorder, model)
        if missing:
            # refused before any device memory is allocated or program recorded
            raise ValueError(f"model: {missing[0][0]} is not yet supported by the accelerator backends "
                             f"(model {model.name!r}); use --backend reference")
        if self.weights is None or self.weights.model.name != model.name or \
                self.weights.state_shapes != model.state_shapes():
            self.accelerator.limits.check_model(model, f"the {self.name} backend")
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
                weight_decay: float = 0.0, nesterov: bool = False) -> StepProgram:
        """The recorded program for ``kind`` and ``batch``, with its device buffers (cached)."""
        weights = self._weights_for(model)
        key = (kind, batch, lr, momentum, weight_decay, nesterov, self.prune_rate) if kind == "train" \
            else (kind, batch)
        prog = self._programs.get(key)
        if prog is not None:
            self._programs.move_to_end(key)
        if prog is None:
            from ..ip.precision import loss_scale
            prog = record_program(self.accelerator, weights, kind, batch, lr, momentum, weight_decay,
                                  self.prune_rate if kind == "train" else 0.0, loss_scale(self.precision, batch),
                                  nesterov=nesterov)
            for _ in range(2 if kind == "train" else 1):
                bufs = self.accelerator.allocate_arenas(prog.layout, prog.n_desc)
                for arena, buf in weights.buffers.items():
                    bufs[arena].freebuffer()
                    bufs[arena] = buf
                bufs["program"][:] = prog.words.reshape(-1)
                bufs["program"].sync_to_device()          # written once, run many times
                for name, value in prog.constants.items():
                    prog.layout.put(bufs, name, value)    # flushed with the bits arena of every batch
                if prog.constants:
                    bufs["bits"].sync_to_device()
                prog.slots.append(bufs)
                prog.slot_lr.append(float(lr))
            self._programs[key] = prog
            # the two most recent stay: a streamed step runs one program while the next one is staged
            while len(self._programs) > MAX_PROGRAMS:
                _, old = self._programs.popitem(last=False)
                _free_slots(old)
        return prog

    def _free_programs(self) -> None:
        for prog in self._programs.values():
            _free_slots(prog)
        self._programs.clear()

    # ------------------------------------------------------------------ one run, in stages
    def _stage(self, prog: StepProgram, slot: int, x, y=None, prune_seeds=None) -> Dict[str, float]:
        """Pack x (and labels y) into buffer set ``slot`` and flush it; the IP may be running the other."""
        t0 = time.perf_counter()
        bufs = prog.slots[slot]
        x = R.check_array("x", x, 4)
        expected = (prog.batch, *self.weights.model.input_shape)
        if x.shape != expected:
            raise ValueError(f"x: expected a batch of shape {expected}, got {x.shape}")
        prog.layout.put(bufs, prog.x, np.ascontiguousarray(x, dtype=np.float32))
        if prog.labels is not None:
            y = np.asarray(y)
            if y.shape != (prog.batch,) or y.dtype.kind not in "iu":
                raise ValueError(f"y: expected {prog.batch} integer labels, got shape {y.shape} dtype {y.dtype}")
            classes = self.weights.model.num_classes
            if y.size and (y.min() < 0 or y.max() >= classes):
                raise ValueError(f"y: labels must lie in [0, {classes - 1}]")
            prog.layout.put(bufs, prog.labels, y.astype(np.uint32))
        if prog.prune_seeds is not None:
            n_layers = len(self.weights.model.layers)
            if prune_seeds is None or np.shape(prune_seeds) != (n_layers,):
                raise ValueError(f"prune_seeds: pruning needs one uint32 seed per layer, shape ({n_layers},), got "
                                 f"{None if prune_seeds is None else np.shape(prune_seeds)}")
            prog.layout.put(bufs, prog.prune_seeds, np.asarray(prune_seeds, dtype=np.uint32))
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
               weight_decay: float, nesterov: bool = False) -> Iterator:
        """Ping-pong training: yields a :class:`~zskip.host.runtime.streaming.StreamedStep` per batch, in order.

        Batch i+1 is taken from ``batches``, packed and flushed into the other
        buffer set while batch i runs; the device is idle whenever a result
        is yielded (batch i+1 starts when the next one is asked for).
        """
        from ...models.check import check_step, tolerance_for
        from .streaming import StreamedStep
        weights = self._sync_weights(model, params, velocities)
        tolerance = None
        items = iter(batches)

        def stage(batch, slot):
            n = int(np.shape(batch.x)[0]) if np.ndim(batch.x) else 0
            if n < 1:
                raise ValueError(f"x: a batch needs at least one sample, got shape {np.shape(batch.x)}")
            prog = self.program(model, "train", n, float(lr), float(momentum), float(weight_decay), bool(nesterov))
            prog.set_lr(slot, batch.step_lr(lr))     # this slot is idle: the IP runs the other one
            return prog, slot, batch, self._stage(prog, slot, batch.x, batch.y, batch.prune_seeds)

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
            self.last_cycles = {"cycles": sum(r["cycles"] for r in records)}
            measured = getattr(self.accelerator.device, "last_measured_cycles", None)
            if measured is not None:
                self.last_cycles["measured_cycles"] = int(measured)
            read, timings["invalidate"] = self._collect(prog, slot, records)
            t1 = time.perf_counter()
            new_params, new_velocities = weights.advance()
            replay = ReplayOps(prog.calls, read, records)
            shapes = weights.placeholders()
            step_lr = batch.step_lr(lr)
            result = _step.train_step(replay, model, shapes[0], shapes[1], batch.x, batch.y, step_lr, momentum,
                                      weight_decay, account=self.account, prune_rate=self.prune_rate,
                                      prune_seeds=batch.prune_seeds, grad_scale=prog.grad_scale,
                                      nesterov=nesterov)
            result.params, result.velocities = new_params, new_velocities
            timings["unpack"] = time.perf_counter() - t1
            report = None
            if before is not None:
                outputs = _with_updated_weights(replay.outputs, new_params, new_velocities)
                report = check_step(model, before[0], before[1], batch.x, batch.y, step_lr, momentum, weight_decay,
                                    outputs, tolerance, prune_rate=self.prune_rate, prune_seeds=batch.prune_seeds,
                                    grad_scale=prog.grad_scale, nesterov=nesterov)
            self.last_timings = dict(timings)
            yield StreamedStep(result, report, timings)

    def train_step(self, model, params, velocities, x, y, lr, momentum, weight_decay, prune_seeds=None,
                   nesterov=False):
        """One step as one program run (see :meth:`stream`); returns a StepResult whose params are mirrors."""
        from .streaming import Batch
        (out,) = list(self.stream(model, params, velocities, [Batch(x, y, prune_seeds=prune_seeds)], lr, momentum,
                                  weight_decay, nesterov=nesterov))
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
        if self._closed:
            return
        self._closed = True
        self.runner.close()
        if self.weights is not None:
            self.weights.close()
        self._free_programs()
        close = getattr(self.accelerator.device, "close", None)
        if close is not None:
            close()


def _free_slots(prog: StepProgram) -> None:
    """Free a program's buffers (not the shared weights arenas)."""
    for bufs in prog.slots:
        for name, buf in bufs.items():
            if name not in WEIGHT_ARENAS:
                buf.freebuffer()
    prog.slots.clear()


def _with_updated_weights(outputs, params: Mapping, velocities: Mapping):
    """Replayed op outputs with each sgd_update's (and batchnorm_update_stats') return replaced by the
    read-back updated weights (running statistics): the recorded ops update them in place."""
    keys = iter([k for k in params if k in velocities])
    running = iter([k for k in params if k.endswith(".running_mean")])
    fixed = []
    for op, out in outputs:
        if op == "sgd_update":
            key = next(keys)
            out = (params[key], velocities[key])
        elif op == "batchnorm_update_stats":
            key = next(running)
            out = (params[key], params[key[:-len("mean")] + "var"])
        fixed.append((op, out))
    return fixed
