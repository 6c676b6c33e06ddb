"""Board profiles read from ``overlay/boards.ini`` (the only place they are written).

>>> from zskip.overlay.boards import board
>>> board("pynq-z2").part
'xc7z020clg400-1'
"""
from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

BOARDS_INI = Path(__file__).resolve().parent / "boards.ini"

#: section of boards.ini that maps HLS macro names to board keys (not a board)
HLS_MACROS_SECTION = "hls_macros"

PS_TYPES = ("zynq7", "zynqmp")

_INT_KEYS = ("pe_lanes", "max_ch", "max_dim", "max_ksize", "max_features", "dsp", "bram36", "uram", "lut",
             "dsp_per_mac_float", "dsp_per_mac_fixed16")
_FLOAT_KEYS = ("clock_mhz", "ddr_gbps")
_STR_KEYS = ("part", "board_part", "ps", "precision")
#: datapath precisions a board build may choose (DSP per MAC: boards.ini dsp_per_mac_*)
PRECISIONS = ("float32", "fixed16")


@dataclass(frozen=True)
class Board:
    """One board profile (see the key list at the top of boards.ini)."""

    name: str
    part: str
    board_part: str
    ps: str
    precision: str
    clock_mhz: float
    pe_lanes: int
    max_ch: int
    max_dim: int
    max_ksize: int
    max_features: int
    ddr_gbps: float
    dsp: int
    bram36: int
    uram: int
    lut: int
    dsp_per_mac_float: int
    dsp_per_mac_fixed16: int
    #: ``{macro: value}`` passed to the HLS sources for this board
    hls_defines: Dict[str, int]

    @property
    def clock_period_ns(self) -> float:
        return 1e3 / self.clock_mhz

    def seconds(self, cycles: int, bytes_moved: int = 0) -> float:
        """Estimated time of ``cycles`` accelerator cycles plus ``bytes_moved`` over DDR at peak.

        Compute and transfer are added (no overlap assumed), so this is an upper
        estimate for a design whose loads overlap compute.
        """
        if cycles < 0 or bytes_moved < 0:
            raise ValueError(f"cycles and bytes_moved must be >= 0, got {cycles}, {bytes_moved}")
        return cycles / (self.clock_mhz * 1e6) + bytes_moved / (self.ddr_gbps * 1e9)

    def dsp_per_mac(self, precision: str) -> int:
        """DSP slices per MAC lane for ``precision`` ("float32" or "fixed16")."""
        table = {"float32": self.dsp_per_mac_float, "fixed16": self.dsp_per_mac_fixed16}
        if precision not in table:
            raise ValueError(f"precision must be one of {sorted(table)}, got {precision!r}")
        return table[precision]


def _read_ini(path: Path) -> configparser.ConfigParser:
    if not path.is_file():
        raise FileNotFoundError(f"board data file not found: {path}")
    parser = configparser.ConfigParser(inline_comment_prefixes=None)
    parser.optionxform = str  # macro names are case-sensitive
    parser.read(path)
    return parser


def _parse_board(name: str, section, macros: Dict[str, str], path: Path) -> Board:
    missing = [k for k in _STR_KEYS + _INT_KEYS + _FLOAT_KEYS if k not in section]
    if missing:
        raise ValueError(f"{path}: board [{name}] lacks keys {missing}")
    values = {k: section[k] for k in _STR_KEYS}
    if values["ps"] not in PS_TYPES:
        raise ValueError(f"{path}: board [{name}] ps must be one of {PS_TYPES}, got {values['ps']!r}")
    if values["precision"] not in PRECISIONS:
        raise ValueError(f"{path}: board [{name}] precision must be one of {PRECISIONS}, got {values['precision']!r}")
    for k in _INT_KEYS:
        try:
            values[k] = int(section[k])
        except ValueError:
            raise ValueError(f"{path}: board [{name}] {k} must be an integer, got {section[k]!r}") from None
        if values[k] < 0:
            raise ValueError(f"{path}: board [{name}] {k} must be >= 0, got {values[k]}")
    for k in _FLOAT_KEYS:
        try:
            values[k] = float(section[k])
        except ValueError:
            raise ValueError(f"{path}: board [{name}] {k} must be a number, got {section[k]!r}") from None
        if values[k] <= 0:
            raise ValueError(f"{path}: board [{name}] {k} must be > 0, got {values[k]}")
    defines = {}
    for macro, key in macros.items():
        if key not in _INT_KEYS:
            raise ValueError(f"{path}: [{HLS_MACROS_SECTION}] {macro} names {key!r}, not an integer board key")
        defines[macro] = values[key]
    return Board(name=name, hls_defines=defines, **values)


def load_boards(path: Optional[Path] = None) -> Dict[str, Board]:
    """Every board profile of ``path`` (default: the shipped boards.ini), by name."""
    path = Path(path) if path is not None else BOARDS_INI
    parser = _read_ini(path)
    macros = dict(parser[HLS_MACROS_SECTION]) if parser.has_section(HLS_MACROS_SECTION) else {}
    return {name: _parse_board(name, parser[name], macros, path)
            for name in parser.sections() if name != HLS_MACROS_SECTION}


def board(name: str, path: Optional[Path] = None) -> Board:
    """The profile of board ``name`` (one of the sections of boards.ini)."""
    boards = load_boards(path)
    if name not in boards:
        raise ValueError(f"board must be one of {sorted(boards)}, got {name!r}")
    return boards[name]


IP_INI = Path(__file__).resolve().parent / "ip.ini"


@dataclass(frozen=True)
class IpIdentity:
    """The accelerator IP: HLS top function name and IP-catalog VLNV parts."""

    top: str
    vendor: str
    library: str
    version: str

    @property
    def vlnv(self) -> str:
        """``vendor:library:name:version`` as Vivado and PYNQ's ``bindto`` spell it."""
        return f"{self.vendor}:{self.library}:{self.top}:{self.version}"


def ip_identity(path: Optional[Path] = None) -> IpIdentity:
    """The IP identity of ``path`` (default: the shipped overlay/ip.ini)."""
    path = Path(path) if path is not None else IP_INI
    parser = _read_ini(path)
    if not parser.has_section("ip"):
        raise ValueError(f"{path}: missing section [ip]")
    section = parser["ip"]
    missing = [k for k in ("top", "vendor", "library", "version") if k not in section]
    if missing:
        raise ValueError(f"{path}: [ip] lacks keys {missing}")
    return IpIdentity(section["top"], section["vendor"], section["library"], section["version"])


@dataclass(frozen=True)
class TimerIdentity:
    """The AXI Timer that measures the accelerator's cycles: block-design cell name and VLNV."""

    cell: str
    vlnv: str


def timer_identity(path: Optional[Path] = None) -> TimerIdentity:
    """The [timer] section of ``path`` (default: the shipped overlay/ip.ini)."""
    path = Path(path) if path is not None else IP_INI
    parser = _read_ini(path)
    if not parser.has_section("timer"):
        raise ValueError(f"{path}: missing section [timer]")
    section = parser["timer"]
    missing = [k for k in ("cell", "vlnv") if k not in section]
    if missing:
        raise ValueError(f"{path}: [timer] lacks keys {missing}")
    return TimerIdentity(section["cell"], section["vlnv"])
