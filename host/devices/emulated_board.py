"""A PYNQ-like board in software, so the real PYNQ driver runs in CI.

:class:`EmulatedBoard` is shaped like a loaded ``pynq.Overlay``: an ``ip_dict``
whose accelerator entry carries the IP's VLNV and register description, the IP
as an attribute whose ``register_map`` is PYNQ's own ``RegisterMap`` class laid
out from the HLS top function source (host/ip/register_map.py), and a ``device``
that ``pynq.allocate(shape, dtype, target=board.device)`` allocates from.

Fidelity that matters for the driver:

- device memory is separate from the host arrays: data reaches the IP only on
  ``sync_to_device()`` and comes back only on ``sync_from_device()``, so a
  missing flush or invalidate gives wrong results in tests;
- the IP is asynchronous: a thread plays the hardware, seeing AP_START in the
  register file, resolving the pointer registers to device memory, running the
  kernel and then raising AP_DONE / AP_IDLE and the outputs' ap_vld bits;
- ``hang=True`` makes the IP accept AP_START and never finish;
- pointers that fall outside every allocated buffer are a bus fault: the IP
  records it in ``fault`` and never finishes, as a real AXI error would stall.

The kernel is a callable ``kernel(arrays, n_desc) -> {"version": int, "cycles": int}``
where ``arrays`` maps each m_axi argument name to a numpy view of device memory
starting at the address in its pointer register (dtype from the C type). The
default kernel is the C simulation of ``zskip_top`` (host/devices/emu.py).
"""
from __future__ import annotations

import ctypes
import logging
import threading
from typing import Callable, Dict, Optional

import numpy as np

from ...overlay.boards import ip_identity
from .device import DeviceError
from ..ip.register_map import CTRL_FIELDS, TopInterface, load_top

_log = logging.getLogger(__name__)

Kernel = Callable[[Dict[str, np.ndarray], int], Dict[str, int]]

_C_DTYPES = {"float": np.float32, "double": np.float64, "uint32_t": np.uint32, "int32_t": np.int32,
             "uint64_t": np.uint64, "int64_t": np.int64, "uint16_t": np.uint16, "int16_t": np.int16,
             "uint8_t": np.uint8, "int8_t": np.int8, "int": np.int32, "unsigned": np.uint32,
             "unsigned int": np.uint32}

#: where the emulated DDR's buffers start: above 4 GiB (ZynqMP's high DDR), so a
#: driver that writes only the low word of a 64-bit pointer register fails
_DDR_BASE = 0x8_0000_0000
_PAGE = 4096
#: the IP's AXI4-Lite base address in the emulated PS address map
_IP_PHYS_ADDR = 0x4000_0000


class BusError(DeviceError):
    """The IP addressed memory outside every allocated buffer."""


class EmulatedBuffer(np.ndarray):
    """A ``pynq.allocate`` buffer: host array plus a device copy moved only by syncs."""

    def __array_finalize__(self, obj):
        # views share the allocation; syncing a view moves the whole buffer
        self._ddr = getattr(obj, "_ddr", None)
        self.device_address = getattr(obj, "device_address", None)
        self._owner = getattr(obj, "_owner", None)

    @property
    def physical_address(self) -> int:
        return self.device_address

    def _check(self):
        if self._ddr is None or self._owner is None:
            raise DeviceError("this array is not an emulated device buffer")
        if self._ddr.region(self.device_address) is None:
            raise DeviceError(f"buffer at 0x{self.device_address:x} was freed")

    def sync_to_device(self) -> None:
        """Flush: copy the host array into device memory."""
        self._check()
        owner = self._owner
        self._ddr.region(owner.device_address)[:] = np.asarray(owner).reshape(-1).view(np.uint8)

    def sync_from_device(self) -> None:
        """Invalidate: copy device memory into the host array."""
        self._check()
        owner = self._owner
        raw = self._ddr.region(owner.device_address)
        np.asarray(owner).reshape(-1).view(np.uint8)[:] = raw

    flush = sync_to_device
    invalidate = sync_from_device

    def freebuffer(self) -> None:
        """Release the device memory (idempotent)."""
        if self._ddr is not None and self._owner is not None:
            self._ddr.free(self._owner.device_address)

    close = freebuffer


class EmulatedDevice:
    """The board's DDR: page-aligned regions keyed by device address."""

    name = "emulated-board"

    def __init__(self):
        self._regions: Dict[int, np.ndarray] = {}
        self._next = _DDR_BASE
        self._lock = threading.Lock()

    def allocate(self, shape, dtype="u4", **kwargs) -> EmulatedBuffer:
        """A zeroed buffer of ``shape`` and ``dtype`` (pynq's default dtype is uint32)."""
        dtype = np.dtype(dtype)
        shape = (shape,) if np.isscalar(shape) else tuple(shape)
        if any(int(s) < 0 for s in shape):
            raise ValueError(f"shape must be non-negative, got {shape}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        with self._lock:
            address = self._next
            self._next += max(_PAGE, -(-nbytes // _PAGE) * _PAGE)
            self._regions[address] = np.zeros(nbytes, dtype=np.uint8)
        buf = np.zeros(shape, dtype=dtype).view(EmulatedBuffer)
        buf._ddr, buf.device_address, buf._owner = self, address, buf
        return buf

    def region(self, address: int) -> Optional[np.ndarray]:
        return self._regions.get(address)

    def free(self, address: int) -> None:
        with self._lock:
            self._regions.pop(address, None)

    @property
    def allocated(self) -> int:
        """Number of live buffers (a test checks the driver frees them)."""
        return len(self._regions)

    def resolve(self, address: int, dtype) -> np.ndarray:
        """Device memory from ``address`` to the end of its buffer, as ``dtype``."""
        dtype = np.dtype(dtype)
        for base, mem in self._regions.items():
            if base <= address < base + max(len(mem), 1):
                if (address - base) % dtype.itemsize:
                    raise BusError(f"address 0x{address:x} is not aligned to {dtype.itemsize} bytes")
                usable = (len(mem) - (address - base)) // dtype.itemsize * dtype.itemsize
                return mem[address - base:address - base + usable].view(dtype)
        raise BusError(f"address 0x{address:x} is outside every allocated buffer")


class _RegisterFile(np.ndarray):
    """The IP's register words as the AXI bus sees them.

    Reading CTRL through a register view clears AP_DONE: it is clear-on-read in
    the HLS adapter (UG1399), so a driver that polls it sees each completion
    once. Writing CTRL wakes the hardware thread, as the write strobe would.
    The hardware thread itself uses a plain ndarray and triggers neither.
    """

    def __array_finalize__(self, obj):
        self._ctrl_address = getattr(obj, "_ctrl_address", None)
        self._ctrl_written = getattr(obj, "_ctrl_written", None)

    def _is_ctrl(self, index) -> bool:
        return (isinstance(index, (int, np.integer)) and index == 0 and self._ctrl_address is not None
                and self.__array_interface__["data"][0] == self._ctrl_address)

    def __getitem__(self, index):
        value = super().__getitem__(index)
        if self._is_ctrl(index):
            raw = np.asarray(self)
            raw[0] = int(raw[0]) & ~(1 << CTRL_FIELDS["AP_DONE"])
        return value

    def __setitem__(self, index, value):
        super().__setitem__(index, value)
        if self._is_ctrl(index) and self._ctrl_written is not None:
            self._ctrl_written.set()


class EmulatedIP:
    """The accelerator IP: a register file and a thread that plays the hardware."""

    def __init__(self, device: EmulatedDevice, interface: TopInterface, kernel: Kernel, hang: bool):
        self.device = device
        self.interface = interface
        self.kernel = kernel
        self.hang = hang
        self.fault: Optional[BaseException] = None
        self.starts = 0
        self.registers = np.zeros(interface.map_size // 4, dtype=np.uint32)
        self.registers[0] = 1 << CTRL_FIELDS["AP_IDLE"]
        #: the register words as the AXI bus sees them (reading CTRL clears AP_DONE)
        self.bus_view = self.registers.view(_RegisterFile)
        self.bus_view._ctrl_address = self.registers.__array_interface__["data"][0]
        self._ctrl_written = threading.Event()
        self.bus_view._ctrl_written = self._ctrl_written
        from pynq.registers import RegisterMap
        self.register_map = RegisterMap.create_subclass(interface.function, interface.pynq_registers())(self.bus_view)
        self._offsets = {r.name: r.offset for r in interface.registers}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._hardware, name=f"emulated-{interface.function}", daemon=True)
        self._thread.start()

    def _word(self, name: str) -> int:
        return int(self.registers[self._offsets[name] // 4])

    def _set_word(self, name: str, value: int) -> None:
        self.registers[self._offsets[name] // 4] = value & 0xFFFFFFFF

    def _hardware(self) -> None:
        start_bit = 1 << CTRL_FIELDS["AP_START"]
        while not self._stop.is_set():
            if not self.registers[0] & start_bit:
                self._ctrl_written.wait(0.05)
                self._ctrl_written.clear()
                continue
            # ap_start is consumed at the handshake; the IP is busy until done
            self.registers[0] = int(self.registers[0]) & ~(start_bit | (1 << CTRL_FIELDS["AP_IDLE"])
                                                           | (1 << CTRL_FIELDS["AP_DONE"]))
            self.starts += 1
            if self.hang:
                continue
            try:
                outputs = self._execute()
            except BaseException as exc:  # a real IP would stall on a bus error
                self.fault = exc
                _log.error("emulated %s stalled: %s", self.interface.function, exc)
                continue
            for name, value in outputs.items():
                for i, field in enumerate(self.interface.data_fields(name)):
                    self._set_word(field, int(value) >> (32 * i))
                self._set_word(self.interface.valid_field(name), 1)
            done = (1 << CTRL_FIELDS["AP_DONE"]) | (1 << CTRL_FIELDS["AP_IDLE"]) | (1 << CTRL_FIELDS["AP_READY"])
            self.registers[0] = int(self.registers[0]) | done
            if self._word("GIER") & 1 and self._word("IP_IER") & 1:
                self._set_word("IP_ISR", self._word("IP_ISR") | 1)

    def _execute(self) -> Dict[str, int]:
        arrays = {}
        for name in self.interface.pointer_arguments:
            words = self.interface.data_fields(name)
            address = sum(self._word(f) << (32 * i) for i, f in enumerate(words))
            c_type = self.interface.argument(name).c_type
            arrays[name] = self.device.resolve(address, _C_DTYPES[c_type])
        n_desc = self._word("n_desc")
        outputs = self.kernel(arrays, n_desc)
        expected = set(self.interface.output_arguments)
        if set(outputs) != expected:
            raise DeviceError(f"kernel returned outputs {sorted(outputs)}, the IP has {sorted(expected)}")
        return outputs

    def stop(self) -> None:
        self._stop.set()
        self._ctrl_written.set()
        self._thread.join(timeout=1.0)


_CTYPES = {np.dtype(np.uint32): ctypes.c_uint32, np.dtype(np.int32): ctypes.c_int32,
           np.dtype(np.uint64): ctypes.c_uint64, np.dtype(np.int64): ctypes.c_int64,
           np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}


def emu_kernel(board: Optional[str] = None, precision: str = "float32",
               interface: Optional[TopInterface] = None) -> Kernel:
    """The C simulation of the top function (host/devices/emu.py's library) as an emulated-board kernel.

    Args:
        board: a boards.ini section whose sizes the kernels are compiled with;
            None compiles with the defaults of hls/common/config.h, as the
            ``emu`` backend does.
        precision: "float32" or "ap_fixed<W,I>" (see ``emu.precision_types``).
        interface: the parsed top function (default: the shipped source); the
            ctypes signature of the bridge's ``zskip_emu_run`` is built from it.

    The bridge takes the top function's arguments in order. Before the call the
    program's operand extents are checked against the device buffers, because
    an out-of-range descriptor would otherwise corrupt this process; a board
    would stall or corrupt its DDR instead, so the IP records a bus fault.
    """
    from . import emu
    from ..ip.program import D_WORDS, S_WORDS, Limits, operand_extents
    from ...overlay.boards import board as board_profile

    interface = interface if interface is not None else load_top()
    defines = dict(Limits.defaults().defines() if board is None else board_profile(board).hls_defines)
    defines.update(emu.precision_types(precision))
    run = ctypes.CDLL(str(emu.build_library(defines))).zskip_emu_run
    argtypes = []
    for a in interface.arguments:
        dtype = np.dtype(_C_DTYPES[a.c_type])
        if a.m_axi_bundle is not None:
            argtypes.append(np.ctypeslib.ndpointer(dtype, flags="C_CONTIGUOUS"))
        elif a.is_output:
            argtypes.append(ctypes.POINTER(_CTYPES[dtype]))
        elif a.name == "n_desc":
            argtypes.append(_CTYPES[dtype])
        else:
            raise DeviceError(f"emu_kernel: no value for the scalar input {a.name!r} of {interface.function}")
    run.argtypes, run.restype = argtypes, None

    def kernel(arrays: Dict[str, np.ndarray], n_desc: int) -> Dict[str, int]:
        program = arrays["program"]
        if program.size < n_desc * D_WORDS or arrays["stats"].size < n_desc * S_WORDS:
            raise BusError(f"{n_desc} descriptors need {n_desc * D_WORDS} program words and "
                           f"{n_desc * S_WORDS} stats words; the buffers hold {program.size} and {arrays['stats'].size}")
        for i in range(n_desc):
            for arena, end in operand_extents(program[i * D_WORDS:(i + 1) * D_WORDS]).items():
                if end > arrays[arena].size:
                    raise BusError(f"descriptor {i} reaches word {end} of the {arena} buffer, "
                                   f"which holds {arrays[arena].size} words from its pointer")
        outputs = {name: _CTYPES[np.dtype(_C_DTYPES[interface.argument(name).c_type])]()
                   for name in interface.output_arguments}
        args = []
        for a in interface.arguments:
            if a.m_axi_bundle is not None:
                args.append(arrays[a.name])
            elif a.is_output:
                args.append(ctypes.byref(outputs[a.name]))
            else:
                args.append(n_desc)
        run(*args)
        return {name: int(value.value) for name, value in outputs.items()}

    return kernel


class EmulatedBoard:
    """A loaded ``pynq.Overlay`` look-alike with one accelerator IP.

    Args:
        kernel: what the IP computes (default: :func:`emu_kernel` for ``board``
            and ``precision``, the C-sim of ``zskip_top``).
        hang: the IP accepts AP_START and never raises AP_DONE.
        interface: the parsed top function (default: the shipped source).
        board: boards.ini section whose sizes the default kernel is compiled
            with (None: config.h defaults); also sets ``limits``.
        precision: "float32" or "ap_fixed<W,I>" for the default kernel.
    """

    def __init__(self, kernel: Optional[Kernel] = None, hang: bool = False,
                 interface: Optional[TopInterface] = None, board: Optional[str] = None,
                 precision: str = "float32"):
        from ..ip.program import board_limits
        self.interface = interface if interface is not None else load_top()
        #: the compiled maxima of the default kernel (``program.Limits``)
        self.limits = board_limits(board)
        if kernel is None:
            kernel = emu_kernel(board, precision, self.interface)
        self.device = EmulatedDevice()
        identity = ip_identity()
        self.ip_name = f"{identity.top}_0"
        ip = EmulatedIP(self.device, self.interface, kernel, hang)
        setattr(self, self.ip_name, ip)
        self.ip_dict = {self.ip_name: {
            "type": identity.vlnv, "fullpath": self.ip_name, "phys_addr": _IP_PHYS_ADDR,
            "addr_range": 1 << max(12, (self.interface.map_size - 1).bit_length()),
            "registers": self.interface.pynq_registers(), "interrupts": {}, "device": self.device,
        }}

    @property
    def ip(self) -> EmulatedIP:
        return getattr(self, self.ip_name)

    def is_loaded(self) -> bool:
        return True

    def close(self) -> None:
        """Stop the IP's thread."""
        self.ip.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
