// Fully-connected passes: the sparse-scatter engine as a 1x1 convolution on
// a 1x1 image, with C = input features and K = output features, sized by
// fc_config (ZSKIP_MAX_FEATURES). x (N, I) is NCHW (N, I, 1, 1), w (J, I) is
// (K, C, 1, 1). They share one engine memory, scatter_engine_onchip<fc_config>.
#ifndef ZSKIP_FC_H
#define ZSKIP_FC_H

#include <stdint.h>

#include "../common/config.h"
#include "../common/counters.h"
#include "../common/engine_memory.h"
#include "../common/shapes.h"
#include "../common/wide_port.h"
#include "../conv_bwd_data/conv_bwd_data.h"
#include "../conv_bwd_weight/conv_bwd_weight.h"
#include "../conv_fwd/conv_fwd.h"

namespace zskip {

inline conv_shape fc_shape(unsigned n, unsigned in_features, unsigned out_features) {
    conv_shape sh;
    sh.n = n;
    sh.c = in_features;
    sh.k = out_features;
    sh.h = sh.w = sh.r = sh.s = sh.stride = sh.oh = sh.ow = 1;
    sh.pad = 0;
    return sh;
}

typedef scatter_engine_onchip<fc_config> fc_memory;

// y (N, J) = relu(x (N, I) w (J, I)^T + b); mask bits of y > 0 when relu.
inline unsigned fc_fwd(unsigned n, unsigned in_f, unsigned out_f, bool skip_zeros, bool relu,
                       words<const float> x, words<const float> w, words<const float> b, words<float> y, words<uint32_t> mask,
                       fc_memory &buf, kernel_counters &cnt) {
    return conv_fwd<fc_config>(fc_shape(n, in_f, out_f), skip_zeros, relu, x, w, b, y, mask, buf, cnt);
}

// dx (N, I) = dy (N, J) w (J, I), zero where out_mask (N, I) is 0 (has_mask);
// masked outputs are never computed in sparse mode.
inline unsigned fc_bwd_data(unsigned n, unsigned in_f, unsigned out_f, bool skip_zeros, bool has_mask,
                            words<const float> dy, words<const float> w, words<const uint32_t> out_mask, words<float> dx,
                            fc_memory &buf, kernel_counters &cnt) {
    return conv_bwd_data<fc_config>(fc_shape(n, in_f, out_f), skip_zeros, has_mask, dy, w, out_mask, dx, buf,
                                    cnt);
}

// dw (J, I) = dy^T x, db (J,) = sum over the batch of dy.
inline unsigned fc_bwd_weight(unsigned n, unsigned in_f, unsigned out_f, bool skip_zeros, words<const float> x,
                              words<const float> dy, words<float> dw, words<float> db, fc_memory &buf,
                              kernel_counters &cnt) {
    return conv_bwd_weight<fc_config>(fc_shape(n, in_f, out_f), skip_zeros, x, dy, dw, db, buf, cnt);
}

}  // namespace zskip

#endif
