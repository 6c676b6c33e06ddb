# Vivado 2023.2: block design, bitstream and PYNQ files of the zskip overlay.
#
#   vivado -mode batch -source overlay/zskip_bd.tcl -tclargs BOARD=pynq-z2 [BUILD=<dir>] [OUT=<dir>] [JOBS=4]
#
# Needs the IP exported by hls/run_hls.tcl (STEPS=...,export) for the same
# BOARD and BUILD. Leaves zskip.bit and zskip.hwh side by side in OUT (default:
# overlay/, where zskip.overlay.ZskipOverlay looks for them).
#
# Design: the Zynq PS (7-series or UltraScale+) with the board preset; the
# accelerator's m_axi masters through one SmartConnect into one high-performance
# PS slave port (HP0), its s_axilite control from the PS general-purpose master
# through a second SmartConnect, its interrupt to the PS through a concat (room
# for more IRQs), one PL clock at the board's clock_mhz and one reset.
# An AXI Timer on the same control SmartConnect measures the accelerator's
# cycles: timer 0 counts the PL clock in capture mode and latches its count on
# the accelerator's interrupt (ap_done, enabled by the driver), so a board run
# reports measured cycles beside the counters' (host/pynq_device.py).

source [file join [file dirname [file normalize [info script]]] zskip_common.tcl]

set zskip_args [zskip_parse_args $argv [dict create BOARD pynq-z2 BUILD "" OUT $zskip_overlay_dir JOBS 4]]
set board [zskip_board [dict get $zskip_args BOARD]]
set ip [zskip_ip]
set timer_id [zskip_timer]
set build_dir [zskip_build_dir [dict get $zskip_args BUILD] [dict get $board name]]
set ip_repo [zskip_hls_ip_repo $build_dir]
set out_dir [file normalize [dict get $zskip_args OUT]]
set clock_mhz [dict get $board clock_mhz]

# What differs between the two PS families: IP, board-preset rule, the
# settings that enable the ports, clock and IRQ, and the port names.
set zskip_ps_families [dict create \
    zynq7 [dict create \
        vlnv xilinx.com:ip:processing_system7:5.5 \
        rule xilinx.com:bd_rule:processing_system7 \
        rule_config {make_external "FIXED_IO, DDR" apply_board_preset "1" Master "Disable" Slave "Disable"} \
        config [list CONFIG.PCW_USE_S_AXI_HP0 1 CONFIG.PCW_USE_M_AXI_GP0 1 \
                     CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ $clock_mhz \
                     CONFIG.PCW_USE_FABRIC_INTERRUPT 1 CONFIG.PCW_IRQ_F2P_INTR 1] \
        master M_AXI_GP0 master_clk M_AXI_GP0_ACLK \
        slave S_AXI_HP0 slave_clk S_AXI_HP0_ACLK \
        clk FCLK_CLK0 resetn FCLK_RESET0_N irq IRQ_F2P] \
    zynqmp [dict create \
        vlnv xilinx.com:ip:zynq_ultra_ps_e:3.5 \
        rule xilinx.com:bd_rule:zynq_ultra_ps_e \
        rule_config {apply_board_preset "1"} \
        config [list CONFIG.PSU__USE__M_AXI_GP0 1 CONFIG.PSU__USE__M_AXI_GP1 0 CONFIG.PSU__USE__M_AXI_GP2 0 \
                     CONFIG.PSU__USE__S_AXI_GP2 1 CONFIG.PSU__FPGA_PL0_ENABLE 1 \
                     CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ $clock_mhz CONFIG.PSU__USE__IRQ0 1] \
        master M_AXI_HPM0_FPD master_clk maxihpm0_fpd_aclk \
        slave S_AXI_HP0_FPD slave_clk saxihp0_fpd_aclk \
        clk pl_clk0 resetn pl_resetn0 irq pl_ps_irq0]]
set ps [dict get $zskip_ps_families [dict get $board ps]]

if {![file isdirectory $ip_repo]} {
    error "HLS IP repository $ip_repo not found: run hls/run_hls.tcl BOARD=[dict get $board name] with STEPS including export first (or make -C overlay)"
}

set proj_dir [file join $build_dir vivado]
create_project -force zskip $proj_dir -part [dict get $board part]
set_property board_part [dict get $board board_part] [current_project]
set_property ip_repo_paths [list $ip_repo] [current_project]
update_ip_catalog
create_bd_design zskip

# Processing system with the board preset, then the ports this design uses.
set ps_cell [create_bd_cell -type ip -vlnv [dict get $ps vlnv] ps]
apply_bd_automation -rule [dict get $ps rule] -config [dict get $ps rule_config] $ps_cell
set_property -dict [dict get $ps config] $ps_cell

set acc [create_bd_cell -type ip -vlnv [dict get $ip vlnv] [dict get $ip top]_0]
set rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset:5.0 pl_reset]
set mem_smc [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect:1.0 mem_smc]
set ctrl_smc [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect:1.0 ctrl_smc]
set irq_concat [create_bd_cell -type ip -vlnv xilinx.com:ip:xlconcat:2.1 irq_concat]
set timer [create_bd_cell -type ip -vlnv [dict get $timer_id vlnv] [dict get $timer_id cell]]
# one 32-bit timer; capture trigger 0 active high (the HLS interrupt is active high)
set_property -dict [list CONFIG.COUNT_WIDTH 32 CONFIG.enable_timer2 0 CONFIG.mode_64bit 0 \
                        CONFIG.TRIG0_ASSERT Active_High] $timer

# Every m_axi bundle of the HLS IP (one per tensor class) into HP0: the list
# comes from the IP itself, so a bundle added in the C++ is wired without edits.
set masters [get_bd_intf_pins -of_objects $acc -filter {MODE == Master}]
if {[llength $masters] == 0} {
    error "IP [dict get $ip vlnv] has no m_axi master: was it exported from the zskip HLS sources?"
}
set_property -dict [list CONFIG.NUM_SI [llength $masters] CONFIG.NUM_MI 1] $mem_smc
set index 0
foreach master $masters {
    connect_bd_intf_net $master [get_bd_intf_pins $mem_smc/[format S%02d_AXI $index]]
    incr index
}
connect_bd_intf_net [get_bd_intf_pins $mem_smc/M00_AXI] [get_bd_intf_pins $ps_cell/[dict get $ps slave]]

set_property -dict [list CONFIG.NUM_SI 1 CONFIG.NUM_MI 2] $ctrl_smc
connect_bd_intf_net [get_bd_intf_pins $ps_cell/[dict get $ps master]] [get_bd_intf_pins $ctrl_smc/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins $ctrl_smc/M00_AXI] [get_bd_intf_pins -of_objects $acc -filter {MODE == Slave}]
connect_bd_intf_net [get_bd_intf_pins $ctrl_smc/M01_AXI] [get_bd_intf_pins $timer/S_AXI]

# One clock and one synchronised reset for the PL and the PS ports it uses.
set clk [get_bd_pins $ps_cell/[dict get $ps clk]]
connect_bd_net $clk [get_bd_pins $acc/ap_clk] [get_bd_pins $mem_smc/aclk] [get_bd_pins $ctrl_smc/aclk] \
    [get_bd_pins $timer/s_axi_aclk] \
    [get_bd_pins $rst/slowest_sync_clk] [get_bd_pins $ps_cell/[dict get $ps master_clk]] \
    [get_bd_pins $ps_cell/[dict get $ps slave_clk]]
connect_bd_net [get_bd_pins $ps_cell/[dict get $ps resetn]] [get_bd_pins $rst/ext_reset_in]
connect_bd_net [get_bd_pins $rst/peripheral_aresetn] [get_bd_pins $acc/ap_rst_n] \
    [get_bd_pins $mem_smc/aresetn] [get_bd_pins $ctrl_smc/aresetn] [get_bd_pins $timer/s_axi_aresetn]

set_property CONFIG.NUM_PORTS 1 $irq_concat
# the interrupt goes to the PS and latches the timer's count (capture on its rising edge)
connect_bd_net [get_bd_pins $acc/interrupt] [get_bd_pins $irq_concat/In0] [get_bd_pins $timer/capturetrig0]
connect_bd_net [get_bd_pins $irq_concat/dout] [get_bd_pins $ps_cell/[dict get $ps irq]]

assign_bd_address
validate_bd_design
save_bd_design

set bd_file [get_files zskip.bd]
set wrapper [make_wrapper -files $bd_file -top]
add_files -norecurse $wrapper
set_property top zskip_wrapper [current_fileset]
update_compile_order -fileset sources_1

launch_runs impl_1 -to_step write_bitstream -jobs [dict get $zskip_args JOBS]
wait_on_run impl_1
if {[get_property PROGRESS [get_runs impl_1]] ne "100%"} {
    error "implementation of [dict get $board name] failed: see [get_property DIRECTORY [get_runs impl_1]]"
}

# PYNQ loads the .bit and reads the design (addresses, IRQs, clocks) from the
# .hwh of the same name beside it.
set bitfile [file join [get_property DIRECTORY [get_runs impl_1]] zskip_wrapper.bit]
set hwhfile [file join $proj_dir zskip.gen sources_1 bd zskip hw_handoff zskip.hwh]
file mkdir $out_dir
file copy -force $bitfile [file join $out_dir zskip.bit]
file copy -force $hwhfile [file join $out_dir zskip.hwh]
puts "zskip: wrote [file join $out_dir zskip.bit] and [file join $out_dir zskip.hwh]"
