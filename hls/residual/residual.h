// Residual add: the join of a residual block (forward) and the meeting of the
// two paths of its fork (backward). models/reference.residual_add_forward and
// fork_backward are the ground truth.
//
//   forward:  y = a + b                    (then ReLU, writing the mask y > 0)
//   backward: dx = da + db                 (zero where the block input's ReLU
//                                           mask is False)
//
// Both operands of a pass live in one arena (a, b in act; da, db in grad), so
// one iteration makes two reads through one m_axi bundle: II = 2. An
// iteration moves a whole 128-bit beat (4 elements, all tensors start on a
// beat: descriptor.h), so the pass costs half a cycle per element; the last
// count % 4 elements (and every element when a view does not start on a beat)
// go one word per iteration. Element-wise: no on-chip memory, no MACs.
#ifndef ZSKIP_RESIDUAL_H
#define ZSKIP_RESIDUAL_H

#include <stdint.h>

#include "../common/bits.h"
#include "../common/config.h"
#include "../common/counters.h"
#include "../common/descriptor.h"
#include "../common/hw_assert.h"
#include "../common/types.h"
#include "../common/wide_port.h"

namespace zskip {

// One element of the forward pass: a + b in acc_t, narrowed to act_t, counted
// when non-finite (before the ReLU, which would turn a NaN into 0), then the
// ReLU; returns whether y > 0.
inline bool add_fwd_element(float a, float b, bool relu, float &y) {
    act_t v = act_t(acc_t(from_f32<act_t>(a)) + acc_t(from_f32<act_t>(b)));
    count_nonfinite(v);
    const bool live = v > 0;
    if (relu && !live) v = 0;
    y = to_f32(v);
    return live;
}

// One element of the backward pass: da + db in acc_t, narrowed to grad_t,
// zero where the mask bit is clear; the stored value is counted when
// non-finite.
inline float add_bwd_element(float da, float db, bool keep) {
    grad_t v = grad_t(acc_t(from_f32<grad_t>(da)) + acc_t(from_f32<grad_t>(db)));
    if (!keep) v = 0;
    count_nonfinite(v);
    return to_f32(v);
}

// a [count], b [count] (act) -> y [count] (act); with relu, y = max(a + b, 0)
// and mask [count] bits of a + b > 0 (bits). count >= 1.
inline unsigned add_fwd(uint32_t count, bool relu, words<const float> a, words<const float> b, words<float> y,
                        words<uint32_t> mask, kernel_counters &cnt) {
    static const unsigned ELEMENTS = TRIP_ELEMENTS;
    if (count < 1) return ERR_COUNT;
    // every tensor the interpreter hands over starts on a beat (ERR_ALIGN);
    // a view that does not goes word by word
    const bool wide = a.beat_aligned(0) && b.beat_aligned(0) && y.beat_aligned(0);
    const uint32_t beats = wide ? count / BEAT_WORDS : 0;
    bit_writer mask_out(mask);
ADD_FWD_BEAT:
    for (uint32_t t = 0; t < beats; ++t) {
#pragma HLS LOOP_TRIPCOUNT max=ELEMENTS/BEAT_WORDS
// a beat of a and a beat of b come through the one act bundle (two reads),
// the beat of y goes out on its write channel: II = 2
#pragma HLS PIPELINE II=2
        const uint64_t i = (uint64_t)t * BEAT_WORDS;
        ZSKIP_HW_ASSERT(a.beat_aligned(i) && b.beat_aligned(i) && y.beat_aligned(i), "ADD_FWD_BEAT",
                        "a beat access off a beat boundary");
        float wa[BEAT_WORDS], wb[BEAT_WORDS], wy[BEAT_WORDS];
// the 4 lanes of each beat are registers
#pragma HLS ARRAY_PARTITION variable=wa complete
#pragma HLS ARRAY_PARTITION variable=wb complete
#pragma HLS ARRAY_PARTITION variable=wy complete
        split_beat(a.beat_at(i), wa);
        split_beat(b.beat_at(i), wb);
        uint32_t live = 0;
    ADD_FWD_LANE:
        for (unsigned j = 0; j < BEAT_WORDS; ++j) {
#pragma HLS UNROLL
            live |= (uint32_t)add_fwd_element(wa[j], wb[j], relu, wy[j]) << j;
        }
        y.beat_at(i) = make_beat(wy);
        if (relu) mask_out.put4(live);
    }
    const uint32_t first = beats * BEAT_WORDS;
ADD_FWD_WORD:
    for (uint32_t i = first; i < count; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=ELEMENTS
// a word of a and a word of b through the one act bundle: II = 2
#pragma HLS PIPELINE II=2
        float v;
        const bool live = add_fwd_element(a[i], b[i], relu, v);
        y[i] = v;
        if (relu) mask_out.put(live);
    }
    if (relu) mask_out.flush();
    const uint64_t trips = (uint64_t)beats + (count - first);
    cnt.load_iters += trips;
    cnt.wb_iters += trips;
    cnt.cycles += ZSKIP_CYCLES(ADD_FWD_BEAT, beats) + ZSKIP_CYCLES(ADD_FWD_WORD, count - first);
    return ERR_NONE;
}

// da [count], db [count] (grad) -> dx [count] = da + db (grad); with
// has_mask, zero where bit i of mask_in [count] (bits) is clear. count >= 1.
inline unsigned add_bwd(uint32_t count, bool has_mask, words<const float> da, words<const float> db,
                        words<const uint32_t> mask_in, words<float> dx, kernel_counters &cnt) {
    static const unsigned ELEMENTS = TRIP_ELEMENTS;
    if (count < 1) return ERR_COUNT;
    const bool wide = da.beat_aligned(0) && db.beat_aligned(0) && dx.beat_aligned(0);
    const uint32_t beats = wide ? count / BEAT_WORDS : 0;
    // the mask word of the current 32 elements, read from the bits bundle once
    // per 32 elements (8 beats)
    uint32_t mword = 0;
ADD_BWD_BEAT:
    for (uint32_t t = 0; t < beats; ++t) {
#pragma HLS LOOP_TRIPCOUNT max=ELEMENTS/BEAT_WORDS
// a beat of da and a beat of db come through the one grad bundle (two
// reads), the beat of dx goes out on its write channel: II = 2
#pragma HLS PIPELINE II=2
        const uint64_t i = (uint64_t)t * BEAT_WORDS;
        ZSKIP_HW_ASSERT(da.beat_aligned(i) && db.beat_aligned(i) && dx.beat_aligned(i), "ADD_BWD_BEAT",
                        "a beat access off a beat boundary");
        if (has_mask && (i & 31u) == 0) mword = mask_in[i >> 5];
        float wa[BEAT_WORDS], wb[BEAT_WORDS], wx[BEAT_WORDS];
// the 4 lanes of each beat are registers
#pragma HLS ARRAY_PARTITION variable=wa complete
#pragma HLS ARRAY_PARTITION variable=wb complete
#pragma HLS ARRAY_PARTITION variable=wx complete
        split_beat(da.beat_at(i), wa);
        split_beat(db.beat_at(i), wb);
    ADD_BWD_LANE:
        for (unsigned j = 0; j < BEAT_WORDS; ++j) {
#pragma HLS UNROLL
            const bool keep = !has_mask || ((mword >> ((i + j) & 31u)) & 1u);
            wx[j] = add_bwd_element(wa[j], wb[j], keep);
        }
        dx.beat_at(i) = make_beat(wx);
    }
    const uint32_t first = beats * BEAT_WORDS;
ADD_BWD_WORD:
    for (uint32_t i = first; i < count; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=ELEMENTS
// a word of da and a word of db through the one grad bundle: II = 2
#pragma HLS PIPELINE II=2
        if (has_mask && (i == first || (i & 31u) == 0)) mword = mask_in[i >> 5];
        dx[i] = add_bwd_element(da[i], db[i], !has_mask || ((mword >> (i & 31u)) & 1u));
    }
    const uint64_t trips = (uint64_t)beats + (count - first);
    cnt.load_iters += trips;
    cnt.wb_iters += trips;
    cnt.cycles += ZSKIP_CYCLES(ADD_BWD_BEAT, beats) + ZSKIP_CYCLES(ADD_BWD_WORD, count - first);
    return ERR_NONE;
}

}  // namespace zskip

#endif
