// C-simulation speed path of the MAC lane's add, acc += narrow(b) * v
// (sparse_scatter.h, the default emulation form): the same result as the
// ap_types / float expression the synthesis branch writes, without the
// arbitrary-precision library in the inner loop. Proven equal to the
// synthesis form, results and counters, by tests/test_emu_forms.py.
#ifndef ZSKIP_CSIM_MAC_H
#define ZSKIP_CSIM_MAC_H

#include <stdint.h>

#include "types.h"

namespace zskip {

// The MAC lane's add, acc += narrow(b) * v, as C simulation computes it,
// with multiplier MUL (multipliers.h). Generic: the synthesis branch's
// expression itself, mac_multiply<MUL>::add.
template <class B, class V, class A = acc_t, class MUL = mul_t>
struct csim_mac {
    typedef typename exact_narrow<B>::type narrow_t;
    struct operand {
        V v;
        explicit operand(const V &x) : v(x) {}
    };
    static void add(A &t, const A &b, const operand &v) { mac_multiply<MUL>::add(t, narrow_t(b), v.v); }
    static void add_if(A &t, const A &b, const operand &v, bool live) {
        if (live) mac_multiply<MUL>::add(t, narrow_t(b), v.v);
    }
};
// float with the exact multiplier: a dead lane adds an exact zero (accumulators are never -0, so the
// sum is unchanged) instead of branching on random bits.
template <class B>
struct csim_mac<B, float, float, mul_exact> {
    struct operand {
        float v;
        explicit operand(float x) : v(x) {}
    };
    static void add(float &t, const float &b, const operand &v) { t += float(b) * v.v; }
    static void add_if(float &t, const float &b, const operand &v, bool live) {
        const float p = float(b) * v.v;
        t += live ? p : 0.0f;
    }
};
// The approximate float32 multipliers on plain uint32 arithmetic: the same
// bits as their ap_uint functors (multipliers.h), without the arbitrary-
// precision library per product. An inf or NaN operand takes the functor.
template <class MUL>
struct csim_multiply {
    static float apply(float a, float b) { return MUL::apply(a, b); }
};
// sign, exponent and flush/overflow of approximate_multiply, given the
// significand product's carry and fraction
inline float csim_compose(uint32_t ua, uint32_t ub, uint32_t carry, uint32_t frac) {
    const uint32_t sign = (ua ^ ub) & 0x80000000u;
    const uint32_t ea = (ua >> 23) & 0xFFu, eb = (ub >> 23) & 0xFFu;
    const int e = (int)ea + (int)eb - 127 + (int)carry;
    if (ea == 0 || eb == 0 || e <= 0) return word_f32(sign);
    if (e >= 255) return word_f32(sign | 0x7F800000u);
    return word_f32(sign | ((uint32_t)e << 23) | frac);
}
inline bool csim_special(uint32_t ua, uint32_t ub) {
    return ((ua >> 23) & 0xFFu) == 0xFFu || ((ub >> 23) & 0xFFu) == 0xFFu;
}
template <>
struct csim_multiply<mul_mitchell> {
    static float apply(float a, float b) {
        const uint32_t ua = f32_word(a), ub = f32_word(b);
        if (csim_special(ua, ub)) return mul_mitchell::apply(a, b);
        const uint32_t s = (ua & 0x7FFFFFu) + (ub & 0x7FFFFFu);
        return csim_compose(ua, ub, s >> 23, s & 0x7FFFFFu);
    }
};
template <class TABLE>
struct csim_multiply<mul_lut<TABLE> > {
    static const unsigned M = TABLE::mant_bits;
    static float apply(float a, float b) {
        const uint32_t ua = f32_word(a), ub = f32_word(b);
        if (csim_special(ua, ub)) return mul_lut<TABLE>::apply(a, b);
        const uint32_t index = (((ua & 0x7FFFFFu) >> (23 - M)) << M) | ((ub & 0x7FFFFFu) >> (23 - M));
        const uint32_t e = (uint32_t)TABLE::entry(ap_uint<2 * M>(index));
        return csim_compose(ua, ub, e >> M, (e & ((1u << M) - 1u)) << (23 - M));
    }
};
inline float csim_bf16_round(float a) {
    const uint32_t u = f32_word(a);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return word_f32(0x7FC00000u);
    return word_f32((u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u);
}
template <>
struct csim_multiply<mul_bf16> {
    static float apply(float a, float b) { return csim_bf16_round(a) * csim_bf16_round(b); }
};
// float with an approximate multiplier: its uint32 form, operands in the
// order of mac_multiply (streamed value first)
template <class B, class MUL>
struct csim_mac<B, float, float, MUL> {
    struct operand {
        float v;
        explicit operand(float x) : v(x) {}
    };
    static void add(float &t, const float &b, const operand &v) { t += csim_multiply<MUL>::apply(v.v, float(b)); }
    static void add_if(float &t, const float &b, const operand &v, bool live) {
        if (live) t += csim_multiply<MUL>::apply(v.v, float(b));
    }
};
// ap_fixed (exact multiplier only) with a saturating accumulator that truncates nothing (fraction
// bits of the product) or rounds with AP_RND: the same result on the raw
// integers (full-precision sum, round half up to the accumulator's fraction,
// then saturate, as the ap_types assignment does), without the
// arbitrary-precision library in the inner loop. b is stored wide (acc type)
// and narrowed by truncation and wrap to WB bits, as exact_narrow does.
template <int WB, int IB, ap_q_mode QB, ap_o_mode OB, int NB, int WV, int IV, ap_q_mode QV, ap_o_mode OV, int NV,
          int WA, int IA, ap_q_mode QA, int NA>
struct csim_mac<ap_fixed<WB, IB, QB, OB, NB>, ap_fixed<WV, IV, QV, OV, NV>, ap_fixed<WA, IA, QA, AP_SAT, NA>,
                mul_exact> {
    typedef ap_fixed<WA, IA, QA, AP_SAT, NA> A;
    typedef ap_fixed<WV, IV, QV, OV, NV> V;
    static const int SHIFT = (WA - IA) - (WB - IB);          // acc fraction bits above b's
    static const int D = (WB - IB) + (WV - IV) - (WA - IA);  // product fraction bits below acc's
    static const bool RAW = SHIFT >= 0 && D >= 0 && (D == 0 || QA == AP_RND) && WA + D <= 62 && WB + WV <= 62;
    static const int DS = D > 0 ? D : 1;  // shift counts valid for every instantiation
    struct operand {
        V v;
        int64_t raw;
        explicit operand(const V &x) : v(x), raw((int64_t)x.V.VAL) {}
    };
    static void add_raw(A &t, const A &b, int64_t v_raw) {
        const int64_t b_raw = (int64_t)(((uint64_t)((int64_t)b.V.VAL >> (SHIFT > 0 ? SHIFT : 0))) << (64 - WB)) >>
                              (64 - WB);
        const int64_t hi = (int64_t(1) << (WA - 1)) - 1, lo = -(int64_t(1) << (WA - 1));
        const int64_t prod = b_raw * v_raw;
        int64_t sum;
        if (D == 0) {
            sum = (int64_t)t.V.VAL + prod;
        } else {
            const int64_t full = (int64_t)t.V.VAL * (int64_t(1) << DS) + prod;
            sum = (full + (int64_t(1) << (DS - 1))) >> DS;  // arithmetic shift: floor
        }
        sum = sum > hi ? hi : (sum < lo ? lo : sum);
        t.V.VAL = (typename ap_private<WA, true>::ValType)sum;
    }
    static void add(A &t, const A &b, const operand &v) {
        if (RAW) add_raw(t, b, v.raw);
        else t += typename exact_narrow<ap_fixed<WB, IB, QB, OB, NB> >::type(b) * v.v;
    }
    static void add_if(A &t, const A &b, const operand &v, bool live) {
        if (RAW) add_raw(t, b, live ? v.raw : 0);
        else if (live) t += typename exact_narrow<ap_fixed<WB, IB, QB, OB, NB> >::type(b) * v.v;
    }
};

}  // namespace zskip

#endif
