"""The register map derived from the HLS top function (host/ip/register_map.py)."""
import pytest

from zskip.host.ip.register_map import driver_version, load_top, parse_top, parse_version

# The interface fixed by the lead for hls/zskip_top/zskip_top.cpp, with the
# pragma spellings Vitis HLS accepts (old "m_axi" and new "mode=m_axi").
FIXTURE = """
#include "zskip_top.h"
// void zskip_top(int commented_out) {
void zskip_top(const uint32_t *program, float *act, float *wgt, float *grad, uint32_t *bits,
               uint32_t *stats, uint32_t n_desc, uint32_t *version, uint64_t *cycles) {
#pragma HLS INTERFACE m_axi port=program offset=slave bundle=gmem_prog
#pragma HLS INTERFACE mode=m_axi port=act offset=slave bundle=gmem_act depth=64
#pragma HLS INTERFACE m_axi port=wgt offset=slave bundle=gmem_wgt
#pragma HLS INTERFACE m_axi port=grad offset=slave bundle=gmem_grad
#pragma HLS INTERFACE m_axi port=bits offset=slave bundle=gmem_bits
#pragma HLS INTERFACE m_axi port=stats offset=slave bundle=gmem_stats
#pragma HLS INTERFACE s_axilite port=program bundle=control
#pragma HLS INTERFACE s_axilite port=act bundle=control
#pragma HLS INTERFACE s_axilite port=wgt bundle=control
#pragma HLS INTERFACE s_axilite port=grad bundle=control
#pragma HLS INTERFACE s_axilite port=bits bundle=control
#pragma HLS INTERFACE s_axilite port=stats bundle=control
#pragma HLS INTERFACE s_axilite port=n_desc bundle=control
#pragma HLS INTERFACE s_axilite port=version bundle=control
#pragma HLS INTERFACE s_axilite port=cycles bundle=control
#pragma HLS INTERFACE s_axilite port=return bundle=control
    *version = 1;
}
"""

# The addresses Vitis HLS assigns, written out from UG1399's rules by hand
# (two data words + one reserved word per 64-bit input, data + ap_vld word per
# 32-bit output, three words per 64-bit output) as an independent check.
EXPECTED = {
    "CTRL": 0x00, "GIER": 0x04, "IP_IER": 0x08, "IP_ISR": 0x0C,
    "program_1": 0x10, "program_2": 0x14, "act_1": 0x1C, "act_2": 0x20,
    "wgt_1": 0x28, "wgt_2": 0x2C, "grad_1": 0x34, "grad_2": 0x38,
    "bits_1": 0x40, "bits_2": 0x44, "stats_1": 0x4C, "stats_2": 0x50,
    "n_desc": 0x58, "version": 0x60, "version_ctrl": 0x64,
    "cycles_1": 0x68, "cycles_2": 0x6C, "cycles_ctrl": 0x70,
}


def test_offsets_follow_vitis_hls_layout():
    top = parse_top(FIXTURE)
    assert {r.name: r.offset for r in top.registers} == EXPECTED
    assert top.pointer_arguments == ["program", "act", "wgt", "grad", "bits", "stats"]
    assert top.output_arguments == ["version", "cycles"]
    access = {r.name: r.access for r in top.registers}
    assert access["program_1"] == "write-only" and access["cycles_2"] == "read-only"


def test_pragmas_of_other_functions_do_not_count_and_m_axi_implies_control():
    other = "\nvoid helper(int *p) {\n#pragma HLS INTERFACE s_axilite port=p bundle=other\n}\n"
    no_lite = FIXTURE.replace("#pragma HLS INTERFACE s_axilite port=act bundle=control\n", "")
    top = parse_top(no_lite + other)
    assert {r.name: r.offset for r in top.registers} == EXPECTED


def test_pynq_register_map_built_from_it_addresses_the_same_words():
    import numpy as np
    from pynq.registers import RegisterMap

    top = parse_top(FIXTURE)
    words = np.zeros(top.map_size // 4, dtype=np.uint32)
    rm = RegisterMap.create_subclass("zskip_top", top.pynq_registers())(words)
    rm.n_desc = 0xABCD
    rm.CTRL.AP_START = 1
    assert words[EXPECTED["n_desc"] // 4] == 0xABCD
    assert words[0] == 1


@pytest.mark.parametrize("source, message", [
    (FIXTURE.replace("port=return", "port=ret"), "not arguments"),
    (FIXTURE.replace("void zskip_top", "void other_top"), "no definition"),
    (FIXTURE.replace("port=grad offset=slave", "port=grad offset=direct"), "offset=slave"),
    (FIXTURE.replace("port=n_desc bundle=control", "port=n_desc bundle=other"), "one bundle"),
])
def test_malformed_sources_rejected_with_reason(source, message):
    with pytest.raises(ValueError, match=message):
        parse_top(source)


@pytest.mark.parametrize("text, value", [
    ("#define ZSKIP_VERSION 0x00010002u\n", 0x10002),
    ("#  define ZSKIP_VERSION (7)\n", 7),
    ("#define ZSKIP_VERSION_MAJOR 1\n#define ZSKIP_VERSION 12\n", 12),
])
def test_version_parsed(text, value):
    assert parse_version(text) == value


def test_version_missing_is_an_error():
    with pytest.raises(ValueError, match="ZSKIP_VERSION"):
        parse_version("#define OTHER 1\n")


def test_shipped_top_function_has_the_interface_the_driver_expects():
    """hls/zskip_top/zskip_top.cpp yields the same map as the lead's interface above."""
    top = load_top()
    # the shipped top adds the vel port after bits (sgd_update reads velocities
    # through their own bundle): one 64-bit address (3 words) more from 0x4C
    shipped = {k: v for k, v in EXPECTED.items() if v < 0x4C}
    shipped.update({"vel_1": 0x4C, "vel_2": 0x50})
    shipped.update({k: v + 0xC for k, v in EXPECTED.items() if v >= 0x4C})
    assert {r.name: r.offset for r in top.registers} == shipped
    assert [a.m_axi_bundle for a in top.arguments if a.m_axi_bundle] == \
        ["gmem_prog", "gmem_act", "gmem_wgt", "gmem_grad", "gmem_bits", "gmem_vel", "gmem_stats"]


def test_shipped_version_header_parses():
    assert driver_version() > 0
