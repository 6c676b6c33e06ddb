// The on-chip memory of the sparse-scatter engine, shared by the three
// passes that run on it (conv_fwd, conv_bwd_data, conv_bwd_weight, and the fc
// passes with fc_config). The IP runs one descriptor at a time, so one set of
// arrays serves every pass and the footprint is this struct, not the sum of
// one struct per pass.
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
    // words of one partial accumulator bank: the accumulators one plane's
    // elements can reach when banked (a dw plane, taps x channels; the
    // outputs of a 1x1 forward pass, channels)
    static const unsigned BANK = CFG::max_ksize * CFG::max_ksize * CFG::max_ch;
    // conv_fwd: weights [c][r][s][k]; conv_bwd_data: weights [k][r][s][c];
    // conv_bwd_weight: dw accumulators [k][r][s][c]
    acc_t w[WSIZE];
    // conv_fwd: bias; conv_bwd_weight: db accumulators
    acc_t bias[CFG::max_ch];
    // conv_fwd: output accumulators [oh][ow][k]; conv_bwd_data: dx accumulators
    // [h][w][c]; conv_bwd_weight: x [h][w][c]; double-buffered across images
    acc_t plane[2][XSIZE];
    // per position, a channel bit set: conv_bwd_data the ReLU mask,
    // conv_bwd_weight x != 0; double-buffered across images
    uint32_t sets[2][PLANE][WORDS];
    uint32_t ones[WORDS];
    tap_axis<CFG> rows, cols;
    nz_list<CFG, act_t> nz_act;    // conv_fwd streams x
    nz_list<CFG, grad_t> nz_grad;  // the backward passes stream dy
    item_list<CFG> items;
    // conv_bwd_weight, conv_fwd of a 1x1 output: ACC_LATENCY partial
    // accumulator banks (acc_banks, sparse_scatter.h)
    acc_t wbank[ACC_LATENCY * BANK];
};

// The C-simulation model of the MAC stage's accumulator scoreboard (see
// sparse_scatter.h), one per engine like the accumulators it guards.
template <class CFG>
struct engine_scoreboard {
    // the accumulators, then the partial banks from BANK_BASE
    static const unsigned BANK_BASE = scatter_engine_onchip<CFG>::WSIZE > scatter_engine_onchip<CFG>::XSIZE
                                          ? scatter_engine_onchip<CFG>::WSIZE
                                          : scatter_engine_onchip<CFG>::XSIZE;
    static const unsigned SIZE = BANK_BASE + ACC_LATENCY * scatter_engine_onchip<CFG>::BANK;
    typedef acc_scoreboard<SIZE> type;
};

// The engine's memory for config CFG (one instance per config in the IP).
template <class CFG>
void scatter_engine_memory(scatter_engine_onchip<CFG> *&mem, typename engine_scoreboard<CFG>::type *&sb) {
    static scatter_engine_onchip<CFG> buf;
    static typename engine_scoreboard<CFG>::type board;
    mem = &buf;
    sb = &board;
}

}  // namespace zskip

#endif
