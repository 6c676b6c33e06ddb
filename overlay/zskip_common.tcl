# Shared by hls/run_hls.tcl (Vitis HLS) and overlay/zskip_bd.tcl (Vivado).
# Reads the board data (overlay/boards.ini) and the IP identity (overlay/ip.ini)
# so that part, clock, sizes and VLNV are written only in those files, and
# fixes where each step leaves its products so the next step finds them.
# Plain Tcl 8.6: no Vivado command is used here, so tclsh can load it.

set zskip_overlay_dir [file dirname [file normalize [info script]]]
set zskip_root [file dirname $zskip_overlay_dir]

# An ini file as a dict: section -> dict(key -> value). Same dialect as
# Python's configparser with inline comments off: '#'/';' only open a line.
proc zskip_ini_read {path} {
    if {![file readable $path]} {
        error "cannot read ini file $path"
    }
    set fh [open $path r]
    set text [read $fh]
    close $fh
    set data [dict create]
    set section ""
    set number 0
    foreach line [split $text "\n"] {
        incr number
        set line [string trim $line]
        if {$line eq "" || [string index $line 0] in {# ;}} {
            continue
        }
        if {[regexp {^\[([^\]]+)\]$} $line -> section]} {
            dict set data $section [dict create]
            continue
        }
        if {[regexp {^([^=:]+?)\s*[=:]\s*(.*)$} $line -> key value]} {
            if {$section eq ""} {
                error "$path:$number: key '$key' outside any section"
            }
            dict set data $section [string trim $key] [string trim $value]
            continue
        }
        error "$path:$number: cannot parse '$line'"
    }
    return $data
}

proc zskip_boards {} {
    global zskip_overlay_dir
    return [zskip_ini_read [file join $zskip_overlay_dir boards.ini]]
}

# Names of the boards (every section but the macro table).
proc zskip_board_names {} {
    return [lsearch -all -inline -not -exact [dict keys [zskip_boards]] hls_macros]
}

# The board's keys as a dict, plus "name".
proc zskip_board {name} {
    set names [zskip_board_names]
    if {$name ni $names} {
        error "BOARD must be one of {[join $names {, }]}, got '$name'"
    }
    set board [dict get [zskip_boards] $name]
    dict set board name $name
    foreach key {part board_part ps clock_mhz} {
        if {![dict exists $board $key]} {
            error "boards.ini: board \[$name\] lacks key '$key'"
        }
    }
    if {[dict get $board ps] ni {zynq7 zynqmp}} {
        error "boards.ini: board \[$name\] ps must be zynq7 or zynqmp, got '[dict get $board ps]'"
    }
    return $board
}

# -D flags of the HLS sources for a board, from the [hls_macros] table.
proc zskip_hls_defines {board} {
    set flags {}
    dict for {macro key} [dict get [zskip_boards] hls_macros] {
        lappend flags "-D${macro}=[dict get $board $key]"
    }
    return $flags
}

# The IP identity: top, vendor, library, version and vlnv.
proc zskip_ip {} {
    global zskip_overlay_dir
    set ip [dict get [zskip_ini_read [file join $zskip_overlay_dir ip.ini]] ip]
    dict set ip vlnv [join [list [dict get $ip vendor] [dict get $ip library] [dict get $ip top] [dict get $ip version]] :]
    return $ip
}

# The cycle timer beside the IP: cell and vlnv.
proc zskip_timer {} {
    global zskip_overlay_dir
    return [dict get [zskip_ini_read [file join $zskip_overlay_dir ip.ini]] timer]
}

# KEY=VALUE arguments over defaults; an unknown key is an error naming the known
# ones. Elements may hold several space-separated pairs, and tool options that
# some tool versions leave in argv (e.g. -tclargs) are skipped.
proc zskip_parse_args {argv defaults} {
    set args $defaults
    foreach arg [concat {*}$argv] {
        if {[string index $arg 0] eq "-"} {
            continue
        }
        if {![regexp {^([A-Z_]+)=(.*)$} $arg -> key value]} {
            error "arguments are KEY=VALUE, got '$arg'"
        }
        if {![dict exists $defaults $key]} {
            error "unknown argument $key: known are {[join [dict keys $defaults] {, }]}"
        }
        dict set args $key $value
    }
    return $args
}

# Where each step works and what it leaves for the next one.
proc zskip_build_dir {build board_name} {
    global zskip_overlay_dir
    if {$build eq ""} {
        return [file join $zskip_overlay_dir build $board_name]
    }
    return [file normalize $build]
}
proc zskip_hls_project {} { return zskip_hls }
proc zskip_hls_solution {} { return solution }
proc zskip_hls_ip_repo {build_dir} {
    return [file join $build_dir [zskip_hls_project] [zskip_hls_solution] impl ip]
}
