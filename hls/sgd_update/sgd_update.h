// SGD with momentum and weight decay (PyTorch's rule, models/reference.sgd_update):
//   g' = g + weight_decay * p,   v' = momentum * v + g',
//   p' = p - lr * v'                       (heavy ball)
//   p' = p - lr * (g' + momentum * v')     (nesterov: FLAG_NESTEROV).
// Parameters stay in the wgt arena and velocities in the vel arena between
// steps: two ports, so an element's two reads and two writes take one cycle.
#ifndef ZSKIP_SGD_UPDATE_H
#define ZSKIP_SGD_UPDATE_H

#include <stdint.h>

#include "../common/config.h"
#include "../common/counters.h"
#include "../common/descriptor.h"
#include "../common/types.h"
#include "../common/wide_port.h"

namespace zskip {

// param [count] (wgt arena), velocity [count] (vel arena), both updated in
// place, grad [count] (grad arena).
// No on-chip arrays (so no sgd_update_onchip struct): the update streams
// element by element.
// The update arithmetic runs in float32 (the optimiser unit); the velocity and
// the parameter are stored as opt_t, the optimiser-state class: with a wider
// opt_t than wgt_t, the parameter here is the master copy of mixed-precision
// training (Micikevicius et al., ICLR 2018), so updates smaller than one
// wgt_t step accumulate instead of rounding away; the MAC kernels narrow it to
// wgt_t on every load.
// grad_unscale: 1 / the loss scale the gradients carry (a power of two).
// nesterov: a runtime flag, so the one unit holds both forms; the Nesterov
// step is one multiply-add more in series (SGD_DEPTH counts it for both),
// built in LUTs so the optimiser keeps its DSP count (pynq-z2's margin).
inline unsigned sgd_update(unsigned count, float lr, float momentum, float weight_decay, words<float> param,
                           words<float> velocity, words<const float> grad, kernel_counters &cnt, float grad_unscale = 1.0f,
                           bool nesterov = false) {
    static const unsigned ELEMENTS = TRIP_ELEMENTS;
    if (count < 1) return ERR_COUNT;
SGD_UPDATE:
    for (unsigned i = 0; i < count; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=ELEMENTS
// param, velocity and grad come through three bundles (wgt, vel, grad), one
// read each per element; the writes use the write channels of wgt and vel
#pragma HLS PIPELINE II=1
        float p = to_f32(from_f32<opt_t>(param[i]));
        float g = to_f32(from_f32<grad_t>(grad[i])) * grad_unscale;
        float v = to_f32(from_f32<opt_t>(velocity[i]));
        const float gd = g + weight_decay * p;
        const float nv = momentum * v + gd;
        const float look = momentum * nv;
// Nesterov's look-ahead is off every recurrence (elements are independent):
// a LUT multiplier and adder at II = 1, no DSP
#pragma HLS BIND_OP variable=look op=fmul impl=fabric
        const float ahead = gd + look;
#pragma HLS BIND_OP variable=ahead op=fadd impl=fabric
        const float step = nesterov ? ahead : nv;
        const float np = p - lr * step;
        count_nonfinite(nv);
        count_nonfinite(np);
        opt_t v_q = from_f32<opt_t>(nv);
        velocity[i] = to_f32(v_q);
        param[i] = to_f32(from_f32<opt_t>(np));
    }
    cnt.load_iters += count;
    cnt.wb_iters += count;
    cnt.cycles += ZSKIP_CYCLES(SGD_UPDATE, count);
    return ERR_NONE;
}

}  // namespace zskip

#endif
