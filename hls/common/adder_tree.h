// A pairwise adder tree over the MAC lanes: the sum of P products in
// ceil(log2(P)) levels of float (or fixed-point) adders, in the order the
// hardware adds them (sparse_fc forward, conv_bwd_data's gather form).
#ifndef ZSKIP_ADDER_TREE_H
#define ZSKIP_ADDER_TREE_H

#include "types.h"

namespace zskip {

// Levels of a pairwise adder tree over n values: ceil(log2(n)).
constexpr unsigned tree_levels(unsigned n) { return n <= 1 ? 0 : 1 + tree_levels((n + 1) / 2); }

// s[0] = the sum of s[0, N) by a pairwise tree (level v adds s[l + 2^v] into
// s[l] for l a multiple of 2^(v+1)): the order the hardware's adders use.
template <unsigned N>
inline void tree_sum(acc_t *s) {
    static const unsigned LEVELS = tree_levels(N);
// every value of the tree is a register
#pragma HLS ARRAY_PARTITION variable=s complete
TREE_LEVEL:
    for (unsigned v = 0; v < LEVELS; ++v) {
#pragma HLS UNROLL
    TREE_PAIR:
        for (unsigned l = 0; l < N; ++l) {
#pragma HLS UNROLL
            const unsigned stride = 1u << v;
            if (l % (2 * stride) == 0 && l + stride < N) s[l] += s[l + stride];
        }
    }
}

}  // namespace zskip

#endif
