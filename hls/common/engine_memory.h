// The on-chip memory of the sparse-scatter engine, shared by the passes that
// run on it (conv_fwd, conv_bwd_data, conv_bwd_weight, and the fc passes with
// fc_config). The IP runs one descriptor at a time, so one set of arrays
// serves every pass and the footprint is this struct, not one per pass.
//
// Values are stored as acc_t, the widest type: weights (wgt_t) and
// activations (act_t) are exactly representable in it, and the MAC stage
// converts them back to their own type before multiplying (exact, so the
// arithmetic is that of the narrow types; in hardware the multiplier keeps
// the narrow width).
#ifndef ZSKIP_ENGINE_MEMORY_H
#define ZSKIP_ENGINE_MEMORY_H

#include <stdint.h>

#include "config.h"
#include "sparse_scatter.h"
#include "types.h"

namespace zskip {

template <class CFG>
struct scatter_engine_onchip {
    static const unsigned WSIZE = CFG::max_ch * CFG::max_ch * CFG::max_ksize * CFG::max_ksize;
    static const unsigned XSIZE = CFG::max_dim * CFG::max_dim * CFG::max_ch;
    static const unsigned PLANE = CFG::max_dim * CFG::max_dim;
    static const unsigned WORDS = set_words<CFG>::value;
    // conv_fwd: weights [c][r][s][k]; conv_bwd_data: weights [k][r][s][c];
    // conv_bwd_weight: dw accumulators [copy][k][r][s][c]
    acc_t w[WSIZE];
    // conv_fwd: bias; conv_bwd_weight: db accumulators
    acc_t bias[CFG::max_ch];
    // conv_fwd: output accumulators [oh][ow][k]; conv_bwd_data: dx accumulators
    // [h][w][c]; conv_bwd_weight: x [h][w][c]
    acc_t plane[XSIZE];
    // per position, a channel bit set: conv_bwd_data the ReLU mask,
    // conv_bwd_weight x != 0
    uint32_t sets[PLANE][WORDS];
    uint32_t ones[WORDS];
    tap_axis<CFG> rows, cols;
    // conv_bwd_data's gather form (conv_bwd_data_gather.h), one input channel
    // at a time: its dx accumulators [h][w] and its live outputs (h << 8 | w)
    // grouped by phase (dy, padded [opos][k], sits in plane; the weights,
    // padded [c][r][s][k], in w; the channel's mask bits in sets)
    acc_t gather_acc[PLANE];
    uint16_t gather_list[PLANE];
    // the MAC stage's arbiter and per-lane hazard history (registers)
    mac_arbiter<CFG> arb;
    hazard_history<CFG> hz;
// csim-path: proven by tests/test_emu_forms.py::test_lenet5_training_step_equal_in_both_forms
#ifndef __SYNTHESIS__
    // C-simulation speed path only (sparse_scatter.h): issue stamps per
    // accumulator address
    hazard_stamps<(WSIZE > XSIZE ? WSIZE : XSIZE)> stamps;
    csim_arbiter<CFG> carb;
#endif
};

// Before a descriptor's first MAC: no write of an earlier descriptor is in
// flight (its loads and clears ran first).
template <class CFG>
void engine_start_descriptor(scatter_engine_onchip<CFG> &buf) {
// csim-path: proven by tests/test_emu_forms.py::test_lenet5_training_step_equal_in_both_forms
#ifdef __SYNTHESIS__
    buf.hz.start_descriptor();
#else
// csim-path: proven by tests/test_emu_forms.py::test_lenet5_training_step_equal_in_both_forms
    buf.stamps.start_descriptor();
#endif
}

// The engine's memory for config CFG (one instance per config in the IP).
// Each accumulator and operand memory is split into pe_lanes banks, word i
// in bank i mod pe_lanes: lane l of the MAC stage owns bank l.
template <class CFG>
void scatter_engine_memory(scatter_engine_onchip<CFG> *&mem) {
    static scatter_engine_onchip<CFG> buf;
#pragma HLS ARRAY_PARTITION variable=buf.w cyclic factor=CFG::pe_lanes
#pragma HLS ARRAY_PARTITION variable=buf.plane cyclic factor=CFG::pe_lanes
#pragma HLS ARRAY_PARTITION variable=buf.bias cyclic factor=CFG::pe_lanes
// the encoder reads the channel sets of every tap of its window in one cycle
#pragma HLS ARRAY_PARTITION variable=buf.sets complete dim=1
#pragma HLS ARRAY_PARTITION variable=buf.arb.bank_used complete
#pragma HLS ARRAY_PARTITION variable=buf.arb.port_reads complete
#pragma HLS ARRAY_PARTITION variable=buf.hz.addr complete dim=0
#pragma HLS ARRAY_PARTITION variable=buf.hz.time complete dim=0
#pragma HLS ARRAY_PARTITION variable=buf.hz.valid complete dim=0
#pragma HLS ARRAY_PARTITION variable=buf.hz.head complete
#pragma HLS ARRAY_PARTITION variable=buf.rows.r complete dim=2
#pragma HLS ARRAY_PARTITION variable=buf.rows.t complete dim=2
#pragma HLS ARRAY_PARTITION variable=buf.cols.r complete dim=2
#pragma HLS ARRAY_PARTITION variable=buf.cols.t complete dim=2
#pragma HLS ARRAY_PARTITION variable=buf.ones complete
// the gather form's write-back reads 4 consecutive positions of one channel
// per cycle (one 128-bit beat of dx): 4 banks, word i in bank i mod 4
#pragma HLS ARRAY_PARTITION variable=buf.gather_acc cyclic factor=4
// its mask compaction appends up to 4 consecutive list entries per cycle and
// reads the taps of 4 positions of a row
#pragma HLS ARRAY_PARTITION variable=buf.gather_list cyclic factor=4
#pragma HLS ARRAY_PARTITION variable=buf.cols.n complete
    mem = &buf;
}

}  // namespace zskip

#endif
