"""The device protocol: what a backend's hardware (real, remote or emulated) provides.

The accelerator IP is one HLS top function, ``zskip_top`` (hls/zskip_top/), that
runs a *program*: a list of layer descriptors in device memory. Every backend
is an implementation of :class:`Device`; :class:`zskip.host.runtime.accelerator.Accelerator`
is written once against it, the way FINN's driver hides numpy, C-sim and board
executions behind one interface:

    pack -> buffer.sync_to_device() -> device.run(...) -> buffer.sync_from_device() -> unpack

Buffers behave like ``pynq.allocate`` buffers: numpy arrays in host memory
whose contents reach the accelerator only through ``sync_to_device()`` and come
back only through ``sync_from_device()``. The emulated device keeps a separate
device copy so that a driver that forgets a flush or an invalidate fails in
tests, not on the board.

``run`` takes the buffers by the names of the top function's pointer
arguments (``program``, ``act``, ``wgt``, ``grad``, ``bits``, ``stats``) plus
``n_desc``; it starts the IP, waits with a timeout (raising
:class:`DeviceTimeout` naming the IP and the timeout), and returns the value of
the IP's ``cycles`` output register. A device with a hardware timer (the
PYNQ driver on a bitstream with the cycle timer) also sets
``last_measured_cycles``: the timer's cycles of the last run, beside the
counters' prediction; ``Accelerator.last_stats["measured_cycles"]`` carries it.
"""
from __future__ import annotations

from typing import Mapping, Protocol

import numpy as np


class DeviceError(RuntimeError):
    """The device refused or failed a request (wrong bitstream, build failure, ...)."""


class DeviceTimeout(DeviceError):
    """The IP did not signal done within the timeout: it hung or the program is wrong."""


class Buffer(Protocol):
    """A ``pynq.allocate``-like buffer (an ndarray subclass)."""

    device_address: int

    def sync_to_device(self) -> None: ...

    def sync_from_device(self) -> None: ...

    def freebuffer(self) -> None: ...


class Device(Protocol):
    name: str

    def allocate(self, shape, dtype=np.float32) -> Buffer:
        """A zeroed buffer of ``shape`` and ``dtype`` that the IP can reach."""

    def version(self) -> int:
        """The IP's ID/version register (compared with ZSKIP_VERSION by the driver)."""

    def run(self, buffers: Mapping[str, Buffer], n_desc: int, timeout_s: float = 30.0) -> int:
        """Start ``zskip_top`` on ``buffers`` and wait; returns the ``cycles`` register."""

    def close(self) -> None:
        """Free every buffer and release the hardware."""
