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
import weakref
from typing import Callable, Dict, Optional

import numpy as np

from ...overlay.boards import ip_identity, timer_identity
from .device import DeviceError
from ..ip.register_map import CTRL_FIELDS, TopInterface, load_top

_log = logging.getLogger(__name__)

Kernel = Callable[[Dict[str, np.ndarray], int], Dict[str, int]]

_C_DTYPES = {"float": np.float32, "double": np.float64, "uint32_t": np.uint32, "int32_t": np.int32,
             "uint64_t": np.uint64, "int64_t": np.int64, "uint16_t": np.uint16, "int16_t": np.int16,
             "uint8_t": np.uint8, "int8_t": np.int8, "int": np.int32, "unsigned": np.uint32,
             "unsigned int": np.uint32,
             # the 128-bit data ports (hls/common/wide_port.h): a beat is 4 words,
             # and the host sees the buffer as its words
             "f32_beat": np.float32, "u32_beat": np.uint32}

#: where the emulated DDR's buffers start: above 4 GiB (ZynqMP's high DDR), so a
#: driver that writes only the low word of a 64-bit pointer register fails
_DDR_BASE = 0x8_0000_0000
_PAGE = 4096
#: the IP's AXI4-Lite base address in the emulated PS address map
_IP_PHYS_ADDR = 0x4000_0000
_TIMER_PHYS_ADDR = 0x4001_0000
#: PL cycles of one AXI-Lite access from the PS in the emulated board (a few
#: hundred ns at 100 MHz on a Zynq GP port); only shifts measured cycles
BUS_ACCESS_CYCLES = 20


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


class VirtualClock:
    """The board's PL clock in cycles: AXI-Lite accesses and the IP's runs advance it.

    Each access through the bus costs ``access_cycles`` (the PS's round trip,
    so the timer sees the driver's skew as on a board); a run of the IP lasts
    exactly the cycles its counters report (emulation has no other time), from
    the AP_START write on, whatever the driver does meanwhile.
    """

    def __init__(self, access_cycles: int):
        if access_cycles < 0:
            raise ValueError(f"bus_access_cycles must be >= 0, got {access_cycles!r}")
        self.access_cycles = int(access_cycles)
        self.now = 0
        self._lock = threading.Lock()

    def access(self) -> int:
        with self._lock:
            self.now += self.access_cycles
            return self.now

    def advance_to(self, cycle: int) -> None:
        with self._lock:
            self.now = max(self.now, cycle)


class _Hook:
    """What a register word does beyond storing a value, as the bus sees it."""

    def __init__(self, before_read=None, after_read=None, after_write=None):
        self.before_read, self.after_read, self.after_write = before_read, after_read, after_write


class _Bus:
    """The PS's AXI-Lite bus to the PL: the clock and the hooked words of every slave."""

    def __init__(self, clock: VirtualClock):
        self.clock = clock
        self.hooks: Dict[int, _Hook] = {}

    def view(self, words: np.ndarray, hooks: Dict[int, _Hook]) -> "_RegisterFile":
        """``words`` as the bus sees them; ``hooks``: word index -> hook."""
        base = words.__array_interface__["data"][0]
        for index, hook in hooks.items():
            self.hooks[base + 4 * index] = hook
        view = words.view(_RegisterFile)
        view._bus = self
        return view


class _RegisterFile(np.ndarray):
    """Register words as the AXI bus sees them: each access costs bus cycles, hooked words act.

    PYNQ's registers are one-word views of this array, so a hook is found by
    the address of the word a view starts at. Hardware threads use the plain
    array and trigger nothing.
    """

    def __array_finalize__(self, obj):
        self._bus = getattr(obj, "_bus", None)

    def _hook(self, index) -> Optional[_Hook]:
        if self._bus is None or not (isinstance(index, (int, np.integer)) and index == 0):
            return None
        return self._bus.hooks.get(self.__array_interface__["data"][0])

    def __getitem__(self, index):
        hook = self._hook(index)
        if self._bus is not None:
            self._bus.clock.access()
        if hook is not None and hook.before_read is not None:
            hook.before_read()
        value = super().__getitem__(index)
        if hook is not None and hook.after_read is not None:
            hook.after_read()
        return value

    def __setitem__(self, index, value):
        hook = self._hook(index)
        old = int(np.asarray(self)[0]) if hook is not None else 0
        if self._bus is not None:
            self._bus.clock.access()
        super().__setitem__(index, value)
        if hook is not None and hook.after_write is not None:
            hook.after_write(old)


class EmulatedIP:
    """The accelerator IP: a register file and a thread that plays the hardware.

    CTRL's AP_DONE is clear-on-read and IP_ISR toggle-on-write, as in the HLS
    adapter (UG1399); the interrupt line (GIER and IP_IER and IP_ISR, ap_done)
    calls ``interrupt_listeners`` with the cycle it rises at.
    """

    def __init__(self, device: EmulatedDevice, interface: TopInterface, kernel: Kernel, hang: bool,
                 bus: Optional[_Bus] = None):
        self.device = device
        self.interface = interface
        self.kernel = kernel
        self.hang = hang
        self.fault: Optional[BaseException] = None
        self.starts = 0
        self.bus = bus if bus is not None else _Bus(VirtualClock(0))
        self.registers = np.zeros(interface.map_size // 4, dtype=np.uint32)
        self.registers[0] = 1 << CTRL_FIELDS["AP_IDLE"]
        self._offsets = {r.name: r.offset for r in interface.registers}
        self._ctrl_written = threading.Event()
        self._start_cycle = 0
        self._line = False
        self.interrupt_listeners: list = []
        hooks = {0: _Hook(after_read=self._ctrl_read, after_write=self._ctrl_write),
                 self._offsets["IP_ISR"] // 4: _Hook(after_write=self._isr_write),
                 self._offsets["GIER"] // 4: _Hook(after_write=lambda old: self._update_line(self.bus.clock.now)),
                 self._offsets["IP_IER"] // 4: _Hook(after_write=lambda old: self._update_line(self.bus.clock.now))}
        #: the register words as the AXI bus sees them
        self.bus_view = self.bus.view(self.registers, hooks)
        from ...overlay import PynqImportError, import_pynq
        try:
            RegisterMap = import_pynq().registers.RegisterMap
        except PynqImportError as e:
            raise DeviceError(str(e)) from e
        self.register_map = RegisterMap.create_subclass(interface.function, interface.pynq_registers())(self.bus_view)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._hardware, name=f"emulated-{interface.function}", daemon=True)
        self._thread.start()

    def _ctrl_read(self) -> None:
        self.registers[0] = int(self.registers[0]) & ~(1 << CTRL_FIELDS["AP_DONE"])

    def _ctrl_write(self, old: int) -> None:
        if self.registers[0] & (1 << CTRL_FIELDS["AP_START"]):
            self._start_cycle = self.bus.clock.now
        self._ctrl_written.set()

    def _isr_write(self, old: int) -> None:
        # toggle on write: the written ones flip the stored bits
        written = int(self.registers[self._offsets["IP_ISR"] // 4])
        self._set_word("IP_ISR", (old ^ written) & 0x3)
        self._update_line(self.bus.clock.now)

    def _update_line(self, cycle: int) -> None:
        line = bool(self._word("GIER") & 1 and self._word("IP_IER") & self._word("IP_ISR") & 1)
        rose, self._line = line and not self._line, line
        if rose:
            for listener in self.interrupt_listeners:
                listener(cycle)

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
            start_cycle = self._start_cycle
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
            # the run lasts the cycles the counters report, from the AP_START write
            done_cycle = start_cycle + int(outputs.get("cycles", 0))
            self.bus.clock.advance_to(done_cycle)
            if self._word("IP_IER") & 1:
                self._set_word("IP_ISR", self._word("IP_ISR") | 1)
            self._update_line(done_cycle)
            done = (1 << CTRL_FIELDS["AP_DONE"]) | (1 << CTRL_FIELDS["AP_IDLE"]) | (1 << CTRL_FIELDS["AP_READY"])
            self.registers[0] = int(self.registers[0]) | done

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


class EmulatedTimer:
    """Timer 0 of an AXI Timer (PG079) on the board's clock, as far as the driver uses it.

    Counts up or down from its load value while ENT0 is set; LOAD0 loads TLR0;
    in capture mode (MDT0) with CAPT0 a rising capture trigger latches the
    count into TLR0 and sets T0INT (write one to clear), unless ARHT0 is clear
    and T0INT is still set (hold). Timer 1, PWM and cascade are not modelled.
    """

    def __init__(self, bus: _Bus):
        from .axi_timer import REGISTERS, timer_register_map
        self.bus = bus
        self.registers = np.zeros(max(r["address_offset"] for r in REGISTERS.values()) // 4 + 1, dtype=np.uint32)
        self._index = {name: r["address_offset"] // 4 for name, r in REGISTERS.items()}
        self._bits = {f: spec["bit_offset"] for f, spec in REGISTERS["TCSR0"]["fields"].items()}
        self._base_value, self._base_cycle, self._running, self._down = 0, 0, False, False
        self._lock = threading.Lock()
        hooks = {self._index["TCR0"]: _Hook(before_read=self._publish_count),
                 self._index["TCSR0"]: _Hook(after_write=self._tcsr_write)}
        self.register_map = timer_register_map(self.bus.view(self.registers, hooks))

    def _bit(self, name: str) -> bool:
        return bool(int(self.registers[self._index["TCSR0"]]) >> self._bits[name] & 1)

    def count(self, cycle: int) -> int:
        if not self._running:
            return self._base_value
        elapsed = cycle - self._base_cycle
        return (self._base_value + (-elapsed if self._down else elapsed)) & 0xFFFFFFFF

    def _publish_count(self) -> None:
        with self._lock:
            self.registers[self._index["TCR0"]] = self.count(self.bus.clock.now)

    def _tcsr_write(self, old: int) -> None:
        with self._lock:
            now = self.bus.clock.now
            current = self.count(now)
            tint = 1 << self._bits["T0INT"]
            written = int(self.registers[self._index["TCSR0"]])
            # T0INT: write one to clear; software cannot set it
            self.registers[self._index["TCSR0"]] = (written & ~tint) | (old & tint & ~written)
            self._base_value, self._base_cycle = current, now
            self._down = self._bit("UDT0")
            if self._bit("LOAD0"):
                self._base_value = int(self.registers[self._index["TLR0"]])
            self._running = self._bit("ENT0") and not self._bit("LOAD0")

    def capture(self, cycle: int) -> None:
        """The capture trigger rose at ``cycle``."""
        with self._lock:
            if not (self._running and self._bit("MDT0") and self._bit("CAPT0")):
                return
            if self._bit("T0INT") and not self._bit("ARHT0"):
                return  # hold the first capture until software clears T0INT
            self.registers[self._index["TLR0"]] = self.count(cycle)
            self.registers[self._index["TCSR0"]] = int(self.registers[self._index["TCSR0"]]) | (1 << self._bits["T0INT"])


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
    # its own copy of the library: two boards (or a board and an emu device) share no on-chip statics
    lib = emu.load_private_copy(emu.build_library(defines))
    run = lib.zskip_emu_run
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

    weakref.finalize(kernel, emu.unload, lib)
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
        timer: include the cycle timer of the block design (overlay/ip.ini [timer]),
            its capture trigger on the IP's interrupt; False: a bitstream without it.
        bus_access_cycles: PL cycles one AXI-Lite access from the PS costs
            (:class:`VirtualClock`); it shifts every measurement by the same skew.
    """

    def __init__(self, kernel: Optional[Kernel] = None, hang: bool = False,
                 interface: Optional[TopInterface] = None, board: Optional[str] = None,
                 precision: str = "float32", timer: bool = True, bus_access_cycles: int = BUS_ACCESS_CYCLES):
        from ..ip.program import board_limits
        self.interface = interface if interface is not None else load_top()
        #: the compiled maxima of the default kernel (``program.Limits``)
        self.limits = board_limits(board)
        if kernel is None:
            kernel = emu_kernel(board, precision, self.interface)
        self.device = EmulatedDevice()
        identity = ip_identity()
        self.ip_name = f"{identity.top}_0"
        #: the PL clock the bus, the IP and the timer share
        self.clock = VirtualClock(bus_access_cycles)
        bus = _Bus(self.clock)
        ip = EmulatedIP(self.device, self.interface, kernel, hang, bus)
        setattr(self, self.ip_name, ip)
        self.ip_dict = {self.ip_name: {
            "type": identity.vlnv, "fullpath": self.ip_name, "phys_addr": _IP_PHYS_ADDR,
            "addr_range": 1 << max(12, (self.interface.map_size - 1).bit_length()),
            "registers": self.interface.pynq_registers(), "interrupts": {}, "device": self.device,
        }}
        if timer:
            from .axi_timer import REGISTERS
            cell = timer_identity()
            emulated_timer = EmulatedTimer(bus)
            ip.interrupt_listeners.append(emulated_timer.capture)
            setattr(self, cell.cell, emulated_timer)
            self.ip_dict[cell.cell] = {"type": cell.vlnv, "fullpath": cell.cell, "phys_addr": _TIMER_PHYS_ADDR,
                                       "addr_range": 0x10000, "registers": REGISTERS, "interrupts": {},
                                       "device": self.device}

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
