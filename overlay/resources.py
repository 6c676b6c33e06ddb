"""Resource estimate of the accelerator per board, from the code's own sizes.

On-chip memory, per bank: every kernel keeps its on-chip arrays in one struct
``<kernel>_onchip<CFG>``; the function that owns its static instance
(``scatter_engine_memory<CFG>``, ``maxpool_memory<CFG>``, ...) states each
array's ARRAY_PARTITION next to the declaration. A g++ probe, compiled with
the board's -D macros and in the synthesis form (``-D__SYNTHESIS__``: no
C-simulation arrays), prints ``sizeof`` of every array member. A ``cyclic
factor=F`` array is F banks of 1/F of its words, a ``complete`` one is
registers; each bank is rounded up to whole BRAM18 halves (512 words of up to
36 bits), and a bank of at most LUTRAM_WORDS words is LUTRAM (no block RAM).
On boards with UltraRAM the largest banks move to URAM (4096 x 72 bits) while
80 % of it is free.

DSP, per operator instance (:func:`dsp_instances`): the MAC lanes are one
instance per engine config and per distinct (operand, value) type pair of its
three passes (pe_lanes multiply-adds each: 5 DSP48 in float32, 1 in 16-bit
fixed point); the float units of the other kernels (adder trees of the
partial sums, bias adds, SGD, softmax, prune) are listed with their counts.

    python -m zskip.overlay.resources            # prints the table of overlay/README.md
    python -m zskip.overlay.resources --multipliers   # the MAC multipliers' cost per board (README)
    python -m zskip.overlay.resources --sparse-fc     # DSP if sparse_fc had MAC lanes of its own

Multipliers (:func:`multiplier_resources`): a float32 build may replace the MAC
lanes' float32 multiplier (3 of its 5 DSP48) by bf16 (1 DSP48), Mitchell's
(no DSP, adders in LUTs) or a LUT multiplier, whose table is a ROM per lane:
block RAM per two lanes (the two ports) above 1,024 entries, LUT ROM below.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .boards import Board, load_boards

from .. import HLS_DIR  # the one definition: zskip/__init__.py
BRAM36_BYTES = 4096
URAM_BYTES = 32768
#: words of a BRAM18 at up to 36 bits per word (a BRAM36 is two)
BRAM18_WORDS = 512
#: words of a URAM block at up to 72 bits per word
URAM_WORDS = 4096
#: banks of at most this many words are LUTRAM
LUTRAM_WORDS = 64
#: fraction of each resource a configuration may use (the 20 % margin)
MARGIN = 0.8

_TEMPLATE_FUNCTION = re.compile(r"template\s*<\s*class\s+\w+\s*>\s*[\w:]+\s+(\w+)\s*\([^)]*\)\s*\{")
_STATIC_ONCHIP = re.compile(r"\bstatic\s+(\w+_onchip)\s*<")
_CONFIG = re.compile(r"\bstruct\s+(\w+_config)\b")
_CALL = re.compile(r"\b(\w+)\s*<\s*(\w+)\s*>\s*\(")
_PARTITION = re.compile(r"#pragma HLS ARRAY_PARTITION variable=buf\.(\w+)(?:\.\w+)?\s+(complete|cyclic factor=([\w:]+))")
_MEMBER = re.compile(r"^\s+(?!static|typedef|void|bool\s+\w+\()[\w:<>, ]+?\s+(\w+)\s*(\[[^;]*\])\s*;", re.MULTILINE)
_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


@dataclass(frozen=True)
class OnchipStruct:
    """One instantiation: ``function<config>`` owning a ``static struct_<config>``."""

    function: str      # e.g. "conv_fwd"
    struct: str        # e.g. "conv_fwd_onchip"
    config: str        # e.g. "fc_config"
    header: Path

    @property
    def label(self) -> str:
        return f"{self.function}<{self.config}>"


@dataclass(frozen=True)
class ArrayBanks:
    """One on-chip array of one instantiation and how it is banked."""

    owner: str        # "function<config>"
    member: str       # e.g. "w"
    words: int
    word_bytes: int
    banks: int        # cyclic partition factor; 0: complete (registers)

    @property
    def bank_words(self) -> int:
        return math.ceil(self.words / self.banks) if self.banks else 0

    @property
    def bram18_per_bank(self) -> int:
        if not self.banks or self.bank_words <= LUTRAM_WORDS:
            return 0
        return math.ceil(self.bank_words / BRAM18_WORDS) * math.ceil(8 * self.word_bytes / 36)

    @property
    def uram_per_bank(self) -> int:
        if not self.banks or self.bank_words <= LUTRAM_WORDS:
            return 0
        return math.ceil(self.bank_words / URAM_WORDS) * math.ceil(8 * self.word_bytes / 72)


@dataclass(frozen=True)
class Estimate:
    """One board's estimate, at the board's precision (boards.ini ``precision``)."""

    board: str
    onchip_bytes: Dict[str, int]   # "function<config>" -> bytes of its arrays
    bram36: int
    uram: int
    dsp: int
    dsp_float32: int
    dsp_fixed16: int
    limits: Board
    arrays: Tuple[ArrayBanks, ...] = field(default=())

    @property
    def total_bytes(self) -> int:
        return sum(self.onchip_bytes.values())

    def fits(self) -> bool:
        """True when BRAM, URAM and DSP stay within MARGIN of the board's totals."""
        return (self.bram36 <= MARGIN * self.limits.bram36 and self.uram <= MARGIN * self.limits.uram
                and self.dsp <= MARGIN * self.limits.dsp)


def _function_bodies(text: str):
    """(name, body) of every ``template <class X> ... name(...) { body }`` in ``text``."""
    for m in _TEMPLATE_FUNCTION.finditer(text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        yield m.group(1), text[m.end():i]


def onchip_structs(hls_dir: Path = HLS_DIR) -> List[OnchipStruct]:
    """Every kernel instantiation that owns a static ``<kernel>_onchip<CFG>`` struct.

    A template function whose body declares ``static X_onchip<CFG> buf`` owns one
    copy of that struct per configuration it is called with; the calls
    ``function<some_config>(...)`` are found in every HLS source except
    testbenches and the emulation bridge.
    """
    texts = {}
    for path in sorted(hls_dir.glob("*/*.h")) + sorted(hls_dir.glob("*/*.cpp")):
        if path.name.endswith("_tb.cpp") or path.parent.name == "emu":
            continue
        texts[path] = _COMMENTS.sub("", path.read_text())
    configs = set(_CONFIG.findall(texts.get(hls_dir / "common" / "config.h", "")))
    if not configs:
        raise FileNotFoundError(f"no 'struct <name>_config' found in {hls_dir / 'common' / 'config.h'}")
    owners = {}
    for path, text in texts.items():
        for function, body in _function_bodies(text):
            m = _STATIC_ONCHIP.search(body)
            if m:
                owners[function] = (m.group(1), path)
    if not owners:
        raise FileNotFoundError(f"no kernel under {hls_dir} declares a 'static <kernel>_onchip<CFG>' struct")
    found = []
    for text in texts.values():
        for function, config in _CALL.findall(text):
            if function in owners and config in configs:
                struct, header = owners[function]
                item = OnchipStruct(function, struct, config, header)
                if item not in found:
                    found.append(item)
    return found


def _members(struct: str, header: Path) -> List[str]:
    """Array members of ``struct`` (its body in ``header``)."""
    text = _COMMENTS.sub("", header.read_text())
    m = re.search(r"\bstruct\s+" + struct + r"\s*\{", text)
    if not m:
        raise FileNotFoundError(f"struct {struct} not found in {header}")
    depth, i = 1, m.end()
    while depth and i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    body = re.sub(r"#if[^\n]*\n.*?#endif", "", text[m.end():i], flags=re.DOTALL)  # C-sim-only members
    return _MEMBER.findall(body) and [name for name, _ in _MEMBER.findall(body)]


def _partitions(function: str, header: Path, board: Board) -> Dict[str, int]:
    """``{member: cyclic factor, 0 for complete}`` from the ARRAY_PARTITION pragmas in ``function``."""
    text = header.read_text()
    for name, body in _function_bodies(_COMMENTS.sub("", text)):
        if name == function:
            break
    else:
        return {}
    body = text[text.index(function):]
    body = body[:body.index("\n}\n")]
    out = {}
    for member, kind, factor in _PARTITION.findall(body):
        if kind == "complete":
            out.setdefault(member, 0)
        elif factor.isdigit():
            out[member] = int(factor)
        elif factor.endswith("pe_lanes"):
            out[member] = board.pe_lanes
        elif factor == "ACC_LATENCY":
            out[member] = acc_latency()
        elif _named_factor(factor, text, board):
            out[member] = _named_factor(factor, text, board)
        else:
            raise ValueError(f"{header}: partition factor {factor!r} of {member} not understood")
    return out


def acc_latency(hls_dir: Path = HLS_DIR) -> int:
    """ACC_LATENCY, the float adder latency of hls/common/schedule.h (its one definition)."""
    m = re.search(r"static const unsigned ACC_LATENCY = (\d+);", (hls_dir / "common" / "schedule.h").read_text())
    if not m:
        raise RuntimeError(f"{hls_dir / 'common' / 'schedule.h'}: 'static const unsigned ACC_LATENCY = N;' not found")
    return int(m.group(1))
def _named_factor(name: str, text: str, board: Board) -> int:
    """Value of a factor named by ``static const unsigned NAME = a * b;`` in the header, its operands
    ZSKIP_PE_LANES (the board's), constants of schedule.h or enum values of descriptor.h (0 when not
    of that form)."""
    m = re.search(r"static\s+const\s+unsigned\s+" + re.escape(name) + r"\s*=\s*([^;]+);", text)
    if not m:
        return 0
    schedule = (HLS_DIR / "common" / "schedule.h").read_text()
    descriptor = (HLS_DIR / "common" / "descriptor.h").read_text()
    value = 1
    for operand in (s.strip() for s in m.group(1).split("*")):
        if operand == "ZSKIP_PE_LANES":
            value *= board.pe_lanes
        elif operand.isdigit():
            value *= int(operand)
        else:
            c = re.search(r"static\s+const\s+unsigned\s+" + re.escape(operand) + r"\s*=\s*(\d+)\s*;", schedule) \
                or re.search(r"\b" + re.escape(operand) + r"\s*=\s*(\d+)\s*,", descriptor)
            if not c:
                return 0
            value *= int(c.group(1))
    return value


def _probe_source(structs: List[OnchipStruct]) -> str:
    includes = sorted({f'#include "{s.header.relative_to(HLS_DIR).as_posix()}"' for s in structs})
    lines = []
    for s in structs:
        t = f"zskip::{s.struct}<zskip::{s.config}>"
        for m in _members(s.struct, s.header):
            lines.append(f'    std::printf("%s %s %zu %zu\\n", "{s.label}", "{m}", sizeof((({t} *)0)->{m}), '
                         f'sizeof(std::remove_all_extents<decltype({t}::{m})>::type));')
    return "\n".join(["#include <cstdio>", "#include <type_traits>", *includes, "int main() {", *lines,
                      "    return 0;", "}", ""])


def onchip_arrays(board: Board, structs: Optional[List[OnchipStruct]] = None,
                  cache_dir: Optional[Path] = None) -> List[ArrayBanks]:
    """Every on-chip array of ``board``'s build with its size and banking (g++ probe, synthesis form).

    The probe uses the emulation's ap_types headers and cache folder (overlay/toolchain.py).
    """
    structs = structs if structs is not None else onchip_structs()
    compiler = shutil.which("g++")
    if compiler is None:
        raise RuntimeError("g++ not found on PATH: the on-chip size probe needs it")
    source = _probe_source(structs)
    from .toolchain import ap_types_dir, cache_dir as emu_cache_dir
    flags = ["-std=c++14", "-O0", "-D__SYNTHESIS__", f"-I{HLS_DIR / 'emu' / 'synthesis_shim'}", f"-I{HLS_DIR}",
             f"-I{HLS_DIR / 'common'}", f"-I{ap_types_dir()}"]
    flags += [f"-D{k}={v}" for k, v in board.hls_defines.items()]
    headers = "".join(p.read_text() for p in sorted(HLS_DIR.glob("*/*.h")))
    key = hashlib.sha256((source + " ".join(flags) + headers).encode()).hexdigest()[:16]
    cache_dir = Path(cache_dir) if cache_dir is not None else emu_cache_dir() / "resources"
    cache_dir.mkdir(parents=True, exist_ok=True)
    exe = cache_dir / f"probe-{key}"
    if not exe.exists():
        # build under a private name, then rename: concurrent runs never see half a file
        with tempfile.TemporaryDirectory(dir=cache_dir) as work:
            src, tmp_exe = Path(work) / "probe.cpp", Path(work) / "probe"
            src.write_text(source)
            cmd = [compiler, *flags, str(src), "-o", str(tmp_exe)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"size probe failed to compile: {' '.join(cmd)}\n{proc.stderr}")
            os.replace(tmp_exe, exe)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    parts = {s.label: _partitions(s.function, s.header, board) for s in structs}
    arrays = []
    for line in out.splitlines():
        owner, member, size, elem = line.split()
        size, elem = int(size), int(elem)
        arrays.append(ArrayBanks(owner, member, size // elem, elem, parts[owner].get(member, 1)))
    return arrays


def onchip_bytes(board: Board, structs: Optional[List[OnchipStruct]] = None,
                 cache_dir: Optional[Path] = None) -> Dict[str, int]:
    """Bytes of the on-chip arrays of each instantiation with ``board``'s macros (g++ probe)."""
    total: Dict[str, int] = {}
    for a in onchip_arrays(board, structs, cache_dir):
        total[a.owner] = total.get(a.owner, 0) + a.words * a.word_bytes
    return total


def place(arrays: List[ArrayBanks], board: Board) -> Tuple[int, int]:
    """(BRAM36, URAM) blocks holding ``arrays``, bank by bank (each bank is its own memory):
    banks needing more than one BRAM18 go to URAM, largest first, while MARGIN of it is free;
    the rest take BRAM18 halves (rounded up to BRAM36 at the end)."""
    uram_left = math.floor(MARGIN * board.uram)
    bram18 = uram = 0
    for a in sorted(arrays, key=lambda a: -a.bram18_per_bank):
        for _ in range(a.banks):
            if not a.bram18_per_bank:
                break
            if a.bram18_per_bank > 1 and a.uram_per_bank <= uram_left:
                uram += a.uram_per_bank
                uram_left -= a.uram_per_bank
            else:
                bram18 += a.bram18_per_bank
    return math.ceil(bram18 / 2), uram


def dsp_instances(board: Board, precision: str) -> List[Tuple[str, int, int]]:
    """``(operator, instances, DSP48 each)`` of ``board``'s build at ``precision``
    ("float32" or "fixed16"; the optimiser, softmax and prune units are float32 in both)."""
    lanes, lat = board.pe_lanes, acc_latency()  # ACC_LATENCY partial sums
    fixed = precision != "float32"
    f_add, f_mul = 2, 3
    acc_add = 0 if fixed else f_add  # acc_t adders: LUTs in fixed point
    # the three passes' (operand, value) types: (wgt, act), (wgt, grad), (act, grad); all float
    # in float32 (one MAC function), three distinct pairs in fixed16 (three functions)
    pairs = 3 if fixed else 1
    rows = [(f"MAC lanes ({lanes} multiply-adds), {cfg}", pairs, lanes * board.dsp_per_mac(precision))
            for cfg in ("conv_config", "fc_config")]
    rows += [("bias-gradient partial sums + plane-end tree (scan, per engine)", 2, (lat + 1) * acc_add),
             ("conv_fwd write-back bias add (per engine)", 2, acc_add),
             ("conv_bwd_weight dw copy sum tree (per engine)", 2, lat * acc_add),
             # conv_bwd_data's gather form (FLAG_GATHER): its P multiplies and the accumulator add are counted as
             # the conv engine's MAC lanes (one pass runs at a time, the sharing the three passes already assume);
             # the pairwise adder tree between them is its own
             (f"conv_bwd_data gather form: lane adder tree ({lanes} - 1 adds)", 1, (lanes - 1) * acc_add),
             ("maxpool_bwd add", 1, acc_add),
             ("sgd_update: 4 float multiplies, 3 float adds", 1, 4 * f_mul + 3 * f_add),
             # Nesterov's look-ahead, momentum * v' + g': BIND_OP impl=fabric, LUTs
             ("sgd_update: Nesterov's look-ahead multiply and add (fabric)", 2, 0),
             ("softmax_xent: expf core, 2 float multiplies, 2 float adds", 1, 7 + 2 * f_mul + 2 * f_add),
             ("prune_grad: one float multiply per lane (4 lanes)", 4, f_mul),
             ("residual add forward and backward: one add per beat lane (4 lanes each)", 8, acc_add),
             ("global avgpool forward: partial-sum add + chain of ACC_LATENCY adds", 1 + lat, acc_add),
             # the 1 / (H * W) scale of global avgpool forward and backward: BIND_OP impl=fabric, LUTs
             ("global avgpool forward and backward: the 1 / (H * W) float multiply (fabric)", 2, 0),
             # batch normalisation, float32 in every build (hls/batchnorm/batchnorm.h), per kernel function the
             # float units of its widest loop (a function's sequential loops share them): forward BN_VAR_SUM
             # (subtract, multiply, add), backward BN_BWD_DX (2 multiplies, 2 subtracts), inference BN_INFER
             # (subtract, multiply, add; the divider and square root are LUT cores), stats at II = 4 (one
             # multiplier, one adder); the partial-sum trees run at II = ACC_LATENCY on one adder
             ("batchnorm_fwd: 1 float multiply, 2 float adds", 1, f_mul + 2 * f_add),
             ("batchnorm_bwd: 2 float multiplies, 2 float adds", 1, 2 * f_mul + 2 * f_add),
             ("batchnorm_infer: 1 float multiply, 2 float adds", 1, f_mul + 2 * f_add),
             ("batchnorm_stats: 1 float multiply, 1 float add", 1, f_mul + f_add)]
    return rows


def dsp_total(board: Board, precision: str) -> int:
    return sum(n * each for _, n, each in dsp_instances(board, precision))


def sparse_fc_own_lanes(board: Board, precision: str) -> List[Tuple[str, int, int]]:
    """``(operator, instances, DSP48 each)`` that ``sparse_fc`` would add with MAC lanes of its own.

    :func:`dsp_instances` counts none: the estimate assumes the sparse passes use the fc engine's
    lanes (the two never run together), which the HLS code does not force yet (hls/README.md).
    """
    lanes, lat = board.pe_lanes, acc_latency()  # ACC_LATENCY accumulator copies
    fixed = precision != "float32"
    acc_add = 0 if fixed else 2
    return [(f"sparse_fc MAC lanes ({lanes} multiply-adds)", 3 if fixed else 1, lanes * board.dsp_per_mac(precision)),
            ("sparse_fc forward lane adder tree", 1, (lanes - 1) * acc_add),
            ("sparse_fc copy sums (forward and backward-data write-backs)", 2, (lat - 1) * acc_add)]


def sparse_fc_table(estimates: List["Estimate"]) -> str:
    """Markdown: each board's DSP if ``sparse_fc`` had MAC lanes of its own (``--sparse-fc``)."""
    lines = ["| board | precision | DSP now | + sparse_fc own lanes | total / 80 % of DSP | fits |",
             "|---|---|---|---|---|---|"]
    for e in estimates:
        b = e.limits
        extra = sum(n * each for _, n, each in sparse_fc_own_lanes(b, b.precision))
        total = e.dsp + extra
        lines.append(f"| {e.board} | {b.precision} | {e.dsp} | {extra} | {total} / {MARGIN * b.dsp:.0f} | "
                     f"{'yes' if total <= MARGIN * b.dsp else 'no'} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- multipliers
#: DSP48 of the float32 multiply inside a float32 multiply-add (the rest, 2, is the adder;
#: dsp_instances' f_mul)
FLOAT_MUL_DSP = 3
#: BRAM36 aspect ratios (word bits, words)
BRAM36_SHAPES = ((1, 32768), (2, 16384), (4, 8192), (9, 4096), (18, 2048), (36, 1024))
#: a ROM of at most this many entries is LUT ROM (64 x 1 bit per LUT6), not block RAM
LUTROM_ENTRIES = 1024


@dataclass(frozen=True)
class MultiplierCost:
    """The cost of one multiplier unit of a MAC lane (:func:`multiplier_cost`)."""
    name: str
    dsp: int              # DSP48 of the multiply alone
    luts: int             # LUTs of its datapath (rounding, adders, special values, LUT ROM)
    rom_bram36: int       # BRAM36 of one ROM (lut tables above LUTROM_ENTRIES entries)
    lanes_per_rom: int    # lanes one ROM serves (a BRAM's two ports: two lanes)
    note: str


def rom_bram36(entries: int, width: int) -> int:
    """BRAM36 blocks of a ROM of ``entries`` words of ``width`` bits (best aspect ratio)."""
    return min(math.ceil(width / w) * math.ceil(entries / d) for w, d in BRAM36_SHAPES)


def multiplier_cost(mul: str, mant_bits: int = 0) -> MultiplierCost:
    """Cost of one MAC lane's multiplier ``mul`` (exact, bf16, mitchell, lut with ``mant_bits`` = m).

    exact: the float32 core's 3 DSP48 (UG1399 / the floating-point LogiCORE at full DSP usage);
    bf16: two round-to-nearest-even units on the operands (a 16-bit incrementer each) and one 8 x 8
    significand product (1 DSP48) with an 8-bit exponent adder; mitchell: one 23-bit adder for the
    fractions, a 10-bit exponent adder and the special-value muxes, no DSP; lut: a ROM of 4^m entries
    of m + 1 bits indexed by the top m fraction bits of each operand, plus mitchell's exponent and
    special-value logic; block RAM above LUTROM_ENTRIES entries, one BRAM ROM per two lanes (two
    read ports), else LUT ROM per lane. LUT figures are estimates of the datapath width, not csynth.
    """
    if mul == "exact":
        return MultiplierCost("exact", FLOAT_MUL_DSP, 100, 0, 1, "Xilinx float32 multiplier core")
    if mul == "bf16":
        return MultiplierCost("bf16", 1, 80, 0, 1, "2 RNE roundings + 8x8 significand product")
    if mul == "mitchell":
        return MultiplierCost("mitchell", 0, 70, 0, 1, "23-bit fraction adder + exponent adder, no DSP")
    if mul == "lut":
        if not 1 <= mant_bits <= 12:
            raise ValueError(f"mant_bits: a lut multiplier needs m in [1, 12], got {mant_bits!r}")
        entries, width = 4 ** mant_bits, mant_bits + 1
        logic = 60
        if entries <= LUTROM_ENTRIES:
            return MultiplierCost(f"lut m={mant_bits}", 0, logic + math.ceil(entries / 64) * width, 0, 1,
                                  f"{entries} x {width}-bit LUT ROM per lane")
        return MultiplierCost(f"lut m={mant_bits}", 0, logic, rom_bram36(entries, width), 2,
                              f"{entries} x {width}-bit BRAM ROM per two lanes")
    raise ValueError(f"mul: must be exact, bf16, mitchell or lut, got {mul!r}")


def multiplier_resources(board: Board, mul: str, mant_bits: int = 0) -> Dict[str, int]:
    """What multiplier ``mul`` costs on ``board``'s float32 build: MAC-lane DSP, ROM BRAM36, multiplier LUTs.

    Two MAC-lane instances (conv_config and fc_config engines, :func:`dsp_instances`), pe_lanes
    lanes each; every lane owns its multiplier (and its ROM share: a lane reads its table every
    cycle). ``dsp_total`` is the whole IP's DSP with this multiplier in place of the float32 one.
    """
    cost = multiplier_cost(mul, mant_bits)
    lanes = board.pe_lanes * 2
    mac_dsp = lanes * (board.dsp_per_mac("float32") - FLOAT_MUL_DSP + cost.dsp)
    exact_mac = lanes * board.dsp_per_mac("float32")
    return {"mac_dsp": mac_dsp, "dsp_total": dsp_total(board, "float32") - exact_mac + mac_dsp,
            "rom_bram36": 2 * math.ceil(board.pe_lanes / cost.lanes_per_rom) * cost.rom_bram36,
            "luts": lanes * cost.luts}


def multiplier_table(estimates: List[Estimate], lut_bits=(5, 7)) -> str:
    """Markdown: per board (its :func:`estimate`) and multiplier, the float32 build's DSP, the ROMs'
    BRAM36 added to the on-chip memory's, the multipliers' LUTs, and whether it fits MARGIN."""
    rows = ["| board | PE lanes | multiplier | DSP of the IP (MAC lanes) / total | BRAM36: ROMs + on-chip memory "
            "/ total | multiplier LUTs | fits (80 %) |", "|---|---|---|---|---|---|---|"]
    for e in estimates:
        b = e.limits
        for mul, m in [("exact", 0), ("bf16", 0), ("mitchell", 0)] + [("lut", m) for m in lut_bits]:
            r = multiplier_resources(b, mul, m)
            bram = r["rom_bram36"] + e.bram36
            fits = r["dsp_total"] <= MARGIN * b.dsp and bram <= MARGIN * b.bram36 and e.uram <= MARGIN * b.uram
            rows.append(f"| {b.name} | {b.pe_lanes} | {multiplier_cost(mul, m).name} | {r['dsp_total']} "
                        f"({r['mac_dsp']}) / {b.dsp} | {r['rom_bram36']} + {e.bram36} / {b.bram36} | {r['luts']} "
                        f"| {'yes' if fits else 'NO'} |")
    return "\n".join(rows) + "\n"


def estimate(board: Board, structs: Optional[List[OnchipStruct]] = None) -> Estimate:
    """The resource estimate of ``board``'s configuration."""
    arrays = onchip_arrays(board, structs)
    sizes: Dict[str, int] = {}
    for a in arrays:
        sizes[a.owner] = sizes.get(a.owner, 0) + a.words * a.word_bytes
    bram, uram = place(arrays, board)
    return Estimate(board.name, sizes, bram, uram, dsp_total(board, board.precision), dsp_total(board, "float32"),
                    dsp_total(board, "fixed16"), board, tuple(arrays))


def markdown_table(estimates: List[Estimate]) -> str:
    """The table of overlay/README.md (a test keeps the README equal to it)."""
    rows = ["| board | precision | PE lanes | max ch / dim / ksize / features | on-chip KiB | BRAM36 used / total "
            "| URAM used / total | DSP used / total | (DSP float32 / fixed16) | fits (80 %) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for e in estimates:
        b = e.limits
        rows.append(f"| {e.board} | {b.precision} | {b.pe_lanes} | {b.max_ch} / {b.max_dim} / {b.max_ksize} / "
                    f"{b.max_features} | {e.total_bytes / 1024:.1f} | {e.bram36} / {b.bram36} "
                    f"| {e.uram} / {b.uram} | {e.dsp} / {b.dsp} | ({e.dsp_float32} / {e.dsp_fixed16}) "
                    f"| {'yes' if e.fits() else 'NO'} |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> None:
    import sys
    argv = sys.argv[1:] if argv is None else argv
    structs = onchip_structs()
    estimates = [estimate(b, structs) for b in load_boards().values()]
    table = multiplier_table if "--multipliers" in argv else sparse_fc_table if "--sparse-fc" in argv \
        else markdown_table
    print(table(estimates), end="")


if __name__ == "__main__":
    main()
