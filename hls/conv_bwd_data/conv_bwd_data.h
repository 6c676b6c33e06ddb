// Backward-data convolution on the sparse-scatter engine:
// dx = conv_transpose(dy, w), zero where the previous layer's ReLU mask is 0.
// Input-type skipping: only nonzero dy elements are scattered. Output-type
// skipping (Sarma et al.): the channel set of every target position is the
// mask itself, walked by the encoder, so a masked dx is never computed.
// Dense mode computes every dx and applies the mask at write-back.
#ifndef ZSKIP_CONV_BWD_DATA_H
#define ZSKIP_CONV_BWD_DATA_H

#include <stdint.h>

#include "../common/bits.h"
#include "../common/config.h"
#include "../common/counters.h"
#include "../common/engine_memory.h"
#include "../common/shapes.h"
#include "../common/sparse_scatter.h"
#include "../common/hw_assert.h"
#include "../common/types.h"
#include "../common/wide_port.h"

namespace zskip {

// dy [N][K][OH][OW], w [K][C][R][S], out_mask bits [N][C][H][W] (read when
// has_mask) -> dx [N][C][H][W], on the engine memory `buf` (engine_memory.h).
// Returns ERR_NONE or the shape error. Per image: mask load, region,
// write-back, one after another.
template <class CFG>
unsigned conv_bwd_data(const conv_shape &sh, bool skip_zeros, bool has_mask, words<const float> dy, words<const float> w,
                       words<const uint32_t> out_mask, words<float> dx, scatter_engine_onchip<CFG> &buf, kernel_counters &cnt) {
    static const unsigned X_MAX = scatter_engine_onchip<CFG>::XSIZE;
    static const unsigned BATCH = TRIP_BATCH;
    const unsigned WORDS = scatter_engine_onchip<CFG>::WORDS;
    unsigned err = check_conv_shape<CFG>(sh);
    if (err) return err;
    const unsigned K = sh.k, C = sh.c, RS = sh.r * sh.s, PLANE = sh.h * sh.w, OPLANE = sh.oh * sh.ow;
    engine_start_descriptor(buf);

    // weights stored [k][r][s][c] so a tap's channels are consecutive
    uint64_t cycles = load_weights<CFG>(w, K, C, RS, true, buf.w, cnt);
    cycles += clear_accumulators<CFG>(buf.plane, PLANE * C);

    fill_all_ones<CFG>(buf.ones, C);
    cycles += ZSKIP_CYCLES(AXIS_OUT, build_axis_from_output<CFG>(buf.rows, sh.oh, sh.h, sh.r, sh.stride, sh.pad));
    cycles += ZSKIP_CYCLES(AXIS_OUT, build_axis_from_output<CFG>(buf.cols, sh.ow, sh.w, sh.s, sh.stride, sh.pad));
    const bool mask_items = skip_zeros && has_mask;
    scatter_map m;
    m.a_plane = 0; m.a_pos = C; m.a_tap = 0;
    m.b_plane = RS * C; m.b_pos = 0; m.b_tap = C;
    m.set_pos = mask_items ? WORDS : 0; m.words = (C + 31) / 32; m.channels = C;
    m.target_w = sh.w; m.ksize_s = sh.s;
    m.copies = 1; m.copy_stride = 0;
    m.a_size = scatter_engine_onchip<CFG>::XSIZE; m.b_size = scatter_engine_onchip<CFG>::WSIZE;

    // dx is written a beat per cycle when a beat stays in one channel (PLANE a
    // multiple of 4: every image starts on a beat) and its 4 positions, C
    // words apart in plane, fall in 4 distinct of the P banks
    static const unsigned P = CFG::pe_lanes;
    const bool wide_wb = PLANE % BEAT_WORDS == 0 && beat_in_distinct_banks(C, P);
IMAGE:
    for (unsigned n = 0; n < sh.n; ++n) {
#pragma HLS LOOP_TRIPCOUNT max=BATCH
        if (has_mask) {
            // transpose the image's mask bits [c][h][w] into per-position
            // channel sets, one bit per cycle; the first channel of a set
            // word overwrites it, so no clearing pass is needed
            const uint64_t base = (uint64_t)n * C * PLANE;
            unsigned mc = 0, mp = 0;
        BWD_DATA_MASK:
            for (unsigned i = 0; i < C * PLANE; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=X_MAX
#pragma HLS PIPELINE II=1
                uint32_t &word = buf.sets[mp][mc >> 5];
                word = ((mc & 31) ? word : 0u) | ((uint32_t)get_bit(out_mask, base + i) << (mc & 31));
                if (++mp == PLANE) {
                    mp = 0;
                    ++mc;
                }
            }
            cnt.load_iters += (uint64_t)C * PLANE;
            cycles += ZSKIP_CYCLES(BWD_DATA_MASK, (uint64_t)C * PLANE);
        }
        const uint32_t *sets = mask_items ? &buf.sets[0][0] : buf.ones;
        const region_trips r = scatter_image<CFG, wgt_t, grad_t, false>(dy + (uint64_t)n * K * OPLANE, K, sh.oh,
                                                                         sh.ow, skip_zeros, m, sets, buf.plane,
                                                                         buf.w, 0, buf, cnt);
        cycles += region_cycles(r);
        words<float> dxn = dx + (uint64_t)n * C * PLANE;
        if (wide_wb) {
            unsigned wc = 0, wp = 0;
        BWD_DATA_WB_BEAT:
            for (unsigned b = 0; b < C * PLANE / BEAT_WORDS; ++b) {
#pragma HLS LOOP_TRIPCOUNT max=X_MAX/BEAT_WORDS
// one 128-bit beat of dx per cycle: 4 positions of channel wc, C words apart
// in plane (4 distinct banks: wide_wb), their mask bits in 4 rows of sets
#pragma HLS PIPELINE II=1
                float word[BEAT_WORDS];
// the 4 lanes are registers of the one beat written below
#pragma HLS ARRAY_PARTITION variable=word complete
            BWD_DATA_WB_LANE:
                for (unsigned j = 0; j < BEAT_WORDS; ++j) {
#pragma HLS UNROLL
                    const unsigned at = (wp + j) * C + wc;
                    ZSKIP_HW_ASSERT(j == 0 || at % P != (wp * C + wc) % P, "BWD_DATA_WB_BEAT",
                                    "two words of a beat in one plane bank");
                    grad_t v = grad_t(buf.plane[at]);
                    buf.plane[at] = 0;
                    if (has_mask && !((buf.sets[wp + j][wc >> 5] >> (wc & 31)) & 1u)) v = 0;
                    count_nonfinite(v);
                    word[j] = to_f32(v);
                }
                dxn.beat_at((uint64_t)b * BEAT_WORDS) = make_beat(word);
                wp += BEAT_WORDS;
                if (wp == PLANE) {
                    wp = 0;
                    ++wc;
                }
            }
            cnt.wb_iters += (uint64_t)C * PLANE / BEAT_WORDS;
            cycles += ZSKIP_CYCLES(BWD_DATA_WB_BEAT, (uint64_t)C * PLANE / BEAT_WORDS);
            continue;
        }
        unsigned wc = 0, wp = 0;
    BWD_DATA_WB:
        for (unsigned i = 0; i < C * PLANE; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=X_MAX
// one word of dx [c][h][w] per cycle: mask, quantise, store, clear
#pragma HLS PIPELINE II=1
            grad_t v = grad_t(buf.plane[wp * C + wc]);
            buf.plane[wp * C + wc] = 0;
            if (has_mask && !((buf.sets[wp][wc >> 5] >> (wc & 31)) & 1u)) v = 0;
            count_nonfinite(v);
            dxn[i] = to_f32(v);
            if (++wp == PLANE) {
                wp = 0;
                ++wc;
            }
        }
        cnt.wb_iters += (uint64_t)C * PLANE;
        cycles += ZSKIP_CYCLES(BWD_DATA_WB, (uint64_t)C * PLANE);
    }
    cnt.cycles += cycles;
    return ERR_NONE;
}

}  // namespace zskip

#endif
