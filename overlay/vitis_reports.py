"""Vitis HLS reports read back: csynth's loops (II, depth, latency) and cosim's latency.

Written from the documented report formats of Vitis HLS 2023.x (UG1399,
"Synthesis Summary" and "C/RTL Co-Simulation"), and unit-tested on small
fixtures in that format (tests/test_vitis_reports.py); unconfirmed against a
real run until ``pytest -m vitis`` runs on a machine with Vitis HLS.

- csynth: ``<solution>/syn/report/<module>_csynth.xml`` per module, and
  ``csynth.xml`` with every module under ``ModuleInformation/Module``. Loops are
  the elements under ``PerformanceEstimates/SummaryOfLoopLatency``, named by
  their tag (or a ``Name`` child), nested loops inside their parent, with
  ``TripCount``, ``Latency``, ``IterationLatency``, ``PipelineII``,
  ``PipelineDepth``; a value is a number, ``undef``/``-``, a ``"min ~ max"``
  string or ``<range><min/><max/></range>``. A pipelined loop that Vitis
  outlines into a module of its own (``<function>_Pipeline_<LABEL>``) keeps its
  label there.
- cosim: ``<solution>/sim/report/<top>_cosim.rpt``, a table with one row per
  RTL language: ``| Verilog | Pass | min | avg | max | min | avg | max | total |``
  (latency and interval in clock cycles over the testbench's transactions,
  then the total execution time in cycles).
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

__all__ = ["LoopReport", "CosimLatency", "parse_csynth_loops", "read_csynth_loops", "parse_cosim_report",
           "read_cosim_report", "schedule_mismatches", "relative_error"]

_LOOP_FIELDS = ("TripCount", "Latency", "IterationLatency", "PipelineII", "PipelineDepth")


@dataclass(frozen=True)
class LoopReport:
    """One loop of a csynth report; None where the report says undef / -."""

    name: str
    module: str
    trip_count: Tuple[Optional[int], Optional[int]]   # (min, max)
    latency: Tuple[Optional[int], Optional[int]]      # (min, max), cycles of one invocation
    iteration_latency: Optional[int]
    ii: Optional[int]
    depth: Optional[int]

    @property
    def pipelined(self) -> bool:
        return self.ii is not None


def _range(elem: Optional[ET.Element]) -> Tuple[Optional[int], Optional[int]]:
    if elem is None:
        return None, None
    rng = elem.find("range")
    if rng is not None:
        return _number(rng.findtext("min")), _number(rng.findtext("max"))
    text = (elem.text or "").strip()
    if "~" in text:
        lo, hi = text.split("~", 1)
        return _number(lo), _number(hi)
    value = _number(text)
    return value, value


def _number(text: Optional[str]) -> Optional[int]:
    text = (text or "").strip()
    if not re.fullmatch(r"\d+(\.0*)?", text):
        return None  # undef, -, NA, empty
    return int(float(text))


def _is_loop(elem: ET.Element) -> bool:
    return any(elem.find(f) is not None for f in _LOOP_FIELDS)


def _loops_under(summary: ET.Element, module: str) -> List[LoopReport]:
    out = []
    for child in summary:
        if not _is_loop(child):
            continue
        name = (child.findtext("Name") or child.tag).strip()
        out.append(LoopReport(
            name=name, module=module, trip_count=_range(child.find("TripCount")), latency=_range(child.find("Latency")),
            iteration_latency=_range(child.find("IterationLatency"))[1],
            ii=_range(child.find("PipelineII"))[1], depth=_range(child.find("PipelineDepth"))[1]))
        out.extend(_loops_under(child, module))  # nested loops
    return out


def parse_csynth_loops(xml_text: str) -> List[LoopReport]:
    """Every loop of one csynth XML report (a module's ``*_csynth.xml`` or the summary ``csynth.xml``)."""
    root = ET.fromstring(xml_text)
    out: List[LoopReport] = []
    modules = root.findall(".//ModuleInformation/Module")
    if modules:
        for module in modules:
            name = (module.findtext("Name") or "").strip()
            for summary in module.findall("./PerformanceEstimates/SummaryOfLoopLatency"):
                out.extend(_loops_under(summary, name))
        return out
    name = (root.findtext("./UserAssignments/TopModelName") or "").strip()
    for summary in root.findall(".//PerformanceEstimates/SummaryOfLoopLatency"):
        out.extend(_loops_under(summary, name))
    return out


def read_csynth_loops(report_dir: Path) -> Dict[str, List[LoopReport]]:
    """Loop label -> its reports (one per module instance) over every csynth XML of ``report_dir``.

    Raises FileNotFoundError when ``report_dir`` holds no ``*csynth.xml``.
    """
    report_dir = Path(report_dir)
    files = sorted(report_dir.glob("*csynth.xml"))
    if not files:
        raise FileNotFoundError(f"no csynth XML report in {report_dir} (did csynth_design run?)")
    seen, table = set(), {}
    for path in files:
        for loop in parse_csynth_loops(path.read_text()):
            key = (loop.module, loop.name)
            if key in seen:  # a module is in its own report and in csynth.xml
                continue
            seen.add(key)
            table.setdefault(loop.name, []).append(loop)
    return table


@dataclass(frozen=True)
class CosimLatency:
    """One RTL row of the cosim report: latency and interval over the transactions, in cycles."""

    rtl: str
    status: str
    latency: Tuple[Optional[int], Optional[int], Optional[int]]    # min, avg, max
    interval: Tuple[Optional[int], Optional[int], Optional[int]]   # min, avg, max
    total_cycles: Optional[int]

    @property
    def passed(self) -> bool:
        return self.status.lower() == "pass"


def parse_cosim_report(text: str, rtl: str = "Verilog") -> CosimLatency:
    """The ``rtl`` row of a cosim report. Raises ValueError when the report has no such row."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[0].lower() == rtl.lower():
            numbers = [_number(c) for c in cells[2:]]
            numbers += [None] * (7 - len(numbers))
            return CosimLatency(cells[0], cells[1], tuple(numbers[0:3]), tuple(numbers[3:6]), numbers[6])
    raise ValueError(f"cosim report has no '{rtl}' row (rtl must be Verilog or VHDL, and cosim must have run)")


def read_cosim_report(solution_dir: Path, top: str, rtl: str = "Verilog") -> CosimLatency:
    path = Path(solution_dir) / "sim" / "report" / f"{top}_cosim.rpt"
    if not path.is_file():
        raise FileNotFoundError(f"cosim report not found: {path} (did cosim_design run?)")
    return parse_cosim_report(path.read_text(), rtl)


def schedule_mismatches(table: Mapping[str, Tuple[int, int]], loops: Mapping[str, List[LoopReport]]) -> List[str]:
    """Where csynth's II and depth differ from the schedule table ``{label: (II, DEPTH)}``; empty when they agree.

    Every table label must appear in the report, pipelined, with exactly the
    table's II and depth in every module instance.
    """
    out = []
    for label, (ii, depth) in sorted(table.items()):
        found = loops.get(label)
        if not found:
            out.append(f"{label}: not in the csynth report (inlined into an unrolled loop, or renamed?)")
            continue
        for loop in found:
            where = f"{label} in {loop.module}" if loop.module else label
            if loop.ii is None:
                out.append(f"{where}: not pipelined in the report, the table says II={ii}")
                continue
            if loop.ii != ii:
                out.append(f"{where}: csynth II={loop.ii}, the table says {ii}")
            if loop.depth != depth:
                out.append(f"{where}: csynth depth={loop.depth}, the table says {depth}")
    return out


def relative_error(measured: float, predicted: float) -> float:
    """|measured - predicted| / predicted (predicted must be > 0)."""
    if not predicted > 0:
        raise ValueError(f"predicted must be > 0, got {predicted!r}")
    return abs(measured - predicted) / predicted
