// The zero-skipping engine shared by every convolution and fully-connected
// pass: a templated sparse scatter.
//
//   compaction:  walk one operand plane, emit the list of its nonzeros
//                (index, value); dense mode emits every element.
//   encoder:     for one emitted element, enumerate its valid taps (only taps
//                that land inside the target, stride handled by construction)
//                and, per tap, the channels named by a bit set (all ones, a
//                ReLU mask, or the nonzeros of x) with a priority encoder; the
//                result is the element's item list. The encoder takes 32
//                candidate channel bits per cycle from the concatenation of
//                the taps' sets (a 32-bit window, so several narrow taps share
//                a cycle): ceil(taps * channels / 32) iterations per element.
//   MAC:         pe_lanes lanes consume the item list, acc[a] += B[b] * v,
//                in ceil(items / pe_lanes) iterations of an II=1 pipeline.
//
// The loop trip counts are the numbers of nonzeros and of live items, so a
// zero operand or a masked output costs no MAC iteration.
//
// Accumulator hazard (why the MAC loop keeps II=1): within one element the
// item addresses are pairwise distinct (a tap maps to one target position
// and each channel appears once per tap), so the lanes of one iteration never
// collide and DEPENDENCE inter false holds inside an element. Across
// elements an address can repeat while its previous read-add-write is still
// in flight; a scoreboard (acc_scoreboard below) delays an iteration until
// every one of its addresses was last issued at least ACC_LATENCY cycles
// earlier. Those stall cycles are counted (mac_stalls) and enter the cycles.
#ifndef ZSKIP_SPARSE_SCATTER_H
#define ZSKIP_SPARSE_SCATTER_H

#include <stdint.h>

#include "config.h"
#include "counters.h"
#include "types.h"

namespace zskip {

// Valid taps along one axis: for each source coordinate u, the kernel
// offsets r that reach a target coordinate, and that target.
template <class CFG>
struct tap_axis {
    uint8_t n[CFG::max_dim];
    uint8_t r[CFG::max_dim][CFG::max_ksize];
    uint8_t t[CFG::max_dim][CFG::max_ksize];
};

// Scatter from an input coordinate h to the outputs it feeds (forward):
// oh = (h + pad - r) / stride for the r with an exact quotient in [0, out_len).
template <class CFG>
void build_axis_from_input(tap_axis<CFG> &ax, unsigned in_len, unsigned out_len,
                           unsigned ksize, unsigned stride, unsigned pad) {
    static const unsigned DIM_MAX = CFG::max_dim;
    static const unsigned KS_MAX = CFG::max_ksize;
AXIS_IN:
    for (unsigned u = 0; u < in_len; ++u) {
#pragma HLS LOOP_TRIPCOUNT max=DIM_MAX
        unsigned n = 0;
        // first r congruent to u + pad modulo stride: only valid taps are visited
    AXIS_IN_TAP:
        for (unsigned r = (u + pad) % stride; r < ksize; r += stride) {
#pragma HLS LOOP_TRIPCOUNT max=KS_MAX
            int num = (int)(u + pad) - (int)r;
            if (num < 0) break;
            unsigned o = (unsigned)num / stride;
            if (o < out_len) {
                ax.r[u][n] = (uint8_t)r;
                ax.t[u][n] = (uint8_t)o;
                ++n;
            }
        }
        ax.n[u] = (uint8_t)n;
    }
}

// Scatter from an output coordinate oh back to the inputs it reads
// (backward): h = oh * stride + r - pad for the r with h in [0, in_len).
template <class CFG>
void build_axis_from_output(tap_axis<CFG> &ax, unsigned out_len, unsigned in_len,
                            unsigned ksize, unsigned stride, unsigned pad) {
    static const unsigned DIM_MAX = CFG::max_dim;
    static const unsigned KS_MAX = CFG::max_ksize;
AXIS_OUT:
    for (unsigned u = 0; u < out_len; ++u) {
#pragma HLS LOOP_TRIPCOUNT max=DIM_MAX
        unsigned n = 0;
    AXIS_OUT_TAP:
        for (unsigned r = 0; r < ksize; ++r) {
#pragma HLS LOOP_TRIPCOUNT max=KS_MAX
            int h = (int)(u * stride + r) - (int)pad;
            if (h >= 0 && (unsigned)h < in_len) {
                ax.r[u][n] = (uint8_t)r;
                ax.t[u][n] = (uint8_t)h;
                ++n;
            }
        }
        ax.n[u] = (uint8_t)n;
    }
}

// Where one element's items read and write. For a tap (r, s) reaching the
// target position p = t_row * target_w + t_col:
//   a = a0 + a_pos * p + a_tap * (r * ksize_s + s) + channel
//   b = b0 + b_pos * p + b_tap * (r * ksize_s + s) + channel
//   channel set = sets[set_pos * p .. + words)
struct scatter_map {
    unsigned a0, a_pos, a_tap;
    unsigned b0, b_pos, b_tap;
    unsigned set_pos, words;
    unsigned target_w, ksize_s;
    unsigned channels;  // candidate bits per tap
};

// The compaction stage's output: one plane's nonzeros (value, row, column).
template <class CFG, class V>
struct nz_list {
    static const unsigned PLANE = CFG::max_dim * CFG::max_dim;
    V val[PLANE];
    uint8_t row[PLANE];
    uint8_t col[PLANE];
};

// The encoder's output for one element: accumulator and operand addresses.
template <class CFG>
struct item_list {
    static const unsigned ITEMS = CFG::max_ksize * CFG::max_ksize * CFG::max_ch;
    uint32_t a[ITEMS];
    uint32_t b[ITEMS];
};

// Words of the largest accumulator memory (weights/dw or a feature plane).
template <class CFG>
struct scatter_engine_words {
    static const unsigned W = CFG::max_ch * CFG::max_ch * CFG::max_ksize * CFG::max_ksize;
    static const unsigned X = CFG::max_dim * CFG::max_dim * CFG::max_ch;
    static const unsigned value = W > X ? W : X;
};

// Number of 32-bit words of a channel bit set.
template <class CFG>
struct set_words {
    static const unsigned value = (CFG::max_ch + 31) / 32;
};

// A bit set with every channel < channels set (dense channel enumeration).
template <class CFG>
void fill_all_ones(uint32_t *set, unsigned channels) {
    static const unsigned WORDS = set_words<CFG>::value;
ONES:
    for (unsigned w = 0; w < WORDS; ++w) {
// every word of the set is written in the same cycle (one wide register)
#pragma HLS UNROLL
        unsigned lo = w * 32;
        set[w] = channels >= lo + 32 ? 0xFFFFFFFFu : (channels > lo ? (1u << (channels - lo)) - 1u : 0u);
    }
}

// Compaction stage: one pass over a plane of rows x cols elements of src
// (float32 in device memory), quantised to V. Emits nonzeros (all elements in
// dense mode) and counts macs_dense for the plane: an element at (u, v) feeds
// rows.n[u] * cols.n[v] taps of `channels` channels each. When `sum` is given
// the emitted values are also added to it (the bias gradient).
// The plane arrives BEAT_WORDS elements per beat; a BEAT_WORDS-input
// compaction network (prefix sum of the nonzero flags) appends up to
// BEAT_WORDS elements per cycle, so the scan costs beats(plane) cycles.
template <class CFG, class V>
void compact_plane(const float *src, unsigned rows_n, unsigned cols_n, bool skip_zeros,
                   const tap_axis<CFG> &rows, const tap_axis<CFG> &cols, unsigned channels,
                   nz_list<CFG, V> &nz, unsigned &n_out, kernel_counters &cnt, acc_t *sum) {
    static const unsigned BEAT_MAX = (CFG::max_dim * CFG::max_dim + BEAT_WORDS - 1) / BEAT_WORDS;
    clear(cnt);
    const unsigned plane = rows_n * cols_n;
    unsigned n = 0, u = 0, v = 0;
    uint64_t dense = 0;
SCAN_BEAT:
    for (unsigned i0 = 0; i0 < plane; i0 += BEAT_WORDS) {
#pragma HLS LOOP_TRIPCOUNT max=BEAT_MAX
#pragma HLS PIPELINE II=1
        ++cnt.scan_iters;
    SCAN_WORD:
        for (unsigned j = 0; j < BEAT_WORDS; ++j) {
#pragma HLS UNROLL
            if (i0 + j < plane) {
                dense += (uint64_t)rows.n[u] * channels * cols.n[v];
                V x = from_f32<V>(src[i0 + j]);
                if (!skip_zeros || x != 0) {
                    nz.val[n] = x;
                    nz.row[n] = (uint8_t)u;
                    nz.col[n] = (uint8_t)v;
                    ++n;
                    if (sum) *sum += x;
                }
                if (++v == cols_n) {
                    v = 0;
                    ++u;
                }
            }
        }
    }
    cnt.macs_dense += dense;
    n_out = n;
}

// Issue clock of the MAC stage and the last issue cycle of each accumulator
// address. In hardware the same answer comes from comparing an iteration's
// addresses with those of the last ACC_LATENCY issued iterations (a small
// history of ACC_LATENCY x pe_lanes addresses); C simulation keeps one issue
// stamp per accumulator address instead, which gives the same stall counts
// without P * P * ACC_LATENCY comparisons per iteration. Only the counters
// depend on it, never the arithmetic.
template <unsigned SIZE>
struct acc_scoreboard {
    uint64_t now;
#ifndef __SYNTHESIS__
    uint64_t stamp[SIZE];
#endif
    // stamps start at 0 (static storage) and `now` never goes back
    acc_scoreboard() : now(ACC_LATENCY) {}
    // A descriptor's loads and clears run before its first MAC, so writes of
    // an earlier descriptor have landed: its stamps must never stall this one
    // (and the counts of a descriptor never depend on what ran before it).
    void start_descriptor() { now += ACC_LATENCY; }
};

// Where an element's MAC stage accumulates. Unbanked (base == 0): the
// accumulators themselves. Banked: ACC_LATENCY partial banks of `stride`
// words; each element with live items adds into the next bank in turn, so
// two updates of one bank word are at least ACC_LATENCY - 1 elements (each
// one MAC iteration or more) apart and the float adder's latency is hidden
// without stalls. sum_banks adds the banks into the accumulators. Used where
// consecutive elements hit the same few accumulators (backward-weight with
// few input channels: every dy element of plane k updates the same dw[k]).
struct acc_banks {
    acc_t *base;       // bank 0, banks follow at `stride`; 0 when unbanked
    unsigned stride;   // words per bank
    unsigned sb_base;  // scoreboard index of bank 0's first word
    unsigned next;     // bank of the next element with live items
};

inline acc_banks no_banks() {
    acc_banks b;
    b.base = 0;
    b.stride = b.sb_base = b.next = 0;
    return b;
}

#if !defined(__SYNTHESIS__) && !defined(ZSKIP_CSIM_ITEM_LISTS)
// The MAC lane's add, acc += narrow(b) * v, as C simulation computes it.
// Generic: the ap_types / float expression itself.
template <class B, class V, class A = acc_t>
struct csim_mac {
    typedef typename exact_narrow<B>::type narrow_t;
    struct operand {
        V v;
        explicit operand(const V &x) : v(x) {}
    };
    static void add(A &t, const A &b, const operand &v) { t += narrow_t(b) * v.v; }
    static void add_if(A &t, const A &b, const operand &v, bool live) {
        if (live) t += narrow_t(b) * v.v;
    }
};
// float: a dead lane adds an exact zero (accumulators are never -0, so the
// sum is unchanged) instead of branching on random bits.
template <class B>
struct csim_mac<B, float, float> {
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
// ap_fixed with a saturating accumulator that truncates nothing (fraction
// bits of the product) or rounds with AP_RND: the same result on the raw
// integers (full-precision sum, round half up to the accumulator's fraction,
// then saturate, as the ap_types assignment does), without the
// arbitrary-precision library in the inner loop. b is stored wide (acc type)
// and narrowed by truncation and wrap to WB bits, as exact_narrow does.
template <int WB, int IB, ap_q_mode QB, ap_o_mode OB, int NB, int WV, int IV, ap_q_mode QV, ap_o_mode OV, int NV,
          int WA, int IA, ap_q_mode QA, int NA>
struct csim_mac<ap_fixed<WB, IB, QB, OB, NB>, ap_fixed<WV, IV, QV, OV, NV>, ap_fixed<WA, IA, QA, AP_SAT, NA> > {
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
#endif

#if !defined(__SYNTHESIS__) && !defined(ZSKIP_CSIM_ITEM_LISTS)
// C simulation of scatter_element without materialising the item list: the
// same items in the same order (tap by tap, channels ascending), the same
// adds into the same accumulators, the same counters. Why it may differ in
// form: within an element the item addresses are pairwise distinct, so
//   * each tap's run of consecutive channels is one contiguous loop that g++
//     vectorises (one add per accumulator word, order irrelevant);
//   * the scoreboard only needs the addresses of the first and last
//     ACC_LATENCY iterations (see scatter_element), recorded as they pass,
//     and all stamp reads may precede all stamp writes.
// Building with -DZSKIP_CSIM_ITEM_LISTS simulates the item-list form
// instead (tests/test_kernels_counters.py checks both agree bit for bit).
template <class CFG, class B, class V, unsigned SB>
__attribute__((optimize("tree-vectorize")))
uint64_t scatter_element_direct(V v, unsigned u, unsigned vcol, const tap_axis<CFG> &rows,
                                const tap_axis<CFG> &cols, const scatter_map &m, const uint32_t *sets,
                                acc_t *acc, const acc_t *bsrc, item_list<CFG> &items, acc_scoreboard<SB> &sb,
                                acc_banks &banks, kernel_counters &cnt) {
    typedef csim_mac<B, V> mac;
    const typename mac::operand vop(v);
    static const unsigned P = CFG::pe_lanes;
    static const unsigned L = ACC_LATENCY;
    static const unsigned ITEMS = item_list<CFG>::ITEMS;
    // channel words at most this wide take the branch-free path
    static const unsigned SMALL_WORD = 8;
    const unsigned nr = rows.n[u], nc = cols.n[vcol];
    // the bank is chosen before the items are known: an element without items
    // adds nothing, and only an element with items moves to the next bank
    acc_t *target = banks.base ? banks.base + banks.next * banks.stride : acc;
    const unsigned sb_off = banks.base ? banks.sb_base + banks.next * banks.stride : 0;
    unsigned idx = 0;
    for (unsigned i = 0; i < nr; ++i) {
        for (unsigned j = 0; j < nc; ++j) {
            const unsigned p = rows.t[u][i] * m.target_w + cols.t[vcol][j];
            const unsigned tap = rows.r[u][i] * m.ksize_s + cols.r[vcol][j];
            const unsigned a = m.a0 + m.a_pos * p + m.a_tap * tap;
            const unsigned b = m.b0 + m.b_pos * p + m.b_tap * tap;
            const uint32_t *set = sets + m.set_pos * p;
            for (unsigned w = 0; w < m.words; ++w) {
                uint32_t bits = set[w];
                const unsigned ab = a + w * 32, bb = b + w * 32;
                if (m.channels - w * 32 <= SMALL_WORD) {
                    // a word of few channels, branch-free (random bits mispredict):
                    // a cleared bit adds an exact zero, which leaves the sum unchanged
                    const unsigned width = m.channels - w * 32;
                    for (unsigned k = 0; k < width; ++k) {
                        const bool live = (bits >> k) & 1u;
                        mac::add_if(target[ab + k], bsrc[bb + k], vop, live);
                        if (idx < ITEMS) items.a[idx] = ab + k;
                        idx += live;
                    }
                } else if ((bits & (bits + 1u)) == 0) {
                    const unsigned run = bits == 0xFFFFFFFFu ? 32u : (unsigned)__builtin_ctz(~bits);
                    acc_t *__restrict ta = target + ab;
                    const acc_t *__restrict tb = bsrc + bb;
                    for (unsigned k = 0; k < run; ++k) mac::add(ta[k], tb[k], vop);
                    uint32_t *__restrict ia = items.a + idx;
                    for (unsigned k = 0; k < run; ++k) ia[k] = ab + k;
                    idx += run;
                } else {
                    while (bits) {
                        const unsigned bit = (unsigned)__builtin_ctz(bits);
                        bits &= bits - 1u;
                        mac::add(target[ab + bit], bsrc[bb + bit], vop);
                        items.a[idx++] = ab + bit;
                    }
                }
            }
        }
    }
    const unsigned n_items = idx;
    const uint64_t enc = ((uint64_t)nr * nc * m.channels + 31) / 32;
    const unsigned iters = (n_items + P - 1) / P;
    if (banks.base && n_items) banks.next = banks.next + 1 == L ? 0 : banks.next + 1;
    const unsigned tail_begin = iters > L ? (iters - L) * P : 0;
    // issue times: only the first L iterations can wait on an earlier element
    const uint64_t start = sb.now;
    uint64_t issue_head[L];
    uint64_t now = sb.now;
    const unsigned head_iters = iters < L ? iters : L;
    for (unsigned it = 0; it < head_iters; ++it) {
        uint64_t issue = now;
        const unsigned last = (it + 1) * P < n_items ? (it + 1) * P : n_items;
        for (unsigned k = it * P; k < last; ++k) {
            const uint64_t ready = sb.stamp[sb_off + items.a[k]] + L;
            issue = ready > issue ? ready : issue;
        }
        issue_head[it] = issue;
        now = issue + 1;
    }
    now += iters - head_iters;
    for (unsigned k = tail_begin; k < n_items; ++k) {
        const unsigned it = k / P;
        sb.stamp[sb_off + items.a[k]] = it < L ? issue_head[it] : issue_head[L - 1] + (it - (L - 1));
    }
    sb.now = now;
    const uint64_t mac_cycles = now - start;
    cnt.enc_iters += enc;
    cnt.mac_iters += iters;
    cnt.mac_stalls += mac_cycles - iters;
    cnt.macs_executed += n_items;
    return max2(enc, mac_cycles);
}
#endif

// Encoder + MAC stages for one emitted element of value v at (u, vcol).
// Returns the element's cycles: the two stages run as a DATAFLOW pair, so
// max(encoder, MAC iterations + stalls).
template <class CFG, class B, class V, unsigned SB>
uint64_t scatter_element(V v, unsigned u, unsigned vcol, const tap_axis<CFG> &rows,
                         const tap_axis<CFG> &cols, const scatter_map &m, const uint32_t *sets,
                         acc_t *acc, const acc_t *bsrc, item_list<CFG> &items, acc_scoreboard<SB> &sb,
                         acc_banks &banks, kernel_counters &cnt) {
    static const unsigned P = CFG::pe_lanes;
    static const unsigned KS_MAX = CFG::max_ksize;
    static const unsigned WORDS_MAX = set_words<CFG>::value;
    static const unsigned ITER_MAX = item_list<CFG>::ITEMS / CFG::pe_lanes;
#if !defined(__SYNTHESIS__) && !defined(ZSKIP_CSIM_ITEM_LISTS)
    return scatter_element_direct<CFG, B, V, SB>(v, u, vcol, rows, cols, m, sets, acc, bsrc, items, sb, banks,
                                                 cnt);
#endif
    unsigned n_items = 0;
    uint64_t candidates = 0;
ENC_ROW:
    for (unsigned i = 0; i < rows.n[u]; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=KS_MAX
    ENC_COL:
        for (unsigned j = 0; j < cols.n[vcol]; ++j) {
#pragma HLS LOOP_TRIPCOUNT max=KS_MAX
            unsigned p = rows.t[u][i] * m.target_w + cols.t[vcol][j];
            unsigned tap = rows.r[u][i] * m.ksize_s + cols.r[vcol][j];
            unsigned a = m.a0 + m.a_pos * p + m.a_tap * tap;
            unsigned b = m.b0 + m.b_pos * p + m.b_tap * tap;
            const uint32_t *set = sets + m.set_pos * p;
            candidates += m.channels;
        ENC_WORD:
            for (unsigned w = 0; w < m.words; ++w) {
#pragma HLS LOOP_TRIPCOUNT max=WORDS_MAX
// 32 candidate bits per cycle; the compaction network below emits up to 32 items
#pragma HLS PIPELINE II=1
                uint32_t bits = set[w];
                unsigned base = w * 32;
#ifdef __SYNTHESIS__
            ENC_BIT:
                for (unsigned bit = 0; bit < 32; ++bit) {
// the 32-input compaction network: one cycle per word
#pragma HLS UNROLL
                    if ((bits >> bit) & 1u) {
                        items.a[n_items] = a + base + bit;
                        items.b[n_items] = b + base + bit;
                        ++n_items;
                    }
                }
#else
                // same item list in the same order: a run of low bits (the
                // dense channel set) is copied, other words walked with
                // count-trailing-zeros
                uint32_t *ia = items.a + n_items, *ib = items.b + n_items;
                const unsigned ab = a + base, bb = b + base;
                if ((bits & (bits + 1u)) == 0) {
                    const unsigned run = bits == 0xFFFFFFFFu ? 32u : (unsigned)__builtin_ctz(~bits);
                    for (unsigned j = 0; j < run; ++j) {
                        ia[j] = ab + j;
                        ib[j] = bb + j;
                    }
                    n_items += run;
                } else {
                    unsigned k = 0;
                    while (bits) {
                        const unsigned bit = (unsigned)__builtin_ctz(bits);
                        bits &= bits - 1u;
                        ia[k] = ab + bit;
                        ib[k] = bb + bit;
                        ++k;
                    }
                    n_items += k;
                }
#endif
            }
        }
    }
    // the encoder's 32-bit window advances once per 32 candidate bits
    const uint64_t enc = (candidates + 31) / 32;
    unsigned iters = (n_items + P - 1) / P;
    acc_t *target = acc;
    unsigned sb_off = 0;
    if (banks.base && n_items) {
        target = banks.base + banks.next * banks.stride;
        sb_off = banks.sb_base + banks.next * banks.stride;
        banks.next = banks.next + 1 == ACC_LATENCY ? 0 : banks.next + 1;
    }
    const uint64_t start = sb.now;
MAC:
    for (unsigned it = 0; it < iters; ++it) {
#pragma HLS LOOP_TRIPCOUNT max=ITER_MAX
// P lanes per cycle; addresses are distinct within the element (see top)
#pragma HLS PIPELINE II=1
#pragma HLS DEPENDENCE variable=acc inter false
        unsigned first = it * P;
        unsigned last = first + P < n_items ? first + P : n_items;
        uint64_t issue = sb.now;
#ifndef __SYNTHESIS__
        // Issue times rise by at least one per iteration, so only an element's
        // first ACC_LATENCY iterations can meet a write still in flight, and
        // only its last ACC_LATENCY iterations can still be in flight when the
        // next element starts: the stamps are read and written just there.
        if (it < ACC_LATENCY) {
        HAZARD:
            for (unsigned i = first; i < last; ++i) {
                uint64_t ready = sb.stamp[sb_off + items.a[i]] + ACC_LATENCY;
                issue = ready > issue ? ready : issue;
            }
        }
#endif
    LANE:
        for (unsigned i = first; i < last; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=P
            // the operand is stored wide (engine_memory.h) and holds exactly a
            // B value: narrowing it by truncation is exact and costs no rounding
            target[items.a[i]] += typename exact_narrow<B>::type(bsrc[items.b[i]]) * v;
        }
#ifndef __SYNTHESIS__
        if (it + ACC_LATENCY >= iters) {
        STAMP:
            for (unsigned i = first; i < last; ++i) sb.stamp[sb_off + items.a[i]] = issue;
        }
#endif
        sb.now = issue + 1;
    }
    const uint64_t mac_cycles = sb.now - start;
    cnt.enc_iters += enc;
    cnt.mac_iters += iters;
    cnt.mac_stalls += mac_cycles - iters;
    cnt.macs_executed += n_items;
    return max2(enc, mac_cycles);
}

// Element stage: encoder + MAC for every nonzero of one plane; the sum of
// the elements' cycles goes to elem_cycles.
template <class CFG, class B, class V, unsigned SB>
void element_stage(const nz_list<CFG, V> &nz, unsigned n, const tap_axis<CFG> &rows, const tap_axis<CFG> &cols,
                   const scatter_map &m, const uint32_t *sets, acc_t *acc, const acc_t *bsrc, item_list<CFG> &items,
                   acc_scoreboard<SB> &sb, acc_banks &banks, kernel_counters &cnt, uint64_t &elem_cycles) {
    static const unsigned PLANE_MAX = CFG::max_dim * CFG::max_dim;
    clear(cnt);
    uint64_t cycles = 0;
ELEMENTS:
    for (unsigned e = 0; e < n; ++e) {
#pragma HLS LOOP_TRIPCOUNT max=PLANE_MAX
        cycles += scatter_element<CFG, B, V, SB>(nz.val[e], nz.row[e], nz.col[e], rows, cols, m, sets, acc,
                                                    bsrc, items, sb, banks, cnt);
    }
    elem_cycles = cycles;
}

// Adds both stages' counters to the kernel's and gives the plane's cycles.
inline void merge_stages(const kernel_counters &scan, const kernel_counters &elem, uint64_t elem_cycles,
                         kernel_counters &cnt, uint64_t &plane_cycles) {
    cnt.macs_dense += scan.macs_dense;
    cnt.scan_iters += scan.scan_iters;
    cnt.macs_executed += elem.macs_executed;
    cnt.enc_iters += elem.enc_iters;
    cnt.mac_iters += elem.mac_iters;
    cnt.mac_stalls += elem.mac_stalls;
    plane_cycles = max2(scan.scan_iters, elem_cycles);
}

// One operand plane through the engine: the compaction stage fills the
// nonzero list, the element stage consumes it. As a DATAFLOW region over the
// plane loop (nz_list becomes a ping-pong buffer) the compaction of plane
// c + 1 overlaps the elements of plane c, so a plane costs
// max(scan, sum of element cycles) and the caller adds SCAN_DEPTH and
// MAC_DEPTH (the fills) once per image. When `sum` is given the emitted
// values are also added to it (the bias gradient).
// B: the operand's type (wgt_t or act_t), stored as acc_t in bsrc.
template <class CFG, class B, class V, unsigned SB>
void scatter_plane(const float *src, unsigned rows_n, unsigned cols_n, bool skip_zeros,
                   const tap_axis<CFG> &rows, const tap_axis<CFG> &cols, unsigned channels,
                   const scatter_map &m, const uint32_t *sets, acc_t *acc, const acc_t *bsrc,
                   nz_list<CFG, V> &nz, item_list<CFG> &items, acc_scoreboard<SB> &sb, kernel_counters &cnt,
                   uint64_t &plane_cycles, acc_t *sum = 0, acc_banks *banks = 0) {
// the two stages run concurrently, each with its own counters
#pragma HLS DATAFLOW
    kernel_counters scan_cnt, elem_cnt;
    unsigned n;
    uint64_t elem_cycles;
    compact_plane<CFG, V>(src, rows_n, cols_n, skip_zeros, rows, cols, channels, nz, n, scan_cnt, sum);
    acc_banks unbanked = no_banks();
    element_stage<CFG, B, V, SB>(nz, n, rows, cols, m, sets, acc, bsrc, items, sb, banks ? *banks : unbanked,
                                 elem_cnt, elem_cycles);
    merge_stages(scan_cnt, elem_cnt, elem_cycles, cnt, plane_cycles);
}

// Adds the partial banks' words [0, words) into acc[0, words) and clears
// them: pe_lanes words per cycle, each an adder tree over the ACC_LATENCY
// banks, after the banks' last writes have landed (ACC_LATENCY cycles,
// counted as stalls). The sum iterations count as write-back. Returns the
// cycles.
template <class CFG, unsigned SB>
uint64_t sum_banks(acc_banks &banks, unsigned words, acc_t *acc, acc_scoreboard<SB> &sb, kernel_counters &cnt) {
    static const unsigned P = CFG::pe_lanes;
    static const unsigned ITER_MAX = item_list<CFG>::ITEMS / CFG::pe_lanes;
    const unsigned iters = (words + P - 1) / P;
SUM_BANKS:
    for (unsigned it = 0; it < iters; ++it) {
#pragma HLS LOOP_TRIPCOUNT max=ITER_MAX
#pragma HLS PIPELINE II=1
    SUM_LANE:
        for (unsigned j = 0; j < P; ++j) {
#pragma HLS UNROLL
            const unsigned i = it * P + j;
            if (i < words) {
                acc_t s = 0;
            SUM_BANK:
                for (unsigned k = 0; k < ACC_LATENCY; ++k) {
#pragma HLS UNROLL
                    s += banks.base[k * banks.stride + i];
                    banks.base[k * banks.stride + i] = 0;
                }
                acc[i] += s;
            }
        }
    }
    banks.next = 0;
    sb.now += ACC_LATENCY + iters;
    cnt.mac_stalls += ACC_LATENCY;
    cnt.wb_iters += iters;
    return ACC_LATENCY + iters;
}

// Weight load: w [K][C][RS] float32 in DDR, BEAT_WORDS per beat, quantised
// to wgt_t and stored in the engine as [c][t][k] (forward: a tap's output
// channels are the lanes) or, channels_last, [k][t][c] (backward-data: a
// tap's input channels are the lanes). Returns the cycles (beats).
template <class CFG>
uint64_t load_weights(const float *w, unsigned K, unsigned C, unsigned RS, bool channels_last, acc_t *dst) {
    static const unsigned BEAT_MAX =
        (CFG::max_ch * CFG::max_ch * CFG::max_ksize * CFG::max_ksize + BEAT_WORDS - 1) / BEAT_WORDS;
    const unsigned n = K * C * RS;
    unsigned k = 0, c = 0, t = 0;
LOAD_W_BEAT:
    for (unsigned i0 = 0; i0 < n; i0 += BEAT_WORDS) {
#pragma HLS LOOP_TRIPCOUNT max=BEAT_MAX
#pragma HLS PIPELINE II=1
    LOAD_W_WORD:
        for (unsigned j = 0; j < BEAT_WORDS; ++j) {
#pragma HLS UNROLL
            if (i0 + j < n) {
                const unsigned at = channels_last ? (k * RS + t) * C + c : (c * RS + t) * K + k;
                dst[at] = acc_t(from_f32<wgt_t>(w[i0 + j]));
                if (++t == RS) {
                    t = 0;
                    if (++c == C) {
                        c = 0;
                        ++k;
                    }
                }
            }
        }
    }
    return beats(n);
}

// Clears acc[0, n) (and acc2[0, n) when given, a second memory in the same
// cycles): pe_lanes words per cycle, the accumulator memories having one
// port per MAC lane. Returns the cycles.
template <class CFG>
uint64_t clear_accumulators(acc_t *acc, acc_t *acc2, unsigned n) {
    static const unsigned P = CFG::pe_lanes;
    static const unsigned ITER_MAX = (scatter_engine_words<CFG>::value + CFG::pe_lanes - 1) / CFG::pe_lanes;
    const unsigned iters = (n + P - 1) / P;
CLEAR_ITER:
    for (unsigned it = 0; it < iters; ++it) {
#pragma HLS LOOP_TRIPCOUNT max=ITER_MAX
#pragma HLS PIPELINE II=1
    CLEAR_LANE:
        for (unsigned j = 0; j < P; ++j) {
#pragma HLS UNROLL
            const unsigned i = it * P + j;
            if (i < n) {
                acc[i] = 0;
                if (acc2) acc2[i] = 0;
            }
        }
    }
    return iters;
}

}  // namespace zskip

#endif
