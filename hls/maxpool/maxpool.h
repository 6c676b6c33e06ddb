// Max pooling, forward and backward. The argmax (flat index h * W + w inside
// the input plane, first maximum in row-major window order on ties) stays in
// the bits arena between the passes.
#ifndef ZSKIP_MAXPOOL_H
#define ZSKIP_MAXPOOL_H

#include <stdint.h>

#include "../common/bits.h"
#include "../common/config.h"
#include "../common/counters.h"
#include "../common/descriptor.h"
#include "../common/types.h"

namespace zskip {

struct pool_shape {
    unsigned n, c, h, w, size, stride, oh, ow;
};

template <class CFG>
unsigned check_pool_shape(const pool_shape &sh) {
    if (sh.n < 1) return ERR_BATCH;
    if (sh.c < 1 || sh.c > CFG::max_ch) return ERR_CHANNELS;
    if (sh.h < 1 || sh.h > CFG::max_dim || sh.w < 1 || sh.w > CFG::max_dim) return ERR_DIM;
    if (sh.size < 1 || sh.size > CFG::max_ksize || sh.size > sh.h || sh.size > sh.w) return ERR_KSIZE;
    if (sh.stride < 1 || sh.stride > CFG::max_ksize) return ERR_STRIDE;
    return ERR_NONE;
}

// On-chip memory of the pooling kernels, shared by forward and backward
// (one runs at a time): one plane, the window source of the forward pass and
// the scatter accumulator of the backward pass.
template <class CFG>
struct maxpool_onchip {
    acc_t plane[CFG::max_dim * CFG::max_dim];
};

// The pooling memory for config CFG (one instance in the IP).
template <class CFG>
void maxpool_memory(maxpool_onchip<CFG> *&mem) {
    static maxpool_onchip<CFG> buf;
    mem = &buf;
}

// x [N][C][H][W] -> y [N][C][OH][OW], argmax [N][C][OH][OW] (uint32), and
// mask bits of y > 0 when write_mask.
template <class CFG>
unsigned maxpool_fwd(const pool_shape &sh, bool write_mask, const float *x, float *y, uint32_t *argmax,
                     uint32_t *mask, maxpool_onchip<CFG> &buf, kernel_counters &cnt) {
    static const unsigned DIM_MAX = CFG::max_dim;
    static const unsigned PLANE_MAX = CFG::max_dim * CFG::max_dim;
    static const unsigned KS_MAX = CFG::max_ksize;
    static const unsigned PLANES = TRIP_BATCH * CFG::max_ch;
    unsigned err = check_pool_shape<CFG>(sh);
    if (err) return err;
    const unsigned PLANE = sh.h * sh.w, OPLANE = sh.oh * sh.ow;
    bit_writer mask_out(mask);
    uint64_t load = 0, scan = 0;
PLANE_LOOP:
    for (unsigned pl = 0; pl < sh.n * sh.c; ++pl) {
#pragma HLS LOOP_TRIPCOUNT max=PLANES
    LOAD:
        for (unsigned i = 0; i < PLANE; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=PLANE_MAX
// one input per m_axi beat
#pragma HLS PIPELINE II=1
            buf.plane[i] = acc_t(from_f32<act_t>(x[(uint64_t)pl * PLANE + i]));
        }
        load += PLANE;
    OUT_ROW:
        for (unsigned oh = 0; oh < sh.oh; ++oh) {
#pragma HLS LOOP_TRIPCOUNT max=DIM_MAX
        OUT_COL:
            for (unsigned ow = 0; ow < sh.ow; ++ow) {
#pragma HLS LOOP_TRIPCOUNT max=DIM_MAX
                unsigned best = oh * sh.stride * sh.w + ow * sh.stride;
                act_t best_v = typename exact_narrow<act_t>::type(buf.plane[best]);
            WIN_R:
                for (unsigned r = 0; r < sh.size; ++r) {
#pragma HLS LOOP_TRIPCOUNT max=KS_MAX
                WIN_S:
                    for (unsigned s = 0; s < sh.size; ++s) {
#pragma HLS LOOP_TRIPCOUNT max=KS_MAX
// one window element per cycle from the on-chip plane
#pragma HLS PIPELINE II=1
                        unsigned i = (oh * sh.stride + r) * sh.w + ow * sh.stride + s;
                        const act_t v = typename exact_narrow<act_t>::type(buf.plane[i]);
                        if (v > best_v) {
                            best_v = v;
                            best = i;
                        }
                        ++scan;
                    }
                }
                uint64_t o = (uint64_t)pl * OPLANE + oh * sh.ow + ow;
                y[o] = to_f32(best_v);
                argmax[o] = best;
                if (write_mask) mask_out.put(best_v > 0);
            }
        }
    }
    if (write_mask) mask_out.flush();
    uint64_t wb = (uint64_t)sh.n * sh.c * OPLANE;
    cnt.load_iters += load;
    cnt.scan_iters += scan;
    cnt.wb_iters += wb;
    // plane load and window scan are double-buffered per plane; the output
    // write is one beat per window and hides under the scan
    cnt.cycles += max2(load, scan) + LOAD_DEPTH + SCAN_DEPTH + WB_DEPTH;
    return ERR_NONE;
}

// dy [N][C][OH][OW], argmax -> dx [N][C][H][W] (dy accumulated at argmax).
// An argmax outside the plane is reported as ERR_DIM.
template <class CFG>
unsigned maxpool_bwd(const pool_shape &sh, const float *dy, const uint32_t *argmax, float *dx,
                     maxpool_onchip<CFG> &buf, kernel_counters &cnt) {
    static const unsigned PLANE_MAX = CFG::max_dim * CFG::max_dim;
    static const unsigned PLANES = TRIP_BATCH * CFG::max_ch;
    unsigned err = check_pool_shape<CFG>(sh);
    if (err) return err;
    const unsigned PLANE = sh.h * sh.w, OPLANE = sh.oh * sh.ow;
CHECK_ARGMAX:
    for (uint64_t i = 0; i < (uint64_t)sh.n * sh.c * OPLANE; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=PLANES
// one argmax checked per m_axi beat
#pragma HLS PIPELINE II=1
        if (argmax[i] >= PLANE) return ERR_DIM;
    }
CLEAR:
    for (unsigned i = 0; i < PLANE; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=PLANE_MAX
// the plane accumulator cleared one word per cycle
#pragma HLS PIPELINE II=1
        buf.plane[i] = 0;
    }
PLANE_LOOP:
    for (unsigned pl = 0; pl < sh.n * sh.c; ++pl) {
#pragma HLS LOOP_TRIPCOUNT max=PLANES
    SCATTER:
        for (unsigned o = 0; o < OPLANE; ++o) {
#pragma HLS LOOP_TRIPCOUNT max=PLANE_MAX
// windows overlap only when stride < size; the accumulator read-add-write
// then needs the distance between equal argmax values, left to the scheduler
#pragma HLS PIPELINE II=1
            uint64_t i = (uint64_t)pl * OPLANE + o;
            buf.plane[argmax[i]] += from_f32<grad_t>(dy[i]);
        }
    WB:
        for (unsigned i = 0; i < PLANE; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=PLANE_MAX
// store and clear for the next plane
#pragma HLS PIPELINE II=1
            const grad_t g = grad_t(buf.plane[i]);
            count_nonfinite(g);
            dx[(uint64_t)pl * PLANE + i] = to_f32(g);
            buf.plane[i] = 0;
        }
    }
    // the argmax check and the scatter each read every (dy, argmax) pair once
    uint64_t load = (uint64_t)sh.n * sh.c * OPLANE * 2 + PLANE, wb = (uint64_t)sh.n * sh.c * PLANE;
    cnt.load_iters += load;
    cnt.wb_iters += wb;
    cnt.cycles += load + wb + LOAD_DEPTH + WB_DEPTH;
    return ERR_NONE;
}

}  // namespace zskip

#endif
