"""The Vitis HLS / Vivado tcl, checked with tclsh: syntax, and every name they use.

The scripts are sourced by tclsh with every Vivado / Vitis HLS command stubbed
by an ``unknown`` handler that records the call. The recorded calls are then
compared with the independent sources of truth: the HLS C++ (top function,
m_axi bundles), overlay/boards.ini (part, board part, clock, sizes) and
overlay/ip.ini (VLNV, also the PYNQ driver's ``bindto``).
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zskip.host.ip.register_map import TOP_SOURCE, load_top
from zskip.overlay.boards import ip_identity, load_boards, timer_identity

ROOT = Path(__file__).resolve().parent.parent
RUN_HLS = ROOT / "hls" / "run_hls.tcl"
BLOCK_DESIGN = ROOT / "overlay" / "zskip_bd.tcl"
TCL_FILES = [RUN_HLS, BLOCK_DESIGN, ROOT / "overlay" / "zskip_common.tcl"]
BOARDS = load_boards()

pytestmark = pytest.mark.skipif(shutil.which("tclsh") is None, reason="tclsh not installed")

FIELD, RECORD = "\x1f", "\x1e"

# Records each unknown command as FIELD-separated words, RECORD-terminated, and
# returns what the scripts need from Vivado to go on.
HARNESS = r"""
set zskip_stub_log [open $env(ZSKIP_STUB_LOG) w]
proc zskip_stub_record {words} {
    puts -nonewline $::zskip_stub_log "[join $words \x1f]\x1e"
    flush $::zskip_stub_log
}
proc unknown {args} {
    zskip_stub_record $args
    set cmd [lindex $args 0]
    switch -- $cmd {
        create_bd_cell - get_bd_pins - get_files - get_runs - current_project - current_fileset {
            return [lindex $args end]
        }
        get_bd_intf_pins {
            set at [lsearch -exact $args -filter]
            if {$at < 0} { return [lindex $args end] }
            if {[string match "*Master*" [lindex $args [expr {$at + 1}]]]} {
                return $::env(ZSKIP_STUB_MASTERS)
            }
            return [lindex $args [expr {[lsearch -exact $args -of_objects] + 1}]]/s_axi_control
        }
        get_property {
            switch -- [lindex $args 1] {
                PROGRESS { return 100% }
                DIRECTORY { return $::env(ZSKIP_STUB_RUN_DIR) }
            }
            return ""
        }
        make_wrapper { return zskip_wrapper.v }
        default { return "" }
    }
}
rename exit zskip_real_exit
proc exit {args} { zskip_stub_record [concat exit $args] }
set argv [lrange $argv 1 end]
set argc [llength $argv]
set zskip_stub_script [lindex $::zskip_stub_args 0]
source $zskip_stub_script
close $zskip_stub_log
"""


def run_stubbed(script, args, tmp_path, masters=()):
    """Source ``script`` with ``args`` under the stubs; returns the recorded calls."""
    harness = tmp_path / "harness.tcl"
    harness.write_text("set zskip_stub_args $argv\n" + HARNESS)
    log = tmp_path / "calls.log"
    run_dir = tmp_path / "impl_1"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "zskip_wrapper.bit").write_bytes(b"bit")
    env = dict(os.environ, ZSKIP_STUB_LOG=str(log), ZSKIP_STUB_RUN_DIR=str(run_dir),
               ZSKIP_STUB_MASTERS=" ".join(masters))
    proc = subprocess.run(["tclsh", str(harness), str(script), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"tclsh failed:\n{proc.stderr}")
    return [rec.split(FIELD) for rec in log.read_text().split(RECORD) if rec]


def calls_of(calls, command):
    return [c[1:] for c in calls if c[0] == command]


def option(words, name):
    return words[words.index(name) + 1]


@pytest.mark.parametrize("path", TCL_FILES, ids=lambda p: p.name)
def test_tcl_syntax_complete(path):
    """Every command of the file is complete (balanced braces, brackets, quotes)."""
    check = ('set fh [open [lindex $argv 0]]; set text [read $fh]; close $fh\n'
             'set cmd ""; set n 0\n'
             'foreach line [split $text "\\n"] { incr n; append cmd $line "\\n"\n'
             '  if {[info complete $cmd]} { set cmd "" } }\n'
             'if {$cmd ne ""} { puts stderr "incomplete command starting before line $n"; exit 1 }\n')
    proc = subprocess.run(["tclsh"], input=check.replace("[lindex $argv 0]", "{" + str(path) + "}"),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def hls_bundles():
    top = load_top()
    return [top.argument(name).m_axi_bundle for name in top.pointer_arguments]


needs_top = pytest.mark.skipif(not TOP_SOURCE.exists(), reason="hls/zskip_top/zskip_top.cpp not written yet")


@needs_top
@pytest.mark.parametrize("board_name", sorted(BOARDS))
def test_run_hls_names_agree_with_sources_and_board_data(board_name, tmp_path):
    board, identity = BOARDS[board_name], ip_identity()
    build = tmp_path / "build"
    calls = run_stubbed(RUN_HLS, [f"BOARD={board_name}", "STEPS=csynth,export", f"BUILD={build}"], tmp_path)

    assert calls_of(calls, "set_top") == [[identity.top]]
    assert load_top().function == identity.top  # the C++ defines the function set_top names
    sources = [c for c in calls_of(calls, "add_files") if c[0] != "-tb"]
    assert str(TOP_SOURCE) in [s[-1] for s in sources]
    for words in calls_of(calls, "add_files"):
        path = Path(words[-1])
        assert path.is_file(), f"run_hls.tcl adds a missing file {path}"
        cflags = option(words, "-cflags").split()
        for macro, value in board.hls_defines.items():
            assert f"-D{macro}={value}" in cflags
    assert calls_of(calls, "set_part") == [[board.part]]
    (clock,) = calls_of(calls, "create_clock")
    assert float(option(clock, "-period")) == pytest.approx(1000.0 / board.clock_mhz)
    assert calls_of(calls, "csim_design") == [] and calls_of(calls, "cosim_design") == []
    assert len(calls_of(calls, "csynth_design")) == 1
    (export,) = calls_of(calls, "export_design")
    vlnv = ":".join(option(export, k) for k in ("-vendor", "-library", "-ipname", "-version"))
    assert vlnv == identity.vlnv
    # the IP lands where the block design script looks for it
    project = calls_of(calls, "open_project")[0][-1]
    solution = option(calls_of(calls, "open_solution")[0], "-reset")
    assert (build / project / solution).parent.parent == build


@needs_top
def test_csim_runs_each_kernel_testbench_in_its_own_project(tmp_path):
    testbenches = sorted((ROOT / "hls").glob("*/*_tb.cpp"))
    args = ["BOARD=pynq-z2", "STEPS=csim", f"BUILD={tmp_path / 'build'}"]
    if not testbenches:
        with pytest.raises(AssertionError, match=r"csim: no testbench hls/<kernel>/<kernel>_tb.cpp found"):
            run_stubbed(RUN_HLS, args, tmp_path)
        return
    calls = run_stubbed(RUN_HLS, args, tmp_path)
    assert len(calls_of(calls, "csim_design")) == len(testbenches)
    added_tbs = [c[-1] for c in calls_of(calls, "add_files") if c[0] == "-tb"]
    assert added_tbs == [str(t) for t in testbenches]
    assert calls_of(calls, "csynth_design") == [] and calls_of(calls, "export_design") == []


def ap_types():
    from zskip.overlay.toolchain import ap_types_dir
    return ap_types_dir()


def added_files(calls):
    """(design sources, testbenches) as the add_files calls' word lists."""
    adds = calls_of(calls, "add_files")
    return [c for c in adds if c[0] != "-tb"], [c for c in adds if c[0] == "-tb"]


@needs_top
@pytest.mark.parametrize("steps", ["csim", "csynth,cosim,export"])
def test_hls4ml_ap_types_reach_simulation_only(steps, tmp_path):
    """hls4ml's ap_types #error under __SYNTHESIS__: never in synthesis flags, always in simulation ones.

    UG1399 add_files: -cflags apply to synthesis and simulation compiles,
    -csimflags to C/co-simulation only; -tb files are never synthesised.
    """
    include = f"-I{ap_types()}"
    calls = run_stubbed(RUN_HLS, ["BOARD=pynq-z2", f"STEPS={steps}", f"AP_TYPES={ap_types()}",
                                  f"BUILD={tmp_path / 'build'}"], tmp_path)
    sources, testbenches = added_files(calls)
    assert sources and testbenches
    for words in sources:
        assert include not in option(words, "-cflags").split(), words[-1]
        assert option(words, "-csimflags").split() == [include], words[-1]
    for words in testbenches:
        assert "-csimflags" not in words
        cflags = option(words, "-cflags").split()
        assert include in cflags and f"-I{ROOT / 'hls' / 'common'}" in cflags


@needs_top
def test_without_ap_types_vitis_uses_its_own_headers(tmp_path):
    calls = run_stubbed(RUN_HLS, ["BOARD=pynq-z2", "STEPS=csim,csynth", f"BUILD={tmp_path / 'build'}"], tmp_path)
    sources, testbenches = added_files(calls)
    assert sources and testbenches
    assert all("-csimflags" not in words for words in sources)
    assert all("ap_types" not in option(words, "-cflags") for words in sources + testbenches)


@needs_top
def test_testbench_argument_picks_the_cosim_testbench(tmp_path):
    calls = run_stubbed(RUN_HLS, ["STEPS=csynth,cosim", "TESTBENCH=conv_fwd", f"BUILD={tmp_path / 'b'}"], tmp_path)
    _, testbenches = added_files(calls)
    assert [words[-1] for words in testbenches] == [str(ROOT / "hls" / "conv_fwd" / "conv_fwd_tb.cpp")]
    assert len(calls_of(calls, "cosim_design")) == 1
    default = run_stubbed(RUN_HLS, ["STEPS=csynth,cosim", f"BUILD={tmp_path / 'c'}"], tmp_path)
    top = ip_identity().top
    assert [w[-1] for w in added_files(default)[1]] == [str(ROOT / "hls" / top / f"{top}_tb.cpp")]
    with pytest.raises(AssertionError, match=r"TESTBENCH must be one of \{.*conv_fwd.*\}, got 'conv9'"):
        run_stubbed(RUN_HLS, ["STEPS=cosim", "TESTBENCH=conv9"], tmp_path)


def test_ap_types_without_ap_fixed_is_a_clear_error(tmp_path):
    with pytest.raises(AssertionError, match=r"AP_TYPES must be a directory holding ap_fixed.h"):
        run_stubbed(RUN_HLS, [f"AP_TYPES={tmp_path}"], tmp_path)


def test_pynq_driver_binds_to_the_exported_vlnv():
    from zskip.overlay.zskip_overlay import ZskipAcceleratorIP
    assert ZskipAcceleratorIP.bindto == [ip_identity().vlnv]
    assert re.fullmatch(r"[\w.]+:[\w]+:[\w]+:\d+\.\d+", ip_identity().vlnv)


@needs_top
@pytest.mark.parametrize("board_name", sorted(BOARDS))
def test_block_design_names_agree(board_name, tmp_path):
    board, identity = BOARDS[board_name], ip_identity()
    build, out = tmp_path / "build", tmp_path / "out"
    ip_repo = build / "zskip_hls" / "solution" / "impl" / "ip"
    ip_repo.mkdir(parents=True)
    hwh = build / "vivado" / "zskip.gen" / "sources_1" / "bd" / "zskip" / "hw_handoff" / "zskip.hwh"
    hwh.parent.mkdir(parents=True)
    hwh.write_text("<hwh/>")
    acc = f"{identity.top}_0"
    masters = [f"{acc}/m_axi_{b}" for b in hls_bundles()]
    calls = run_stubbed(BLOCK_DESIGN, [f"BOARD={board_name}", f"BUILD={build}", f"OUT={out}"], tmp_path, masters)

    (project,) = calls_of(calls, "create_project")
    assert option(project, "-part") == board.part
    assert ["board_part", board.board_part, "current_project"] in calls_of(calls, "set_property")
    assert ["ip_repo_paths", str(ip_repo), "current_project"] in calls_of(calls, "set_property")
    cells = {c[-1]: option(c, "-vlnv") for c in calls_of(calls, "create_bd_cell")}
    assert cells[acc] == identity.vlnv
    ps_vlnv = {"zynq7": "xilinx.com:ip:processing_system7:", "zynqmp": "xilinx.com:ip:zynq_ultra_ps_e:"}
    assert cells["ps"].startswith(ps_vlnv[board.ps])
    ps_config = [c for c in calls_of(calls, "set_property") if c[:1] == ["-dict"] and c[-1] == "ps"][0][1].split()
    clock_key = {"zynq7": "CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ",
                 "zynqmp": "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ"}[board.ps]
    assert float(ps_config[ps_config.index(clock_key) + 1]) == board.clock_mhz
    # every m_axi bundle of the C++ reaches the HP port through the SmartConnect
    intf_nets = calls_of(calls, "connect_bd_intf_net")
    for master in masters:
        assert any(net[0] == master and net[1].startswith("mem_smc/S") for net in intf_nets), master
    smc = [c for c in calls_of(calls, "set_property") if c[-1] == "mem_smc"][0][1].split()
    assert int(smc[smc.index("CONFIG.NUM_SI") + 1]) == len(masters)
    assert any(f"{acc}/interrupt" in net for net in calls_of(calls, "connect_bd_net"))
    # the cycle timer: on the control SmartConnect, the PL clock and reset, its capture on the IP's interrupt
    timer = timer_identity()
    assert cells[timer.cell] == timer.vlnv
    ctrl = [c for c in calls_of(calls, "set_property") if c[-1] == "ctrl_smc"][0][1].split()
    assert int(ctrl[ctrl.index("CONFIG.NUM_MI") + 1]) == 2
    assert ["ctrl_smc/M01_AXI", f"{timer.cell}/S_AXI"] in intf_nets
    timer_config = [c for c in calls_of(calls, "set_property") if c[-1] == timer.cell][0][1].split()
    assert timer_config[timer_config.index("CONFIG.TRIG0_ASSERT") + 1] == "Active_High"
    nets = calls_of(calls, "connect_bd_net")
    irq_net = [net for net in nets if f"{acc}/interrupt" in net][0]
    assert f"{timer.cell}/capturetrig0" in irq_net
    clock_net = [net for net in nets if f"{acc}/ap_clk" in net][0]
    reset_net = [net for net in nets if f"{acc}/ap_rst_n" in net][0]
    assert f"{timer.cell}/s_axi_aclk" in clock_net and f"{timer.cell}/s_axi_aresetn" in reset_net
    launch = calls_of(calls, "launch_runs")[0]
    assert launch[:3] == ["impl_1", "-to_step", "write_bitstream"]
    assert (out / "zskip.bit").read_bytes() == b"bit" and (out / "zskip.hwh").read_text() == "<hwh/>"


@pytest.mark.parametrize("script", [RUN_HLS, BLOCK_DESIGN], ids=lambda p: p.name)
def test_unknown_board_is_a_clear_error(script, tmp_path):
    with pytest.raises(AssertionError, match=r"BOARD must be one of \{.*pynq-z2.*\}, got 'zedboard'"):
        run_stubbed(script, ["BOARD=zedboard"], tmp_path)


def test_unknown_argument_and_step_rejected(tmp_path):
    with pytest.raises(AssertionError, match=r"unknown argument PART: known are"):
        run_stubbed(RUN_HLS, ["PART=xc7z020"], tmp_path)
    with pytest.raises(AssertionError, match=r"STEPS must be a comma-separated subset of \{csim,csynth,cosim,export\}"):
        run_stubbed(RUN_HLS, ["STEPS=csynth,impl"], tmp_path)


def test_arguments_in_one_element_and_tool_options_are_accepted(tmp_path):
    """vitis_hls may hand over the -tclargs flag and a single quoted element of pairs."""
    calls = run_stubbed(RUN_HLS, ["-tclargs", f"BOARD=kv260 STEPS=csynth BUILD={tmp_path / 'b'}"], tmp_path)
    assert calls_of(calls, "set_part") == [[BOARDS["kv260"].part]]
    with pytest.raises(AssertionError, match=r"arguments are KEY=VALUE, got 'BOARD'"):
        run_stubbed(RUN_HLS, ["BOARD", "kv260"], tmp_path)


def test_tcl_ini_reader_agrees_with_configparser(tmp_path):
    """The tcl reader and boards.py see the same board data."""
    script = ('source {%s}\n'
              'foreach name [zskip_board_names] { set b [zskip_board $name]\n'
              '  puts "$name [dict get $b part] [dict get $b clock_mhz] [join [zskip_hls_defines $b] ,]" }\n'
              % (ROOT / "overlay" / "zskip_common.tcl"))
    out = subprocess.run(["tclsh"], input=script, capture_output=True, text=True, timeout=30, check=True).stdout
    expected = [f"{b.name} {b.part} {section_clock(b.name)} " + ",".join(f"-D{k}={v}" for k, v in b.hls_defines.items())
                for b in BOARDS.values()]
    assert out.split("\n")[:-1] == expected


def section_clock(name):
    import configparser
    parser = configparser.ConfigParser()
    parser.read(ROOT / "overlay" / "boards.ini")
    return parser[name]["clock_mhz"]


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


@needs_make
def test_make_dry_run_runs_hls_then_vivado_for_the_board():
    proc = subprocess.run(["make", "-n", "-C", str(ROOT / "overlay"), "BOARD=kv260",
                           f"PYTHON={sys.executable}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    hls = [i for i, l in enumerate(lines) if "run_hls.tcl" in l]
    vivado = [i for i, l in enumerate(lines) if "zskip_bd.tcl" in l]
    assert hls and vivado and hls[0] < vivado[0]
    assert "BOARD=kv260" in lines[hls[0]] and "BOARD=kv260" in lines[vivado[0]]
    ap_types = re.search(r"AP_TYPES=(\S+)", lines[hls[0]]).group(1)
    assert (Path(ap_types) / "ap_fixed.h").is_file()


@needs_make
def test_make_without_tools_is_a_clear_error():
    proc = subprocess.run(["make", "-C", str(ROOT / "overlay"), "hls", "VITIS_HLS=vitis_hls_not_installed"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "vitis_hls_not_installed not found on PATH" in proc.stderr
