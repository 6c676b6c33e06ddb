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
    static const unsigned TAPS_MAX = CFG::max_ksize * CFG::max_ksize;
    static const unsigned OPLANE_MAX = CFG::max_dim * CFG::max_dim;
    static const unsigned PLANE_MAX = CFG::max_dim * CFG::max_dim;
    static const unsigned W_MAX = scatter_engine_onchip<CFG>::WSIZE;
    static const unsigned BATCH = TRIP_BATCH;
    const unsigned WORDS = scatter_engine_onchip<CFG>::WORDS;
    unsigned err = check_conv_shape<CFG>(sh);
    if (err) return err;
    sb.start_descriptor();
    const unsigned K = sh.k, C = sh.c, RS = sh.r * sh.s, PLANE = sh.h * sh.w, OPLANE = sh.oh * sh.ow;

CLEAR_DW:
    for (unsigned i = 0; i < K * RS * C; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=W_MAX
// one accumulator word cleared per cycle
#pragma HLS PIPELINE II=1
        buf.w[i] = 0;
    }
CLEAR_DB:
    for (unsigned k = 0; k < K; ++k) {
#pragma HLS LOOP_TRIPCOUNT max=CH_MAX
// one bias accumulator cleared per cycle
#pragma HLS PIPELINE II=1
        buf.bias[k] = 0;
    }
    uint64_t init = (uint64_t)K * RS * C + K;
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

IMAGE:
    for (unsigned n = 0; n < sh.n; ++n) {
#pragma HLS LOOP_TRIPCOUNT max=BATCH
        const unsigned bank = n & 1;
        acc_t *xb = buf.plane[bank];
    NZ_CLEAR:
        for (unsigned p = 0; p < PLANE; ++p) {
#pragma HLS LOOP_TRIPCOUNT max=PLANE_MAX
// one position's nonzero sets cleared per cycle
#pragma HLS PIPELINE II=1
        CLEAR_WORDS:
            for (unsigned ww = 0; ww < WORDS; ++ww) {
// a position's channel words are one wide register
#pragma HLS UNROLL
                buf.sets[bank][p][ww] = 0;
            }
        }
        const float *xn = x + (uint64_t)n * C * PLANE;
    LOAD_X_C:
        for (unsigned c = 0; c < C; ++c) {
#pragma HLS LOOP_TRIPCOUNT max=CH_MAX
        LOAD_X_POS:
            for (unsigned p = 0; p < PLANE; ++p) {
#pragma HLS LOOP_TRIPCOUNT max=PLANE_MAX
// one x per m_axi beat: quantise, store, set its nonzero bit
#pragma HLS PIPELINE II=1
                act_t v = from_f32<act_t>(xn[c * PLANE + p]);
                xb[p * C + c] = acc_t(v);
                buf.sets[bank][p][c >> 5] |= (uint32_t)(v != 0) << (c & 31);
            }
        }
        uint64_t load = (uint64_t)C * PLANE + PLANE;
        cnt.load_iters += load;
        const uint32_t *sets = skip_zeros ? &buf.sets[bank][0][0] : buf.ones;
        uint64_t compute = SCAN_DEPTH + MAC_DEPTH;
    CHANNEL_K:
        for (unsigned k = 0; k < K; ++k) {
#pragma HLS LOOP_TRIPCOUNT max=CH_MAX
            m.a0 = k * RS * C;
            uint64_t plane;
            scatter_plane<CFG, act_t, grad_t>(dy + ((uint64_t)n * K + k) * OPLANE, sh.oh, sh.ow,
                                                                skip_zeros, buf.rows, buf.cols, C, m, sets,
                                                                buf.w, xb, buf.nz_grad, buf.items, sb, cnt, plane, &buf.bias[k]);
            compute += plane;
        }
        cycles += max2(load, compute);
    }
    unsigned wi = 0;
WB_K:
    for (unsigned k = 0; k < K; ++k) {
#pragma HLS LOOP_TRIPCOUNT max=CH_MAX
    WB_C:
        for (unsigned c = 0; c < C; ++c) {
#pragma HLS LOOP_TRIPCOUNT max=CH_MAX
        WB_TAP:
            for (unsigned t = 0; t < RS; ++t, ++wi) {
#pragma HLS LOOP_TRIPCOUNT max=TAPS_MAX
// one dw per cycle in DDR order
#pragma HLS PIPELINE II=1
                dw[wi] = to_f32(grad_t(buf.w[(k * RS + t) * C + c]));
            }
        }
    }
WB_B:
    for (unsigned k = 0; k < K; ++k) {
#pragma HLS LOOP_TRIPCOUNT max=CH_MAX
// one db per cycle
#pragma HLS PIPELINE II=1
        db[k] = to_f32(grad_t(buf.bias[k]));
    }
    uint64_t wb = (uint64_t)K * C * RS + K;
    cnt.wb_iters += wb;
    cnt.cycles += cycles + wb + WB_DEPTH;
    return ERR_NONE;
}

}  // namespace zskip

#endif
