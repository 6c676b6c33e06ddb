// prune_grad: stochastic pruning of activation gradients, in place
// (SparseTrain, Dai et al. DAC 2020; rule of Ye et al. 2019).
//
//   |g| <  tau:  g' = sign(g) * tau  with probability |g| / tau,  else 0
//   |g| >= tau:  g' = g
// so E[g'] = g and the zeros it creates are skipped by the backward kernels
// like the ReLU zeros.
//
// tau is either given (descriptor field) or derived from the gradient itself:
//   tau = mean(|g| over the nonzeros) * tau_scale
// where the host computes tau_scale = Phi^-1((1 + rate) / 2) * sqrt(pi / 2)
// for a target pruning rate (models/reference.prune_tau_scale).
//
// Random bits: the flattened tensor is cut into blocks of PRUNE_BLOCK
// elements; each block is walked by its own xorshift32 generator (an LFSR,
// Marsaglia 2003) seeded from (seed, block index) through murmur3's
// finaliser. Each of the PRUNE_LANES lanes owns whole blocks, so lanes never
// share a generator. models/reference.prune_gradients mirrors this bit for bit
// and reads PRUNE_BLOCK from this file.
#ifndef ZSKIP_PRUNE_GRAD_H
#define ZSKIP_PRUNE_GRAD_H

#include <stdint.h>

#include "../common/config.h"
#include "../common/counters.h"
#include "../common/descriptor.h"
#include "../common/wide_port.h"

namespace zskip {

static const unsigned PRUNE_BLOCK = 256;
// The pass walks four blocks side by side (one generator per lane), one
// word per cycle through the 32-bit port.
static const unsigned PRUNE_LANES = 4;
// |g| is summed as an unsigned fixed-point number with this many fractional
// bits: integer addition is exact, so the lanes' partial sums can be added in
// any order and the threshold is reproducible (gradients stay far below 2^23).
static const unsigned PRUNE_SUM_FRAC_BITS = 40;

struct prune_onchip {
    float block[PRUNE_LANES][PRUNE_BLOCK];
};

inline uint32_t prune_fmix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

inline uint32_t prune_seed(uint32_t seed, uint32_t block) {
    uint32_t s = prune_fmix32(seed ^ prune_fmix32(block));
    return s ? s : 0x9E3779B9u;  // xorshift never leaves the all-zero state
}

inline uint32_t xorshift32(uint32_t x) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

inline float prune_abs(float v) { return v < 0 ? -v : v; }

// Pass 1: tau = mean |g| over the nonzeros * tau_scale.
inline float prune_threshold(words<const float> g, uint32_t count, float tau_scale, kernel_counters &cnt) {
    const double unit = (double)(1ull << PRUNE_SUM_FRAC_BITS);
    uint64_t total = 0;
    uint32_t nonzeros = 0;
    uint64_t iters = 0;
PRUNE_STATS:
    for (uint32_t i = 0; i < count; ++i) {
#pragma HLS LOOP_TRIPCOUNT max = TRIP_ELEMENTS
// one word per cycle from the 32-bit port; integer accumulation has a
// one-cycle adder, so II = 1 holds
#pragma HLS PIPELINE II = 1
        const float a = prune_abs(g[i]);
        total += (uint64_t)((double)a * unit);
        nonzeros += (a != 0.0f);
        iters++;
    }
    cnt.scan_iters += iters;
    cnt.cycles += ZSKIP_CYCLES(PRUNE_STATS, iters);
    if (nonzeros == 0) return 0.0f;
    const float mean = (float)((double)total / (double)nonzeros / unit);
    return mean * tau_scale;
}

// Pass 2: dst = src pruned with threshold tau (dst may equal src: in place).
inline void prune_apply(words<const float> src, words<float> dst, uint32_t count, float tau, uint32_t seed,
                        kernel_counters &cnt) {
    const uint32_t blocks = (count + PRUNE_BLOCK - 1) / PRUNE_BLOCK;
    const float unit = 1.0f / 16777216.0f;  // 2^-24: 24 random bits -> [0, 1)
    uint64_t iters = 0, cycles = 0;
PRUNE_GROUPS:
    for (uint32_t b0 = 0; b0 < blocks; b0 += PRUNE_LANES) {
#pragma HLS LOOP_TRIPCOUNT max = TRIP_ELEMENTS / (PRUNE_BLOCK * PRUNE_LANES)
        uint32_t state[PRUNE_LANES];
// one generator register per lane
#pragma HLS ARRAY_PARTITION variable = state complete
    PRUNE_SEED_LANES:
        for (unsigned l = 0; l < PRUNE_LANES; l++) {
#pragma HLS UNROLL
            state[l] = prune_seed(seed, b0 + l);
        }
    PRUNE_ELEMS:
        for (unsigned i = 0; i < PRUNE_BLOCK * PRUNE_LANES; i++) {
// one word per cycle from the 32-bit port, the lanes' blocks in turn; the
// generator of a lane advances once per visit (a few XORs), the compare and
// select have no loop-carried dependence
#pragma HLS PIPELINE II = 1
            const unsigned t = i / PRUNE_LANES, l = i % PRUNE_LANES;
            state[l] = xorshift32(state[l]);
            const uint32_t at = (b0 + l) * PRUNE_BLOCK + t;
            if (b0 + l < blocks && at < count) {
                const float v = src[at];
                const float a = prune_abs(v);
                float out = v;
                if (a < tau) {
                    const float u = (float)(state[l] >> 8) * unit;
                    out = (u * tau < a) ? (v < 0 ? -tau : tau) : 0.0f;
                }
                dst[at] = out;
            }
            iters++;
        }
        cycles += ZSKIP_CYCLES(PRUNE_ELEMS, PRUNE_BLOCK * PRUNE_LANES);
    }
    cnt.wb_iters += iters;
    cnt.cycles += cycles;
}

// tau_scale > 0: derive tau from src (tau argument ignored); otherwise use
// tau as given. dst = pruned src (a copy when tau is 0). Returns the tau that
// was applied.
inline float prune_grad(words<const float> src, words<float> dst, uint32_t count, float tau, float tau_scale, uint32_t seed,
                        kernel_counters &cnt) {
    if (tau_scale > 0.0f) tau = prune_threshold(src, count, tau_scale, cnt);
    if (tau > 0.0f || !src.same_as(dst)) prune_apply(src, dst, count, tau, seed, cnt);
    return tau;
}

// In place on g.
inline float prune_grad(words<float> g, uint32_t count, float tau, float tau_scale, uint32_t seed,
                        kernel_counters &cnt) {
    return prune_grad(g, g, count, tau, tau_scale, seed, cnt);
}

}  // namespace zskip

#endif
