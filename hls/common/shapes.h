// Shapes of a descriptor and their validation against the compiled maxima.
// The host encoder (host/program.py) rejects the same descriptors first;
// this check keeps the kernel from overflowing its on-chip buffers whatever
// reaches it, and reports the reason in the stats record.
#ifndef ZSKIP_SHAPES_H
#define ZSKIP_SHAPES_H

#include <stdint.h>

#include "config.h"
#include "descriptor.h"

namespace zskip {

struct conv_shape {
    unsigned n, c, h, w, k, r, s, stride, pad, oh, ow;
};

inline conv_shape read_conv_shape(const uint32_t *d) {
    conv_shape sh;
    sh.n = d[D_N];
    sh.c = d[D_C];
    sh.h = d[D_H];
    sh.w = d[D_W];
    sh.k = d[D_K];
    sh.r = d[D_R];
    sh.s = d[D_S];
    sh.stride = d[D_STRIDE];
    sh.pad = d[D_PAD];
    sh.oh = sh.stride && sh.h + 2 * sh.pad >= sh.r ? (sh.h + 2 * sh.pad - sh.r) / sh.stride + 1 : 0;
    sh.ow = sh.stride && sh.w + 2 * sh.pad >= sh.s ? (sh.w + 2 * sh.pad - sh.s) / sh.stride + 1 : 0;
    return sh;
}

// Error code (ERR_*) of a convolution-engine shape for config CFG.
template <class CFG>
unsigned check_conv_shape(const conv_shape &sh) {
    if (sh.n < 1) return ERR_BATCH;
    if (sh.c < 1 || sh.c > CFG::max_ch || sh.k < 1 || sh.k > CFG::max_ch) return ERR_CHANNELS;
    if (sh.h < 1 || sh.h > CFG::max_dim || sh.w < 1 || sh.w > CFG::max_dim) return ERR_DIM;
    if (sh.r < 1 || sh.r > CFG::max_ksize || sh.s < 1 || sh.s > CFG::max_ksize) return ERR_KSIZE;
    if (sh.stride != 1 && sh.stride != 2) return ERR_STRIDE;
    if (sh.pad >= sh.r || sh.pad >= sh.s) return ERR_PAD;
    if (sh.oh < 1 || sh.ow < 1) return ERR_KSIZE;  // kernel larger than the padded input
    return ERR_NONE;
}

}  // namespace zskip

#endif
