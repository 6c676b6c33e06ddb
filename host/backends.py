"""Backends for the training loop, and the one factory that chooses them.

A backend has ``name``, ``train_step(model, params, velocities, x, y, lr,
momentum, weight_decay) -> zskip.models.step.StepResult``, ``stream(model,
params, velocities, batches, lr, momentum, weight_decay)`` (an iterator of
``zskip.host.runtime.streaming.StreamedStep``, one per ``Batch``), ``predict(model,
params, x) -> logits (N, classes)`` and ``close()``. :class:`OpsBackend`
runs ``zskip.models.step`` on any :class:`~zskip.models.ops.Ops`;
``zskip.host.runtime.program_backend.ProgramBackend`` runs a whole step as one device
program (the default for the accelerator backends; ``mode="ops"`` selects
one device call per op).

:func:`make_backend` is the only place in zskip that branches on a backend
name. The accelerator module is imported only when an accelerator backend is
asked for, so the reference backend works without it.
"""
from __future__ import annotations

from typing import Dict, Protocol

import numpy as np

from ..models import step as _step
from ..models.networks import Model
from ..models.ops import ReferenceOps
from ..models.step import check_prune_rate

__all__ = ["Backend", "OpsBackend", "make_backend", "pattern_lanes", "BACKENDS"]


class Backend(Protocol):
    """What ``zskip.models.train.train`` needs from a backend."""

    name: str

    def train_step(self, model: Model, params: Dict[str, np.ndarray], velocities: Dict[str, np.ndarray],
                   x: np.ndarray, y: np.ndarray, lr: float, momentum: float,
                   weight_decay: float, nesterov: bool = False) -> _step.StepResult:
        """One SGD step on batch x (N, C, H, W), y (N,); returns new params and velocities."""

    def stream(self, model: Model, params, velocities, batches, lr: float, momentum: float,
               weight_decay: float, nesterov: bool = False):
        """Train on an iterable of ``zskip.host.runtime.streaming.Batch``; yields a ``StreamedStep`` per batch, in order.

        ``nesterov``: the SGD updates use Nesterov momentum (``train`` passes it
        only when True, so a backend without it still runs heavy-ball training).

        Each yielded step's params/velocities are the state after it; the
        backend may take the next batch before yielding the current result.
        """

    def predict(self, model: Model, params: Dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) for x (N, C, H, W)."""

    def close(self) -> None:
        """Release the hardware (no-op for software backends)."""


class OpsBackend:
    """A backend that runs ``zskip.models.step`` op by op on ``ops``.

    account: compute the reference MAC accounting each step (about 2x the
    step time of the numpy reference; off leaves ``macs`` empty).
    """

    def __init__(self, ops, name: str | None = None, account: bool = True, precision: str = "float32",
                 prune_rate: float = 0.0):
        self.ops = ops
        self.name = name or getattr(ops, "name", type(ops).__name__)
        self.account = bool(account)
        self.precision = precision
        self.prune_rate = check_prune_rate(prune_rate)

    def _check_model(self, model) -> None:
        """A model beyond the compiled maxima of ``ops`` (when it has them) is an error naming the option."""
        limits = getattr(self.ops, "limits", None)
        if limits is not None and hasattr(limits, "check_model"):
            limits.check_model(model, f"the {self.name} backend")

    def stream(self, model, params, velocities, batches, lr, momentum, weight_decay, nesterov=False):
        """One step after the other (``zskip.host.runtime.streaming.sequential_stream``)."""
        self._check_model(model)
        from .runtime.streaming import sequential_stream
        from .ip.precision import loss_scale
        return sequential_stream(self.ops, model, params, velocities, batches, lr, momentum, weight_decay,
                                 account=self.account, precision=self.precision, prune_rate=self.prune_rate,
                                 loss_scale=lambda n: loss_scale(self.precision, n), nesterov=nesterov)

    def train_step(self, model, params, velocities, x, y, lr, momentum, weight_decay, prune_seeds=None,
                   nesterov=False):
        """See :meth:`Backend.train_step`; ``prune_seeds`` as in ``zskip.host.runtime.streaming.Batch``."""
        from .ip.precision import loss_scale
        self._check_model(model)
        return _step.train_step(self.ops, model, params, velocities, x, y, lr, momentum, weight_decay,
                                account=self.account, prune_rate=self.prune_rate, prune_seeds=prune_seeds,
                                grad_scale=loss_scale(self.precision, len(y)), nesterov=nesterov)

    def predict(self, model, params, x):
        """See :meth:`Backend.predict`."""
        self._check_model(model)
        return _step.predict(self.ops, model, params, x)

    def close(self) -> None:
        """Close the ops when they hold hardware."""
        close = getattr(self.ops, "close", None)
        if close is not None:
            close()


def _accelerator():
    try:
        from .runtime.accelerator import Accelerator
    except ImportError as e:
        raise ValueError(f"backend: the accelerator backends need zskip.host.runtime.accelerator, which cannot be "
                         f"imported here ({e}); use --backend reference") from e
    return Accelerator


def _reference(account: bool = True, prune_rate: float = 0.0, precision: str = "float32"):
    from .ip.precision import is_float32, multiplier
    if not is_float32(precision):
        raise ValueError(f"precision: the reference backend computes in numpy float32/float64 only; {precision!r} "
                         f"needs an accelerator backend (--backend emu); it takes float32 with any mul=")
    return OpsBackend(ReferenceOps(mul=multiplier(precision)), "reference", account=account, precision=precision,
                      prune_rate=prune_rate)


#: how an accelerator backend runs a step: one program per mini-batch, or one device call per op
MODES = ("program", "ops")


def _on_accelerator(accelerator, name: str, account: bool, mode: str, precision: str = "float32",
                    prune_rate: float = 0.0):
    if mode == "program":
        from .runtime.program_backend import ProgramBackend
        return ProgramBackend(accelerator, name, account=account, precision=precision, prune_rate=prune_rate)
    if mode == "ops":
        return OpsBackend(accelerator, name, account=account, precision=precision, prune_rate=prune_rate)
    accelerator.device.close()
    raise ValueError(f"mode: must be one of {', '.join(MODES)}, got {mode!r}")


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: must be true or false, got {value!r}")
    return bool(value)


def _emu(account: bool = True, mode: str = "program", prune_rate: float = 0.0, **opts):
    import dataclasses
    from .ip.program import Limits
    account = _check_bool("account", account)
    if "skip_zeros" in opts:
        opts["skip_zeros"] = _check_bool("skip_zeros", opts["skip_zeros"])
    overrides = {f.name: opts.pop(f.name) for f in dataclasses.fields(Limits) if f.name in opts}
    if overrides:
        # compiled maxima given one by one (e.g. max_features=2048 for vgg_tiny) replace the board's or config.h's
        from .ip.program import board_limits
        opts["limits"] = dataclasses.replace(opts.get("limits") or board_limits(opts.pop("board", None)), **overrides)
        opts["limits"].check()      # before compiling: a bad size is an error naming it, not a g++ failure
    prune_rate = check_prune_rate(prune_rate)
    return _on_accelerator(_accelerator().emulated(**opts), "emu", account, mode, opts.get("precision", "float32"),
                           prune_rate)


def _pynq(bitfile: str = "zskip.bit", account: bool = True, mode: str = "program", prune_rate: float = 0.0,
          **opts):
    account = _check_bool("account", account)
    if "skip_zeros" in opts:
        opts["skip_zeros"] = _check_bool("skip_zeros", opts["skip_zeros"])
    prune_rate = check_prune_rate(prune_rate)
    return _on_accelerator(_accelerator().pynq(bitfile, **opts), "pynq", account, mode, prune_rate=prune_rate)


#: Backend names (``remote:HOST`` takes the board's host name or address).
BACKENDS = ("reference", "emu", "pynq", "remote:HOST")


def pattern_lanes(backend) -> int:
    """The PE lanes a connection pattern must be clash-free for on ``backend``: its engine's compiled
    ``pe_lanes``, or 0 (the engine default, ``structured.DEFAULT_LANES``) when that is the default or
    the backend has no engine."""
    from ..models.structured import DEFAULT_LANES
    engine = getattr(backend, "accelerator", None) or getattr(backend, "ops", None)
    lanes = getattr(getattr(engine, "limits", None), "pe_lanes", None)
    return 0 if lanes is None or lanes == DEFAULT_LANES else int(lanes)


def make_backend(name: str, **opts) -> Backend:
    """The backend called ``name`` ("reference", "emu", "pynq" or "remote:HOST").

    opts go to the backend's constructor: ``account`` and ``prune_rate`` (target
    gradient pruning rate in [0, 1), 0 = off) for every one, ``precision`` for
    reference (float32 with a ``mul=`` multiplier, e.g. "float32,mul=mitchell") and emu,
    ``mode`` ("program" or "ops") for the accelerator backends, e.g.
    ``precision`` / ``skip_zeros`` / ``board`` for emu (``Accelerator.emulated``)
    and any compiled maximum of ``program.Limits`` (``max_features=2048``),
    ``bitfile`` for pynq. Unknown names or options raise ValueError naming them.
    """
    if not isinstance(name, str):
        raise ValueError(f"backend: expected a name, got {name!r}; known: {', '.join(BACKENDS)}")
    if name.startswith("remote:") and len(name) > len("remote:"):
        account, mode = _check_bool("account", opts.pop("account", True)), opts.pop("mode", "program")
        if "skip_zeros" in opts:
            opts["skip_zeros"] = _check_bool("skip_zeros", opts["skip_zeros"])
        prune_rate = check_prune_rate(opts.pop("prune_rate", 0.0))
        return _on_accelerator(_accelerator().remote(name[len("remote:"):], **opts), name, account, mode,
                               prune_rate=prune_rate)
    builders = {"reference": _reference, "emu": _emu, "pynq": _pynq}
    if name not in builders:
        raise ValueError(f"backend: unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    try:
        return builders[name](**opts)
    except TypeError as e:
        raise ValueError(f"backend: bad options {sorted(opts)} for backend {name!r}: {e}") from e
