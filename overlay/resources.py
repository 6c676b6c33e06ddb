"""Resource estimate of the accelerator per board, from the code's own sizes.

On-chip memory: every kernel keeps its on-chip arrays in one struct
``<kernel>_onchip<CFG>`` (hls/<kernel>/<kernel>.h). The top function
instantiates kernels as ``<kernel><CFG>(...)``; each instantiation owns its
own static struct. A small g++ probe, compiled with the board's -D macros
(boards.ini [hls_macros]), prints ``sizeof`` of each instantiated struct: the
bytes the board must hold on chip at the compiled maxima.

Placement: on boards with UltraRAM the bytes fill 80 % of the URAM first
(32 KiB of 64-bit words per block), the rest goes to BRAM36 (4 KiB of 32-bit
words per block). Counts are capacity bounds: array partitioning for the PE
lanes can only add blocks.

DSP: PE lanes x DSPs per MAC for the numeric type (boards.ini).

    python -m zskip.overlay.resources            # prints the table of overlay/README.md
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .boards import Board, load_boards

from .. import HLS_DIR  # the one definition: zskip/__init__.py
BRAM36_BYTES = 4096
URAM_BYTES = 32768
#: fraction of each resource a configuration may use (the 20 % margin)
MARGIN = 0.8

_TEMPLATE_FUNCTION = re.compile(r"template\s*<\s*class\s+\w+\s*>\s*[\w:]+\s+(\w+)\s*\([^)]*\)\s*\{")
_STATIC_ONCHIP = re.compile(r"\bstatic\s+(\w+_onchip)\s*<")
_CONFIG = re.compile(r"\bstruct\s+(\w+_config)\b")
_CALL = re.compile(r"\b(\w+)\s*<\s*(\w+)\s*>\s*\(")
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
class Estimate:
    """One board's estimate (float32 datapath unless stated)."""

    board: str
    onchip_bytes: Dict[str, int]   # "function<config>" -> sizeof of its static struct
    bram36: int
    uram: int
    dsp_float32: int
    dsp_fixed16: int
    limits: Board

    @property
    def total_bytes(self) -> int:
        return sum(self.onchip_bytes.values())

    def fits(self, precision: str = "float32") -> bool:
        """True when BRAM, URAM and DSP stay within MARGIN of the board's totals."""
        dsp = self.dsp_float32 if precision == "float32" else self.dsp_fixed16
        return (self.bram36 <= MARGIN * self.limits.bram36 and self.uram <= MARGIN * self.limits.uram
                and dsp <= MARGIN * self.limits.dsp)


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


def _probe_source(structs: List[OnchipStruct]) -> str:
    includes = sorted({f'#include "{s.header.relative_to(HLS_DIR).as_posix()}"' for s in structs})
    lines = [f'    std::printf("%s %zu\\n", "{s.label}", sizeof(zskip::{s.struct}<zskip::{s.config}>));'
             for s in structs]
    return "\n".join(["#include <cstdio>", *includes, "int main() {", *lines, "    return 0;", "}", ""])


def onchip_bytes(board: Board, structs: Optional[List[OnchipStruct]] = None,
                 cache_dir: Optional[Path] = None) -> Dict[str, int]:
    """``sizeof`` of each instantiated on-chip struct with ``board``'s macros (g++ probe).

    The probe uses the emulation's ap_types headers and cache folder (overlay/toolchain.py).
    """
    structs = structs if structs is not None else onchip_structs()
    compiler = shutil.which("g++")
    if compiler is None:
        raise RuntimeError("g++ not found on PATH: the on-chip size probe needs it")
    source = _probe_source(structs)
    from .toolchain import ap_types_dir, cache_dir as emu_cache_dir
    flags = ["-std=c++14", "-O0", f"-I{HLS_DIR}", f"-I{HLS_DIR / 'common'}", f"-I{ap_types_dir()}"]
    flags += [f"-D{k}={v}" for k, v in board.hls_defines.items()]
    headers = "".join(s.header.read_text() for s in structs)
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
    return {name: int(size) for name, size in (line.rsplit(" ", 1) for line in out.splitlines())}


def place(sizes: Dict[str, int], board: Board) -> Tuple[int, int]:
    """(BRAM36 blocks, URAM blocks) holding ``sizes``: URAM filled first up to MARGIN, rest BRAM36.

    Arrays of one struct may live in different memories, so the bytes are
    placed as one pool (a capacity bound, not a placement).
    """
    total = sum(sizes.values())
    uram_bytes = min(total, math.floor(MARGIN * board.uram) * URAM_BYTES)
    return math.ceil((total - uram_bytes) / BRAM36_BYTES), math.ceil(uram_bytes / URAM_BYTES)


def estimate(board: Board, structs: Optional[List[OnchipStruct]] = None) -> Estimate:
    """The resource estimate of ``board``'s configuration."""
    sizes = onchip_bytes(board, structs)
    bram, uram = place(sizes, board)
    return Estimate(board.name, sizes, bram, uram, board.pe_lanes * board.dsp_per_mac("float32"),
                    board.pe_lanes * board.dsp_per_mac("fixed16"), board)


def markdown_table(estimates: List[Estimate]) -> str:
    """The table of overlay/README.md (a test keeps the README equal to it)."""
    rows = ["| board | PE lanes | max ch / dim / ksize / features | on-chip KiB | BRAM36 used / total "
            "| URAM used / total | DSP float32 / total | DSP fixed16 | fits (80 %) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for e in estimates:
        b = e.limits
        rows.append(f"| {e.board} | {b.pe_lanes} | {b.max_ch} / {b.max_dim} / {b.max_ksize} / {b.max_features} "
                    f"| {e.total_bytes / 1024:.1f} | {e.bram36} / {b.bram36} "
                    f"| {e.uram} / {b.uram} | {e.dsp_float32} / {b.dsp} | {e.dsp_fixed16} "
                    f"| {'yes' if e.fits() else 'NO'} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    structs = onchip_structs()
    print(markdown_table([estimate(b, structs) for b in load_boards().values()]), end="")


if __name__ == "__main__":
    main()
