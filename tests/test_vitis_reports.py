"""The Vitis HLS report parsers on small fixtures written from the documented formats (UG1399).

The values in each fixture are chosen so that a parser reading the wrong
field (latency for II, the outer loop for the nested one, VHDL for Verilog,
min for max) gets a different number.
"""
import pytest

from zskip.overlay.vitis_reports import (parse_cosim_report, parse_csynth_loops, read_cosim_report, read_csynth_loops,
                                      relative_error, schedule_mismatches)

# a module's report: a fixed-trip pipelined loop, a variable one with a nested pipelined loop
MODULE_XML = """<?xml version="1.0" encoding="UTF-8"?>
<profile>
  <ReportVersion><Version>2023.2</Version></ReportVersion>
  <UserAssignments><Part>xc7z020-clg400-1</Part><TopModelName>compact_plane</TopModelName>
    <TargetClockPeriod>10.00</TargetClockPeriod></UserAssignments>
  <PerformanceEstimates>
    <SummaryOfOverallLatency><Best-caseLatency>9</Best-caseLatency><Worst-caseLatency>1031</Worst-caseLatency>
    </SummaryOfOverallLatency>
    <SummaryOfLoopLatency>
      <SCAN_BEAT>
        <TripCount>196</TripCount>
        <Latency>199</Latency>
        <AbsoluteTimeLatency>1990</AbsoluteTimeLatency>
        <IterationLatency>4</IterationLatency>
        <PipelineII>1</PipelineII>
        <PipelineDepth>4</PipelineDepth>
      </SCAN_BEAT>
      <ELEMENTS>
        <TripCount><range><min>0</min><max>784</max></range></TripCount>
        <Latency><range><min>0</min><max>7056</max></range></Latency>
        <IterationLatency>9</IterationLatency>
        <PipelineII>undef</PipelineII>
        <PipelineDepth>undef</PipelineDepth>
        <MAC>
          <TripCount><range><min>1</min><max>25</max></range></TripCount>
          <Latency>7 ~ 55</Latency>
          <PipelineII>2</PipelineII>
          <PipelineDepth>6</PipelineDepth>
        </MAC>
      </ELEMENTS>
    </SummaryOfLoopLatency>
  </PerformanceEstimates>
</profile>
"""

# the summary report: modules under ModuleInformation, loops carrying a Name child
SUMMARY_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Report>
  <ModuleInformation>
    <Module>
      <Name>zskip_top_Pipeline_FETCH</Name>
      <PerformanceEstimates>
        <SummaryOfLoopLatency>
          <FETCH><Name>FETCH</Name><TripCount>36</TripCount><Latency>38</Latency>
            <PipelineII>1</PipelineII><PipelineDepth>3</PipelineDepth></FETCH>
        </SummaryOfLoopLatency>
      </PerformanceEstimates>
    </Module>
    <Module>
      <Name>compact_plane</Name>
      <PerformanceEstimates>
        <SummaryOfLoopLatency>
          <SCAN_BEAT><Name>SCAN_BEAT</Name><TripCount>196</TripCount><Latency>199</Latency>
            <PipelineII>1</PipelineII><PipelineDepth>4</PipelineDepth></SCAN_BEAT>
        </SummaryOfLoopLatency>
      </PerformanceEstimates>
    </Module>
  </ModuleInformation>
</Report>
"""

COSIM_RPT = """\
================================================================
== Vitis HLS Report for 'zskip_top'
================================================================
+ General Information:
    * Date:           Mon Nov 30 12:00:00 2026
    * Version:        2023.2 (Build 4023990 on Oct 11 2023)
    * Project:        zskip_hls
    * Solution:       solution (Vivado IP Flow Target)
    * Product family: zynq
    * Target device:  xc7z020-clg400-1

+-------------+--------+---------------------------------------+---------------------------------------+-----------+
|             |        |            Latency(Clock Cycles)      |            Interval(Clock Cycles)     | Total Execution Time |
|     RTL     | Status |     min     |     avg     |    max    |     min     |     avg     |    max    |  (Clock Cycles)   |
+-------------+--------+-------------+-------------+-----------+-------------+-------------+-----------+-----------+
|         VHDL|      NA|           NA|           NA|         NA|           NA|           NA|         NA|         NA|
|      Verilog|    Pass|        11873|        12004|      12135|           NA|           NA|         NA|      24010|
+-------------+--------+-------------+-------------+-----------+-------------+-------------+-----------+-----------+
"""


def test_module_report_loops_with_ranges_and_nesting():
    loops = {loop.name: loop for loop in parse_csynth_loops(MODULE_XML)}
    assert sorted(loops) == ["ELEMENTS", "MAC", "SCAN_BEAT"]
    scan = loops["SCAN_BEAT"]
    assert (scan.module, scan.trip_count, scan.latency, scan.ii, scan.depth, scan.iteration_latency) == \
        ("compact_plane", (196, 196), (199, 199), 1, 4, 4)
    outer = loops["ELEMENTS"]
    assert (outer.trip_count, outer.latency, outer.ii, outer.pipelined) == ((0, 784), (0, 7056), None, False)
    mac = loops["MAC"]
    assert (mac.trip_count, mac.latency, mac.ii, mac.depth) == ((1, 25), (7, 55), 2, 6)


def test_summary_report_names_loops_per_module():
    loops = parse_csynth_loops(SUMMARY_XML)
    assert [(lp.module, lp.name, lp.ii, lp.depth) for lp in loops] == [
        ("zskip_top_Pipeline_FETCH", "FETCH", 1, 3), ("compact_plane", "SCAN_BEAT", 1, 4)]


def test_report_dir_merges_module_and_summary_reports(tmp_path):
    (tmp_path / "compact_plane_csynth.xml").write_text(MODULE_XML)
    (tmp_path / "csynth.xml").write_text(SUMMARY_XML)
    table = read_csynth_loops(tmp_path)
    # compact_plane's SCAN_BEAT is in both files: counted once
    assert {k: len(v) for k, v in table.items()} == {"SCAN_BEAT": 1, "ELEMENTS": 1, "MAC": 1, "FETCH": 1}
    with pytest.raises(FileNotFoundError, match="no csynth XML report"):
        read_csynth_loops(tmp_path / "empty")


def test_schedule_comparison(tmp_path):
    (tmp_path / "m_csynth.xml").write_text(MODULE_XML)
    loops = read_csynth_loops(tmp_path)
    assert schedule_mismatches({"SCAN_BEAT": (1, 4), "MAC": (2, 6)}, loops) == []
    problems = schedule_mismatches({"SCAN_BEAT": (1, 5), "MAC": (1, 6), "ELEMENTS": (1, 2), "GONE": (1, 1)}, loops)
    assert problems == [
        "ELEMENTS in compact_plane: not pipelined in the report, the table says II=1",
        "GONE: not in the csynth report (inlined into an unrolled loop, or renamed?)",
        "MAC in compact_plane: csynth II=2, the table says 1",
        "SCAN_BEAT in compact_plane: csynth depth=4, the table says 5",
    ]


def test_cosim_report_verilog_row(tmp_path):
    row = parse_cosim_report(COSIM_RPT)
    assert (row.rtl, row.passed, row.latency, row.interval, row.total_cycles) == \
        ("Verilog", True, (11873, 12004, 12135), (None, None, None), 24010)
    vhdl = parse_cosim_report(COSIM_RPT, rtl="VHDL")
    assert (vhdl.passed, vhdl.latency) == (False, (None, None, None))
    with pytest.raises(ValueError, match="no 'SystemC' row"):
        parse_cosim_report(COSIM_RPT, rtl="SystemC")
    report = tmp_path / "sim" / "report" / "zskip_top_cosim.rpt"
    report.parent.mkdir(parents=True)
    report.write_text(COSIM_RPT)
    assert read_cosim_report(tmp_path, "zskip_top").latency[2] == 12135
    with pytest.raises(FileNotFoundError, match="cosim report not found"):
        read_cosim_report(tmp_path, "other_top")


def test_relative_error():
    assert relative_error(110, 100) == pytest.approx(0.1)
    assert relative_error(90, 100) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="predicted must be > 0"):
        relative_error(1, 0)
