// Pre-defined sparse fully-connected junctions (Dey et al. 2017, sparse edge
// processing): the three passes over the stored edges only.
//
// A junction of I inputs and J outputs stores fan_in edges per output
// (models/structured.py): weights w [J][fan_in] (the wgt arena, compressed)
// and the input of each edge, pattern [J][fan_in] uint32 (the bits arena).
// Edge e = j * fan_in + t. On chip the weights (or, in backward-weight, the
// dw accumulators) sit in the fc engine's weight memory [e] and the pattern
// in sparse_fc_onchip::idx [e], both cyclic over P = pe_lanes banks (word e
// in bank e mod P); input-side vectors (x, the dx accumulators, the ReLU mask
// of the input) are cyclic over P by input index.
//
// The lanes walk the edges of one output at a time in *chunks*: at most P
// consecutive edges of the output, cut where the pattern's round ends (a
// multiple of I in the flat edge order). A chunk is P consecutive positions
// of one round, which the pattern puts in P distinct input banks
// (models/structured.py, "clash-free"), so its P lanes read (x) or
// read-modify-write (dx) P distinct banks in one cycle with no arbiter; the
// assertion build checks it for every chunk (a clashing pattern is caught),
// and the weights of a chunk are consecutive words (distinct banks).
//
// Zero-skipping on top of the pattern: backward-data and backward-weight
// compact the image's dy row into a list of its nonzero outputs (SPFC_SCAN),
// and the MAC loop runs over the chunks of those outputs only (a zero dy
// costs its scan word, no MAC cycle). Within a chunk a lane whose other
// operand is zero (x in forward and backward-weight) or whose dx is masked
// (backward-data) does no multiply: counted out of macs_executed, but the
// chunk's cycle is spent (compacting across chunks would break the bank
// guarantee). Forward therefore saves MACs but no cycles on zero inputs.
//
// Counters: macs_dense = N * J * I, the MACs of the dense junction (what a
// sparsity-agnostic engine runs for this layer); macs_executed counts the
// lane multiplies, at most N * J * fan_in. So macs_executed / macs_dense is
// the density times the fraction of live operand pairs.
//
// Accumulator hazards: forward adds each chunk's sum (an adder tree over the
// lanes) into one of ACC_LATENCY copies of y[j], and backward-data its lanes'
// products into copies of dx[i], the copy rotating per chunk, so an address
// is written again only ACC_LATENCY cycles later (II = 1, no stall); the
// write-back adds the copies (their ACC_LATENCY words sit in distinct banks).
// Backward-weight updates every dw[e] at most once per image, and images run
// one after another (each loop invocation drains before the next), so it
// needs no copies.
#ifndef ZSKIP_SPARSE_FC_H
#define ZSKIP_SPARSE_FC_H

#include <stdint.h>

#include "../common/bits.h"
#include "../common/adder_tree.h"
#include "../common/config.h"
#include "../common/counters.h"
#include "../common/descriptor.h"
#include "../common/engine_memory.h"
#include "../common/hw_assert.h"
#include "../common/multipliers.h"
#include "../common/sparse_scatter.h"
#include "../common/types.h"
#include "../common/wide_port.h"

namespace zskip {

// Banks of sparse_fc_onchip::part (its ARRAY_PARTITION factor): pe_lanes x
// ACC_LATENCY (fc_config's pe_lanes is ZSKIP_PE_LANES).
static const unsigned sparse_fc_part_banks = ZSKIP_PE_LANES * ACC_LATENCY;
// Banks of the live-output list: a beat's 4 entries per cycle.
static const unsigned sparse_fc_live_banks = BEAT_WORDS;

// The sparse passes' own on-chip arrays; the edge weights, x and the bias
// use the fc engine's memory (scatter_engine_onchip<CFG>: w, plane, bias).
template <class CFG>
struct sparse_fc_onchip {
    static const unsigned P = CFG::pe_lanes;
    static const unsigned L = ACC_LATENCY;
    static const unsigned FEATURES = CFG::max_ch;
    static const unsigned EDGES = CFG::max_edges;
    // the input of each stored edge [e] (16 bits: max_features <= 65536)
    uint16_t idx[EDGES];
    // accumulator copies [index][copy]: y [j] (forward), dx [i] (backward-data)
    acc_t part[FEATURES * L];
    // backward-data: the ReLU mask of input i [i]
    uint8_t in_mask[FEATURES];
    // backward passes: the image's live outputs, in order, with dy and the
    // position of their first edge in the pattern's round ((j * fan_in) mod I)
    uint16_t live[FEATURES];
    uint16_t live_pos[FEATURES];
    acc_t live_dy[FEATURES];
};

// The sparse passes' memory for config CFG (one instance in the IP).
template <class CFG>
void sparse_fc_memory(sparse_fc_onchip<CFG> *&mem) {
    static sparse_fc_onchip<CFG> buf;
// lane l reads the index of edge e0 + l: word e in bank e mod P
#pragma HLS ARRAY_PARTITION variable=buf.idx cyclic factor=CFG::pe_lanes
// [index][copy] cyclic over P * ACC_LATENCY banks: bank (index mod P) * L + copy,
// so a chunk's lanes (one copy, distinct index banks) and a write-back's
// ACC_LATENCY copies of one index each touch distinct banks
#pragma HLS ARRAY_PARTITION variable=buf.part cyclic factor=sparse_fc_part_banks
// lane l reads the mask of its input: cyclic over P like x
#pragma HLS ARRAY_PARTITION variable=buf.in_mask cyclic factor=CFG::pe_lanes
// the beat-wide dy scan appends up to 4 consecutive entries per cycle
#pragma HLS ARRAY_PARTITION variable=buf.live cyclic factor=sparse_fc_live_banks
#pragma HLS ARRAY_PARTITION variable=buf.live_pos cyclic factor=sparse_fc_live_banks
#pragma HLS ARRAY_PARTITION variable=buf.live_dy cyclic factor=sparse_fc_live_banks
    mem = &buf;
}

// Edges of the next chunk: at most P, the rest of the output, the rest of the round.
inline unsigned sparse_chunk_len(unsigned lanes, unsigned left_in_output, unsigned left_in_round) {
    const unsigned a = lanes < left_in_output ? lanes : left_in_output;
    return a < left_in_round ? a : left_in_round;
}

// Assertion build: the chunk's lanes read (or read-modify-write) distinct
// input banks, which only the pattern's clash-freedom guarantees.
// The backward passes' walk over the stored edges of the live outputs, a
// chunk per cycle: live output k's edges [e, end), pos the input position of
// edge e within its bank round (sparse_chunk_len) and the output's dy. Scalars
// only: registers of the MAC loop that advances it.
struct live_edge_walk {
    unsigned k, e, end, pos;
    acc_t dy;
};

template <class CFG>
inline live_edge_walk start_live_walk(const sparse_fc_onchip<CFG> &sp, unsigned n_live, unsigned fan_in) {
    live_edge_walk w;
    w.k = 0;
    w.e = n_live ? sp.live[0] * fan_in : 0;
    w.end = w.e + fan_in;
    w.pos = n_live ? sp.live_pos[0] : 0;
    w.dy = n_live ? sp.live_dy[0] : acc_t(0);
    return w;
}

// Past a chunk of len edges; after an output's last edge, on to the next live output.
template <class CFG>
inline void advance_live_walk(live_edge_walk &w, unsigned len, unsigned in_f, unsigned fan_in, unsigned n_live,
                              const sparse_fc_onchip<CFG> &sp) {
    w.e += len;
    w.pos += len;
    if (w.pos == in_f) w.pos = 0;
    if (w.e == w.end) {
        ++w.k;
        if (w.k < n_live) {
            w.e = sp.live[w.k] * fan_in;
            w.end = w.e + fan_in;
            w.pos = sp.live_pos[w.k];
            w.dy = sp.live_dy[w.k];
        }
    }
}

template <class CFG>
inline void assert_chunk_banks(const uint16_t *idx, unsigned e0, unsigned len, const char *loop) {
#ifdef ZSKIP_EMU_ASSERTS
    static const unsigned P = CFG::pe_lanes;
    bool used[P];
    for (unsigned l = 0; l < P; ++l) used[l] = false;
    for (unsigned l = 0; l < P; ++l) {
        if (l >= len) break;
        const unsigned bank = idx[e0 + l] % P;
        ZSKIP_HW_ASSERT(!used[bank], loop,
                        "two lanes touch one input bank in one cycle (the connection pattern clashes)");
        used[bank] = true;
    }
#else
    (void)idx;
    (void)e0;
    (void)len;
    (void)loop;
#endif
}

// Error code of a sparse junction's shape.
template <class CFG>
unsigned check_sparse_fc_shape(unsigned n, unsigned in_f, unsigned out_f, unsigned fan_in) {
    if (n < 1) return ERR_BATCH;
    if (in_f < 1 || in_f > CFG::max_ch || out_f < 1 || out_f > CFG::max_ch) return ERR_CHANNELS;
    if (fan_in < 1 || fan_in > in_f || (uint64_t)out_f * fan_in > CFG::max_edges) return ERR_COUNT;
    return ERR_NONE;
}

// Pattern load: `edges` uint32 input indices into idx [e]. One 128-bit beat
// per cycle when its 4 consecutive edges fall in 4 distinct banks (P >= 4),
// else one word per cycle. Sets `bad` when an index is not below in_f.
// Returns the cycles.
template <class CFG>
uint64_t sparse_load_pattern(words<const uint32_t> pattern, unsigned edges, unsigned in_f, uint16_t *idx, bool &bad,
                             kernel_counters &cnt) {
    static const unsigned P = CFG::pe_lanes;
    static const unsigned E_MAX = CFG::max_edges;
    static const unsigned BEATS_MAX = (E_MAX + BEAT_WORDS - 1) / BEAT_WORDS;
// the index memory's banks as declared (sparse_fc_memory): word e in bank e mod P
#pragma HLS ARRAY_PARTITION variable=idx cyclic factor=P
    bool out = false;
    if (beat_in_distinct_banks(1, P)) {
        const unsigned beats = (edges + BEAT_WORDS - 1) / BEAT_WORDS;
    SPFC_LOAD_IDX_BEAT:
        for (unsigned b = 0; b < beats; ++b) {
#pragma HLS LOOP_TRIPCOUNT max=BEATS_MAX
// one 128-bit beat of the pattern per cycle, its 4 words into 4 distinct banks
#pragma HLS PIPELINE II=1
            uint32_t word[BEAT_WORDS];
// the 4 lanes of the one beat read below are registers
#pragma HLS ARRAY_PARTITION variable=word complete
            split_beat(pattern.beat_at((uint64_t)b * BEAT_WORDS), word);
        SPFC_LOAD_IDX_LANE:
            for (unsigned j = 0; j < BEAT_WORDS; ++j) {
#pragma HLS UNROLL
                const unsigned e = b * BEAT_WORDS + j;
                if (e < edges) {
                    out = out || word[j] >= in_f;
                    idx[e] = (uint16_t)word[j];
                }
            }
        }
        cnt.load_iters += beats;
        bad = out;
        return ZSKIP_CYCLES(SPFC_LOAD_IDX_BEAT, beats);
    }
SPFC_LOAD_IDX:
    for (unsigned e = 0; e < edges; ++e) {
#pragma HLS LOOP_TRIPCOUNT max=E_MAX
#pragma HLS PIPELINE II=1
        const uint32_t word = pattern[e];
        out = out || word >= in_f;
        idx[e] = (uint16_t)word;
    }
    cnt.load_iters += edges;
    bad = out;
    return ZSKIP_CYCLES(SPFC_LOAD_IDX, edges);
}

// Clears the accumulator copies of indices [0, count): one index (its
// ACC_LATENCY copies) per lane per cycle. Returns the cycles.
template <class CFG>
uint64_t sparse_clear_parts(acc_t *part, unsigned count) {
    static const unsigned P = CFG::pe_lanes;
    static const unsigned L = ACC_LATENCY;
    static const unsigned ITER_MAX = (CFG::max_ch + P - 1) / P;
// bank (index mod P) * L + copy, as declared in sparse_fc_memory
#pragma HLS ARRAY_PARTITION variable=part cyclic factor=sparse_fc_part_banks
    const unsigned iters = (count + P - 1) / P;
SPFC_CLEAR:
    for (unsigned it = 0; it < iters; ++it) {
#pragma HLS LOOP_TRIPCOUNT max=ITER_MAX
// P indices x ACC_LATENCY copies: one word in each of the P * L banks
#pragma HLS PIPELINE II=1
    SPFC_CLEAR_LANE:
        for (unsigned l = 0; l < P; ++l) {
#pragma HLS UNROLL
        SPFC_CLEAR_COPY:
            for (unsigned c = 0; c < L; ++c) {
#pragma HLS UNROLL
                const unsigned i = it * P + l;
                if (i < count) part[i * L + c] = 0;
            }
        }
    }
    return ZSKIP_CYCLES(SPFC_CLEAR, iters);
}

// The sum of index i's ACC_LATENCY copies (a pairwise adder tree), which it clears.
inline acc_t sparse_sum_parts(acc_t *part, unsigned i) {
    static const unsigned L = ACC_LATENCY;
// bank (index mod P) * L + copy, as declared in sparse_fc_memory: the L copies are L banks
#pragma HLS ARRAY_PARTITION variable=part cyclic factor=sparse_fc_part_banks
    acc_t s[L];
// the copies are L registers of the adder tree
#pragma HLS ARRAY_PARTITION variable=s complete
SPFC_SUM_READ:
    for (unsigned c = 0; c < L; ++c) {
#pragma HLS UNROLL
        s[c] = part[i * L + c];
        part[i * L + c] = 0;
    }
    tree_sum<L>(s);
    return s[0];
}

// The backward passes' compaction of dy row `dyn` (J words, one per cycle):
// the live outputs (all in dense mode) with dy and the round position of
// their first edge. WITH_DB: adds dy into db (eng bias). Returns the live count.
template <class CFG, bool WITH_DB>
unsigned sparse_scan_dy(words<const float> dyn, unsigned in_f, unsigned out_f, unsigned fan_in, bool skip_zeros,
                        sparse_fc_onchip<CFG> &sp, acc_t *db, uint64_t &cycles, kernel_counters &cnt) {
    static const unsigned F_MAX = CFG::max_ch;
// db is the engine's bias memory, cyclic over P: one word per cycle
#pragma HLS ARRAY_PARTITION variable=db cyclic factor=CFG::pe_lanes
    unsigned n_live = 0, pos = 0;
    if (dyn.beat_aligned(0) && beat_in_distinct_banks(1, CFG::pe_lanes)) {
        const unsigned beats = (out_f + BEAT_WORDS - 1) / BEAT_WORDS;
    SPFC_SCAN_BEAT:
        for (unsigned b = 0; b < beats; ++b) {
#pragma HLS LOOP_TRIPCOUNT max=F_MAX/BEAT_WORDS
// one 128-bit beat of dy per cycle: up to 4 live outputs appended to the live
// list (4 consecutive entries, 4 banks) and 4 db words (4 distinct banks)
#pragma HLS PIPELINE II=1
            float word[BEAT_WORDS];
// the 4 lanes of the one beat read below are registers
#pragma HLS ARRAY_PARTITION variable=word complete
            split_beat(dyn.beat_at((uint64_t)b * BEAT_WORDS), word);
        SPFC_SCAN_LANE:
            for (unsigned l = 0; l < BEAT_WORDS; ++l) {
#pragma HLS UNROLL
                const unsigned j = b * BEAT_WORDS + l;
                if (j < out_f) {
                    const grad_t v = from_f32<grad_t>(word[l]);
                    if (WITH_DB) db[j] += acc_t(v);
                    if (!skip_zeros || v != 0) {
                        sp.live[n_live] = (uint16_t)j;
                        sp.live_pos[n_live] = (uint16_t)pos;
                        sp.live_dy[n_live] = acc_t(v);
                        ++n_live;
                    }
                    pos += fan_in;
                    if (pos >= in_f) pos -= in_f;
                }
            }
        }
        cnt.scan_iters += beats;
        cycles += ZSKIP_CYCLES(SPFC_SCAN_BEAT, beats);
        return n_live;
    }
SPFC_SCAN:
    for (unsigned j = 0; j < out_f; ++j) {
#pragma HLS LOOP_TRIPCOUNT max=F_MAX
// one dy word per cycle; each db word is added once per image, so no recurrence
#pragma HLS PIPELINE II=1
        const grad_t v = from_f32<grad_t>(dyn[j]);
        if (WITH_DB) db[j] += acc_t(v);
        if (!skip_zeros || v != 0) {
            sp.live[n_live] = (uint16_t)j;
            sp.live_pos[n_live] = (uint16_t)pos;
            sp.live_dy[n_live] = acc_t(v);
            ++n_live;
        }
        pos += fan_in;
        if (pos >= in_f) pos -= in_f;
    }
    cnt.scan_iters += out_f;
    cycles += ZSKIP_CYCLES(SPFC_SCAN, out_f);
    return n_live;
}

// x row `xn` (I words) into the engine's plane [i] (cyclic over P): one
// 128-bit beat per cycle when the row starts on a beat and 4 consecutive
// inputs fall in 4 distinct banks (P >= 4; the last beat's words past the row
// are read and dropped), else one word per cycle.
template <class CFG>
uint64_t sparse_load_x(words<const float> xn, unsigned in_f, acc_t *plane, kernel_counters &cnt) {
    static const unsigned P = CFG::pe_lanes;
    static const unsigned F_MAX = CFG::max_ch;
#pragma HLS ARRAY_PARTITION variable=plane cyclic factor=P
    if (xn.beat_aligned(0) && beat_in_distinct_banks(1, P)) {
        const unsigned beats = (in_f + BEAT_WORDS - 1) / BEAT_WORDS;
    SPFC_LOAD_X_BEAT:
        for (unsigned b = 0; b < beats; ++b) {
#pragma HLS LOOP_TRIPCOUNT max=F_MAX/BEAT_WORDS
// one 128-bit beat of x per cycle, its 4 words into 4 distinct banks
#pragma HLS PIPELINE II=1
            float word[BEAT_WORDS];
// the 4 lanes of the one beat read below are registers
#pragma HLS ARRAY_PARTITION variable=word complete
            split_beat(xn.beat_at((uint64_t)b * BEAT_WORDS), word);
        SPFC_LOAD_X_LANE:
            for (unsigned j = 0; j < BEAT_WORDS; ++j) {
#pragma HLS UNROLL
                const unsigned i = b * BEAT_WORDS + j;
                if (i < in_f) plane[i] = acc_t(from_f32<act_t>(word[j]));
            }
        }
        cnt.load_iters += beats;
        return ZSKIP_CYCLES(SPFC_LOAD_X_BEAT, beats);
    }
SPFC_LOAD_X:
    for (unsigned i = 0; i < in_f; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=F_MAX
#pragma HLS PIPELINE II=1
        plane[i] = acc_t(from_f32<act_t>(xn[i]));
    }
    cnt.load_iters += in_f;
    return ZSKIP_CYCLES(SPFC_LOAD_X, in_f);
}

// y (N, J) = relu(sum over each output's stored edges of w * x[pattern] + b);
// mask bits of y > 0 when relu. x (N, I), w (J, fan_in), pattern (J, fan_in).
template <class CFG, class MUL = mul_t>
unsigned sparse_fc_fwd(unsigned n, unsigned in_f, unsigned out_f, unsigned fan_in, bool skip_zeros, bool relu,
                       words<const float> x, words<const float> w, words<const uint32_t> pattern,
                       words<const float> b, words<float> y, words<uint32_t> mask, scatter_engine_onchip<CFG> &eng,
                       sparse_fc_onchip<CFG> &sp, kernel_counters &cnt) {
    static const unsigned P = CFG::pe_lanes;
    static const unsigned L = ACC_LATENCY;
    static const unsigned F_MAX = CFG::max_ch;
    static const unsigned E_MAX = CFG::max_edges;
    static const unsigned BATCH = TRIP_BATCH;
    unsigned err = check_sparse_fc_shape<CFG>(n, in_f, out_f, fan_in);
    if (err) return err;
    const unsigned edges = out_f * fan_in;
    bool bad = false;
    uint64_t cycles = sparse_load_pattern<CFG>(pattern, edges, in_f, sp.idx, bad, cnt);
    if (bad) return ERR_CHANNELS;
    // the compressed weights in DDR order: word e of the weight memory
    cycles += load_weights<CFG>(w, out_f, fan_in, 1, true, eng.w, cnt);
SPFC_FWD_LOAD_B:
    for (unsigned j = 0; j < out_f; ++j) {
#pragma HLS LOOP_TRIPCOUNT max=F_MAX
#pragma HLS PIPELINE II=1
        eng.bias[j] = acc_t(from_f32<wgt_t>(b[j]));
    }
    cnt.load_iters += out_f;
    cycles += ZSKIP_CYCLES(SPFC_FWD_LOAD_B, out_f);
    cycles += sparse_clear_parts<CFG>(sp.part, out_f);
    bit_writer mask_out(mask);
    // y is written a beat per cycle when every row is whole beats (J a multiple
    // of 4: y and each row start on a beat) and 4 outputs sit in 4 banks
    const bool wide_wb = out_f % BEAT_WORDS == 0 && y.beat_aligned(0) && beat_in_distinct_banks(1, P);
SPFC_FWD_IMAGE:
    for (unsigned img = 0; img < n; ++img) {
#pragma HLS LOOP_TRIPCOUNT max=BATCH
        cycles += sparse_load_x<CFG>(x + (uint64_t)img * in_f, in_f, eng.plane, cnt);
        unsigned j = 0, e = 0, end = fan_in, pos = 0, copy = 0;
        uint64_t chunks = 0;
    SPFC_FWD_MAC:
        while (j < out_f) {
#pragma HLS LOOP_TRIPCOUNT max=E_MAX
// one chunk per cycle: P lanes read P distinct x banks (the pattern) and P
// consecutive weight words; the chunk's sum goes to copy `copy` of y[j],
// written again only ACC_LATENCY chunks later, so II = 1
#pragma HLS PIPELINE II=1
            const unsigned len = sparse_chunk_len(P, end - e, in_f - pos);
            assert_chunk_banks<CFG>(sp.idx, e, len, "SPFC_FWD_MAC");
            acc_t prod[P];
// the lanes' products are registers of the adder tree
#pragma HLS ARRAY_PARTITION variable=prod complete
            unsigned live = 0;
        SPFC_FWD_LANE:
            for (unsigned l = 0; l < P; ++l) {
#pragma HLS UNROLL
                prod[l] = 0;
                if (l < len) {
                    const act_t v = typename exact_narrow<act_t>::type(eng.plane[sp.idx[e + l]]);
                    if (!skip_zeros || v != 0) {
                        mac_multiply<MUL>::add(prod[l], typename exact_narrow<wgt_t>::type(eng.w[e + l]), v);
                        ++live;
                    }
                }
            }
            tree_sum<P>(prod);
            sp.part[j * L + copy] += prod[0];
            cnt.macs_executed += live;
            copy = copy + 1 == L ? 0 : copy + 1;
            e += len;
            pos += len;
            if (pos == in_f) pos = 0;
            if (e == end) {
                ++j;
                end += fan_in;
            }
            ++chunks;
        }
        cnt.mac_iters += chunks;
        cycles += ZSKIP_CYCLES(SPFC_FWD_MAC, chunks);
        words<float> yn = y + (uint64_t)img * out_f;
        if (wide_wb) {
        SPFC_FWD_WB_BEAT:
            for (unsigned b = 0; b < out_f / BEAT_WORDS; ++b) {
#pragma HLS LOOP_TRIPCOUNT max=F_MAX/BEAT_WORDS
// one 128-bit beat of y per cycle: 4 consecutive outputs, their 4 x ACC_LATENCY
// copies and 4 bias words in distinct banks (P >= 4)
#pragma HLS PIPELINE II=1
                float word[BEAT_WORDS];
// the 4 lanes are registers of the one beat written below
#pragma HLS ARRAY_PARTITION variable=word complete
                uint32_t live_bits = 0;
            SPFC_FWD_WB_LANE:
                for (unsigned l = 0; l < BEAT_WORDS; ++l) {
#pragma HLS UNROLL
                    const unsigned jj = b * BEAT_WORDS + l;
                    act_t v = act_t(sparse_sum_parts(sp.part, jj) + eng.bias[jj]);
                    count_nonfinite(v);  // before ReLU, which would turn a NaN into 0
                    const bool live = v > 0;
                    if (relu && !live) v = 0;
                    word[l] = to_f32(v);
                    live_bits |= (uint32_t)live << l;
                }
                yn.beat_at((uint64_t)b * BEAT_WORDS) = make_beat(word);
                if (relu) mask_out.put4(live_bits);
            }
            cnt.wb_iters += out_f / BEAT_WORDS;
            cycles += ZSKIP_CYCLES(SPFC_FWD_WB_BEAT, out_f / BEAT_WORDS);
            continue;
        }
    SPFC_FWD_WB:
        for (unsigned jj = 0; jj < out_f; ++jj) {
#pragma HLS LOOP_TRIPCOUNT max=F_MAX
// one y word per cycle: its ACC_LATENCY copies (distinct banks) summed, bias, ReLU, store
#pragma HLS PIPELINE II=1
            act_t v = act_t(sparse_sum_parts(sp.part, jj) + eng.bias[jj]);
            count_nonfinite(v);  // before ReLU, which would turn a NaN into 0
            const bool live = v > 0;
            if (relu && !live) v = 0;
            yn[jj] = to_f32(v);
            if (relu) mask_out.put(live);
        }
        cnt.wb_iters += out_f;
        cycles += ZSKIP_CYCLES(SPFC_FWD_WB, out_f);
    }
    if (relu) mask_out.flush();
    cnt.macs_dense += (uint64_t)n * out_f * in_f;
    cnt.cycles += cycles;
    return ERR_NONE;
}

// dx (N, I): each stored edge adds w * dy[j] into dx[pattern]; zero where
// out_mask (N, I) is 0 (has_mask; masked inputs are never computed in sparse
// mode). dy (N, J), w (J, fan_in).
template <class CFG, class MUL = mul_t>
unsigned sparse_fc_bwd_data(unsigned n, unsigned in_f, unsigned out_f, unsigned fan_in, bool skip_zeros,
                            bool has_mask, words<const float> dy, words<const float> w, words<const uint32_t> pattern,
                            words<const uint32_t> out_mask, words<float> dx, scatter_engine_onchip<CFG> &eng,
                            sparse_fc_onchip<CFG> &sp, kernel_counters &cnt) {
    static const unsigned P = CFG::pe_lanes;
    static const unsigned L = ACC_LATENCY;
    static const unsigned F_MAX = CFG::max_ch;
    static const unsigned E_MAX = CFG::max_edges;
    static const unsigned BATCH = TRIP_BATCH;
    unsigned err = check_sparse_fc_shape<CFG>(n, in_f, out_f, fan_in);
    if (err) return err;
    const unsigned edges = out_f * fan_in;
    bool bad = false;
    uint64_t cycles = sparse_load_pattern<CFG>(pattern, edges, in_f, sp.idx, bad, cnt);
    if (bad) return ERR_CHANNELS;
    cycles += load_weights<CFG>(w, out_f, fan_in, 1, true, eng.w, cnt);
    cycles += sparse_clear_parts<CFG>(sp.part, in_f);
    const bool mask_lanes = skip_zeros && has_mask;
    // dx is written a beat per cycle when every row is whole beats and 4 inputs sit in 4 banks
    const bool wide_wb = in_f % BEAT_WORDS == 0 && dx.beat_aligned(0) && beat_in_distinct_banks(1, P);
    const bool mask_beat = in_f % BEAT_WORDS == 0 && beat_in_distinct_banks(1, P);
SPFC_BWD_DATA_IMAGE:
    for (unsigned img = 0; img < n; ++img) {
#pragma HLS LOOP_TRIPCOUNT max=BATCH
        if (has_mask && mask_beat) {
        SPFC_BWD_DATA_MASK_BEAT:
            for (unsigned b = 0; b < in_f / BEAT_WORDS; ++b) {
#pragma HLS LOOP_TRIPCOUNT max=F_MAX/BEAT_WORDS
// 4 mask bits per cycle (one word read: a row of a multiple of 4 bits never
// splits a nibble) into 4 inputs' distinct banks
#pragma HLS PIPELINE II=1
                const uint64_t bit = (uint64_t)img * in_f + b * BEAT_WORDS;
                const uint32_t nibble = (out_mask[bit >> 5] >> (bit & 31u)) & 0xFu;
            SPFC_BWD_DATA_MASK_LANE:
                for (unsigned l = 0; l < BEAT_WORDS; ++l) {
#pragma HLS UNROLL
                    sp.in_mask[b * BEAT_WORDS + l] = (nibble >> l) & 1u;
                }
            }
            cnt.load_iters += in_f / BEAT_WORDS;
            cycles += ZSKIP_CYCLES(SPFC_BWD_DATA_MASK_BEAT, in_f / BEAT_WORDS);
        } else if (has_mask) {
        SPFC_BWD_DATA_MASK:
            for (unsigned i = 0; i < in_f; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=F_MAX
// one mask bit per cycle into its input's bank
#pragma HLS PIPELINE II=1
                sp.in_mask[i] = get_bit(out_mask, (uint64_t)img * in_f + i) ? 1 : 0;
            }
            cnt.load_iters += in_f;
            cycles += ZSKIP_CYCLES(SPFC_BWD_DATA_MASK, in_f);
        }
        const unsigned n_live = sparse_scan_dy<CFG, false>(dy + (uint64_t)img * out_f, in_f, out_f, fan_in,
                                                           skip_zeros, sp, eng.bias, cycles, cnt);
        live_edge_walk w = start_live_walk(sp, n_live, fan_in);
        unsigned copy = 0;
        uint64_t chunks = 0;
    SPFC_BWD_DATA_MAC:
        while (w.k < n_live) {
#pragma HLS LOOP_TRIPCOUNT max=E_MAX
// one chunk per cycle: P lanes read-modify-write P distinct dx banks (the
// pattern) in copy `copy`, written again only ACC_LATENCY chunks later: II = 1
#pragma HLS PIPELINE II=1
            const unsigned e = w.e;
            const unsigned len = sparse_chunk_len(P, w.end - e, in_f - w.pos);
            assert_chunk_banks<CFG>(sp.idx, e, len, "SPFC_BWD_DATA_MAC");
            const grad_t g = typename exact_narrow<grad_t>::type(w.dy);
            unsigned live = 0;
        SPFC_BWD_DATA_LANE:
            for (unsigned l = 0; l < P; ++l) {
#pragma HLS UNROLL
                if (l < len) {
                    const unsigned i = sp.idx[e + l];
                    if (!mask_lanes || sp.in_mask[i]) {
                        mac_multiply<MUL>::add(sp.part[i * L + copy],
                                               typename exact_narrow<wgt_t>::type(eng.w[e + l]), g);
                        ++live;
                    }
                }
            }
            cnt.macs_executed += live;
            copy = copy + 1 == L ? 0 : copy + 1;
            advance_live_walk(w, len, in_f, fan_in, n_live, sp);
            ++chunks;
        }
        cnt.mac_iters += chunks;
        cycles += ZSKIP_CYCLES(SPFC_BWD_DATA_MAC, chunks);
        words<float> dxn = dx + (uint64_t)img * in_f;
        if (wide_wb) {
        SPFC_BWD_DATA_WB_BEAT:
            for (unsigned b = 0; b < in_f / BEAT_WORDS; ++b) {
#pragma HLS LOOP_TRIPCOUNT max=F_MAX/BEAT_WORDS
// one 128-bit beat of dx per cycle: 4 consecutive inputs, their copies and
// mask bytes in distinct banks (P >= 4)
#pragma HLS PIPELINE II=1
                float word[BEAT_WORDS];
// the 4 lanes are registers of the one beat written below
#pragma HLS ARRAY_PARTITION variable=word complete
            SPFC_BWD_DATA_WB_LANE:
                for (unsigned l = 0; l < BEAT_WORDS; ++l) {
#pragma HLS UNROLL
                    const unsigned i = b * BEAT_WORDS + l;
                    grad_t v = grad_t(sparse_sum_parts(sp.part, i));
                    if (has_mask && !sp.in_mask[i]) v = 0;
                    count_nonfinite(v);
                    word[l] = to_f32(v);
                }
                dxn.beat_at((uint64_t)b * BEAT_WORDS) = make_beat(word);
            }
            cnt.wb_iters += in_f / BEAT_WORDS;
            cycles += ZSKIP_CYCLES(SPFC_BWD_DATA_WB_BEAT, in_f / BEAT_WORDS);
            continue;
        }
    SPFC_BWD_DATA_WB:
        for (unsigned i = 0; i < in_f; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=F_MAX
// one dx word per cycle: its ACC_LATENCY copies (distinct banks) summed, mask, store
#pragma HLS PIPELINE II=1
            grad_t v = grad_t(sparse_sum_parts(sp.part, i));
            if (has_mask && !sp.in_mask[i]) v = 0;
            count_nonfinite(v);
            dxn[i] = to_f32(v);
        }
        cnt.wb_iters += in_f;
        cycles += ZSKIP_CYCLES(SPFC_BWD_DATA_WB, in_f);
    }
    cnt.macs_dense += (uint64_t)n * out_f * in_f;
    cnt.cycles += cycles;
    return ERR_NONE;
}

// dw (J, fan_in): dw[j][t] = sum over the batch of dy[j] x[pattern[j][t]]
// (the stored edges only: sgd_update over J * fan_in words updates them);
// db (J,) = sum over the batch of dy. x (N, I), dy (N, J).
template <class CFG, class MUL = mul_t>
unsigned sparse_fc_bwd_weight(unsigned n, unsigned in_f, unsigned out_f, unsigned fan_in, bool skip_zeros,
                              words<const float> x, words<const float> dy, words<const uint32_t> pattern,
                              words<float> dw, words<float> db, scatter_engine_onchip<CFG> &eng,
                              sparse_fc_onchip<CFG> &sp, kernel_counters &cnt) {
    static const unsigned P = CFG::pe_lanes;
    static const unsigned F_MAX = CFG::max_ch;
    static const unsigned E_MAX = CFG::max_edges;
    static const unsigned BATCH = TRIP_BATCH;
    unsigned err = check_sparse_fc_shape<CFG>(n, in_f, out_f, fan_in);
    if (err) return err;
    const unsigned edges = out_f * fan_in;
    bool bad = false;
    uint64_t cycles = sparse_load_pattern<CFG>(pattern, edges, in_f, sp.idx, bad, cnt);
    if (bad) return ERR_CHANNELS;
    // dw accumulators [e] in the weight memory, db in the bias memory
    cycles += clear_accumulators<CFG>(eng.w, edges);
    cycles += clear_accumulators<CFG>(eng.bias, out_f);
SPFC_BWD_W_IMAGE:
    for (unsigned img = 0; img < n; ++img) {
#pragma HLS LOOP_TRIPCOUNT max=BATCH
        cycles += sparse_load_x<CFG>(x + (uint64_t)img * in_f, in_f, eng.plane, cnt);
        const unsigned n_live = sparse_scan_dy<CFG, true>(dy + (uint64_t)img * out_f, in_f, out_f, fan_in,
                                                          skip_zeros, sp, eng.bias, cycles, cnt);
        live_edge_walk w = start_live_walk(sp, n_live, fan_in);
        uint64_t chunks = 0;
    SPFC_BWD_W_MAC:
        while (w.k < n_live) {
#pragma HLS LOOP_TRIPCOUNT max=E_MAX
// one chunk per cycle: P lanes read P distinct x banks (the pattern) and
// update P consecutive dw words (distinct banks), each once per image: II = 1
#pragma HLS PIPELINE II=1
            const unsigned e = w.e;
            const unsigned len = sparse_chunk_len(P, w.end - e, in_f - w.pos);
            assert_chunk_banks<CFG>(sp.idx, e, len, "SPFC_BWD_W_MAC");
            const grad_t g = typename exact_narrow<grad_t>::type(w.dy);
            unsigned live = 0;
        SPFC_BWD_W_LANE:
            for (unsigned l = 0; l < P; ++l) {
#pragma HLS UNROLL
                if (l < len) {
                    const act_t v = typename exact_narrow<act_t>::type(eng.plane[sp.idx[e + l]]);
                    if (!skip_zeros || v != 0) {
                        mac_multiply<MUL>::add(eng.w[e + l], v, g);
                        ++live;
                    }
                }
            }
            cnt.macs_executed += live;
            advance_live_walk(w, len, in_f, fan_in, n_live, sp);
            ++chunks;
        }
        cnt.mac_iters += chunks;
        cycles += ZSKIP_CYCLES(SPFC_BWD_W_MAC, chunks);
    }
    const bool wide_dw = edges % BEAT_WORDS == 0 && dw.beat_aligned(0) && beat_in_distinct_banks(1, P);
    uint64_t dw_trips = edges;
    if (wide_dw) {
        dw_trips = edges / BEAT_WORDS;
    SPFC_BWD_W_WB_BEAT:
        for (unsigned b = 0; b < edges / BEAT_WORDS; ++b) {
#pragma HLS LOOP_TRIPCOUNT max=E_MAX/BEAT_WORDS
// one 128-bit beat of dw per cycle: 4 consecutive edges in 4 distinct banks (P >= 4)
#pragma HLS PIPELINE II=1
            float word[BEAT_WORDS];
// the 4 lanes are registers of the one beat written below
#pragma HLS ARRAY_PARTITION variable=word complete
        SPFC_BWD_W_WB_LANE:
            for (unsigned l = 0; l < BEAT_WORDS; ++l) {
#pragma HLS UNROLL
                const grad_t v = grad_t(eng.w[b * BEAT_WORDS + l]);
                count_nonfinite(v);
                word[l] = to_f32(v);
            }
            dw.beat_at((uint64_t)b * BEAT_WORDS) = make_beat(word);
        }
    } else {
    SPFC_BWD_W_WB:
        for (unsigned e = 0; e < edges; ++e) {
#pragma HLS LOOP_TRIPCOUNT max=E_MAX
// one dw word per cycle
#pragma HLS PIPELINE II=1
            const grad_t v = grad_t(eng.w[e]);
            count_nonfinite(v);
            dw[e] = to_f32(v);
        }
    }
SPFC_BWD_W_WB_B:
    for (unsigned j = 0; j < out_f; ++j) {
#pragma HLS LOOP_TRIPCOUNT max=F_MAX
// one db word per cycle
#pragma HLS PIPELINE II=1
        const grad_t v = grad_t(eng.bias[j]);
        count_nonfinite(v);
        db[j] = to_f32(v);
    }
    cnt.wb_iters += dw_trips + out_f;
    cycles += (wide_dw ? ZSKIP_CYCLES(SPFC_BWD_W_WB_BEAT, dw_trips) : ZSKIP_CYCLES(SPFC_BWD_W_WB, dw_trips)) +
              ZSKIP_CYCLES(SPFC_BWD_W_WB_B, out_f);
    cnt.macs_dense += (uint64_t)n * out_f * in_f;
    cnt.cycles += cycles;
    return ERR_NONE;
}

}  // namespace zskip

#endif
