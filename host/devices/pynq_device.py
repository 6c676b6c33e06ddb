"""The :class:`~zskip.host.devices.device.Device` of a PYNQ overlay: on the board, remote, or emulated.

The driver talks to the accelerator only through its ``register_map`` field
names, which come from the HLS top function source (host/ip/register_map.py):
each m_axi pointer's ``<name>_1``/``<name>_2`` words take a buffer's device
address, ``n_desc`` the program length, ``CTRL.AP_START`` starts it,
``CTRL.AP_DONE`` is polled until the timeout, and ``cycles_1``/``cycles_2`` are
read back. When the overlay holds the cycle timer (overlay/ip.ini [timer],
host/devices/axi_timer.py), the IP's interrupt is enabled (``GIER``, ``IP_IER``)
so ap_done latches the timer, and each run also gives ``last_measured_cycles``.
The same code drives a real ``pynq.Overlay``, one opened on a ``RemoteDevice``
and the :class:`~zskip.host.devices.emulated_board.EmulatedBoard`.

Cache maintenance is the caller's, as on every PYNQ design: ``sync_to_device()``
the inputs before :meth:`PynqDevice.run`, ``sync_from_device()`` the outputs after.
"""
from __future__ import annotations

import atexit
import os
import time
import weakref
from typing import List, Mapping, Optional

import numpy as np

from ...overlay.boards import ip_identity, load_boards, timer_identity
from .axi_timer import CycleTimer
from .device import DeviceError, DeviceTimeout
from ..ip.program import board_limits
from ..ip.register_map import TopInterface, driver_version, load_top

_UINT32_MAX = 0xFFFFFFFF
#: bytes of the scratch buffer the pointers address during the version probe
_PROBE_BYTES = 4096


def _find_ip(overlay, vlnv: str):
    matches = [name for name, desc in overlay.ip_dict.items() if desc.get("type") == vlnv]
    if len(matches) != 1:
        found = sorted({desc.get("type") for desc in overlay.ip_dict.values()})
        raise DeviceError(f"the overlay must hold exactly one IP {vlnv}; found {len(matches)} "
                          f"(IP types in the overlay: {found})")
    return matches[0], getattr(overlay, matches[0])


def _find_timer(overlay) -> Optional[CycleTimer]:
    """The overlay's cycle timer (None for a bitstream without one)."""
    vlnv = timer_identity().vlnv
    matches = [name for name, desc in overlay.ip_dict.items() if desc.get("type") == vlnv]
    if not matches:
        return None
    if len(matches) > 1:
        raise DeviceError(f"the overlay holds {len(matches)} IPs {vlnv} ({sorted(matches)}); the cycle timer is "
                          f"the one named {timer_identity().cell}")
    # the fastest clock any board runs the PL at bounds the 32-bit count's wrap
    fastest = max(b.clock_mhz for b in load_boards().values())
    return CycleTimer(getattr(overlay, matches[0]), fastest)


def _pynq():
    """The pynq module; a DeviceError saying the fix when it cannot be imported."""
    from ...overlay import PynqImportError, import_pynq
    try:
        return import_pynq()
    except PynqImportError as e:
        raise DeviceError(str(e)) from e


def _allocate(target, shape, dtype):
    return _pynq().allocate(shape, dtype=dtype, target=target)


class PynqDevice:
    """:class:`~zskip.host.devices.device.Device` over a loaded overlay holding the ``zskip_top`` IP.

    Args:
        overlay: a loaded ``pynq.Overlay`` (e.g. :class:`zskip.overlay.ZskipOverlay`),
            an :class:`~zskip.host.devices.emulated_board.EmulatedBoard`, or the path of a
            zskip.bit (None: the default bitfile) to load as a ``ZskipOverlay``.
        board: the boards.ini section the bitstream was built for; sets
            ``limits`` (the compiled maxima). Default: the overlay's own
            ``limits`` if it has one, else the defaults of hls/common/config.h.
        interface: the parsed top function (default: the shipped HLS source).
        expected_version: the ZSKIP_VERSION this driver accepts (default: the
            shipped hls/common/version.h).
        probe_timeout_s: timeout of the version probe run at open.
        close_overlay: also ``close()`` the overlay when this device closes
            (for an emulated board this device created).

    Raises:
        DeviceError: the overlay lacks the IP, its register map lacks a field the
            HLS source declares, or its version register differs from ZSKIP_VERSION.
    """

    def __init__(self, overlay=None, interface: Optional[TopInterface] = None,
                 expected_version: Optional[int] = None, probe_timeout_s: float = 5.0,
                 board: Optional[str] = None, close_overlay: bool = False):
        if overlay is None or isinstance(overlay, (str, os.PathLike)):
            _pynq()
            from ...overlay.zskip_overlay import ZskipOverlay
            overlay = ZskipOverlay(overlay)
        self.overlay = overlay
        self._close_overlay = close_overlay
        #: the compiled maxima descriptors are checked against (``program.Limits``)
        self.limits = board_limits(board) if board is not None else (
            getattr(overlay, "limits", None) or board_limits(None))
        self.interface = interface if interface is not None else load_top()
        self.ip_name, self.ip = _find_ip(overlay, ip_identity().vlnv)
        self.name = f"pynq:{self.ip_name}"
        self._target = overlay.device
        self._buffers: List = []
        self._closed = False
        #: argument -> its register names in this IP's map (see _resolve_fields)
        self._fields = self._resolve_fields()
        #: the hardware timer beside the IP (None: the bitstream has none)
        self.timer = _find_timer(overlay)
        #: timer cycles from just before AP_START to ap_done of the last run (None: no timer or no capture)
        self.last_measured_cycles: Optional[int] = None
        if self.timer is not None:
            # ap_done raises the interrupt line, which latches the timer
            registers = self.ip.register_map
            registers.GIER.Enable = 1
            registers.IP_IER.CHAN0_INT_EN = 1
        atexit.register(_close_if_alive, weakref.ref(self))
        expected = expected_version if expected_version is not None else driver_version()
        found = self.version(probe_timeout_s)
        if found != expected:
            self.close()
            raise DeviceError(f"IP {self.ip_name} reports version 0x{found:x} but this driver needs "
                              f"0x{expected:x} (hls/common/version.h): rebuild the bitstream from "
                              f"these sources or install the matching zskip")

    # -- Device protocol -------------------------------------------------
    def allocate(self, shape, dtype=np.float32):
        """A device-reachable buffer of ``shape`` and ``dtype``, zero on host and device; freed on close."""
        self._check_open()
        buf = _allocate(self._target, shape, dtype)
        self._buffers.append(buf)
        # CMA memory is not cleared by the allocator
        buf.fill(0)
        buf.sync_to_device()
        return buf

    def version(self, timeout_s: float = 5.0) -> int:
        """The IP's version register, read after a run of an empty program.

        The register is an output of ``zskip_top``, valid once the IP has run, so
        the probe points every pointer at a scratch page and runs ``n_desc = 0``.
        """
        self._check_open()
        scratch = self.allocate(_PROBE_BYTES // 4, np.uint32)
        try:
            self._start({name: scratch for name in self.interface.pointer_arguments}, 0)
            self._wait(timeout_s)
            return self._read_output("version")
        finally:
            self._free(scratch)

    def run(self, buffers: Mapping[str, object], n_desc: int, timeout_s: float = 30.0) -> int:
        """Start the IP on ``buffers`` (one per m_axi argument) and wait; returns ``cycles``.

        Raises:
            ValueError: a buffer is missing or unknown, ``n_desc`` is outside
                [0, 2**32 - 1], or ``timeout_s`` is not positive.
            DeviceTimeout: AP_DONE not seen within ``timeout_s``.
        """
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.start(buffers, n_desc)
        return self.wait(timeout_s)

    def start(self, buffers: Mapping[str, object], n_desc: int) -> None:
        """Write the registers and raise AP_START without waiting (see :meth:`run`).

        With :meth:`wait` this lets the host pack the next mini-batch into a
        second set of buffers while the IP runs (ping-pong).
        """
        self._check_open()
        expected = self.interface.pointer_arguments
        if set(buffers) != set(expected):
            raise ValueError(f"buffers must have exactly the keys {expected}; missing "
                             f"{sorted(set(expected) - set(buffers))}, unknown {sorted(set(buffers) - set(expected))}")
        if not isinstance(n_desc, (int, np.integer)) or not 0 <= int(n_desc) <= _UINT32_MAX:
            raise ValueError(f"n_desc must be an integer in [0, {_UINT32_MAX}], got {n_desc!r}")
        for name, buf in buffers.items():
            if getattr(buf, "device_address", None) is None:
                raise ValueError(f"buffer {name!r} has no device_address: allocate it with Device.allocate")
        self._start(buffers, int(n_desc))

    def wait(self, timeout_s: float = 30.0) -> int:
        """Wait for AP_DONE of the last :meth:`start`; returns the ``cycles`` register.

        Raises:
            DeviceTimeout: AP_DONE not seen within ``timeout_s``.
        """
        self._check_open()
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self._wait(timeout_s)
        return self._read_output("cycles")

    def close(self) -> None:
        """Free every buffer this device allocated (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for buf in self._buffers:
            buf.freebuffer()
        self._buffers.clear()
        if self._close_overlay and hasattr(self.overlay, "close"):
            self.overlay.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- register access by field name -----------------------------------
    def _resolve_fields(self) -> dict:
        """Argument name -> the register names holding its data, low word first, as the IP names them.

        Vitis HLS renames an argument whose name is an HDL keyword by appending
        ``_r`` (``out`` -> ``out_r_1``), so that spelling is accepted too.
        """
        registers = self.ip.register_map
        if not hasattr(registers, "CTRL"):
            raise DeviceError(f"IP {self.ip_name}'s register map has no CTRL register: not an HLS IP with "
                              f"s_axilite control")
        fields, missing = {}, []
        for a in self.interface.arguments:
            if a.s_axilite_bundle is None:
                continue
            names = self.interface.data_fields(a.name)
            renamed = [a.name + "_r" + f[len(a.name):] for f in names]
            if all(hasattr(registers, f) for f in names):
                fields[a.name] = names
            elif all(hasattr(registers, f) for f in renamed):
                fields[a.name] = renamed
            else:
                missing.extend(names)
        if missing:
            raise DeviceError(f"IP {self.ip_name}'s register map lacks {missing}: the bitstream was "
                              f"built from a different {self.interface.function} interface")
        return fields

    def _start(self, buffers: Mapping[str, object], n_desc: int) -> None:
        registers = self.ip.register_map
        for name in self.interface.pointer_arguments:
            address = int(buffers[name].device_address)
            for i, field in enumerate(self._fields[name]):
                setattr(registers, field, (address >> (32 * i)) & _UINT32_MAX)
        (n_desc_field,) = self._fields["n_desc"]
        setattr(registers, n_desc_field, n_desc)
        self.last_measured_cycles = None
        if self.timer is not None:
            if registers.IP_ISR.CHAN0_INT_ST:
                registers.IP_ISR = 1  # toggle on write: lower the line so ap_done raises it again
            self.timer.arm()
        self._fault_before_start = getattr(self.ip, "fault", None)
        registers.CTRL.AP_START = 1

    def _wait(self, timeout_s: float) -> None:
        registers = self.ip.register_map
        deadline = time.monotonic() + timeout_s
        pause = 1e-5
        # AP_DONE is clear-on-read in hardware: each read is a decision
        while not registers.CTRL.AP_DONE:
            # an emulated IP records the bus fault that stalled it: report it now, not as a timeout
            fault = getattr(self.ip, "fault", None)
            if fault is not None and fault is not getattr(self, "_fault_before_start", None):
                raise DeviceError(f"IP {self.ip_name} stalled on a bus fault: {fault}")
            if time.monotonic() > deadline:
                raise DeviceTimeout(f"IP {self.ip_name} did not raise AP_DONE within {timeout_s} s: "
                                    f"it hung or the program is wrong (the PL may need reloading)")
            time.sleep(pause)
            pause = min(pause * 2, 1e-3)
        if self.timer is not None:
            self.last_measured_cycles = self.timer.measured()
            registers = self.ip.register_map
            if registers.IP_ISR.CHAN0_INT_ST:
                registers.IP_ISR = 1  # toggle on write: the line stays low between runs

    def _read_output(self, name: str) -> int:
        registers = self.ip.register_map
        return sum(int(getattr(registers, f)) << (32 * i) for i, f in enumerate(self._fields[name]))

    def _free(self, buf) -> None:
        buf.freebuffer()
        self._buffers = [b for b in self._buffers if b is not buf]

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceError(f"device {self.name} is closed")


def _close_if_alive(ref) -> None:
    device = ref()
    if device is not None:
        device.close()


def open_pynq_device(bitfile: Optional[str] = None, board: Optional[str] = None) -> PynqDevice:
    """Load the zskip overlay on this board (default bitfile: next to zskip.overlay) and open it.

    ``board``: the boards.ini section the bitstream was built for (its maxima).
    """
    _pynq()
    from ...overlay.zskip_overlay import ZskipOverlay
    return PynqDevice(ZskipOverlay(bitfile), board=board)


def open_remote_device(host: str, bitfile: Optional[str] = None, port: Optional[int] = None,
                       board: Optional[str] = None) -> PynqDevice:
    """Load the zskip overlay on the PYNQ board at ``host`` through PYNQ's RemoteDevice (pynq >= 3.1)."""
    if not host or not isinstance(host, str):
        raise ValueError(f"host must be a board's host name or IP address, got {host!r}")
    _pynq()
    try:
        from pynq.pl_server.remote_device import PYNQ_PORT, RemoteDevice
    except ImportError as exc:
        raise DeviceError(f"PYNQ RemoteDevice is unavailable (needs pynq >= 3.1): {exc}") from exc
    from ...overlay.zskip_overlay import ZskipOverlay
    try:
        remote = RemoteDevice(0, host, port if port is not None else PYNQ_PORT)
    except Exception as exc:
        raise DeviceError(f"cannot reach the PYNQ remote server on {host}: {exc}") from exc
    return PynqDevice(ZskipOverlay(bitfile, device=remote), board=board)


def open_emulated_board_device(board: Optional[str] = None, precision: str = "float32",
                               hang: bool = False) -> PynqDevice:
    """This driver on an :class:`~zskip.host.devices.emulated_board.EmulatedBoard` running the C-sim kernels.

    ``board``: boards.ini section whose sizes the kernels are compiled with
    (None: config.h defaults, as the emu backend); closing the device stops the board.
    """
    from .emulated_board import EmulatedBoard
    emulated = EmulatedBoard(board=board, precision=precision, hang=hang)
    try:
        return PynqDevice(emulated, close_overlay=True)
    except Exception:
        emulated.close()
        raise
