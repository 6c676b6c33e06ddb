// Forward convolution on the sparse-scatter engine: y = relu(conv(x, w) + b).
// Input-type skipping: only nonzero x elements are scattered into the
// output accumulators. Writes the ReLU mask (y > 0) for the backward pass.
#ifndef ZSKIP_CONV_FWD_H
#define ZSKIP_CONV_FWD_H

#include <stdint.h>

#include "../common/bits.h"
#include "../common/config.h"
#include "../common/counters.h"
#include "../common/engine_memory.h"
#include "../common/shapes.h"
#include "../common/sparse_scatter.h"
#include "../common/types.h"

namespace zskip {

// x [N][C][H][W], w [K][C][R][S], b [K] -> y [N][K][OH][OW], mask bits of y > 0
// (written when relu), on the engine memory `buf` (engine_memory.h). Returns
// ERR_NONE or the shape error.
template <class CFG, class SB>
unsigned conv_fwd(const conv_shape &sh, bool skip_zeros, bool relu, const float *x, const float *w,
                  const float *b, float *y, uint32_t *mask, scatter_engine_onchip<CFG> &buf, SB &sb,
                  kernel_counters &cnt) {
    static const unsigned O_MAX = scatter_engine_onchip<CFG>::XSIZE;
    static const unsigned CH_MAX = CFG::max_ch;
    static const unsigned BATCH = TRIP_BATCH;
    static const unsigned B_BEATS_MAX = (CH_MAX + BEAT_WORDS - 1) / BEAT_WORDS;
    static const unsigned Y_BEATS_MAX = (O_MAX + BEAT_WORDS - 1) / BEAT_WORDS;
    unsigned err = check_conv_shape<CFG>(sh);
    if (err) return err;
    sb.start_descriptor();
    const unsigned K = sh.k, C = sh.c, RS = sh.r * sh.s, PLANE = sh.h * sh.w, OPLANE = sh.oh * sh.ow;

    // weights stay on chip for the whole batch: one pass over w in DDR order
    uint64_t load = load_weights<CFG>(w, K, C, RS, false, buf.w);
    unsigned bk = 0;
LOAD_B:
    for (unsigned k0 = 0; k0 < K; k0 += BEAT_WORDS) {
#pragma HLS LOOP_TRIPCOUNT max=B_BEATS_MAX
#pragma HLS PIPELINE II=1
    LOAD_B_WORD:
        for (unsigned j = 0; j < BEAT_WORDS; ++j) {
#pragma HLS UNROLL
            if (k0 + j < K) buf.bias[bk++] = acc_t(from_f32<wgt_t>(b[k0 + j]));
        }
    }
    load += beats(K);
    // both accumulator banks cleared in the same cycles
    load += clear_accumulators<CFG>(buf.plane[0], buf.plane[1], OPLANE * K);
    cnt.load_iters += load;
    uint64_t cycles = load + LOAD_DEPTH;

    fill_all_ones<CFG>(buf.ones, K);
    build_axis_from_input<CFG>(buf.rows, sh.h, sh.oh, sh.r, sh.stride, sh.pad);
    build_axis_from_input<CFG>(buf.cols, sh.w, sh.ow, sh.s, sh.stride, sh.pad);
    scatter_map m;
    m.a0 = 0; m.a_pos = K; m.a_tap = 0;
    m.b_pos = 0; m.b_tap = K;
    m.set_pos = 0; m.words = (K + 31) / 32; m.channels = K;
    m.target_w = sh.ow; m.ksize_s = sh.s;
    // A 1x1 output (the fully-connected layer): every element of every plane
    // updates the same K accumulators; where they fit in fewer MAC iterations
    // than the adder latency, partial banks keep consecutive elements apart.
    const bool banked = OPLANE == 1 && (K + CFG::pe_lanes - 1) / CFG::pe_lanes < ACC_LATENCY;
    acc_banks banks = no_banks();
    if (banked) {
        banks.base = buf.wbank;
        banks.stride = scatter_engine_onchip<CFG>::BANK;
        banks.sb_base = engine_scoreboard<CFG>::BANK_BASE;
    }

    bit_writer mask_out(mask);
IMAGE:
    for (unsigned n = 0; n < sh.n; ++n) {
#pragma HLS LOOP_TRIPCOUNT max=BATCH
        acc_t *acc = buf.plane[n & 1];
        uint64_t compute = SCAN_DEPTH + MAC_DEPTH;
    CHANNEL:
        for (unsigned c = 0; c < C; ++c) {
#pragma HLS LOOP_TRIPCOUNT max=CH_MAX
            m.b0 = c * RS * K;
            uint64_t plane;
            scatter_plane<CFG, wgt_t, act_t>(x + ((uint64_t)n * C + c) * PLANE, sh.h, sh.w,
                                                               skip_zeros, buf.rows, buf.cols, K, m,
                                                               buf.ones, acc, buf.w, buf.nz_act, buf.items, sb, cnt, plane,
                                                               0, banked ? &banks : 0);
            compute += plane;
        }
        if (banked) compute += sum_banks<CFG>(banks, K, acc, sb, cnt);
        // write-back of this bank overlaps the next image's compute in the other bank
        float *yn = y + (uint64_t)n * K * OPLANE;
        unsigned wk = 0, wp = 0;
    WB_BEAT:
        for (unsigned i0 = 0; i0 < K * OPLANE; i0 += BEAT_WORDS) {
#pragma HLS LOOP_TRIPCOUNT max=Y_BEATS_MAX
#pragma HLS PIPELINE II=1
        WB_WORD:
            for (unsigned j = 0; j < BEAT_WORDS; ++j) {
// one beat of y [k][oh][ow]: bias, ReLU, quantise, mask bit, store, clear
#pragma HLS UNROLL
                if (i0 + j < K * OPLANE) {
                    act_t v = act_t(acc[wp * K + wk] + buf.bias[wk]);
                    acc[wp * K + wk] = 0;
                    count_nonfinite(v);  // before ReLU, which would turn a NaN into 0
                    bool live = v > 0;
                    if (relu && !live) v = 0;
                    yn[i0 + j] = to_f32(v);
                    if (relu) mask_out.put(live);
                    if (++wp == OPLANE) {
                        wp = 0;
                        ++wk;
                    }
                }
            }
        }
        uint64_t wb = beats((uint64_t)K * OPLANE);
        cnt.wb_iters += wb;
        cycles += max2(compute, wb);
    }
    if (relu) mask_out.flush();
    cnt.cycles += cycles + WB_DEPTH;
    return ERR_NONE;
}

}  // namespace zskip

#endif
