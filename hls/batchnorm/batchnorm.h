// Batch normalisation per channel: training forward (batch statistics),
// inference forward (running statistics), backward, and the running-statistics
// update (models/reference.batchnorm_* are the ground truth, PyTorch's rules).
//
// Tensors are x [N][C][P] with P = H * W (P = 1 for (N, C) inputs), every loop
// over them runs in that row-major order, one element per iteration, so the
// ports see sequential words and the ReLU mask bits come in their bit-tensor
// order. The statistics run in float32 whatever the compiled types (the
// normalisation unit, like the optimiser unit of sgd_update): x and xhat load
// as act_t, dy as grad_t, gamma and beta as wgt_t; y and xhat store as act_t,
// dx, dgamma and dbeta as grad_t, mean, var and the running statistics as
// opt_t (the optimiser-state class, float32 by default).
//
// A per-channel sum over N * P values is a float recurrence whenever two
// consecutive elements share a channel (always when P > 1). The sum loops
// therefore rotate over ACC_LATENCY partial sums per channel in on-chip memory
// (word c * ACC_LATENCY + slot, slot = iteration mod ACC_LATENCY): an address
// is read and written at most once every ACC_LATENCY iterations, so the adds
// never wait (II = 1, for any P and C); a per-channel loop then adds the
// partials (an adder tree) and clears them.
#ifndef ZSKIP_BATCHNORM_H
#define ZSKIP_BATCHNORM_H

#include <math.h>
#include <stdint.h>

#include "../common/bits.h"
#include "../common/config.h"
#include "../common/counters.h"
#include "../common/descriptor.h"
#include "../common/hw_assert.h"
#include "../common/types.h"
#include "../common/wide_port.h"

namespace zskip {

struct bn_shape {
    unsigned n, c, h, w;
};

// ERR_* of a batch-normalisation shape for config CFG; `training` needs at
// least two values per channel (a variance over one value is no statistic).
template <class CFG>
unsigned check_bn_shape(const bn_shape &sh, bool training) {
    if (sh.n < 1) return ERR_BATCH;
    if (sh.c < 1 || sh.c > CFG::max_ch) return ERR_CHANNELS;
    if (sh.h < 1 || sh.h > CFG::max_dim || sh.w < 1 || sh.w > CFG::max_dim) return ERR_DIM;
    if (training && (uint64_t)sh.n * sh.h * sh.w < 2) return ERR_COUNT;
    return ERR_NONE;
}

// On-chip memory of the four passes (one runs at a time): per channel, the
// rotating partial sums of two sums and four per-channel operands.
template <class CFG>
struct batchnorm_onchip {
    static const unsigned PARTIALS = CFG::max_ch * ACC_LATENCY;
    // partial sums, word c * ACC_LATENCY + slot: forward sum x then sum
    // (x - mean)^2; backward sum dy (dbeta)
    float part_a[PARTIALS];
    // backward: partial sums of dy * xhat (dgamma)
    float part_b[PARTIALS];
    // forward: mean; backward: dbeta * gamma * inv_std / m; inference:
    // running mean
    float mean[CFG::max_ch];
    // forward: 1 / sqrt(var + eps); backward: gamma * inv_std / m, then
    // times m; inference: sqrt(running_var + eps)
    float scale[CFG::max_ch];
    // forward and inference: gamma; backward: dgamma * gamma * inv_std / m
    float gamma[CFG::max_ch];
    // forward and inference: beta
    float beta[CFG::max_ch];
};

// The batch-normalisation memory for config CFG (one instance in the IP).
template <class CFG>
void batchnorm_memory(batchnorm_onchip<CFG> *&mem) {
    static batchnorm_onchip<CFG> buf;
// slot s of every channel in bank s: a sum iteration touches one bank, the
// per-channel reduction reads all ACC_LATENCY banks in one cycle
#pragma HLS ARRAY_PARTITION variable=buf.part_a cyclic factor=ACC_LATENCY
#pragma HLS ARRAY_PARTITION variable=buf.part_b cyclic factor=ACC_LATENCY
    mem = &buf;
}

// One element stepped forward in row-major [N][C][P] order: position p in
// the plane, channel c.
struct bn_cursor {
    unsigned p, c;
    void next(unsigned plane, unsigned channels) {
        if (++p == plane) {
            p = 0;
            if (++c == channels) c = 0;
        }
    }
};

// sum over the elements of x of f(x) into the rotating partials of `part`.
// Returns the loop's trips. f: 0 -> x, 1 -> (x - mean[c])^2.
template <class CFG, unsigned F>
uint64_t bn_channel_sums(const bn_shape &sh, words<const float> x, batchnorm_onchip<CFG> &buf) {
    static const unsigned ELEMENTS = TRIP_ELEMENTS;
    const uint64_t total = (uint64_t)sh.n * sh.c * sh.h * sh.w;
    const unsigned plane = sh.h * sh.w;
    bn_cursor at = {0, 0};
    unsigned slot = 0;
    if (F == 0) {
    BN_SUM:
        for (uint64_t i = 0; i < total; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=ELEMENTS
// one x word per cycle; the partial sum slot rotates, so an address is
// updated once every ACC_LATENCY iterations
#pragma HLS PIPELINE II=1
#pragma HLS DEPENDENCE variable=buf.part_a type=inter direction=RAW distance=ACC_LATENCY dependent=true
            const float v = to_f32(from_f32<act_t>(x[i]));
            ZSKIP_HW_ASSERT(at.c < CFG::max_ch, "BN_SUM", "address out of its array");
            buf.part_a[at.c * ACC_LATENCY + slot] += v;
            slot = slot + 1 == ACC_LATENCY ? 0 : slot + 1;
            at.next(plane, sh.c);
        }
        return total;
    }
BN_VAR_SUM:
    for (uint64_t i = 0; i < total; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=ELEMENTS
// one x word per cycle; squared deviations rotate over the partials as BN_SUM
#pragma HLS PIPELINE II=1
#pragma HLS DEPENDENCE variable=buf.part_a type=inter direction=RAW distance=ACC_LATENCY dependent=true
        const float d = to_f32(from_f32<act_t>(x[i])) - buf.mean[at.c];
        buf.part_a[at.c * ACC_LATENCY + slot] += d * d;
        slot = slot + 1 == ACC_LATENCY ? 0 : slot + 1;
        at.next(plane, sh.c);
    }
    return total;
}

// ----------------------------------------------------------------------------
// Training forward: x [N][C][P] (act) -> y (act), xhat (act), mean [C] (act),
// var [C] (act, biased), and the ReLU mask of y when relu (bits).
//   mean = sum x / m, var = sum (x - mean)^2 / m (m = N * P),
//   xhat = (x - mean) * (1 / sqrt(var + eps)), y = gamma * xhat + beta.
// Two passes over x for the statistics (the mean first, so the variance sums
// squared deviations: no cancellation), a third writes y and xhat.
template <class CFG>
unsigned batchnorm_fwd(const bn_shape &sh, float eps, bool relu, words<const float> x, words<const float> gamma,
                       words<const float> beta, words<float> y, words<float> xhat, words<float> mean, words<float> var,
                       words<uint32_t> mask, batchnorm_onchip<CFG> &buf, kernel_counters &cnt) {
    static const unsigned CH = CFG::max_ch;
    static const unsigned ELEMENTS = TRIP_ELEMENTS;
    unsigned err = check_bn_shape<CFG>(sh, true);
    if (err) return err;
    const uint64_t total = (uint64_t)sh.n * sh.c * sh.h * sh.w;
    const unsigned plane = sh.h * sh.w;
    const float inv_m = 1.0f / (float)((uint64_t)sh.n * plane);
    uint64_t cycles = 0;
BN_LOAD_PARAM:
    for (unsigned c = 0; c < sh.c; ++c) {
#pragma HLS LOOP_TRIPCOUNT max=CH
// gamma and beta both come through the wgt port: two reads per channel
#pragma HLS PIPELINE II=2
        buf.gamma[c] = to_f32(from_f32<wgt_t>(gamma[c]));
        buf.beta[c] = to_f32(from_f32<wgt_t>(beta[c]));
    BN_CLEAR_PARTIALS:
        for (unsigned j = 0; j < ACC_LATENCY; ++j) {
#pragma HLS UNROLL
            buf.part_a[c * ACC_LATENCY + j] = 0;
        }
    }
    cycles += ZSKIP_CYCLES(BN_LOAD_PARAM, sh.c);
    const uint64_t sum_trips = bn_channel_sums<CFG, 0>(sh, x, buf);
    cycles += ZSKIP_CYCLES(BN_SUM, sum_trips);
BN_MEAN:
    for (unsigned c = 0; c < sh.c; ++c) {
#pragma HLS LOOP_TRIPCOUNT max=CH
// a channel's ACC_LATENCY partials (one per bank) added in series: at
// II = ACC_LATENCY one float adder serves all of them (C iterations only)
#pragma HLS PIPELINE II=ACC_LATENCY
        float s = 0;
    BN_MEAN_TREE:
        for (unsigned j = 0; j < ACC_LATENCY; ++j) {
#pragma HLS UNROLL
            s += buf.part_a[c * ACC_LATENCY + j];
            buf.part_a[c * ACC_LATENCY + j] = 0;
        }
        buf.mean[c] = s * inv_m;
    }
    cycles += ZSKIP_CYCLES(BN_MEAN, sh.c);
    const uint64_t var_trips = bn_channel_sums<CFG, 1>(sh, x, buf);
    cycles += ZSKIP_CYCLES(BN_VAR_SUM, var_trips);
BN_VAR:
    for (unsigned c = 0; c < sh.c; ++c) {
#pragma HLS LOOP_TRIPCOUNT max=CH
// the partials added in series by one float adder, as BN_MEAN (mean and var
// also share the act port's write channel)
#pragma HLS PIPELINE II=ACC_LATENCY
        float s = 0;
    BN_VAR_TREE:
        for (unsigned j = 0; j < ACC_LATENCY; ++j) {
#pragma HLS UNROLL
            s += buf.part_a[c * ACC_LATENCY + j];
            buf.part_a[c * ACC_LATENCY + j] = 0;
        }
        const float v = s * inv_m;
        buf.scale[c] = 1.0f / sqrtf(v + eps);
        count_nonfinite(buf.mean[c]);
        count_nonfinite(v);
        mean[c] = to_f32(from_f32<opt_t>(buf.mean[c]));
        var[c] = to_f32(from_f32<opt_t>(v));
    }
    cycles += ZSKIP_CYCLES(BN_VAR, sh.c);
    bit_writer mask_out(mask);
    bn_cursor at = {0, 0};
BN_NORM:
    for (uint64_t i = 0; i < total; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=ELEMENTS
// y and xhat both go out through the act port: two writes per element
#pragma HLS PIPELINE II=2
        const float xh = (to_f32(from_f32<act_t>(x[i])) - buf.mean[at.c]) * buf.scale[at.c];
        const float pre = buf.gamma[at.c] * xh + buf.beta[at.c];
        count_nonfinite(pre);
        const act_t out = from_f32<act_t>(relu && !(pre > 0) ? 0.0f : pre);
        y[i] = to_f32(out);
        xhat[i] = to_f32(from_f32<act_t>(xh));
        if (relu) mask_out.put(out > 0);
        at.next(plane, sh.c);
    }
    if (relu) mask_out.flush();
    cycles += ZSKIP_CYCLES(BN_NORM, total);
    cnt.load_iters += 2 * (uint64_t)sh.c + 3 * total;
    cnt.wb_iters += 2 * (uint64_t)sh.c + 2 * total;
    cnt.cycles += cycles;
    return ERR_NONE;
}

// ----------------------------------------------------------------------------
// Inference forward: x (act), gamma, beta (wgt), running statistics (wgt,
// running_mean [C] then running_var [C] directly after) -> y (act) and the
// ReLU mask when relu: y = (x - running_mean) / sqrt(running_var + eps) *
// gamma + beta, the reference's order of operations.
template <class CFG>
unsigned batchnorm_infer(const bn_shape &sh, float eps, bool relu, words<const float> x, words<const float> gamma,
                         words<const float> beta, words<const float> running, words<float> y, words<uint32_t> mask,
                         batchnorm_onchip<CFG> &buf, kernel_counters &cnt) {
    static const unsigned CH = CFG::max_ch;
    static const unsigned ELEMENTS = TRIP_ELEMENTS;
    unsigned err = check_bn_shape<CFG>(sh, false);
    if (err) return err;
    const uint64_t total = (uint64_t)sh.n * sh.c * sh.h * sh.w;
    const unsigned plane = sh.h * sh.w;
BN_INFER_PARAM:
    for (unsigned c = 0; c < sh.c; ++c) {
#pragma HLS LOOP_TRIPCOUNT max=CH
// gamma, beta, running mean and running variance: four reads of the wgt port
#pragma HLS PIPELINE II=4
        buf.gamma[c] = to_f32(from_f32<wgt_t>(gamma[c]));
        buf.beta[c] = to_f32(from_f32<wgt_t>(beta[c]));
        buf.mean[c] = to_f32(from_f32<opt_t>(running[c]));
        buf.scale[c] = sqrtf(to_f32(from_f32<opt_t>(running[sh.c + c])) + eps);
    }
    uint64_t cycles = ZSKIP_CYCLES(BN_INFER_PARAM, sh.c);
    bit_writer mask_out(mask);
    bn_cursor at = {0, 0};
BN_INFER:
    for (uint64_t i = 0; i < total; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=ELEMENTS
// one x read and one y write per element (a pipelined divider), no recurrence
#pragma HLS PIPELINE II=1
        const float pre = (to_f32(from_f32<act_t>(x[i])) - buf.mean[at.c]) / buf.scale[at.c] * buf.gamma[at.c] +
                          buf.beta[at.c];
        count_nonfinite(pre);
        const act_t out = from_f32<act_t>(relu && !(pre > 0) ? 0.0f : pre);
        y[i] = to_f32(out);
        if (relu) mask_out.put(out > 0);
        at.next(plane, sh.c);
    }
    if (relu) mask_out.flush();
    cycles += ZSKIP_CYCLES(BN_INFER, total);
    cnt.load_iters += 4 * (uint64_t)sh.c + total;
    cnt.wb_iters += total;
    cnt.cycles += cycles;
    return ERR_NONE;
}

// ----------------------------------------------------------------------------
// Backward: dy (grad, the gradient of y before any ReLU of this layer: the
// next layer's backward applied it), xhat (act), var [C] (act), gamma (wgt)
// -> dx (grad), dgamma [C], dbeta [C] (grad). With m = N * P values per channel:
//   dbeta = sum dy, dgamma = sum dy * xhat,
//   dx = (gamma * inv_std / m) * (m * dy - dbeta - xhat * dgamma),
// and dx = 0 where the ReLU mask of this op's input (bits, with has_mask) is
// 0. dx is dense otherwise: every input moved the batch statistics.
template <class CFG>
unsigned batchnorm_bwd(const bn_shape &sh, float eps, bool has_mask, words<const float> dy, words<const float> xhat,
                       words<const float> var, words<const float> gamma, words<const uint32_t> mask_in,
                       words<float> dx, words<float> dgamma, words<float> dbeta, batchnorm_onchip<CFG> &buf,
                       kernel_counters &cnt) {
    static const unsigned CH = CFG::max_ch;
    static const unsigned ELEMENTS = TRIP_ELEMENTS;
    unsigned err = check_bn_shape<CFG>(sh, true);
    if (err) return err;
    const uint64_t total = (uint64_t)sh.n * sh.c * sh.h * sh.w;
    const unsigned plane = sh.h * sh.w;
    const float m = (float)((uint64_t)sh.n * plane);
BN_BWD_PARAM:
    for (unsigned c = 0; c < sh.c; ++c) {
#pragma HLS LOOP_TRIPCOUNT max=CH
// gamma (wgt) and var (act) through two ports: one read each per channel
#pragma HLS PIPELINE II=1
        const float inv_std = 1.0f / sqrtf(to_f32(from_f32<opt_t>(var[c])) + eps);
        buf.scale[c] = to_f32(from_f32<wgt_t>(gamma[c])) * inv_std / m;
    BN_BWD_CLEAR_PARTIALS:
        for (unsigned j = 0; j < ACC_LATENCY; ++j) {
#pragma HLS UNROLL
            buf.part_a[c * ACC_LATENCY + j] = 0;
            buf.part_b[c * ACC_LATENCY + j] = 0;
        }
    }
    uint64_t cycles = ZSKIP_CYCLES(BN_BWD_PARAM, sh.c);
    bn_cursor at = {0, 0};
    unsigned slot = 0;
BN_BWD_SUM:
    for (uint64_t i = 0; i < total; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=ELEMENTS
// dy (grad) and xhat (act) through two ports; both sums rotate over their
// partials as BN_SUM
#pragma HLS PIPELINE II=1
#pragma HLS DEPENDENCE variable=buf.part_a type=inter direction=RAW distance=ACC_LATENCY dependent=true
#pragma HLS DEPENDENCE variable=buf.part_b type=inter direction=RAW distance=ACC_LATENCY dependent=true
        const float g = to_f32(from_f32<grad_t>(dy[i]));
        const float xh = to_f32(from_f32<act_t>(xhat[i]));
        ZSKIP_HW_ASSERT(at.c < CFG::max_ch, "BN_BWD_SUM", "address out of its array");
        buf.part_a[at.c * ACC_LATENCY + slot] += g;
        buf.part_b[at.c * ACC_LATENCY + slot] += g * xh;
        slot = slot + 1 == ACC_LATENCY ? 0 : slot + 1;
        at.next(plane, sh.c);
    }
    cycles += ZSKIP_CYCLES(BN_BWD_SUM, total);
BN_BWD_REDUCE:
    for (unsigned c = 0; c < sh.c; ++c) {
#pragma HLS LOOP_TRIPCOUNT max=CH
// the partials of both sums added in series by one float adder, as BN_MEAN
// (dgamma and dbeta also share the grad port's write channel)
#pragma HLS PIPELINE II=(2 * ACC_LATENCY)
        float db = 0, dg = 0;
    BN_BWD_TREE:
        for (unsigned j = 0; j < ACC_LATENCY; ++j) {
#pragma HLS UNROLL
            db += buf.part_a[c * ACC_LATENCY + j];
            dg += buf.part_b[c * ACC_LATENCY + j];
            buf.part_a[c * ACC_LATENCY + j] = 0;
            buf.part_b[c * ACC_LATENCY + j] = 0;
        }
        count_nonfinite(db);
        count_nonfinite(dg);
        const grad_t db_q = from_f32<grad_t>(db), dg_q = from_f32<grad_t>(dg);
        dbeta[c] = to_f32(db_q);
        dgamma[c] = to_f32(dg_q);
        // dx = scale * (m * dy - dbeta - xhat * dgamma) as two products and a
        // per-channel constant: two multipliers in BN_BWD_DX instead of three
        const float scale = buf.scale[c];
        buf.scale[c] = scale * m;
        buf.gamma[c] = scale * to_f32(dg_q);
        buf.mean[c] = scale * to_f32(db_q);
    }
    cycles += ZSKIP_CYCLES(BN_BWD_REDUCE, sh.c);
    at.p = at.c = 0;
BN_BWD_DX:
    for (uint64_t i = 0; i < total; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=ELEMENTS
// dy (grad), xhat (act) and the mask (bits) read, dx (grad) written: one
// access of each port per element
#pragma HLS PIPELINE II=1
        const bool live = !has_mask || get_bit(mask_in, i);
        float d = 0;
        if (live) {
            const float g = to_f32(from_f32<grad_t>(dy[i]));
            const float xh = to_f32(from_f32<act_t>(xhat[i]));
            d = buf.scale[at.c] * g - buf.gamma[at.c] * xh - buf.mean[at.c];
        }
        count_nonfinite(d);
        dx[i] = to_f32(from_f32<grad_t>(d));
        at.next(plane, sh.c);
    }
    cycles += ZSKIP_CYCLES(BN_BWD_DX, total);
    cnt.load_iters += 2 * (uint64_t)sh.c + 4 * total;
    cnt.wb_iters += 2 * (uint64_t)sh.c + total;
    cnt.cycles += cycles;
    return ERR_NONE;
}

// ----------------------------------------------------------------------------
// Running-statistics update, in place in the wgt arena (running_mean [C] then
// running_var [C] directly after), from the batch's mean and biased var [C]
// (act) over `count` values per channel (PyTorch's rule):
//   running' = (1 - momentum) * running + momentum * batch,
// with the unbiased batch variance var * count / (count - 1).
template <class CFG>
unsigned batchnorm_stats(unsigned channels, unsigned count, float momentum, words<float> running,
                         words<const float> mean, words<const float> var, kernel_counters &cnt) {
    static const unsigned CH = CFG::max_ch;
    if (channels < 1 || channels > CFG::max_ch) return ERR_CHANNELS;
    if (count < 2) return ERR_COUNT;
    const float keep = 1.0f - momentum;
    const float unbias = (float)count / (float)(count - 1);
BN_STATS:
    for (unsigned c = 0; c < channels; ++c) {
#pragma HLS LOOP_TRIPCOUNT max=CH
// four multiplies share one float multiplier (C iterations only); the ports
// need two: two reads and two writes of wgt, two reads of act
#pragma HLS PIPELINE II=4
        const float rm = keep * to_f32(from_f32<opt_t>(running[c])) + momentum * to_f32(from_f32<opt_t>(mean[c]));
        const float rv = keep * to_f32(from_f32<opt_t>(running[channels + c])) +
                         momentum * (to_f32(from_f32<opt_t>(var[c])) * unbias);
        count_nonfinite(rm);
        count_nonfinite(rv);
        running[c] = to_f32(from_f32<opt_t>(rm));
        running[channels + c] = to_f32(from_f32<opt_t>(rv));
    }
    cnt.load_iters += 4 * (uint64_t)channels;
    cnt.wb_iters += 2 * (uint64_t)channels;
    cnt.cycles += ZSKIP_CYCLES(BN_STATS, channels);
    return ERR_NONE;
}

}  // namespace zskip

#endif
