"""The cycle timer: an AXI Timer (PG079) that measures the accelerator's runs on the board.

The block design (overlay/zskip_bd.tcl) puts an AXI Timer beside ``zskip_top``
on the same PL clock and wires the accelerator's interrupt to the timer's
capture trigger 0. Timer 0 free-runs upward in capture mode; on the rising
edge of the interrupt (ap_done, which the driver enables) it latches its count
into ``TLR0`` and sets ``T0INT``. The driver reads ``TCR0`` just before it
raises AP_START, so a run measures

    measured = TLR0 (at ap_done) - TCR0 (just before AP_START)      (mod 2**32)

which is the IP's latency plus the skew of two AXI-Lite accesses (the TCR0
read's return and the AP_START write), tens of cycles; an empty program
(n_desc = 0) measures that skew plus the IP's fixed start-up.

Everything goes through ``register_map`` field names. On a board the map
comes from the .hwh; :data:`REGISTERS` is the same map written from PG079's
register table (offsets, fields) for the emulated board
(host/devices/emulated_board.py), which builds its timer from it.

A 32-bit count wraps after 2**32 cycles (21 s at 200 MHz): a run longer than
that, by the host's clock, has no measurement (None).
"""
from __future__ import annotations

import time
from typing import Dict, Optional

__all__ = ["REGISTERS", "COUNT_BITS", "CycleTimer", "timer_register_map"]

COUNT_BITS = 32

#: TCSR0 / TCSR1 fields (PG079, Control/Status Register): bit -> name
_TCSR_BITS = ("MDT", "UDT", "GENT", "CAPT", "ARHT", "LOAD", "ENIT", "ENT", "TINT", "PWMA", "ENALL", "CASC")


def _tcsr(timer: int) -> dict:
    fields = {}
    for bit, name in enumerate(_TCSR_BITS):
        if name in ("ENALL", "CASC") and timer == 1:
            continue  # timer 1's register has no ENALL1 / CASC1
        full = name if name in ("ENALL", "CASC") else f"{name}{timer}"
        if name == "TINT":
            full = f"T{timer}INT"
        fields[full] = {"access": "read-write", "bit_offset": bit, "bit_width": 1, "description": full}
    return {"address_offset": 0x10 * timer, "access": "read-write", "size": 32,
            "description": f"Timer {timer} Control and Status Register", "fields": fields}


def _word(offset: int, description: str) -> dict:
    return {"address_offset": offset, "access": "read-write", "size": 32, "description": description, "fields": {}}


#: the AXI Timer's register map as PYNQ's ``ip_dict[...]["registers"]`` holds it (PG079, Table "Register Address Map")
REGISTERS: Dict[str, dict] = {
    "TCSR0": _tcsr(0), "TLR0": _word(0x04, "Timer 0 Load Register"), "TCR0": _word(0x08, "Timer 0 Counter Register"),
    "TCSR1": _tcsr(1), "TLR1": _word(0x14, "Timer 1 Load Register"), "TCR1": _word(0x18, "Timer 1 Counter Register"),
}
for _name, _reg in REGISTERS.items():
    if _name.startswith("TCR"):
        _reg["access"] = "read-only"


def timer_register_map(buffer):
    """A PYNQ ``RegisterMap`` of :data:`REGISTERS` over ``buffer`` (uint32 words), as PYNQ builds it from a .hwh."""
    from ...overlay import import_pynq
    return import_pynq().registers.RegisterMap.create_subclass("axi_timer", REGISTERS)(buffer)


class CycleTimer:
    """Timer 0 of an AXI Timer, set up to latch its count on the accelerator's interrupt.

    Args:
        timer_ip: the timer's PYNQ IP object (anything with ``register_map``).
        max_clock_mhz: the fastest PL clock the bitstream may run at; a run longer
            than 2**32 cycles at that clock (by the host's clock) reports None.
    """

    def __init__(self, timer_ip, max_clock_mhz: float):
        if not max_clock_mhz > 0:
            raise ValueError(f"max_clock_mhz must be > 0, got {max_clock_mhz!r}")
        self.registers = timer_ip.register_map
        self.wrap_seconds = (1 << COUNT_BITS) / (max_clock_mhz * 1e6)
        self._start_count: Optional[int] = None
        self._start_time = 0.0
        r = self.registers
        r.TCSR0.ENT0 = 0
        # count up from 0 in capture mode, external capture on, hold the first capture until T0INT is cleared
        r.TLR0 = 0
        r.TCSR0.LOAD0 = 1
        r.TCSR0.LOAD0 = 0
        r.TCSR0.MDT0 = 1
        r.TCSR0.UDT0 = 0
        r.TCSR0.ARHT0 = 0
        r.TCSR0.ENIT0 = 0
        r.TCSR0.CAPT0 = 1
        r.TCSR0.ENT0 = 1

    def arm(self) -> None:
        """Clear the last capture and note the count; call just before AP_START."""
        r = self.registers
        if r.TCSR0.T0INT:
            r.TCSR0.T0INT = 1  # write-one-to-clear
        self._start_time = time.monotonic()
        self._start_count = int(r.TCR0)

    def measured(self) -> Optional[int]:
        """Cycles from :meth:`arm` to the capture (ap_done); None without a capture or past a wrap."""
        if self._start_count is None:
            return None
        start, self._start_count = self._start_count, None
        r = self.registers
        if not r.TCSR0.T0INT or time.monotonic() - self._start_time >= self.wrap_seconds:
            return None
        return (int(r.TLR0) - start) & ((1 << COUNT_BITS) - 1)
