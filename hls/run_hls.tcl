# Vitis HLS 2023.2: C simulation, synthesis, co-simulation and IP export of the
# zskip accelerator for one board.
#
#   vitis_hls -f hls/run_hls.tcl -tclargs BOARD=pynq-z2 STEPS=csim,csynth,export \
#       [AP_TYPES=<hls4ml ap_types dir: C/co-simulation only>] [BUILD=<dir>] \
#       [TESTBENCH=<kernel>]
#
# csim runs every kernel's testbench; csynth, cosim and export run in one
# project whose testbench is hls/<TESTBENCH>/<TESTBENCH>_tb.cpp (default: the
# top function's), so cosim can be driven by each kernel's testbench in turn
# (one BUILD each: tests/test_vitis.py).
# Part, clock and the kernels' sizes come from overlay/boards.ini, the top
# function and the VLNV from overlay/ip.ini (via overlay/zskip_common.tcl).
# The exported IP lands in <BUILD>/zskip_hls/solution/impl/ip, where
# overlay/zskip_bd.tcl looks for it.

source [file join [file dirname [file dirname [file normalize [info script]]]] overlay zskip_common.tcl]

set zskip_steps_known {csim csynth cosim export}
set zskip_args [zskip_parse_args $argv [dict create BOARD pynq-z2 STEPS csim,csynth,export AP_TYPES "" BUILD "" \
                                               TESTBENCH ""]]
set zskip_steps [split [dict get $zskip_args STEPS] ,]
foreach step $zskip_steps {
    if {$step ni $zskip_steps_known} {
        error "STEPS must be a comma-separated subset of {[join $zskip_steps_known ,]}, got '$step'"
    }
}
set board [zskip_board [dict get $zskip_args BOARD]]
set ip [zskip_ip]
set top [dict get $ip top]
set hls_dir [file join $zskip_root hls]

# -I common for the shared headers and the board's sizes as -D: the same for
# synthesis and simulation. hls4ml's ap_types (AP_TYPES) are for simulation
# only: they #error under __SYNTHESIS__, so they must never reach csynth,
# which uses Vitis HLS's own ap_types. On design sources they go in
# -csimflags (UG1399 add_files: applied to C simulation and co-simulation
# compiles, not to synthesis); testbenches are never synthesised, so theirs
# go in -cflags.
set cflags [list -std=c++14 -I[file join $hls_dir common]]
set cflags [concat $cflags [zskip_hls_defines $board]]
set csimflags {}
if {[dict get $zskip_args AP_TYPES] ne ""} {
    set ap_types [file normalize [dict get $zskip_args AP_TYPES]]
    if {![file isfile [file join $ap_types ap_fixed.h]]} {
        error "AP_TYPES must be a directory holding ap_fixed.h (hls4ml's ap_types), got '[dict get $zskip_args AP_TYPES]'"
    }
    lappend csimflags -I$ap_types
}
set tb_cflags [join [concat $cflags $csimflags] " "]
set cflags [join $cflags " "]
set csimflags [join $csimflags " "]

# Kernel sources: every hls/<kernel>/*.cpp except testbenches and the g++
# emulation bridge (hls/emu/), which is not hardware.
set sources {}
foreach src [lsort [glob -nocomplain [file join $hls_dir * *.cpp]]] {
    if {[string match *_tb.cpp $src] || [file tail [file dirname $src]] eq "emu"} {
        continue
    }
    lappend sources $src
}
set top_source [file join $hls_dir $top $top.cpp]
if {$top_source ni $sources} {
    error "top function source $top_source not found"
}
set build_dir [zskip_build_dir [dict get $zskip_args BUILD] [dict get $board name]]
file mkdir $build_dir
cd $build_dir

# One Vitis HLS project: the kernel sources, at most one testbench (one main).
proc zskip_open {project testbench} {
    global top sources cflags csimflags tb_cflags board
    open_project -reset $project
    set_top $top
    foreach src $sources {
        if {$csimflags eq ""} {
            add_files -cflags $cflags $src
        } else {
            add_files -cflags $cflags -csimflags $csimflags $src
        }
    }
    if {$testbench ne ""} {
        add_files -tb -cflags $tb_cflags $testbench
    }
    open_solution -reset [zskip_hls_solution] -flow_target vivado
    set_part [dict get $board part]
    create_clock -period [expr {1000.0 / [dict get $board clock_mhz]}] -name default
}

# C simulation runs every kernel's testbench, each in its own project since
# each has a main(); a testbench returns nonzero on mismatch, failing csim.
if {"csim" in $zskip_steps} {
    set testbenches [lsort [glob -nocomplain [file join $hls_dir * *_tb.cpp]]]
    if {[llength $testbenches] == 0} {
        error "csim: no testbench hls/<kernel>/<kernel>_tb.cpp found"
    }
    foreach testbench $testbenches {
        zskip_open zskip_csim_[file rootname [file tail $testbench]] $testbench
        csim_design
        close_project
    }
}

# Synthesis, co-simulation (driven by the chosen testbench) and export.
set tb_kernel [expr {[dict get $zskip_args TESTBENCH] eq "" ? $top : [dict get $zskip_args TESTBENCH]}]
set top_testbench [file join $hls_dir $tb_kernel ${tb_kernel}_tb.cpp]
if {[dict get $zskip_args TESTBENCH] ne "" && ![file exists $top_testbench]} {
    set known [lsort [lmap tb [glob -nocomplain [file join $hls_dir * *_tb.cpp]] {file tail [file dirname $tb]}]]
    error "TESTBENCH must be one of {[join $known {, }]}, got '[dict get $zskip_args TESTBENCH]'"
}
if {"cosim" in $zskip_steps && ![file exists $top_testbench]} {
    error "cosim needs the testbench $top_testbench"
}
if {[llength [lsearch -all -inline -not -exact $zskip_steps csim]] > 0} {
    zskip_open [zskip_hls_project] [expr {[file exists $top_testbench] ? $top_testbench : ""}]
    if {"csynth" in $zskip_steps} {
        csynth_design
    }
    if {"cosim" in $zskip_steps} {
        cosim_design
    }
    if {"export" in $zskip_steps} {
        export_design -format ip_catalog -rtl verilog \
            -vendor [dict get $ip vendor] -library [dict get $ip library] \
            -ipname $top -version [dict get $ip version] \
            -description "zskip zero-skipping CNN training accelerator ([dict get $board name])"
    }
}
exit
