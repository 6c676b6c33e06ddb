// Backward-weight convolution on the sparse-scatter engine:
// dw[k][c][r][s] = sum dy[n][k][oh][ow] * x[n][c][h][w], db[k] = sum dy.
// Only nonzero dy elements are scattered, and per tap only the channels
// whose x is nonzero (a bit set built while x is loaded, walked by the
// priority encoder): a pair with a zero operand costs no MAC lane.
#ifndef ZSKIP_CONV_BWD_WEIGHT_H
#define ZSKIP_CONV_BWD_WEIGHT_H

#include <stdint.h>

#include "../common/config.h"
#include "../common/counters.h"
#include "../common/engine_memory.h"
#include "../common/shapes.h"
#include "../common/sparse_scatter.h"
#include "../common/types.h"

namespace zskip {

// x [N][C][H][W], dy [N][K][OH][OW] -> dw [K][C][R][S], db [K].
// On the engine memory `buf` (engine_memory.h). Returns ERR_NONE or the
// shape error.
template <class CFG, class SB>
unsigned conv_bwd_weight(const conv_shape &sh, bool skip_zeros, const float *x, const float *dy,
                         float *dw, float *db, scatter_engine_onchip<CFG> &buf, SB &sb, kernel_counters &cnt) {
    static const unsigned CH_MAX = CFG::max_ch;
    static const unsigned W_MAX = scatter_engine_onchip<CFG>::WSIZE;
    static const unsigned BATCH = TRIP_BATCH;
    static const unsigned X_BEATS_MAX = (scatter_engine_onchip<CFG>::XSIZE + BEAT_WORDS - 1) / BEAT_WORDS;
    static const unsigned B_BEATS_MAX = (CH_MAX + BEAT_WORDS - 1) / BEAT_WORDS;
    static const unsigned W_BEATS_MAX = (W_MAX + BEAT_WORDS - 1) / BEAT_WORDS;
    const unsigned WORDS = scatter_engine_onchip<CFG>::WORDS;
    unsigned err = check_conv_shape<CFG>(sh);
    if (err) return err;
    sb.start_descriptor();
    const unsigned K = sh.k, C = sh.c, RS = sh.r * sh.s, PLANE = sh.h * sh.w, OPLANE = sh.oh * sh.ow;

    uint64_t init = clear_accumulators<CFG>(buf.w, 0, K * RS * C);
    init += clear_accumulators<CFG>(buf.bias, 0, K);
    cnt.load_iters += init;
    uint64_t cycles = init + LOAD_DEPTH;

    fill_all_ones<CFG>(buf.ones, C);
    build_axis_from_output<CFG>(buf.rows, sh.oh, sh.h, sh.r, sh.stride, sh.pad);
    build_axis_from_output<CFG>(buf.cols, sh.ow, sh.w, sh.s, sh.stride, sh.pad);
    scatter_map m;
    m.a_pos = 0; m.a_tap = C;
    m.b0 = 0; m.b_pos = C; m.b_tap = 0;
    m.set_pos = skip_zeros ? WORDS : 0; m.words = (C + 31) / 32; m.channels = C;
    m.target_w = sh.w; m.ksize_s = sh.s;
    // Partial dw banks where an element's items fit in fewer MAC iterations
    // than the adder latency, so consecutive dy elements (which all update
    // dw[k]) would stall on each other; a 1x1 output has one element per plane.
    const unsigned plane_words = RS * C;
    const bool banked = OPLANE > 1 && (plane_words + CFG::pe_lanes - 1) / CFG::pe_lanes < ACC_LATENCY;
    acc_banks banks = no_banks();
    if (banked) {
        banks.base = buf.wbank;
        banks.stride = scatter_engine_onchip<CFG>::BANK;
        banks.sb_base = engine_scoreboard<CFG>::BANK_BASE;
    }

IMAGE:
    for (unsigned n = 0; n < sh.n; ++n) {
#pragma HLS LOOP_TRIPCOUNT max=BATCH
        const unsigned bank = n & 1;
        acc_t *xb = buf.plane[bank];
        const float *xn = x + (uint64_t)n * C * PLANE;
        unsigned lc = 0, lp = 0;
    LOAD_X_BEAT:
        for (unsigned i0 = 0; i0 < C * PLANE; i0 += BEAT_WORDS) {
#pragma HLS LOOP_TRIPCOUNT max=X_BEATS_MAX
#pragma HLS PIPELINE II=1
        LOAD_X_WORD:
            for (unsigned j = 0; j < BEAT_WORDS; ++j) {
// one beat of x [c][h][w]: quantise, store, set the nonzero bits (the
// first channel of a set word overwrites it, so no clearing pass is needed)
#pragma HLS UNROLL
                if (i0 + j < C * PLANE) {
                    act_t v = from_f32<act_t>(xn[i0 + j]);
                    xb[lp * C + lc] = acc_t(v);
                    uint32_t &word = buf.sets[bank][lp][lc >> 5];
                    word = ((lc & 31) ? word : 0u) | ((uint32_t)(v != 0) << (lc & 31));
                    if (++lp == PLANE) {
                        lp = 0;
                        ++lc;
                    }
                }
            }
        }
        uint64_t load = beats((uint64_t)C * PLANE);
        cnt.load_iters += load;
        const uint32_t *sets = skip_zeros ? &buf.sets[bank][0][0] : buf.ones;
        uint64_t compute = SCAN_DEPTH + MAC_DEPTH;
    CHANNEL_K:
        for (unsigned k = 0; k < K; ++k) {
#pragma HLS LOOP_TRIPCOUNT max=CH_MAX
            m.a0 = banked ? 0 : k * plane_words;
            uint64_t plane;
            scatter_plane<CFG, act_t, grad_t>(dy + ((uint64_t)n * K + k) * OPLANE, sh.oh, sh.ow,
                                                                skip_zeros, buf.rows, buf.cols, C, m, sets,
                                                                buf.w, xb, buf.nz_grad, buf.items, sb, cnt, plane, &buf.bias[k],
                                                                banked ? &banks : 0);
            compute += plane;
            if (banked) compute += sum_banks<CFG>(banks, plane_words, buf.w + k * plane_words, sb, cnt);
        }
        cycles += max2(load, compute);
    }
    unsigned wk = 0, wc = 0, wt = 0;
WB_BEAT:
    for (unsigned i0 = 0; i0 < K * C * RS; i0 += BEAT_WORDS) {
#pragma HLS LOOP_TRIPCOUNT max=W_BEATS_MAX
#pragma HLS PIPELINE II=1
    WB_WORD:
        for (unsigned j = 0; j < BEAT_WORDS; ++j) {
// one beat of dw in DDR order [k][c][r][s]
#pragma HLS UNROLL
            if (i0 + j < K * C * RS) {
                const grad_t g = grad_t(buf.w[(wk * RS + wt) * C + wc]);
                count_nonfinite(g);
                dw[i0 + j] = to_f32(g);
                if (++wt == RS) {
                    wt = 0;
                    if (++wc == C) {
                        wc = 0;
                        ++wk;
                    }
                }
            }
        }
    }
WB_B:
    for (unsigned k0 = 0; k0 < K; k0 += BEAT_WORDS) {
#pragma HLS LOOP_TRIPCOUNT max=B_BEATS_MAX
#pragma HLS PIPELINE II=1
    WB_B_WORD:
        for (unsigned j = 0; j < BEAT_WORDS; ++j) {
// one beat of db
#pragma HLS UNROLL
            if (k0 + j < K) {
                const grad_t g = grad_t(buf.bias[k0 + j]);
                count_nonfinite(g);
                db[k0 + j] = to_f32(g);
            }
        }
    }
    uint64_t wb = beats((uint64_t)K * C * RS) + beats(K);
    cnt.wb_iters += wb;
    cnt.cycles += cycles + wb + WB_DEPTH;
    return ERR_NONE;
}

}  // namespace zskip

#endif
