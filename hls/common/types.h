// Numeric types of the accelerator, chosen in this one place by macros:
//   ZSKIP_ACT_T  activations, ZSKIP_WGT_T weights and optimiser state,
//   ZSKIP_GRAD_T gradients,   ZSKIP_ACC_T MAC accumulators (wider),
//   ZSKIP_OPT_T  optimiser state: momentum and the master copy of the
//                weights that sgd_update keeps in the wgt arena (the MAC
//                kernels narrow it to wgt_t when they load it).
// Default float; e.g. -DZSKIP_ACT_T="ap_fixed<16,6,AP_RND,AP_SAT>".
//
// Device memory holds float32 for every tensor class: kernels quantise to
// these types on load and convert back to float32 on store. That float32
// interchange is a simplification of this design (the board could store the
// narrower types and move fewer bytes); the arithmetic is the same either way
// because every stored value is exactly representable after the round trip.
#ifndef ZSKIP_TYPES_H
#define ZSKIP_TYPES_H

#include <ap_fixed.h>
#include <stdint.h>

#ifndef ZSKIP_ACT_T
#define ZSKIP_ACT_T float
#endif
#ifndef ZSKIP_WGT_T
#define ZSKIP_WGT_T float
#endif
#ifndef ZSKIP_GRAD_T
#define ZSKIP_GRAD_T float
#endif
#ifndef ZSKIP_ACC_T
#define ZSKIP_ACC_T float
#endif
#ifndef ZSKIP_OPT_T
#define ZSKIP_OPT_T float
#endif

namespace zskip {

typedef ZSKIP_ACT_T act_t;
typedef ZSKIP_WGT_T wgt_t;
typedef ZSKIP_GRAD_T grad_t;
typedef ZSKIP_ACC_T acc_t;
typedef ZSKIP_OPT_T opt_t;

// float32 interchange: works for float and for ap_fixed (operator float).
template <class T>
inline float to_f32(const T &v) { return (float)v; }

// Saturation counter of the running descriptor (zskip_top clears it before
// and stores it after each one, S_SATURATIONS). Counting never changes a
// value; on the board it is one comparator and a counter per load port.
inline uint64_t &saturation_count() {
    static uint64_t count = 0;
    return count;
}

// Non-finite counter of the running descriptor (zskip_top clears it before and
// stores it after each one, S_NONFINITE): every loss, gradient, pre-activation
// and updated weight a kernel stores is counted when it is inf or NaN, so the
// host notices a diverging run without reading the tensors back. On the board
// it is an exponent compare and an adder beside each write-back port.
inline uint64_t &nonfinite_count() {
    static uint64_t count = 0;
    return count;
}

// A float32 is inf or NaN when its exponent field is all ones.
inline void count_nonfinite(float v) {
    union {
        float f;
        uint32_t u;
    } cvt;
    cvt.f = v;
    if (((cvt.u >> 23) & 0xFFu) == 0xFFu) nonfinite_count()++;
}
// Fixed-point values are finite by construction: no hardware.
template <class T>
inline void count_nonfinite(const T &) {}

constexpr double pow2(int e) { return e >= 0 ? (e == 0 ? 1.0 : 2.0 * pow2(e - 1)) : 0.5 * pow2(e + 1); }

// Whether v meets the range limit of T. A value *at* the limit counts too: the
// kernels store results already narrowed (a saturated result is exactly the
// limit), so it is seen when the next descriptor loads it.
template <class T>
struct range_limit {
    static bool reached(float) { return false; }
};
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
struct range_limit<ap_fixed<W, I, Q, O, N> > {
    static bool reached(float v) {
        const double hi = pow2(I - 1) - pow2(I - W);
        const double lo = -pow2(I - 1);
        return v >= hi || v <= lo;
    }
};

template <class T>
inline T from_f32(float v) {
    if (range_limit<T>::reached(v)) saturation_count()++;
    return T(v);
}

// The type to narrow a wide value to when the value is known to be exactly
// representable in T: T itself, without rounding or saturation logic (for
// ap_fixed, the same width with AP_TRN / AP_WRAP, a plain bit selection).
template <class T>
struct exact_narrow {
    typedef T type;
};
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
struct exact_narrow<ap_fixed<W, I, Q, O, N> > {
    typedef ap_fixed<W, I> type;
};

}  // namespace zskip

#endif
