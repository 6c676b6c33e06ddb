"""``pytest -m vitis``: csim, csynth and cosim of every kernel testbench through hls/run_hls.tcl.

Needs ``vitis_hls`` (2023.x) on PATH; skipped otherwise (and deselected by
default: pyproject's addopts exclude the ``vitis`` marker). For each kernel
testbench ``hls/<k>/<k>_tb.cpp``, one build directory runs csynth and cosim
driven by that testbench (``TESTBENCH=<k>``; csynth therefore runs once per
testbench, about an hour in all on pynq-z2's sizes). The checks:

- csim: every testbench passes (a testbench returns 1 on a mismatch, so
  csim_design and vitis_hls fail);
- csynth: every loop of the schedule table (hls/common/schedule.h) is in the
  report with the table's II and depth (overlay/vitis_reports.schedule_mismatches);
- cosim: the RTL passes the testbench, and its latency (max over the
  testbench's calls of zskip_top) is within COSIM_TOLERANCE of the cycles the
  counters report for the same program (the ``N cycles`` the testbench prints,
  here from the g++ build of the same sources).
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from zskip.overlay.vitis_reports import (read_cosim_report, read_csynth_loops, relative_error,
                                         schedule_mismatches)

ROOT = Path(__file__).resolve().parent.parent
HLS = ROOT / "hls"
RUN_HLS = HLS / "run_hls.tcl"
SCHEDULE = HLS / "common" / "schedule.h"
BOARD = os.environ.get("ZSKIP_VITIS_BOARD", "pynq-z2")
#: cosim latency against the counters' cycles: issue 11 asks for 10 %
COSIM_TOLERANCE = 0.10
TESTBENCHES = sorted(p.parent.name for p in HLS.glob("*/*_tb.cpp"))

pytestmark = [pytest.mark.vitis, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("vitis_hls") is None, reason="vitis_hls not on PATH")]


def _vitis(build, steps, testbench=None, timeout=4 * 3600):
    from zskip.overlay.toolchain import ap_types_dir
    args = [f"BOARD={BOARD}", f"STEPS={steps}", f"AP_TYPES={ap_types_dir()}", f"BUILD={build}"]
    if testbench:
        args.append(f"TESTBENCH={testbench}")
    proc = subprocess.run(["vitis_hls", "-f", str(RUN_HLS), "-tclargs", *args], cwd=build, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"vitis_hls {steps} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    return proc


def _counter_cycles(kernel, tmp_path):
    """The counters' cycles for the testbench's program: its g++ build prints 'PASS (0 mismatches, N cycles)'."""
    from zskip.overlay.toolchain import ap_types_dir
    exe = tmp_path / f"{kernel}_tb"
    subprocess.run(["g++", "-O1", "-std=c++14", f"-I{ap_types_dir()}", str(HLS / kernel / f"{kernel}_tb.cpp"),
                    str(HLS / "zskip_top" / "zskip_top.cpp"), "-o", str(exe)], check=True, capture_output=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"PASS \(0 mismatches, (\d+) cycles\)", out).group(1))


@pytest.fixture(scope="module")
def csim_build(tmp_path_factory):
    build = tmp_path_factory.mktemp("vitis_csim")
    return build, _vitis(build, "csim")


def test_csim_passes_every_testbench(csim_build):
    build, proc = csim_build
    logs = sorted(build.glob("zskip_csim_*/solution/csim/report/*_csim.log"))
    assert len(logs) == len(TESTBENCHES), [str(p) for p in logs]
    for log in logs:
        assert "PASS (0 mismatches" in log.read_text(), log


@pytest.mark.skipif(not SCHEDULE.exists(), reason="hls/common/schedule.h (the schedule table) does not exist yet")
@pytest.mark.parametrize("kernel", TESTBENCHES)
def test_csynth_matches_the_schedule_and_cosim_the_counters(kernel, tmp_path):
    from zskip.overlay.hls_lint import read_schedule
    from zskip.overlay.boards import ip_identity
    build = tmp_path / "build"
    build.mkdir()
    _vitis(build, "csynth,cosim", testbench=kernel)
    solution = build / "zskip_hls" / "solution"
    table = {label: (e.ii, e.depth) for label, e in read_schedule(SCHEDULE).items()}
    problems = schedule_mismatches(table, read_csynth_loops(solution / "syn" / "report"))
    assert problems == [], "\n".join(problems)
    cosim = read_cosim_report(solution, ip_identity().top)
    assert cosim.passed, f"cosim status {cosim.status}"
    predicted = _counter_cycles(kernel, tmp_path)
    measured = cosim.latency[2]
    assert measured is not None
    assert relative_error(measured, predicted) <= COSIM_TOLERANCE, \
        f"{kernel}: cosim latency {measured} cycles, counters {predicted} (tolerance {COSIM_TOLERANCE:.0%})"
