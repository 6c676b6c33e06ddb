// Global average pooling, forward and backward (the head of a ResNet:
// models/reference.global_avgpool_forward / _backward are the ground truth).
//
//   forward:  y [n][c] = sum over the plane of x [n][c] / (H * W)
//   backward: dx [n][c][h][w] = dy [n][c] / (H * W), zero where the input's
//             ReLU mask is False
//
// The forward sum is a float recurrence: consecutive words of a plane rotate
// over ACC_LATENCY partial sums (on chip, one set per channel of the image),
// so the adds never wait on each other and the plane streams at one word per
// cycle; a second loop adds each channel's partials and scales them. 1/(H*W)
// is one float divide per descriptor; the passes multiply by it.
#ifndef ZSKIP_AVGPOOL_H
#define ZSKIP_AVGPOOL_H

#include <stdint.h>

#include "../common/config.h"
#include "../common/counters.h"
#include "../common/descriptor.h"
#include "../common/types.h"
#include "../common/wide_port.h"

namespace zskip {

struct gap_shape {
    unsigned n, c, h, w;
};

template <class CFG>
unsigned check_gap_shape(const gap_shape &sh) {
    if (sh.n < 1) return ERR_BATCH;
    if (sh.c < 1 || sh.c > CFG::max_ch) return ERR_CHANNELS;
    if (sh.h < 1 || sh.h > CFG::max_dim || sh.w < 1 || sh.w > CFG::max_dim) return ERR_DIM;
    return ERR_NONE;
}

// On-chip memory of the forward pass: the ACC_LATENCY partial sums of every
// channel of one image; word c * ACC_LATENCY + j is partial j of channel c.
template <class CFG>
struct avgpool_onchip {
    acc_t partial[CFG::max_ch * ACC_LATENCY];
};

// The pooling memory for config CFG (one instance in the IP).
template <class CFG>
void avgpool_memory(avgpool_onchip<CFG> *&mem) {
    static avgpool_onchip<CFG> buf;
// partial j of every channel in bank j: GAP_FWD_SUM reads the ACC_LATENCY
// partials of one channel in one cycle
#pragma HLS ARRAY_PARTITION variable=buf.partial cyclic factor=ACC_LATENCY
    mem = &buf;
}

// x [N][C][H][W] (act) -> y [N][C] (act). Per image: the plane words into
// the partial sums, then one channel per cycle out.
template <class CFG>
unsigned gap_fwd(const gap_shape &sh, words<const float> x, words<float> y, avgpool_onchip<CFG> &buf,
                 kernel_counters &cnt) {
    static const unsigned L = ACC_LATENCY;
    static const unsigned X_MAX = CFG::max_ch * CFG::max_dim * CFG::max_dim;
    static const unsigned CH_MAX = CFG::max_ch;
    static const unsigned IMAGES = TRIP_BATCH;
    unsigned err = check_gap_shape<CFG>(sh);
    if (err) return err;
    const unsigned PLANE = sh.h * sh.w;
    const float inv = 1.0f / (float)PLANE;
    uint64_t cycles = 0;
GAP_FWD_IMAGE:
    for (unsigned n = 0; n < sh.n; ++n) {
#pragma HLS LOOP_TRIPCOUNT max=IMAGES
        words<const float> xn = x + (uint64_t)n * sh.c * PLANE;
        unsigned c = 0, e = 0, slot = 0;
    GAP_FWD_ACC:
        for (unsigned i = 0; i < sh.c * PLANE; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=X_MAX
// one x word per cycle; partial `slot` of channel c is added to again only
// ACC_LATENCY words later (the slots rotate within a plane; a new plane is a
// new channel's partials), which the DEPENDENCE pragma tells the scheduler
#pragma HLS PIPELINE II=1
#pragma HLS DEPENDENCE variable=buf.partial type=inter direction=RAW distance=ACC_LATENCY dependent=true
            const unsigned at = c * L + slot;
            // the first visit of a slot in its plane starts it from zero
            const acc_t before = e < L ? acc_t(0) : buf.partial[at];
            buf.partial[at] = before + acc_t(from_f32<act_t>(xn[i]));
            slot = slot + 1 == L ? 0 : slot + 1;
            if (++e == PLANE) {
                e = 0;
                slot = 0;
                ++c;
            }
        }
        cycles += ZSKIP_CYCLES(GAP_FWD_ACC, (uint64_t)sh.c * PLANE);
    GAP_FWD_SUM:
        for (unsigned k = 0; k < sh.c; ++k) {
#pragma HLS LOOP_TRIPCOUNT max=CH_MAX
// one channel per cycle: its partials (one per bank) through a chain of
// adders, the scale and the store; nothing carries over to the next channel
#pragma HLS PIPELINE II=1
            acc_t s = 0;
        GAP_FWD_PARTIALS:
            for (unsigned j = 0; j < L; ++j) {
#pragma HLS UNROLL
                // a plane of fewer than L words never started the last slots
                if (j < PLANE) s += buf.partial[k * L + j];
            }
            const float scaled = to_f32(s) * inv;
// once per channel, off every recurrence: a multiplier in LUTs, no DSP
#pragma HLS BIND_OP variable=scaled op=fmul impl=fabric
            const act_t m = act_t(scaled);
            count_nonfinite(m);
            y[(uint64_t)n * sh.c + k] = to_f32(m);
        }
        cycles += ZSKIP_CYCLES(GAP_FWD_SUM, sh.c);
    }
    cnt.load_iters += (uint64_t)sh.n * sh.c * PLANE;
    cnt.wb_iters += (uint64_t)sh.n * sh.c;
    cnt.cycles += cycles;
    return ERR_NONE;
}

// dy [N][C] (grad) -> dx [N][C][H][W] (grad) = dy / (H * W) over each plane;
// with has_mask, zero where bit i of mask_in [N][C][H][W] (bits) is clear.
template <class CFG>
unsigned gap_bwd(const gap_shape &sh, bool has_mask, words<const float> dy, words<const uint32_t> mask_in,
                 words<float> dx, kernel_counters &cnt) {
    static const unsigned OUTS = TRIP_BATCH * CFG::max_ch * CFG::max_dim * CFG::max_dim;
    unsigned err = check_gap_shape<CFG>(sh);
    if (err) return err;
    const unsigned PLANE = sh.h * sh.w;
    const float inv = 1.0f / (float)PLANE;
    const uint64_t total = (uint64_t)sh.n * sh.c * PLANE;
    grad_t g = 0;
    uint32_t mword = 0;
    unsigned e = 0;
    uint64_t q = 0;
GAP_BWD:
    for (uint64_t i = 0; i < total; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=OUTS
// one dx word per cycle on the grad write channel; dy is read on the grad
// read channel once per plane, the mask from the bits bundle once per 32 words
#pragma HLS PIPELINE II=1
        if (e == 0) {
            const float scaled = to_f32(from_f32<grad_t>(dy[q])) * inv;
// once per plane, off every recurrence: a multiplier in LUTs, no DSP
#pragma HLS BIND_OP variable=scaled op=fmul impl=fabric
            g = grad_t(scaled);
        }
        if (has_mask && (i & 31u) == 0) mword = mask_in[i >> 5];
        grad_t v = g;
        if (has_mask && !((mword >> (i & 31u)) & 1u)) v = 0;
        count_nonfinite(v);
        dx[i] = to_f32(v);
        if (++e == PLANE) {
            e = 0;
            ++q;
        }
    }
    cnt.load_iters += (uint64_t)sh.n * sh.c;
    cnt.wb_iters += total;
    cnt.cycles += ZSKIP_CYCLES(GAP_BWD, total);
    return ERR_NONE;
}

}  // namespace zskip

#endif
