// Cycle and work counters that the kernels increment as their loops run.
//
// The one rule (written here once, with the II and depth of every loop in
// schedule.h):
//   * a pipelined loop invocation costs         trips x II + depth
//                                               (ZSKIP_CYCLES(LABEL, trips));
//   * a DATAFLOW region in canonical form costs its slowest stage plus the
//     fills of its stages                       (dataflow3);
//   * everything else is sequential: the caller adds the costs.
// The trip counts are counted by the code that runs the loops, in the
// synthesis branch too. On the board the same counts are status words of the
// stats record.
#ifndef ZSKIP_COUNTERS_H
#define ZSKIP_COUNTERS_H

#include <stdint.h>

#include "schedule.h"

namespace zskip {

// One struct per schedule row: sched_<LABEL>::ii and ::depth.
#define ZSKIP_SCHEDULE(LABEL, II, DEPTH)          \
    struct sched_##LABEL {                        \
        static const unsigned ii = (II);          \
        static const unsigned depth = (DEPTH);    \
    };
#include "schedule.h"
#undef ZSKIP_SCHEDULE

// A pipelined loop invocation of `trips` iterations (none: the loop is not
// entered and costs nothing).
template <class S>
inline uint64_t pipelined(uint64_t trips) {
    return trips ? trips * S::ii + S::depth : 0;
}
#define ZSKIP_CYCLES(LABEL, trips) (::zskip::pipelined< ::zskip::sched_##LABEL>(trips))
#define ZSKIP_BODY(LABEL, trips) ((uint64_t)(trips) * ::zskip::sched_##LABEL::ii)
#define ZSKIP_FILL(LABEL) ((uint64_t)::zskip::sched_##LABEL::depth)

inline uint64_t max2(uint64_t a, uint64_t b) { return a > b ? a : b; }
inline uint64_t max3(uint64_t a, uint64_t b, uint64_t c) { return max2(a, max2(b, c)); }

// A three-stage DATAFLOW region: the slowest stage's iterations x II plus
// every stage's fill (a stage with no iteration adds no fill).
inline uint64_t dataflow3(uint64_t body0, uint64_t fill0, uint64_t body1, uint64_t fill1, uint64_t body2,
                          uint64_t fill2) {
    return max3(body0, body1, body2) + (body0 ? fill0 : 0) + (body1 ? fill1 : 0) + (body2 ? fill2 : 0);
}

struct kernel_counters {
    uint64_t cycles;
    uint64_t macs_executed;  // MAC lane-operations that multiplied an operand pair
    uint64_t macs_dense;     // every in-image tap (models/reference.conv_macs)
    uint64_t load_iters;     // weight, mask and operand loads
    uint64_t scan_iters;     // compaction of operand planes
    uint64_t enc_iters;      // encoder windows
    uint64_t mac_iters;      // MAC lane-cycles (issue cycles, stalls included)
    uint64_t mac_stalls;     // of which: waits for a bank or an accumulator hazard
    uint64_t wb_iters;       // write-back
};

inline void clear(kernel_counters &k) {
    k.cycles = k.macs_executed = k.macs_dense = 0;
    k.load_iters = k.scan_iters = k.enc_iters = k.mac_iters = k.mac_stalls = k.wb_iters = 0;
}

}  // namespace zskip

#endif
