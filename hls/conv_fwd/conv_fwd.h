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
#include "../common/hw_assert.h"
#include "../common/shapes.h"
#include "../common/sparse_scatter.h"
#include "../common/types.h"
#include "../common/wide_port.h"

namespace zskip {

// x [N][C][H][W], w [K][C][R][S], b [K] -> y [N][K][OH][OW], mask bits of y > 0
// (written when relu), on the engine memory `buf` (engine_memory.h). Returns
// ERR_NONE or the shape error. Loads, each image's region and its
// write-back run one after another (counters.h).
template <class CFG>
unsigned conv_fwd(const conv_shape &sh, bool skip_zeros, bool relu, words<const float> x, words<const float> w,
                  words<const float> b, words<float> y, words<uint32_t> mask, scatter_engine_onchip<CFG> &buf, kernel_counters &cnt) {
    static const unsigned O_MAX = scatter_engine_onchip<CFG>::XSIZE;
    static const unsigned CH_MAX = CFG::max_ch;
    static const unsigned BATCH = TRIP_BATCH;
    unsigned err = check_conv_shape<CFG>(sh);
    if (err) return err;
    const unsigned K = sh.k, C = sh.c, RS = sh.r * sh.s, PLANE = sh.h * sh.w, OPLANE = sh.oh * sh.ow;
    engine_start_descriptor(buf);

    // weights stay on chip for the whole batch: one pass over w in DDR order
    uint64_t cycles = load_weights<CFG>(w, K, C, RS, false, buf.w, cnt);
FWD_LOAD_B:
    for (unsigned k = 0; k < K; ++k) {
#pragma HLS LOOP_TRIPCOUNT max=CH_MAX
#pragma HLS PIPELINE II=1
        buf.bias[k] = acc_t(from_f32<wgt_t>(b[k]));
    }
    cycles += ZSKIP_CYCLES(FWD_LOAD_B, K);
    cycles += clear_accumulators<CFG>(buf.plane, OPLANE * K);
    cnt.load_iters += K;

    fill_all_ones<CFG>(buf.ones, K);
    cycles += ZSKIP_CYCLES(AXIS_IN, build_axis_from_input<CFG>(buf.rows, sh.h, sh.oh, sh.r, sh.stride, sh.pad));
    cycles += ZSKIP_CYCLES(AXIS_IN, build_axis_from_input<CFG>(buf.cols, sh.w, sh.ow, sh.s, sh.stride, sh.pad));
    scatter_map m;
    m.a_plane = 0; m.a_pos = K; m.a_tap = 0;
    m.b_plane = RS * K; m.b_pos = 0; m.b_tap = K;
    m.set_pos = 0; m.words = (K + 31) / 32; m.channels = K;
    m.target_w = sh.ow; m.ksize_s = sh.s;
    m.copies = 1; m.copy_stride = 0;
    m.a_size = scatter_engine_onchip<CFG>::XSIZE; m.b_size = scatter_engine_onchip<CFG>::WSIZE;

    bit_writer mask_out(mask);
    // The write-back moves a whole beat per cycle when a beat of y never
    // spans two channels (OPLANE a multiple of 4: y and every image start on
    // a beat) and its 4 positions, K words apart in plane, fall in 4 distinct
    // of the P banks; otherwise one word per cycle.
    static const unsigned P = CFG::pe_lanes;
    const bool wide_wb = OPLANE % BEAT_WORDS == 0 && beat_in_distinct_banks(K, P);
IMAGE:
    for (unsigned n = 0; n < sh.n; ++n) {
#pragma HLS LOOP_TRIPCOUNT max=BATCH
        const region_trips r = scatter_image<CFG, wgt_t, act_t, false>(x + (uint64_t)n * C * PLANE, C, sh.h, sh.w,
                                                                        skip_zeros, m, buf.ones, buf.plane, buf.w,
                                                                        0, buf, cnt);
        cycles += region_cycles(r);
        words<float> yn = y + (uint64_t)n * K * OPLANE;
        if (wide_wb) {
            unsigned wk = 0, wp = 0;
        FWD_WB_BEAT:
            for (unsigned b = 0; b < K * OPLANE / BEAT_WORDS; ++b) {
#pragma HLS LOOP_TRIPCOUNT max=O_MAX/BEAT_WORDS
// one 128-bit beat of y per cycle: 4 positions of channel wk, which sit K
// words apart in plane, i.e. in 4 distinct banks (wide_wb)
#pragma HLS PIPELINE II=1
                float word[BEAT_WORDS];
// the 4 lanes are registers of the one beat written below
#pragma HLS ARRAY_PARTITION variable=word complete
                uint32_t live_bits = 0;
            FWD_WB_LANE:
                for (unsigned j = 0; j < BEAT_WORDS; ++j) {
#pragma HLS UNROLL
                    const unsigned at = (wp + j) * K + wk;
                    ZSKIP_HW_ASSERT(j == 0 || at % P != (wp * K + wk) % P, "FWD_WB_BEAT",
                                    "two words of a beat in one plane bank");
                    act_t v = act_t(buf.plane[at] + buf.bias[wk]);
                    buf.plane[at] = 0;
                    count_nonfinite(v);  // before ReLU, which would turn a NaN into 0
                    bool live = v > 0;
                    if (relu && !live) v = 0;
                    word[j] = to_f32(v);
                    live_bits |= (uint32_t)live << j;
                }
                yn.beat_at((uint64_t)b * BEAT_WORDS) = make_beat(word);
                if (relu) mask_out.put4(live_bits);
                wp += BEAT_WORDS;
                if (wp == OPLANE) {
                    wp = 0;
                    ++wk;
                }
            }
            cnt.wb_iters += (uint64_t)K * OPLANE / BEAT_WORDS;
            cycles += ZSKIP_CYCLES(FWD_WB_BEAT, (uint64_t)K * OPLANE / BEAT_WORDS);
            continue;
        }
        unsigned wk = 0, wp = 0;
    FWD_WB:
        for (unsigned i = 0; i < K * OPLANE; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=O_MAX
// one word of y [k][oh][ow] per cycle: bias, ReLU, quantise, mask bit, store, clear
#pragma HLS PIPELINE II=1
            act_t v = act_t(buf.plane[wp * K + wk] + buf.bias[wk]);
            buf.plane[wp * K + wk] = 0;
            count_nonfinite(v);  // before ReLU, which would turn a NaN into 0
            bool live = v > 0;
            if (relu && !live) v = 0;
            yn[i] = to_f32(v);
            if (relu) mask_out.put(live);
            if (++wp == OPLANE) {
                wp = 0;
                ++wk;
            }
        }
        cnt.wb_iters += (uint64_t)K * OPLANE;
        cycles += ZSKIP_CYCLES(FWD_WB, (uint64_t)K * OPLANE);
    }
    if (relu) mask_out.flush();
    cnt.cycles += cycles;
    return ERR_NONE;
}

}  // namespace zskip

#endif
