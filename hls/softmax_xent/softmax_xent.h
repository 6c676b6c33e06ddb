// Softmax cross-entropy over a batch of logits: mean loss and dlogits.
// Runs in float32 whatever the compiled types (exp/log unit); dlogits are
// quantised to grad_t on store.
#ifndef ZSKIP_SOFTMAX_XENT_H
#define ZSKIP_SOFTMAX_XENT_H

#include <float.h>
#include <math.h>
#include <stdint.h>

#include "../common/config.h"
#include "../common/counters.h"
#include "../common/descriptor.h"
#include "../common/types.h"
#include "../common/wide_port.h"

namespace zskip {

template <class CFG>
struct softmax_xent_onchip {
    float z[CFG::max_classes];  // one sample's exp(logit - max)
};

// logits [N][classes] (act), labels [N] (uint32) -> dlogits [N][classes]
// (grad) = (softmax - onehot) / N * grad_scale, *loss = mean -log p[label].
template <class CFG>
unsigned softmax_xent(unsigned n, unsigned classes, words<const float> logits, words<const uint32_t> labels,
                      words<float> dlogits, words<float> loss, kernel_counters &cnt, float grad_scale = 1.0f) {
    static softmax_xent_onchip<CFG> buf;
    static const unsigned CLASSES_MAX = CFG::max_classes;
    static const unsigned BATCH = TRIP_BATCH;
    if (n < 1) return ERR_BATCH;
    if (classes < 1 || classes > CFG::max_classes) return ERR_CHANNELS;
    float total = 0;
    uint64_t cycles = 0;
    const float inv_n = 1.0f / (float)n;
    // a power of two: the scaling is exact in float32
    const float dlogit_scale = inv_n * grad_scale;
SAMPLE:
    for (unsigned i = 0; i < n; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=BATCH
        const uint32_t label = labels[i];
        if (label >= classes) return ERR_LABEL;
        words<const float> row = logits + (uint64_t)i * classes;
        float mx = row[0];
    SOFTMAX_MAX:
        for (unsigned j = 1; j < classes; ++j) {
#pragma HLS LOOP_TRIPCOUNT max=CLASSES_MAX
// one logit per m_axi beat; the max is a one-cycle compare
#pragma HLS PIPELINE II=1
            mx = row[j] > mx ? row[j] : mx;
        }
        float sum = 0;
    SOFTMAX_EXP:
        for (unsigned j = 0; j < classes; ++j) {
#pragma HLS LOOP_TRIPCOUNT max=CLASSES_MAX
// the float sum is a loop-carried dependence: II = the adder latency
#pragma HLS PIPELINE II=ACC_LATENCY
            buf.z[j] = expf(row[j] - mx);
            sum += buf.z[j];
        }
        cycles += ZSKIP_CYCLES(SOFTMAX_MAX, classes - 1) + ZSKIP_CYCLES(SOFTMAX_EXP, classes) +
                  ZSKIP_CYCLES(SOFTMAX_GRAD, classes);
        const float p_label = buf.z[label] / sum;
        total += -logf(p_label > FLT_MIN ? p_label : FLT_MIN);
        words<float> drow = dlogits + (uint64_t)i * classes;
    SOFTMAX_GRAD:
        for (unsigned j = 0; j < classes; ++j) {
#pragma HLS LOOP_TRIPCOUNT max=CLASSES_MAX
// one dlogit per cycle
#pragma HLS PIPELINE II=1
            float p = buf.z[j] / sum - (j == label ? 1.0f : 0.0f);
            count_nonfinite(p * dlogit_scale);
            drow[j] = to_f32(from_f32<grad_t>(p * dlogit_scale));
        }
    }
    count_nonfinite(total * inv_n);
    loss[0] = total * inv_n;
    uint64_t elements = (uint64_t)n * classes;
    cnt.load_iters += 2 * elements;
    cnt.wb_iters += elements;
    cnt.cycles += cycles;
    return ERR_NONE;
}

}  // namespace zskip

#endif
