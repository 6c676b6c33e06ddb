"""Backends for the training loop, and the one factory that chooses them.

A backend has ``name``, ``train_step(model, params, velocities, x, y, lr,
momentum, weight_decay) -> zskip.models.step.StepResult``, ``predict(model,
params, x) -> logits (N, classes)`` and ``close()``. :class:`OpsBackend`
runs ``zskip.models.step`` on any :class:`~zskip.models.ops.Ops`; a backend
that runs a whole step as one device program provides the same methods.

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

__all__ = ["Backend", "OpsBackend", "make_backend", "BACKENDS"]


class Backend(Protocol):
    """What ``zskip.models.train.train`` needs from a backend."""

    name: str

    def train_step(self, model: Model, params: Dict[str, np.ndarray], velocities: Dict[str, np.ndarray],
                   x: np.ndarray, y: np.ndarray, lr: float, momentum: float,
                   weight_decay: float) -> _step.StepResult:
        """One SGD step on batch x (N, C, H, W), y (N,); returns new params and velocities."""

    def predict(self, model: Model, params: Dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) for x (N, C, H, W)."""

    def close(self) -> None:
        """Release the hardware (no-op for software backends)."""


class OpsBackend:
    """A backend that runs ``zskip.models.step`` op by op on ``ops``.

    account: compute the reference MAC accounting each step (about 2x the
    step time of the numpy reference; off leaves ``macs`` empty).
    """

    def __init__(self, ops, name: str | None = None, account: bool = True):
        self.ops = ops
        self.name = name or getattr(ops, "name", type(ops).__name__)
        self.account = bool(account)

    def train_step(self, model, params, velocities, x, y, lr, momentum, weight_decay):
        """See :meth:`Backend.train_step`."""
        return _step.train_step(self.ops, model, params, velocities, x, y, lr, momentum, weight_decay,
                                account=self.account)

    def predict(self, model, params, x):
        """See :meth:`Backend.predict`."""
        return _step.predict(self.ops, model, params, x)

    def close(self) -> None:
        """Close the ops when they hold hardware."""
        close = getattr(self.ops, "close", None)
        if close is not None:
            close()


def _accelerator():
    try:
        from .accelerator import Accelerator
    except ImportError as e:
        raise ValueError(f"backend: the accelerator backends need zskip.host.accelerator, which cannot be "
                         f"imported here ({e}); use --backend reference") from e
    return Accelerator


def _reference(account: bool = True):
    return OpsBackend(ReferenceOps(), "reference", account=account)


def _emu(account: bool = True, **opts):
    return OpsBackend(_accelerator().emulated(**opts), "emu", account=account)


def _pynq(bitfile: str = "zskip.bit", account: bool = True, **opts):
    return OpsBackend(_accelerator().pynq(bitfile, **opts), "pynq", account=account)


#: Backend names (``remote:HOST`` takes the board's host name or address).
BACKENDS = ("reference", "emu", "pynq", "remote:HOST")


def make_backend(name: str, **opts) -> Backend:
    """The backend called ``name`` ("reference", "emu", "pynq" or "remote:HOST").

    opts go to the backend's constructor: ``account`` for every one, e.g.
    ``precision`` / ``skip_zeros`` for emu (``Accelerator.emulated``),
    ``bitfile`` for pynq. Unknown names or options raise ValueError naming them.
    """
    if not isinstance(name, str):
        raise ValueError(f"backend: expected a name, got {name!r}; known: {', '.join(BACKENDS)}")
    if name.startswith("remote:") and len(name) > len("remote:"):
        account = opts.pop("account", True)
        return OpsBackend(_accelerator().remote(name[len("remote:"):], **opts), name, account=account)
    builders = {"reference": _reference, "emu": _emu, "pynq": _pynq}
    if name not in builders:
        raise ValueError(f"backend: unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    try:
        return builders[name](**opts)
    except TypeError as e:
        raise ValueError(f"backend: bad options {sorted(opts)} for backend {name!r}: {e}") from e
