// Cycle and work counters that the kernels increment as their loops run.
//
// Every pipelined loop counts its own iterations (one per initiation, II = 1
// everywhere in this design). Cycles are combined from those counts with the
// pipeline depths below, by one rule:
//   * a pipelined loop alone costs   iterations * II + depth;
//   * stages of a DATAFLOW region run concurrently, so the region costs
//     max(stage cycles) + the fill of the deepest stage;
//   * a double-buffered stage (per-image loads and write-backs) overlaps the
//     compute of the neighbouring image, so per image the cost is
//     max(load, compute, write-back) and one fill is paid per descriptor.
// On the board the same counts are status words of the stats record.
#ifndef ZSKIP_COUNTERS_H
#define ZSKIP_COUNTERS_H

#include <stdint.h>

namespace zskip {

// Pipeline depths (cycles from first read to last write of one iteration).
// DDR burst read + float->type conversion.
static const unsigned LOAD_DEPTH = 4;
// read, quantise, compare with zero, append to the nonzero list.
static const unsigned SCAN_DEPTH = 4;
// tap address arithmetic + 32-bit priority encoder / prefix-sum compaction.
static const unsigned ENC_DEPTH = 3;
// accumulator read, multiply, add, accumulator write (pipeline fill of the
// MAC stage, paid once per image).
static const unsigned MAC_DEPTH = 8;
// cycles from an accumulator read to its write: the same address can be
// issued again only this many cycles later (float32 adder at 100-200 MHz).
static const unsigned ACC_LATENCY = 5;
// accumulator read, bias add, ReLU, conversion, DDR write.
static const unsigned WB_DEPTH = 6;
// float32 words per data-port beat: the m_axi data ports are 128 bits wide,
// so operand planes, loads and write-backs move 4 floats per cycle.
static const unsigned BEAT_WORDS = 4;
// descriptor fetch (a D_WORDS-word burst), validation and dispatch.
static const unsigned DESC_OVERHEAD = 40;

struct kernel_counters {
    uint64_t cycles;
    uint64_t macs_executed;  // MAC lane-operations that multiplied an operand pair
    uint64_t macs_dense;     // every in-image tap (models/reference.conv_macs)
    uint64_t load_iters;     // weight, mask and operand loads
    uint64_t scan_iters;     // compaction of operand planes
    uint64_t enc_iters;      // priority-encoder / item-list stage
    uint64_t mac_iters;      // MAC stage (pe_lanes lanes per iteration)
    uint64_t mac_stalls;     // cycles the MAC stage waited on an accumulator hazard
    uint64_t wb_iters;       // write-back (and the sum of partial accumulator banks)
};

inline void clear(kernel_counters &k) {
    k.cycles = k.macs_executed = k.macs_dense = 0;
    k.load_iters = k.scan_iters = k.enc_iters = k.mac_iters = k.mac_stalls = k.wb_iters = 0;
}

// Beats (cycles of a pipelined port loop) that move `words` float32 words.
inline uint64_t beats(uint64_t words) { return (words + BEAT_WORDS - 1) / BEAT_WORDS; }

inline uint64_t max2(uint64_t a, uint64_t b) { return a > b ? a : b; }
inline uint64_t max3(uint64_t a, uint64_t b, uint64_t c) { return max2(a, max2(b, c)); }

}  // namespace zskip

#endif
