"""The accelerator's AXI4-Lite register map, derived from the HLS top function source.

Nothing here is written by hand: the argument list and the INTERFACE pragmas of
``zskip_top`` (hls/zskip_top/zskip_top.cpp) are parsed, and the offsets are laid
out the way Vitis HLS assigns them in the Vivado IP flow (UG1399, "S_AXILITE
Control Register Map"):

- 0x00 CTRL (AP_START, AP_DONE, AP_IDLE, AP_READY, AUTO_RESTART, INTERRUPT),
  0x04 GIER, 0x08 IP_IER, 0x0C IP_ISR;
- then each ``s_axilite`` argument in declaration order from 0x10, one 32-bit
  data word per 32 bits of data plus one control word: "reserved" for inputs,
  ``<name>_ctrl`` (bit 0 ap_vld) for outputs. Data wider than 32 bits is split
  into ``<name>_1`` (low word) and ``<name>_2`` (high word). An ``m_axi``
  pointer with ``offset=slave`` is a 64-bit input (its device address).

The PYNQ driver (host/devices/pynq_device.py) uses the field NAMES produced here; the
emulated board (host/devices/emulated_board.py) builds its register file from the
offsets, so both agree with the HLS interface by construction.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ...overlay.boards import ip_identity

from ... import HLS_DIR  # the one definition: zskip/__init__.py
TOP_FUNCTION = ip_identity().top
TOP_SOURCE = HLS_DIR / TOP_FUNCTION / f"{TOP_FUNCTION}.cpp"
VERSION_HEADER = HLS_DIR / "common" / "version.h"

#: first argument offset: 0x00-0x0C hold the block-level control registers
FIRST_ARG_OFFSET = 0x10
WORD_BYTES = 4

#: bits of CTRL (UG1399 "Controlling Hardware", ap_ctrl_hs)
CTRL_FIELDS = {"AP_START": 0, "AP_DONE": 1, "AP_IDLE": 2, "AP_READY": 3,
               "AUTO_RESTART": 7, "INTERRUPT": 9}

_C_TYPE_BITS = {
    "float": 32, "double": 64, "int": 32, "unsigned": 32, "unsigned int": 32,
    "int32_t": 32, "uint32_t": 32, "int64_t": 64, "uint64_t": 64,
    "int16_t": 16, "uint16_t": 16, "int8_t": 8, "uint8_t": 8, "char": 8,
    "short": 16, "long long": 64, "unsigned long long": 64,
}


@dataclass(frozen=True)
class Argument:
    """One argument of the top function and its interface."""

    name: str
    c_type: str          # the pointee type for pointers, e.g. "float", "uint32_t"
    is_pointer: bool
    is_const: bool
    m_axi_bundle: Optional[str]
    s_axilite_bundle: Optional[str]

    @property
    def data_bits(self) -> int:
        if self.m_axi_bundle is not None:
            return 64  # the device address
        if self.c_type not in _C_TYPE_BITS:
            raise ValueError(f"argument {self.name}: unsupported C type {self.c_type!r}; "
                             f"known: {sorted(_C_TYPE_BITS)}")
        return _C_TYPE_BITS[self.c_type]

    @property
    def is_output(self) -> bool:
        """A pointer without m_axi is a scalar the IP writes (ap_vld register)."""
        return self.is_pointer and self.m_axi_bundle is None and not self.is_const


@dataclass(frozen=True)
class Register:
    """One 32-bit word of the map."""

    name: str
    offset: int
    access: str          # "read-only" | "write-only" | "read-write" (pynq spelling)
    description: str
    fields: Dict[str, int]   # bit name -> bit index (single-bit fields)


@dataclass(frozen=True)
class TopInterface:
    """The parsed top function: arguments, their interfaces and the register map."""

    function: str
    arguments: Tuple[Argument, ...]
    registers: Tuple[Register, ...]
    control_bundle: str

    @property
    def pointer_arguments(self) -> List[str]:
        """Names of the m_axi pointer arguments, in order (the device buffers)."""
        return [a.name for a in self.arguments if a.m_axi_bundle is not None]

    @property
    def output_arguments(self) -> List[str]:
        return [a.name for a in self.arguments if a.is_output]

    def argument(self, name: str) -> Argument:
        for a in self.arguments:
            if a.name == name:
                return a
        raise KeyError(f"{self.function} has no argument {name!r}; arguments: "
                       f"{[a.name for a in self.arguments]}")

    def data_fields(self, name: str) -> List[str]:
        """Register names holding argument ``name``'s data, low word first."""
        words = -(-self.argument(name).data_bits // 32)
        return [name] if words == 1 else [f"{name}_{i + 1}" for i in range(words)]

    def valid_field(self, name: str) -> str:
        """The ``<name>_ctrl`` register of output ``name`` (bit 0: ap_vld)."""
        if not self.argument(name).is_output:
            raise KeyError(f"{name} is not an output of {self.function}")
        return f"{name}_ctrl"

    @property
    def map_size(self) -> int:
        return max(r.offset for r in self.registers) + WORD_BYTES

    def pynq_registers(self) -> dict:
        """The map in the form of a PYNQ ``ip_dict[...]["registers"]`` entry (as from a .hwh)."""
        out = {}
        for r in self.registers:
            fields = {f: {"access": r.access, "bit_offset": bit, "bit_width": 1, "description": f}
                      for f, bit in r.fields.items()}
            out[r.name] = {"address_offset": r.offset, "access": r.access, "size": 32,
                           "description": r.description, "fields": fields}
        return out


_PRAGMA = re.compile(r"#\s*pragma\s+HLS\s+INTERFACE\s+([^\n]*)", re.IGNORECASE)
_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


def _strip_comments(source: str) -> str:
    # pragmas live outside comments; a commented-out pragma must not count
    return _COMMENTS.sub(lambda m: "\n" * m.group(0).count("\n"), source)


def _pragma_options(text: str) -> Dict[str, str]:
    options = {}
    tokens = text.split()
    for i, tok in enumerate(tokens):
        if "=" in tok:
            key, value = tok.split("=", 1)
            options[key.lower()] = value
        elif i == 0:
            options["mode"] = tok  # old style: "INTERFACE m_axi port=..."
    return options


def _parse_signature(source: str, function: str) -> List[Tuple[str, str, bool, bool]]:
    match = re.search(r"\bvoid\s+" + re.escape(function) + r"\s*\(([^)]*)\)\s*\{", source)
    if match is None:
        raise ValueError(f"no definition of 'void {function}(...) {{' found")
    params = []
    for raw in match.group(1).split(","):
        raw = " ".join(raw.split())
        if not raw:
            continue
        m = re.fullmatch(r"(const\s+)?([A-Za-z_][\w\s]*?)\s*(\*)?\s*([A-Za-z_]\w*)(\s*\[[^\]]*\])?", raw)
        if m is None:
            raise ValueError(f"cannot parse parameter {raw!r} of {function}")
        is_const = m.group(1) is not None
        is_pointer = m.group(3) is not None or m.group(5) is not None
        params.append((m.group(4), m.group(2).strip(), is_pointer, is_const))
    return params


def parse_top(source: str, function: str = TOP_FUNCTION) -> TopInterface:
    """Parse the HLS ``source`` of ``function`` into its interface and register map."""
    clean = _strip_comments(source)
    params = _parse_signature(clean, function)
    pragmas = [_pragma_options(m.group(1)) for m in _PRAGMA.finditer(_body(clean, function))]
    m_axi, s_axilite = {}, {}
    for p in pragmas:
        mode, port = p.get("mode", "").lower(), p.get("port")
        if port is None:
            raise ValueError(f"INTERFACE pragma without port=: {p}")
        if mode == "m_axi":
            if p.get("offset", "").lower() != "slave":
                raise ValueError(f"m_axi port {port} must use offset=slave (the driver writes its address)")
            m_axi[port] = p.get("bundle", "gmem")
        elif mode == "s_axilite":
            s_axilite[port] = p.get("bundle", "control")
    names = {p[0] for p in params}
    unknown = (set(m_axi) | set(s_axilite)) - names - {"return"}
    if unknown:
        raise ValueError(f"INTERFACE pragmas name ports that are not arguments of {function}: {sorted(unknown)}")
    bundles = set(s_axilite.values())
    if len(bundles) != 1 or "return" not in s_axilite:
        raise ValueError(f"{function} needs port=return and every s_axilite argument in one bundle; "
                         f"found bundles {sorted(bundles)}, return {'present' if 'return' in s_axilite else 'missing'}")
    control = bundles.pop()
    # an m_axi offset=slave pointer gets its address register in the control
    # bundle even without its own s_axilite pragma
    arguments = tuple(Argument(name, c_type, is_ptr, is_const, m_axi.get(name),
                               s_axilite.get(name, control if name in m_axi else None))
                      for name, c_type, is_ptr, is_const in params)
    return TopInterface(function, arguments, tuple(_layout(arguments)), control)


def _body(source: str, function: str) -> str:
    """The text between the braces of ``function``'s definition (pragmas outside it do not count)."""
    start = re.search(r"\bvoid\s+" + re.escape(function) + r"\s*\([^)]*\)\s*\{", source).end()
    depth, i = 1, start
    while depth and i < len(source):
        depth += {"{": 1, "}": -1}.get(source[i], 0)
        i += 1
    if depth:
        raise ValueError(f"unbalanced braces in the definition of {function}")
    return source[start:i - 1]


def _layout(arguments) -> List[Register]:
    regs = [
        Register("CTRL", 0x00, "read-write", "Control signals", dict(CTRL_FIELDS)),
        Register("GIER", 0x04, "read-write", "Global Interrupt Enable Register", {"Enable": 0}),
        Register("IP_IER", 0x08, "read-write", "IP Interrupt Enable Register",
                 {"CHAN0_INT_EN": 0, "CHAN1_INT_EN": 1}),
        Register("IP_ISR", 0x0C, "read-write", "IP Interrupt Status Register",
                 {"CHAN0_INT_ST": 0, "CHAN1_INT_ST": 1}),
    ]
    offset = FIRST_ARG_OFFSET
    for a in arguments:
        if a.s_axilite_bundle is None:
            continue
        words = -(-a.data_bits // 32)
        access = "read-only" if a.is_output else "write-only"
        names = [a.name] if words == 1 else [f"{a.name}_{i + 1}" for i in range(words)]
        for i, reg_name in enumerate(names):
            regs.append(Register(reg_name, offset + i * WORD_BYTES, access, f"Data signal of {a.name}", {}))
        offset += words * WORD_BYTES
        if a.is_output:
            regs.append(Register(f"{a.name}_ctrl", offset, "read-only", f"Control signal of {a.name}",
                                 {f"{a.name}_ap_vld": 0}))
        offset += WORD_BYTES  # control word ("reserved" for inputs)
    return regs


def load_top(path: Optional[Path] = None) -> TopInterface:
    """The interface of the shipped top function (hls/zskip_top/zskip_top.cpp)."""
    path = Path(path) if path is not None else TOP_SOURCE
    if not path.is_file():
        raise FileNotFoundError(f"HLS top function source not found: {path}")
    return parse_top(path.read_text())


def parse_version(text: str) -> int:
    """The value of ``#define ZSKIP_VERSION`` in header ``text``."""
    m = re.search(r"#\s*define\s+ZSKIP_VERSION\s+\(?\s*(0[xX][0-9a-fA-F]+|\d+)[uUlL]*\s*\)?", text)
    if m is None:
        raise ValueError("no '#define ZSKIP_VERSION <integer>' found")
    return int(m.group(1), 0)


def driver_version(path: Optional[Path] = None) -> int:
    """ZSKIP_VERSION of the HLS sources this driver ships with (hls/common/version.h)."""
    path = Path(path) if path is not None else VERSION_HEADER
    if not path.is_file():
        raise FileNotFoundError(f"version header not found: {path}")
    return parse_version(path.read_text())
