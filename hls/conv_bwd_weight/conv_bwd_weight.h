// Backward-weight convolution on the sparse-scatter engine:
// dw[k][c][r][s] = sum dy[n][k][oh][ow] * x[n][c][h][w], db[k] = sum dy.
// Only nonzero dy elements are scattered, and per tap only the channels
// whose x is nonzero (a bit set built while x is loaded, walked by the
// encoder): a pair with a zero operand costs no MAC lane.
#ifndef ZSKIP_CONV_BWD_WEIGHT_H
#define ZSKIP_CONV_BWD_WEIGHT_H

#include <stdint.h>

#include "../common/config.h"
#include "../common/counters.h"
#include "../common/engine_memory.h"
#include "../common/shapes.h"
#include "../common/sparse_scatter.h"
#include "../common/hw_assert.h"
#include "../common/types.h"
#include "../common/wide_port.h"

namespace zskip {

// x [N][C][H][W], dy [N][K][OH][OW] -> dw [K][C][R][S], db [K].
// On the engine memory `buf` (engine_memory.h). Returns ERR_NONE or the
// shape error. Per image: x load, region; then the write-back.
template <class CFG>
unsigned conv_bwd_weight(const conv_shape &sh, bool skip_zeros, words<const float> x, words<const float> dy, words<float> dw,
                         words<float> db, scatter_engine_onchip<CFG> &buf, kernel_counters &cnt) {
    static const unsigned CH_MAX = CFG::max_ch;
    static const unsigned W_MAX = scatter_engine_onchip<CFG>::WSIZE;
    static const unsigned X_MAX = scatter_engine_onchip<CFG>::XSIZE;
    static const unsigned BATCH = TRIP_BATCH;
    static const unsigned L = ACC_LATENCY;
    const unsigned WORDS = scatter_engine_onchip<CFG>::WORDS;
    unsigned err = check_conv_shape<CFG>(sh);
    if (err) return err;
    const unsigned K = sh.k, C = sh.c, RS = sh.r * sh.s, PLANE = sh.h * sh.w, OPLANE = sh.oh * sh.ow;
    engine_start_descriptor(buf);
    // Partial dw copies where an element's items fit in fewer lane-cycles
    // than the adder latency, so consecutive dy elements (which all update
    // dw[k]) would wait on each other; the copies live in buf.w beside dw.
    const unsigned plane_words = RS * C, dw_words = K * RS * C;
    const unsigned copies =
        OPLANE > 1 && (plane_words + CFG::pe_lanes - 1) / CFG::pe_lanes < L && L * dw_words <= W_MAX ? L : 1;

    uint64_t cycles = clear_accumulators<CFG>(buf.w, copies * dw_words);
    cycles += clear_accumulators<CFG>(buf.bias, K);

    fill_all_ones<CFG>(buf.ones, C);
    cycles += ZSKIP_CYCLES(AXIS_OUT, build_axis_from_output<CFG>(buf.rows, sh.oh, sh.h, sh.r, sh.stride, sh.pad));
    cycles += ZSKIP_CYCLES(AXIS_OUT, build_axis_from_output<CFG>(buf.cols, sh.ow, sh.w, sh.s, sh.stride, sh.pad));
    scatter_map m;
    m.a_plane = plane_words; m.a_pos = 0; m.a_tap = C;
    m.b_plane = 0; m.b_pos = C; m.b_tap = 0;
    m.set_pos = skip_zeros ? WORDS : 0; m.words = (C + 31) / 32; m.channels = C;
    m.target_w = sh.w; m.ksize_s = sh.s;
    m.copies = copies; m.copy_stride = dw_words;
    m.a_size = scatter_engine_onchip<CFG>::WSIZE; m.b_size = scatter_engine_onchip<CFG>::XSIZE;

    // x loads a beat per cycle when a beat stays in one channel (PLANE a
    // multiple of 4: every image starts on a beat) and its 4 positions, C
    // words apart in plane, fall in 4 distinct of the P banks
    static const unsigned P = CFG::pe_lanes;
    const bool wide_x = PLANE % BEAT_WORDS == 0 && beat_in_distinct_banks(C, P);
IMAGE:
    for (unsigned n = 0; n < sh.n; ++n) {
#pragma HLS LOOP_TRIPCOUNT max=BATCH
        words<const float> xn = x + (uint64_t)n * C * PLANE;
        if (wide_x) {
            unsigned lc = 0, lp = 0;
        BWD_W_LOAD_X_BEAT:
            for (unsigned b = 0; b < C * PLANE / BEAT_WORDS; ++b) {
#pragma HLS LOOP_TRIPCOUNT max=X_MAX/BEAT_WORDS
// one 128-bit beat of x per cycle: 4 positions of channel lc, C words apart
// in plane (4 distinct banks: wide_x) and 4 rows of sets (one bank each)
#pragma HLS PIPELINE II=1
                float word[BEAT_WORDS];
// the 4 lanes of the one beat read below are registers
#pragma HLS ARRAY_PARTITION variable=word complete
                split_beat(xn.beat_at((uint64_t)b * BEAT_WORDS), word);
            BWD_W_LOAD_X_LANE:
                for (unsigned j = 0; j < BEAT_WORDS; ++j) {
#pragma HLS UNROLL
                    const unsigned at = (lp + j) * C + lc;
                    ZSKIP_HW_ASSERT(j == 0 || at % P != (lp * C + lc) % P, "BWD_W_LOAD_X_BEAT",
                                    "two words of a beat in one plane bank");
                    act_t v = from_f32<act_t>(word[j]);
                    buf.plane[at] = acc_t(v);
                    uint32_t &set = buf.sets[lp + j][lc >> 5];
                    set = ((lc & 31) ? set : 0u) | ((uint32_t)(v != 0) << (lc & 31));
                }
                lp += BEAT_WORDS;
                if (lp == PLANE) {
                    lp = 0;
                    ++lc;
                }
            }
            cnt.load_iters += (uint64_t)C * PLANE / BEAT_WORDS;
            cycles += ZSKIP_CYCLES(BWD_W_LOAD_X_BEAT, (uint64_t)C * PLANE / BEAT_WORDS);
        } else {
            unsigned lc = 0, lp = 0;
        BWD_W_LOAD_X:
            for (unsigned i = 0; i < C * PLANE; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=X_MAX
// one word of x [c][h][w] per cycle: quantise, store, set the nonzero bit
// (the first channel of a set word overwrites it: no clearing pass)
#pragma HLS PIPELINE II=1
                act_t v = from_f32<act_t>(xn[i]);
                buf.plane[lp * C + lc] = acc_t(v);
                uint32_t &word = buf.sets[lp][lc >> 5];
                word = ((lc & 31) ? word : 0u) | ((uint32_t)(v != 0) << (lc & 31));
                if (++lp == PLANE) {
                    lp = 0;
                    ++lc;
                }
            }
            cnt.load_iters += (uint64_t)C * PLANE;
            cycles += ZSKIP_CYCLES(BWD_W_LOAD_X, (uint64_t)C * PLANE);
        }
        const uint32_t *sets = skip_zeros ? &buf.sets[0][0] : buf.ones;
        const region_trips r = scatter_image<CFG, act_t, grad_t, true>(dy + (uint64_t)n * K * OPLANE, K, sh.oh,
                                                                        sh.ow, skip_zeros, m, sets, buf.w,
                                                                        buf.plane, buf.bias, buf, cnt);
        cycles += region_cycles(r);
    }
    unsigned wk = 0, wc = 0, wt = 0;
    if (copies == 1) {
    BWD_W_WB:
        for (unsigned i = 0; i < dw_words; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=W_MAX
// one word of dw in DDR order [k][c][r][s] per cycle
#pragma HLS PIPELINE II=1
            const grad_t g = grad_t(buf.w[(wk * RS + wt) * C + wc]);
            count_nonfinite(g);
            dw[i] = to_f32(g);
            if (++wt == RS) {
                wt = 0;
                if (++wc == C) {
                    wc = 0;
                    ++wk;
                }
            }
        }
        cycles += ZSKIP_CYCLES(BWD_W_WB, dw_words);
    } else {
    BWD_W_WB_SUM:
        for (unsigned i = 0; i < dw_words; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=W_MAX
// one word of dw per ACC_LATENCY cycles: its copies are read one per cycle
// from the word's bank, then added by a tree
#pragma HLS PIPELINE II=ACC_LATENCY
            const unsigned at = (wk * RS + wt) * C + wc;
            acc_t s = 0;
        BWD_W_WB_COPY:
            for (unsigned j = 0; j < L; ++j) {
#pragma HLS UNROLL
                s += buf.w[at + j * dw_words];
            }
            const grad_t g = grad_t(s);
            count_nonfinite(g);
            dw[i] = to_f32(g);
            if (++wt == RS) {
                wt = 0;
                if (++wc == C) {
                    wc = 0;
                    ++wk;
                }
            }
        }
        cycles += ZSKIP_CYCLES(BWD_W_WB_SUM, dw_words);
    }
BWD_W_WB_B:
    for (unsigned k = 0; k < K; ++k) {
#pragma HLS LOOP_TRIPCOUNT max=CH_MAX
// one word of db per cycle
#pragma HLS PIPELINE II=1
        const grad_t g = grad_t(buf.bias[k]);
        count_nonfinite(g);
        db[k] = to_f32(g);
    }
    cycles += ZSKIP_CYCLES(BWD_W_WB_B, K);
    cnt.wb_iters += (uint64_t)dw_words + K;
    cnt.cycles += cycles;
    return ERR_NONE;
}

}  // namespace zskip

#endif
