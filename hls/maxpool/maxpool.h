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
#include "../common/wide_port.h"

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
// mask bits of y > 0 when write_mask. Per plane: load, then the window scan
// (one window element per cycle, flattened over the plane's windows).
template <class CFG>
unsigned maxpool_fwd(const pool_shape &sh, bool write_mask, words<const float> x, words<float> y, words<uint32_t> argmax,
                     words<uint32_t> mask, maxpool_onchip<CFG> &buf, kernel_counters &cnt) {
    static const unsigned PLANE_MAX = CFG::max_dim * CFG::max_dim;
    static const unsigned WIN_MAX = CFG::max_dim * CFG::max_dim * CFG::max_ksize * CFG::max_ksize;
    static const unsigned PLANES = TRIP_BATCH * CFG::max_ch;
    unsigned err = check_pool_shape<CFG>(sh);
    if (err) return err;
    const unsigned PLANE = sh.h * sh.w, OPLANE = sh.oh * sh.ow, WIN = sh.size * sh.size;
    bit_writer mask_out(mask);
    uint64_t cycles = 0;
POOL_PLANE:
    for (unsigned pl = 0; pl < sh.n * sh.c; ++pl) {
#pragma HLS LOOP_TRIPCOUNT max=PLANES
    POOL_LOAD:
        for (unsigned i = 0; i < PLANE; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=PLANE_MAX
// one input word per cycle
#pragma HLS PIPELINE II=1
            buf.plane[i] = acc_t(from_f32<act_t>(x[(uint64_t)pl * PLANE + i]));
        }
        cycles += ZSKIP_CYCLES(POOL_LOAD, PLANE);
        unsigned oh = 0, ow = 0, r = 0, s = 0, best = 0;
        act_t best_v = 0;
    POOL_WINDOW:
        for (unsigned i = 0; i < OPLANE * WIN; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=WIN_MAX
// one window element per cycle from the on-chip plane; the running max is a
// one-cycle compare
#pragma HLS PIPELINE II=1
            const unsigned at = (oh * sh.stride + r) * sh.w + ow * sh.stride + s;
            const act_t v = typename exact_narrow<act_t>::type(buf.plane[at]);
            if ((r == 0 && s == 0) || v > best_v) {
                best_v = v;
                best = at;
            }
            if (++s == sh.size) {
                s = 0;
                if (++r == sh.size) {
                    r = 0;
                    const uint64_t o = (uint64_t)pl * OPLANE + oh * sh.ow + ow;
                    y[o] = to_f32(best_v);
                    argmax[o] = best;
                    if (write_mask) mask_out.put(best_v > 0);
                    if (++ow == sh.ow) {
                        ow = 0;
                        ++oh;
                    }
                }
            }
        }
        cycles += ZSKIP_CYCLES(POOL_WINDOW, (uint64_t)OPLANE * WIN);
    }
    if (write_mask) mask_out.flush();
    cnt.load_iters += (uint64_t)sh.n * sh.c * PLANE;
    cnt.scan_iters += (uint64_t)sh.n * sh.c * OPLANE * WIN;
    cnt.wb_iters += (uint64_t)sh.n * sh.c * OPLANE;
    cnt.cycles += cycles;
    return ERR_NONE;
}

// dy [N][C][OH][OW], argmax -> dx [N][C][H][W] (dy accumulated at argmax).
// An argmax outside the plane is reported as ERR_DIM.
template <class CFG>
unsigned maxpool_bwd(const pool_shape &sh, words<const float> dy, words<const uint32_t> argmax, words<float> dx,
                     maxpool_onchip<CFG> &buf, kernel_counters &cnt) {
    static const unsigned PLANE_MAX = CFG::max_dim * CFG::max_dim;
    static const unsigned PLANES = TRIP_BATCH * CFG::max_ch;
    static const unsigned OUTS = TRIP_BATCH * CFG::max_ch * CFG::max_dim * CFG::max_dim;
    unsigned err = check_pool_shape<CFG>(sh);
    if (err) return err;
    const unsigned PLANE = sh.h * sh.w, OPLANE = sh.oh * sh.ow;
    const uint64_t outs = (uint64_t)sh.n * sh.c * OPLANE;
    // windows that do not overlap send each dx word at most one dy: a write,
    // no float recurrence
    const bool overlap = sh.stride < sh.size;
POOL_CHECK:
    for (uint64_t i = 0; i < outs; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=OUTS
// one argmax word per cycle
#pragma HLS PIPELINE II=1
        if (argmax[i] >= PLANE) return ERR_DIM;
    }
    uint64_t cycles = ZSKIP_CYCLES(POOL_CHECK, outs);
POOL_CLEAR:
    for (unsigned i = 0; i < PLANE; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=PLANE_MAX
// the plane accumulator cleared one word per cycle
#pragma HLS PIPELINE II=1
        buf.plane[i] = 0;
    }
    cycles += ZSKIP_CYCLES(POOL_CLEAR, PLANE);
POOL_PLANE_BWD:
    for (unsigned pl = 0; pl < sh.n * sh.c; ++pl) {
#pragma HLS LOOP_TRIPCOUNT max=PLANES
        if (overlap) {
        POOL_SCATTER_ADD:
            for (unsigned o = 0; o < OPLANE; ++o) {
#pragma HLS LOOP_TRIPCOUNT max=PLANE_MAX
// dx[argmax] += dy: two argmax values of neighbouring windows may be equal,
// a float recurrence through the adder
#pragma HLS PIPELINE II=ACC_LATENCY
                const uint64_t i = (uint64_t)pl * OPLANE + o;
                buf.plane[argmax[i]] += from_f32<grad_t>(dy[i]);
            }
            cycles += ZSKIP_CYCLES(POOL_SCATTER_ADD, OPLANE);
        } else {
        POOL_SCATTER_SET:
            for (unsigned o = 0; o < OPLANE; ++o) {
#pragma HLS LOOP_TRIPCOUNT max=PLANE_MAX
// each dx word receives at most one dy: a plain write per cycle
#pragma HLS PIPELINE II=1
                const uint64_t i = (uint64_t)pl * OPLANE + o;
                buf.plane[argmax[i]] = acc_t(from_f32<grad_t>(dy[i]));
            }
            cycles += ZSKIP_CYCLES(POOL_SCATTER_SET, OPLANE);
        }
    POOL_WB:
        for (unsigned i = 0; i < PLANE; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=PLANE_MAX
// store and clear for the next plane, one word per cycle
#pragma HLS PIPELINE II=1
            const grad_t g = grad_t(buf.plane[i]);
            count_nonfinite(g);
            dx[(uint64_t)pl * PLANE + i] = to_f32(g);
            buf.plane[i] = 0;
        }
        cycles += ZSKIP_CYCLES(POOL_WB, PLANE);
    }
    cnt.load_iters += 2 * outs + PLANE;
    cnt.wb_iters += (uint64_t)sh.n * sh.c * PLANE;
    cnt.cycles += cycles;
    return ERR_NONE;
}

}  // namespace zskip

#endif
