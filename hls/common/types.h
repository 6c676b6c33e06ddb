// Numeric types of the accelerator, chosen in this one place by macros:
//   ZSKIP_ACT_T  activations, ZSKIP_WGT_T weights and optimiser state,
//   ZSKIP_GRAD_T gradients,   ZSKIP_ACC_T MAC accumulators (wider).
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

namespace zskip {

typedef ZSKIP_ACT_T act_t;
typedef ZSKIP_WGT_T wgt_t;
typedef ZSKIP_GRAD_T grad_t;
typedef ZSKIP_ACC_T acc_t;

// float32 interchange: works for float and for ap_fixed (operator float).
template <class T>
inline float to_f32(const T &v) { return (float)v; }

template <class T>
inline T from_f32(float v) { return T(v); }

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
