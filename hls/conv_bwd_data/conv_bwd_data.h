// Backward-data convolution on the sparse-scatter engine:
// dx = conv_transpose(dy, w), zero where the previous layer's ReLU mask is 0.
// Input-type skipping: only nonzero dy elements are scattered. Output-type
// skipping (Sarma et al.): the channel set of every target position is the
// mask itself, walked by the priority encoder, so a masked dx is never
// computed. Dense mode computes every dx and applies the mask at write-back.
#ifndef ZSKIP_CONV_BWD_DATA_H
#define ZSKIP_CONV_BWD_DATA_H

#include <stdint.h>

#include "../common/bits.h"
#include "../common/config.h"
#include "../common/counters.h"
#include "../common/engine_memory.h"
#include "../common/shapes.h"
#include "../common/sparse_scatter.h"
#include "../common/types.h"

namespace zskip {

// dy [N][K][OH][OW], w [K][C][R][S], out_mask bits [N][C][H][W] (read when
// has_mask) -> dx [N][C][H][W], on the engine memory `buf` (engine_memory.h).
// Returns ERR_NONE or the shape error.
template <class CFG, class SB>
unsigned conv_bwd_data(const conv_shape &sh, bool skip_zeros, bool has_mask, const float *dy,
                       const float *w, const uint32_t *out_mask, float *dx, scatter_engine_onchip<CFG> &buf,
                       SB &sb, kernel_counters &cnt) {
    static const unsigned X_MAX = scatter_engine_onchip<CFG>::XSIZE;
    static const unsigned CH_MAX = CFG::max_ch;
    static const unsigned PLANE_MAX = CFG::max_dim * CFG::max_dim;
    static const unsigned BATCH = TRIP_BATCH;
    static const unsigned X_BEATS_MAX = (X_MAX + BEAT_WORDS - 1) / BEAT_WORDS;
    const unsigned WORDS = scatter_engine_onchip<CFG>::WORDS;
    unsigned err = check_conv_shape<CFG>(sh);
    if (err) return err;
    sb.start_descriptor();
    const unsigned K = sh.k, C = sh.c, RS = sh.r * sh.s, PLANE = sh.h * sh.w, OPLANE = sh.oh * sh.ow;

    // weights stored [k][r][s][c] so a tap's channels are lanes
    uint64_t load = load_weights<CFG>(w, K, C, RS, true, buf.w);
    load += clear_accumulators<CFG>(buf.plane[0], buf.plane[1], PLANE * C);
    cnt.load_iters += load;
    uint64_t cycles = load + LOAD_DEPTH;

    fill_all_ones<CFG>(buf.ones, C);
    build_axis_from_output<CFG>(buf.rows, sh.oh, sh.h, sh.r, sh.stride, sh.pad);
    build_axis_from_output<CFG>(buf.cols, sh.ow, sh.w, sh.s, sh.stride, sh.pad);
    const bool mask_items = skip_zeros && has_mask;
    scatter_map m;
    m.a0 = 0; m.a_pos = C; m.a_tap = 0;
    m.b_pos = 0; m.b_tap = C;
    m.set_pos = mask_items ? WORDS : 0; m.words = (C + 31) / 32; m.channels = C;
    m.target_w = sh.w; m.ksize_s = sh.s;

IMAGE:
    for (unsigned n = 0; n < sh.n; ++n) {
#pragma HLS LOOP_TRIPCOUNT max=BATCH
        const unsigned bank = n & 1;
        acc_t *acc = buf.plane[bank];
        uint64_t mask_load = 0;
        if (has_mask) {
            // transpose the image's mask bits [c][h][w] into per-position channel sets
            const uint64_t base = (uint64_t)n * C * PLANE;
        MASK_C:
            for (unsigned c = 0; c < C; ++c) {
#pragma HLS LOOP_TRIPCOUNT max=CH_MAX
            MASK_POS:
                for (unsigned p = 0; p < PLANE; ++p) {
#pragma HLS LOOP_TRIPCOUNT max=PLANE_MAX
// 32 mask bits arrive per beat; the loop is unrolled by 32 against one word.
// The first channel of a set word overwrites it: no clearing pass.
#pragma HLS UNROLL factor=32
                    uint32_t &word = buf.sets[bank][p][c >> 5];
                    word = ((c & 31) ? word : 0u) |
                           ((uint32_t)get_bit(out_mask, base + (uint64_t)c * PLANE + p) << (c & 31));
                }
            }
            mask_load = ((uint64_t)C * PLANE + 31) / 32;
            cnt.load_iters += mask_load;
        }
        const uint32_t *sets = mask_items ? &buf.sets[bank][0][0] : buf.ones;
        uint64_t compute = SCAN_DEPTH + MAC_DEPTH;
    CHANNEL_K:
        for (unsigned k = 0; k < K; ++k) {
#pragma HLS LOOP_TRIPCOUNT max=CH_MAX
            m.b0 = k * RS * C;
            uint64_t plane;
            scatter_plane<CFG, wgt_t, grad_t>(dy + ((uint64_t)n * K + k) * OPLANE, sh.oh, sh.ow,
                                                                skip_zeros, buf.rows, buf.cols, C, m, sets,
                                                                acc, buf.w, buf.nz_grad, buf.items, sb, cnt, plane);
            compute += plane;
        }
        float *dxn = dx + (uint64_t)n * C * PLANE;
        unsigned wc = 0, wp = 0;
    WB_BEAT:
        for (unsigned i0 = 0; i0 < C * PLANE; i0 += BEAT_WORDS) {
#pragma HLS LOOP_TRIPCOUNT max=X_BEATS_MAX
#pragma HLS PIPELINE II=1
        WB_WORD:
            for (unsigned j = 0; j < BEAT_WORDS; ++j) {
// one beat of dx [c][h][w]: mask, quantise, store, clear
#pragma HLS UNROLL
                if (i0 + j < C * PLANE) {
                    grad_t v = grad_t(acc[wp * C + wc]);
                    acc[wp * C + wc] = 0;
                    if (has_mask && !((buf.sets[bank][wp][wc >> 5] >> (wc & 31)) & 1u)) v = 0;
                    count_nonfinite(v);
                    dxn[i0 + j] = to_f32(v);
                    if (++wp == PLANE) {
                        wp = 0;
                        ++wc;
                    }
                }
            }
        }
        uint64_t wb = beats((uint64_t)C * PLANE);
        cnt.wb_iters += wb;
        cycles += max3(mask_load, compute, wb);
    }
    cnt.cycles += cycles + WB_DEPTH;
    return ERR_NONE;
}

}  // namespace zskip

#endif
