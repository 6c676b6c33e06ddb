// The zero-skipping engine shared by every convolution and fully-connected
// pass: a templated sparse scatter, one DATAFLOW region per image.
//
//   scan:     walk the image's operand planes one word per cycle and stream
//             the nonzeros (value, row, column, plane); dense mode streams
//             every element.
//   encoder:  for each streamed element, enumerate its candidates, the
//             (valid tap, channel) pairs in tap-major order (the channels
//             named by a bit set: all ones, a ReLU mask or the nonzeros of
//             x), ENC_BITS candidates per cycle (one window); the live ones
//             of a window form one token of at most ENC_BITS items
//             (accumulator address, operand address).
//   MAC:      pe_lanes lanes, lane l owns accumulator bank l (address mod
//             pe_lanes, ARRAY_PARTITION cyclic at the declaration) and
//             queues the token's items of its bank; a token lasts as long
//             as its busiest lane (the arbiter, mac_schedule below), plus
//             the cycles its operand reads need beyond the two ports of an
//             operand bank, plus the waits for accumulator hazards.
//
// The three stages are connected by hls::stream in the synthesis branch
// (canonical DATAFLOW: one producer and one consumer per stream), so an
// image costs its slowest stage plus the three fills (counters.h). Trip
// counts are the numbers of scanned words, windows and lane-cycles: a zero
// operand or a masked output costs no MAC cycle.
//
// Accumulator hazard: an address may issue again only ACC_LATENCY cycles
// after it last issued (float adder latency). Each lane keeps the last
// ACC_LATENCY addresses it issued with their cycles (hazard_history, the
// hardware, used by the synthesis branch); a token waits until none of its
// items meets a write still in flight. C simulation keeps one issue stamp
// per accumulator address instead (hazard_stamps): the same answer, proven
// equal by tests/test_emu_forms.py. Where consecutive elements would update
// the same few accumulators (backward-weight of a narrow layer), elements
// rotate over ACC_LATENCY partial copies of the accumulators (scatter_map::
// copies) and the write-back adds them up.
#ifndef ZSKIP_SPARSE_SCATTER_H
#define ZSKIP_SPARSE_SCATTER_H

#include <stdint.h>

#include "config.h"
#include "counters.h"
#include "hw_assert.h"
#include "types.h"
#include "wide_port.h"
// csim-path: proven by tests/test_emu_forms.py::test_lenet5_training_step_equal_in_both_forms
#ifdef __SYNTHESIS__
#include <hls_stream.h>
#else
// csim-path: proven by tests/test_emu_forms.py::test_lenet5_training_step_equal_in_both_forms
#include "csim_mac.h"
#endif

namespace zskip {

// Candidates the encoder takes per cycle: two 32-bit set words, and at least
// one per lane (a masked pass keeps only a fraction of its candidates, so the
// encoder must look at more candidates per cycle than the lanes take items).
template <class CFG>
struct enc_bits {
    static const unsigned value = CFG::pe_lanes < 64 ? 64 : CFG::pe_lanes;
};

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
// Returns the loop's trips.
template <class CFG>
unsigned build_axis_from_input(tap_axis<CFG> &ax, unsigned in_len, unsigned out_len, unsigned ksize,
                               unsigned stride, unsigned pad) {
    static const unsigned DIM_MAX = CFG::max_dim;
    static const unsigned KS_MAX = CFG::max_ksize;
AXIS_IN:
    for (unsigned u = 0; u < in_len; ++u) {
#pragma HLS LOOP_TRIPCOUNT max=DIM_MAX
// one source coordinate per cycle, all its taps in parallel
#pragma HLS PIPELINE II=1
        unsigned n = 0;
    AXIS_IN_TAP:
        for (unsigned r = 0; r < KS_MAX; ++r) {
#pragma HLS UNROLL
            const int num = (int)(u + pad) - (int)r;
            if (r < ksize && num >= 0 && (unsigned)num % stride == 0 && (unsigned)num / stride < out_len) {
                ax.r[u][n] = (uint8_t)r;
                ax.t[u][n] = (uint8_t)((unsigned)num / stride);
                ++n;
            }
        }
        ax.n[u] = (uint8_t)n;
    }
    return in_len;
}

// Scatter from an output coordinate oh back to the inputs it reads
// (backward): h = oh * stride + r - pad for the r with h in [0, in_len).
template <class CFG>
unsigned build_axis_from_output(tap_axis<CFG> &ax, unsigned out_len, unsigned in_len, unsigned ksize,
                                unsigned stride, unsigned pad) {
    static const unsigned DIM_MAX = CFG::max_dim;
    static const unsigned KS_MAX = CFG::max_ksize;
AXIS_OUT:
    for (unsigned u = 0; u < out_len; ++u) {
#pragma HLS LOOP_TRIPCOUNT max=DIM_MAX
// one source coordinate per cycle, all its taps in parallel
#pragma HLS PIPELINE II=1
        unsigned n = 0;
    AXIS_OUT_TAP:
        for (unsigned r = 0; r < KS_MAX; ++r) {
#pragma HLS UNROLL
            const int h = (int)(u * stride + r) - (int)pad;
            if (r < ksize && h >= 0 && (unsigned)h < in_len) {
                ax.r[u][n] = (uint8_t)r;
                ax.t[u][n] = (uint8_t)h;
                ++n;
            }
        }
        ax.n[u] = (uint8_t)n;
    }
    return out_len;
}

// Where one element's items read and write. For an element of plane q and
// a tap (r, s) reaching the target position p = t_row * target_w + t_col:
//   a = a_plane * q + a_pos * p + a_tap * (r * ksize_s + s) + channel
//       + copy * copy_stride
//   b = b_plane * q + b_pos * p + b_tap * (r * ksize_s + s) + channel
//   channel set = sets[set_pos * p .. + words)
// copy rotates over [0, copies) from one element with items to the next.
struct scatter_map {
    unsigned a_plane, a_pos, a_tap;
    unsigned b_plane, b_pos, b_tap;
    unsigned set_pos, words;
    unsigned target_w, ksize_s;
    unsigned channels;  // candidate channels per tap
    unsigned copies, copy_stride;
    unsigned a_size, b_size;  // words of the accumulator and operand memories (assertions)
};

// One streamed nonzero of the scan.
template <class V>
struct nz_item {
    V val;
    uint8_t row, col;
    uint16_t plane;
    bool last;  // end of the image (carries no element)
};

// One encoder window's live items.
template <class CFG, class V>
struct item_token {
    static const unsigned W = enc_bits<CFG>::value;
    uint32_t a[W];
    uint32_t b[W];
    uint16_t n;
    V v;
    bool last;  // end of the image (carries no item)
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
#pragma HLS ARRAY_PARTITION variable=set complete
ONES:
    for (unsigned w = 0; w < WORDS; ++w) {
// every word of the set is written in the same cycle (one wide register)
#pragma HLS UNROLL
        unsigned lo = w * 32;
        set[w] = channels >= lo + 32 ? 0xFFFFFFFFu : (channels > lo ? (1u << (channels - lo)) - 1u : 0u);
    }
}

// ---------------------------------------------------------------------------
// Accumulator hazard trackers (see the top of the file).

// The hardware: per lane, the last ACC_LATENCY addresses it issued and when.
template <class CFG>
struct hazard_history {
    static const unsigned P = CFG::pe_lanes;
    static const unsigned L = ACC_LATENCY;
    // registers: every lane compares all its entries in one cycle
    // (ARRAY_PARTITION complete dim=0 where the engine memory is declared)
    uint32_t addr[P][L];
    uint64_t time[P][L];
    bool valid[P][L];
    uint8_t head[P];
    uint64_t now;

    void start_descriptor() {
    HZ_CLEAR:
        for (unsigned l = 0; l < P; ++l) {
#pragma HLS UNROLL
            head[l] = 0;
        HZ_CLEAR_SLOT:
            for (unsigned s = 0; s < L; ++s) {
#pragma HLS UNROLL
                valid[l][s] = false;
            }
        }
        now = L;
    }
    // earliest cycle address a may issue again (0: no write in flight)
    uint64_t ready(uint32_t a) const {
#pragma HLS ARRAY_PARTITION variable=addr complete dim=0
#pragma HLS ARRAY_PARTITION variable=time complete dim=0
#pragma HLS ARRAY_PARTITION variable=valid complete dim=0
        const unsigned lane = a % P;
        uint64_t r = 0;
    HZ_MATCH:
        for (unsigned s = 0; s < L; ++s) {
#pragma HLS UNROLL
            if (valid[lane][s] && addr[lane][s] == a && time[lane][s] + L > r) r = time[lane][s] + L;
        }
        return r;
    }
    void record(uint32_t a, uint64_t t) {
        const unsigned lane = a % P;
        addr[lane][head[lane]] = a;
        time[lane][head[lane]] = t;
        valid[lane][head[lane]] = true;
        head[lane] = head[lane] + 1 == L ? 0 : head[lane] + 1;
    }
    // the MAC pipeline drained: every write has landed
    void drain() { now += L; }
};

// csim-path: proven by tests/test_emu_forms.py::test_lenet5_training_step_equal_in_both_forms
#ifndef __SYNTHESIS__
// C-simulation speed path: one issue stamp per accumulator address (same
// ready times as hazard_history, without P x ACC_LATENCY comparisons).
template <unsigned SIZE>
struct hazard_stamps {
    uint64_t stamp[SIZE];
    uint64_t now;
    // a descriptor's loads run before its first MAC: earlier writes have
    // landed, and stamps of earlier descriptors must never stall this one
    void start_descriptor() { now += 2 * ACC_LATENCY; }
    uint64_t ready(uint32_t a) const { return stamp[a] + ACC_LATENCY; }
    void record(uint32_t a, uint64_t t) { stamp[a] = t; }
    void drain() { now += ACC_LATENCY; }
};
#endif

// ---------------------------------------------------------------------------
// The MAC stage's issue logic. Each cycle the lanes take the longest run of
// the next items (in order) that fits the memories' ports: at most one item
// per accumulator bank (its read-modify-write takes both ports of the bank;
// lane l serves bank l, so this is also one item per lane) and at most two
// operand reads per operand bank, at most pe_lanes items. That run is a lane
// token (lane_token); the token issues when none of its addresses has a
// write still in flight (hazard tracker), and takes one cycle.
template <class CFG>
struct mac_arbiter {
    static const unsigned P = CFG::pe_lanes;
    // accumulator banks taken and operand-bank reads of the token being
    // formed (registers cleared at each issue)
    bool bank_used[P];
    uint8_t port_reads[P];
};

template <class CFG, class V>
struct lane_token {
    static const unsigned P = CFG::pe_lanes;
    uint32_t a[P];
    uint32_t b[P];
    V v[P];
    unsigned n;
};

// Whether item (a, b) fits the token being formed.
template <class CFG>
inline bool arbiter_fits(const mac_arbiter<CFG> &arb, unsigned n, uint32_t a, uint32_t b) {
    static const unsigned P = CFG::pe_lanes;
#ifdef ZSKIP_PLANT_BANK_CONFLICT
    // planted violation (tests only): the bank check is missing
    return n < P && arb.port_reads[b % P] < 2;
#else
    return n < P && !arb.bank_used[a % P] && arb.port_reads[b % P] < 2;
#endif
}

template <class CFG>
inline void arbiter_take(mac_arbiter<CFG> &arb, uint32_t a, uint32_t b) {
    static const unsigned P = CFG::pe_lanes;
    arb.bank_used[a % P] = true;
    ++arb.port_reads[b % P];
}

template <class CFG>
inline void arbiter_clear(mac_arbiter<CFG> &arb) {
    static const unsigned P = CFG::pe_lanes;
ARB_CLEAR:
    for (unsigned l = 0; l < P; ++l) {
#pragma HLS UNROLL
        arb.bank_used[l] = false;
        arb.port_reads[l] = 0;
    }
}

// Assertion build: a lane token touches each accumulator bank once (its
// read-modify-write takes both ports) and each operand bank at most twice.
template <class CFG>
inline void assert_lane_token(const uint32_t *a, const uint32_t *b, unsigned n) {
#ifdef ZSKIP_EMU_ASSERTS
    static const unsigned P = CFG::pe_lanes;
    unsigned acc_use[P], op_use[P];
    for (unsigned l = 0; l < P; ++l) acc_use[l] = op_use[l] = 0;
    for (unsigned k = 0; k < P; ++k) {
        if (k >= n) break;
        ZSKIP_HW_ASSERT(++acc_use[a[k] % P] <= 1, "MAC_CYCLE", "two lanes touch one accumulator bank in one cycle");
        ZSKIP_HW_ASSERT(++op_use[b[k] % P] <= 2, "MAC_CYCLE",
                        "more reads of an operand bank in one cycle than its two ports");
    }
#else
    (void)a;
    (void)b;
    (void)n;
#endif
}

// Issue of one token by the C-simulation path: waits for its hazards, then
// one cycle; the same count as mac_process's bubbles and issue. Returns the
// cycles (wait included).
template <class CFG, class HZ>
uint64_t mac_schedule(const uint32_t *a, const uint32_t *b, unsigned n, HZ &hz, kernel_counters &cnt) {
    static const unsigned P = CFG::pe_lanes;
#pragma HLS ARRAY_PARTITION variable=a complete
    assert_lane_token<CFG>(a, b, n);
    const uint64_t before = hz.now;
    uint64_t start = hz.now;
ARB_HAZARD:
    for (unsigned k = 0; k < P; ++k) {
#pragma HLS UNROLL
        if (k < n) {
            const uint64_t ready = hz.ready(a[k]);
            start = ready > start ? ready : start;
        }
    }
ARB_RECORD:
    for (unsigned k = 0; k < P; ++k) {
#pragma HLS UNROLL
        if (k < n) hz.record(a[k], start);
    }
    hz.now = start + 1;
    cnt.mac_stalls += start - before;
    cnt.macs_executed += n;
    return start - before + 1;
}

// ---------------------------------------------------------------------------
// Stage 1, scan: every word of the image's `planes` planes of rows_n x
// cols_n, one per cycle; emits nonzeros (all in dense mode) and counts
// macs_dense (an element at (u, v) feeds rows.n[u] * cols.n[v] taps of
// `channels` channels). WITH_SUM: the values are also added to sum[plane]
// (the bias gradient), rotating over ACC_LATENCY partial sums so the float
// adds of consecutive words never wait on each other.
// Returns the loop's trips.
template <class CFG, class V, bool WITH_SUM, class SINK>
uint64_t scan_image(words<const float> src, unsigned planes, unsigned rows_n, unsigned cols_n, bool skip_zeros,
                    const tap_axis<CFG> &rows, const tap_axis<CFG> &cols, unsigned channels, acc_t *sum,
                    SINK &out, kernel_counters &cnt) {
    static const unsigned WORDS_MAX = CFG::max_ch * CFG::max_dim * CFG::max_dim;
    static const unsigned L = ACC_LATENCY;
    const unsigned plane = rows_n * cols_n;
    const unsigned total = planes * plane;
    acc_t partial[L];
#pragma HLS ARRAY_PARTITION variable=partial complete
SCAN_PARTIAL_CLEAR:
    for (unsigned j = 0; j < L; ++j) {
#pragma HLS UNROLL
        partial[j] = 0;
    }
    unsigned u = 0, v = 0, q = 0, e = 0, slot = 0;
    uint64_t dense = 0;
SCAN:
    for (unsigned i = 0; i < total; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=WORDS_MAX
#pragma HLS PIPELINE II=1
        dense += (uint64_t)rows.n[u] * channels * cols.n[v];
        const V x = from_f32<V>(src[i]);
        if (!skip_zeros || x != 0) {
            nz_item<V> it;
            it.val = x;
            it.row = (uint8_t)u;
            it.col = (uint8_t)v;
            it.plane = (uint16_t)q;
            it.last = false;
            out.put(it);
        }
        if (WITH_SUM) {
            partial[slot] += x;
            slot = slot + 1 == L ? 0 : slot + 1;
        }
        if (++v == cols_n) {
            v = 0;
            ++u;
        }
        if (++e == plane) {
            if (WITH_SUM) {
                acc_t s = 0;
            SCAN_PARTIAL_SUM:
                for (unsigned j = 0; j < L; ++j) {
#pragma HLS UNROLL
                    s += partial[j];
                    partial[j] = 0;
                }
                sum[q] += s;
                slot = 0;
            }
            e = u = v = 0;
            ++q;
        }
    }
    out.finish();
    cnt.macs_dense += dense;
    cnt.scan_iters += total;
    return total;
}

// Encoder windows of an element with `taps` valid taps (at least one
// iteration: the element is read even when no tap is valid).
template <class CFG>
inline unsigned element_windows(unsigned taps, unsigned channels) {
    static const unsigned W = enc_bits<CFG>::value;
    const unsigned q = taps * channels;
    return q ? (q + W - 1) / W : 1;
}

// The per-image stage counts of a region.
struct region_trips {
    uint64_t scan, enc, mac;
};

#ifdef __SYNTHESIS__
// ---------------------------------------------------------------------------
// The synthesis branch: three processes connected by streams.

template <class V>
struct nz_stream_sink {
    hls::stream<nz_item<V> > &s;
    explicit nz_stream_sink(hls::stream<nz_item<V> > &st) : s(st) {}
    void put(const nz_item<V> &it) { s.write(it); }
    void finish() {
        nz_item<V> end;
        end.val = 0;
        end.row = end.col = 0;
        end.plane = 0;
        end.last = true;
        s.write(end);
    }
};

template <class CFG, class V, bool WITH_SUM>
void scan_process(words<const float> src, unsigned planes, unsigned rows_n, unsigned cols_n, bool skip_zeros,
                  const tap_axis<CFG> &rows, const tap_axis<CFG> &cols, unsigned channels, acc_t *sum,
                  hls::stream<nz_item<V> > &out, kernel_counters &cnt, uint64_t &trips) {
    nz_stream_sink<V> sink(out);
    trips = scan_image<CFG, V, WITH_SUM>(src, planes, rows_n, cols_n, skip_zeros, rows, cols, channels, sum,
                                         sink, cnt);
}

// Stage 2: one window of ENC_BITS candidates per cycle, over every element
// of the image (one flattened loop: its fill is paid once per image).
template <class CFG, class V>
void encode_process(hls::stream<nz_item<V> > &in, const tap_axis<CFG> &rows, const tap_axis<CFG> &cols,
                    const scatter_map &m, const uint32_t *sets, hls::stream<item_token<CFG, V> > &out,
                    uint64_t &trips) {
    static const unsigned W = enc_bits<CFG>::value;
    static const unsigned WIN_MAX = CFG::max_ch * CFG::max_dim * CFG::max_dim * CFG::max_ksize * CFG::max_ksize;
// the channel sets of every tap of a window are read in one cycle (the
// engine memory holds them in registers, engine_memory.h)
#pragma HLS ARRAY_PARTITION variable=sets complete
    uint64_t iters = 0;
    ZSKIP_HW_ASSERT(!in.empty(), "ENC_WINDOW", "stream read when empty");
    nz_item<V> e = in.read();
    unsigned w = 0, nc = cols.n[e.col], taps = rows.n[e.row] * nc;
    unsigned n_win = element_windows<CFG>(taps, m.channels);
    unsigned copy = 0;
    bool any = false;
ENC_WINDOW:
    while (!e.last) {
#pragma HLS LOOP_TRIPCOUNT max=WIN_MAX
#pragma HLS PIPELINE II=1
        ++iters;
        item_token<CFG, V> t;
#pragma HLS ARRAY_PARTITION variable=t.a complete
#pragma HLS ARRAY_PARTITION variable=t.b complete
        t.n = 0;
        t.v = e.val;
        t.last = false;
    ENC_BIT:
        for (unsigned j = 0; j < W; ++j) {
#pragma HLS UNROLL
            const unsigned q = w * W + j;
            if (q < taps * m.channels) {
                // divisions by descriptor constants: a per-descriptor table in hardware
                const unsigned ti = q / m.channels, ch = q % m.channels;
                const unsigned i = ti / nc, jj = ti % nc;
                const unsigned p = rows.t[e.row][i] * m.target_w + cols.t[e.col][jj];
                const unsigned tap = rows.r[e.row][i] * m.ksize_s + cols.r[e.col][jj];
                const uint32_t word = sets[m.set_pos * p + (ch >> 5)];
                if ((word >> (ch & 31)) & 1u) {
                    t.a[t.n] = m.a_plane * e.plane + m.a_pos * p + m.a_tap * tap + ch + copy * m.copy_stride;
                    t.b[t.n] = m.b_plane * e.plane + m.b_pos * p + m.b_tap * tap + ch;
                    ZSKIP_HW_ASSERT(t.a[t.n] < m.a_size, "ENC_WINDOW", "accumulator address out of its array");
                    ZSKIP_HW_ASSERT(t.b[t.n] < m.b_size, "ENC_WINDOW", "operand address out of its array");
                    ++t.n;
                }
            }
        }
        if (t.n) {
            out.write(t);
            any = true;
        }
        if (++w >= n_win) {
            if (any) copy = copy + 1 == m.copies ? 0 : copy + 1;
            any = false;
            ZSKIP_HW_ASSERT(!in.empty(), "ENC_WINDOW", "stream read when empty");
            e = in.read();
            w = 0;
            if (!e.last) {
                nc = cols.n[e.col];
                taps = rows.n[e.row] * nc;
                n_win = element_windows<CFG>(taps, m.channels);
            }
        }
    }
    item_token<CFG, V> end;
    end.n = 0;
    end.v = 0;
    end.last = true;
    out.write(end);
    trips = iters;
}

// Stage 3: the lanes, one cycle per iteration. Each iteration forms a lane
// token from the head of the current window (the longest prefix that fits
// the banks' ports, arbiter_fits) and issues it, unless one of its addresses
// still has a write in flight (hazard_history): then the iteration is a
// bubble and the same token is formed again in the next. A window is read
// when the previous one is used up, so a token never spans two windows.
template <class CFG, class B, class V, class MUL = mul_t>
void mac_process(hls::stream<item_token<CFG, V> > &in, acc_t *acc, const acc_t *bsrc, mac_arbiter<CFG> &arb,
                 hazard_history<CFG> &hz, kernel_counters &cnt, uint64_t &trips) {
    static const unsigned CYCLE_MAX = CFG::max_ch * CFG::max_dim * CFG::max_dim * CFG::max_ksize * CFG::max_ksize;
    static const unsigned P = CFG::pe_lanes;
    uint64_t cycles = 0;
    uint32_t ta[P], tb[P];
#pragma HLS ARRAY_PARTITION variable=ta complete
#pragma HLS ARRAY_PARTITION variable=tb complete
// lane l's accumulator and operand banks (word i in bank i mod P, as declared
// in engine_memory.h)
#pragma HLS ARRAY_PARTITION variable=acc cyclic factor=P
#pragma HLS ARRAY_PARTITION variable=bsrc cyclic factor=P
    ZSKIP_HW_ASSERT(!in.empty(), "MAC_CYCLE", "stream read when empty");
    item_token<CFG, V> w = in.read();
#pragma HLS ARRAY_PARTITION variable=w.a complete
#pragma HLS ARRAY_PARTITION variable=w.b complete
    unsigned pos = 0;
MAC_CYCLE:
    while (!w.last) {
#pragma HLS LOOP_TRIPCOUNT max=CYCLE_MAX
#pragma HLS PIPELINE II=1
        if (pos == w.n) {
            ZSKIP_HW_ASSERT(!in.empty(), "MAC_CYCLE", "stream read when empty");
            w = in.read();
            pos = 0;
            if (w.last) break;
        }
        ++cycles;
        // the lane token: the longest prefix of the window's remaining items that fits
        arbiter_clear(arb);
        unsigned n = 0;
        bool open = true;
    MAC_TAKE:
        for (unsigned j = 0; j < P; ++j) {
#pragma HLS UNROLL
            const unsigned k = pos + j;
            open = open && k < w.n && arbiter_fits(arb, n, w.a[k], w.b[k]);
            if (open) {
                arbiter_take(arb, w.a[k], w.b[k]);
                ta[n] = w.a[k];
                tb[n] = w.b[k];
                ++n;
            }
        }
        // a write still in flight to one of its addresses: a bubble
        bool wait = false;
    MAC_HAZARD:
        for (unsigned j = 0; j < P; ++j) {
#pragma HLS UNROLL
            wait |= j < n && hz.ready(ta[j]) > hz.now;
        }
        if (wait) {
            ++hz.now;
            ++cnt.mac_stalls;
            continue;
        }
        assert_lane_token<CFG>(ta, tb, n);
    MAC_LANE:
        for (unsigned j = 0; j < P; ++j) {
#pragma HLS UNROLL
            if (j < n) {
                hz.record(ta[j], hz.now);
                // the operand is stored wide (engine_memory.h) and holds exactly a
                // B value: narrowing it by truncation is exact; the product is
                // MUL's (mul_t of types.h by default; mul_exact: narrow(b) * v)
                mac_multiply<MUL>::add(acc[ta[j]], typename exact_narrow<B>::type(bsrc[tb[j]]), w.v);
            }
        }
        ++hz.now;
        cnt.macs_executed += n;
        pos += n;
    }
    hz.drain();
    cnt.mac_iters += cycles;
    trips = cycles;
}

template <class CFG, class B, class V, bool WITH_SUM, class MEM>
region_trips scatter_image(words<const float> src, unsigned planes, unsigned rows_n, unsigned cols_n, bool skip_zeros,
                           const scatter_map &m, const uint32_t *sets, acc_t *acc, const acc_t *bsrc, acc_t *sum,
                           MEM &mem, kernel_counters &cnt) {
#pragma HLS DATAFLOW
    // the streams decouple the stages; the encoder writes at most one token
    // per cycle and the MAC stage takes at least one cycle per token
    hls::stream<nz_item<V> > nz;
#pragma HLS STREAM variable=nz depth=64
    hls::stream<item_token<CFG, V> > tokens;
#pragma HLS STREAM variable=tokens depth=16
    region_trips r;
    scan_process<CFG, V, WITH_SUM>(src, planes, rows_n, cols_n, skip_zeros, mem.rows, mem.cols, m.channels, sum,
                                   nz, cnt, r.scan);
    encode_process<CFG, V>(nz, mem.rows, mem.cols, m, sets, tokens, r.enc);
    mac_process<CFG, B, V>(tokens, acc, bsrc, mem.arb, mem.hz, cnt, r.mac);
    cnt.enc_iters += r.enc;
    return r;
}

// csim-path: proven by tests/test_emu_forms.py::test_lenet5_training_step_equal_in_both_forms
#else
// ---------------------------------------------------------------------------
// C-simulation speed path of the region (the default emulation form): the
// scan fills an array, then each element's windows go straight through the
// arbiter and the adds, without streams. Same items in the same order, same
// arbiter, so the same results and counters as the synthesis branch
// (tests/test_emu_forms.py builds both and compares).

template <class V>
struct nz_array_sink {
    nz_item<V> *items;
    unsigned n;
    void put(const nz_item<V> &it) { items[n++] = it; }
    void finish() {}
};

// The C-simulation path's arbiter: the same decisions as arbiter_fits /
// arbiter_take, on bit masks (pe_lanes <= 64) or generation tags instead of
// registers cleared per token.
template <class CFG, bool SMALL = (CFG::pe_lanes <= 64)>
struct csim_arbiter {
    static const unsigned P = CFG::pe_lanes;
    uint64_t used, one, two;
    void clear() { used = one = two = 0; }
    bool fits(unsigned n, uint32_t a, uint32_t b) const {
#ifdef ZSKIP_PLANT_BANK_CONFLICT
        return n < P && !((two >> (b % P)) & 1u);
#else
        return n < P && !((used >> (a % P)) & 1u) && !((two >> (b % P)) & 1u);
#endif
    }
    void take(uint32_t a, uint32_t b) {
        const uint64_t pb = uint64_t(1) << (b % P);
        used |= uint64_t(1) << (a % P);
        if (one & pb) two |= pb;
        one |= pb;
    }
    static uint64_t full() { return P == 64 ? ~uint64_t(0) : (uint64_t(1) << (P % 64)) - 1; }
    static uint64_t rotr(uint64_t x, unsigned s) { return s ? ((x >> s) | (x << (P - s))) & full() : x; }
    static uint64_t rotl(uint64_t x, unsigned s) { return s ? ((x << s) | (x >> (P - s))) & full() : x; }
    // Takes the longest prefix of the run (a + j, b + j), j < len, that fits,
    // as fits / take item by item would; returns its length.
    unsigned take_run(unsigned n, uint32_t a, uint32_t b, unsigned len) {
        if (n >= P) return 0;
        const unsigned ba = a % P, bb = b % P;
        const uint64_t ru = rotr(used, ba), rt = rotr(two, bb);
        unsigned k = len < P - n ? len : P - n;
#ifndef ZSKIP_PLANT_BANK_CONFLICT
        if (ru) k = k < (unsigned)__builtin_ctzll(ru) ? k : (unsigned)__builtin_ctzll(ru);
#endif
        if (rt) k = k < (unsigned)__builtin_ctzll(rt) ? k : (unsigned)__builtin_ctzll(rt);
        if (!k) return 0;
        const uint64_t mask = k >= 64 ? ~uint64_t(0) : (uint64_t(1) << k) - 1;
        const uint64_t mb = rotl(mask, bb);
        used |= rotl(mask, ba);
        two |= one & mb;
        one |= mb;
        return k;
    }
};
template <class CFG>
struct csim_arbiter<CFG, false> {
    static const unsigned P = CFG::pe_lanes;
    uint32_t gen;
    uint32_t bank_gen[P];
    uint32_t port_gen[P];
    uint8_t port_reads[P];
    void clear() { ++gen; }
    bool fits(unsigned n, uint32_t a, uint32_t b) const {
        const unsigned pb = b % P;
        const unsigned reads = port_gen[pb] == gen ? port_reads[pb] : 0;
#ifdef ZSKIP_PLANT_BANK_CONFLICT
        return n < P && reads < 2;
#else
        return n < P && bank_gen[a % P] != gen && reads < 2;
#endif
    }
    void take(uint32_t a, uint32_t b) {
        const unsigned pb = b % P;
        bank_gen[a % P] = gen;
        port_reads[pb] = port_gen[pb] == gen ? port_reads[pb] + 1 : 1;
        port_gen[pb] = gen;
    }
    unsigned take_run(unsigned n, uint32_t a, uint32_t b, unsigned len) {
        unsigned k = 0;
        while (k < len && fits(n + k, a + k, b + k)) {
            take(a + k, b + k);
            ++k;
        }
        return k;
    }
};

// Issue of the C-simulation path's token (same rule as mac_schedule, with
// the stamps); its adds were done as the items were taken (same order).
template <class CFG, class V, class MEM>
void csim_issue(lane_token<CFG, V> &t, MEM &mem, kernel_counters &cnt, uint64_t &mac) {
#ifdef ZSKIP_EMU_ASSERTS
    mac += mac_schedule<CFG>(t.a, t.b, t.n, mem.stamps, cnt);
#else
    uint64_t *stamp = mem.stamps.stamp;
    const uint64_t before = mem.stamps.now;
    uint64_t start = before;
    for (unsigned k = 0; k < t.n; ++k) {
        const uint64_t ready = stamp[t.a[k]] + ACC_LATENCY;
        start = ready > start ? ready : start;
    }
    for (unsigned k = 0; k < t.n; ++k) stamp[t.a[k]] = start;
    mem.stamps.now = start + 1;
    cnt.mac_stalls += start - before;
    cnt.macs_executed += t.n;
    mac += start - before + 1;
#endif
    t.n = 0;
    mem.carb.clear();
}

template <class CFG, class B, class V, bool WITH_SUM, class MEM>
__attribute__((optimize("tree-vectorize")))
region_trips scatter_image(words<const float> src, unsigned planes, unsigned rows_n, unsigned cols_n, bool skip_zeros,
                           const scatter_map &m, const uint32_t *sets, acc_t *acc, const acc_t *bsrc, acc_t *sum,
                           MEM &mem, kernel_counters &cnt) {
    static const unsigned W = enc_bits<CFG>::value;
    // the image's nonzeros (heap, allocated once: no static object to construct)
    static nz_item<V> *nz_buffer = new nz_item<V>[CFG::max_ch * CFG::max_dim * CFG::max_dim];
    nz_array_sink<V> sink;
    sink.items = nz_buffer;
    sink.n = 0;
    region_trips r;
    r.scan = scan_image<CFG, V, WITH_SUM>(src, planes, rows_n, cols_n, skip_zeros, mem.rows, mem.cols,
                                          m.channels, sum, sink, cnt);
    r.enc = r.mac = 0;
    const tap_axis<CFG> &rows = mem.rows, &cols = mem.cols;
    lane_token<CFG, V> t;
    t.n = 0;
    mem.carb.clear();
    typedef csim_mac<B, V> madd;
    unsigned copy = 0;
    for (unsigned e = 0; e < sink.n; ++e) {
        const nz_item<V> it = sink.items[e];
        const unsigned nr = rows.n[it.row], nc = cols.n[it.col];
        r.enc += element_windows<CFG>(nr * nc, m.channels);
        const unsigned a_el = m.a_plane * it.plane + copy * m.copy_stride, b_el = m.b_plane * it.plane;
        const typename madd::operand vop(it.val);
        bool any = false;
        // a lane token never spans two windows (nor two elements)
        if (t.n) csim_issue<CFG, V>(t, mem, cnt, r.mac);
        unsigned win = 0, q0 = 0;
        // consecutive runs whose accumulator, operand and candidate indices
        // all continue (a dense tap row) are taken as one
        uint32_t pa = 0, pb = 0, pq = 0, plen = 0;
        auto take_pending = [&]() {
            unsigned done = 0;
            while (done < plen) {
                const unsigned q = pq + done;
                if (q / W != win) {
                    if (t.n) csim_issue<CFG, V>(t, mem, cnt, r.mac);
                    win = q / W;
                }
                const unsigned in_win = W - q % W;
                const unsigned chunk = plen - done < in_win ? plen - done : in_win;
                const unsigned k = mem.carb.take_run(t.n, pa + done, pb + done, chunk);
                uint32_t *__restrict ta = t.a + t.n;
                acc_t *__restrict ac = acc + pa + done;
                const acc_t *__restrict bs = bsrc + pb + done;
                for (unsigned x = 0; x < k; ++x) ta[x] = pa + done + x;
#ifdef ZSKIP_EMU_ASSERTS
                for (unsigned x = 0; x < k; ++x) t.b[t.n + x] = pb + done + x;
#endif
                for (unsigned x = 0; x < k; ++x) madd::add(ac[x], bs[x], vop);
                t.n += k;
                done += k;
                if (k < chunk) csim_issue<CFG, V>(t, mem, cnt, r.mac);
            }
            plen = 0;
        };
        for (unsigned i = 0; i < nr; ++i) {
            for (unsigned j = 0; j < nc; ++j, q0 += m.channels) {
                const unsigned p = rows.t[it.row][i] * m.target_w + cols.t[it.col][j];
                const unsigned tap = rows.r[it.row][i] * m.ksize_s + cols.r[it.col][j];
                const unsigned a = a_el + m.a_pos * p + m.a_tap * tap, b = b_el + m.b_pos * p + m.b_tap * tap;
                const uint32_t *set = sets + m.set_pos * p;
                for (unsigned w = 0; w < m.words; ++w) {
                    uint32_t bits = set[w];
                    // runs of consecutive channels: consecutive addresses,
                    // taken into lane tokens a run at a time
                    while (bits) {
                        const unsigned lo = (unsigned)__builtin_ctz(bits);
                        const unsigned len = (unsigned)__builtin_ctzll(~((uint64_t)bits >> lo));
                        bits &= len + lo >= 32 ? ((1u << lo) - 1u) : ~(((1u << len) - 1u) << lo);
                        const uint32_t ia = a + w * 32 + lo, ib = b + w * 32 + lo, q = q0 + w * 32 + lo;
                        ZSKIP_HW_ASSERT(ia + len <= m.a_size, "ENC_WINDOW", "accumulator address out of its array");
                        ZSKIP_HW_ASSERT(ib + len <= m.b_size, "ENC_WINDOW", "operand address out of its array");
                        if (plen && ia == pa + plen && ib == pb + plen && q == pq + plen) {
                            plen += len;
                        } else {
                            take_pending();
                            pa = ia;
                            pb = ib;
                            pq = q;
                            plen = len;
                        }
                        any = true;
                    }
                }
            }
        }
        take_pending();
        if (any) copy = copy + 1 == m.copies ? 0 : copy + 1;
    }
    if (t.n) csim_issue<CFG, V>(t, mem, cnt, r.mac);
    mem.stamps.drain();
    cnt.enc_iters += r.enc;
    cnt.mac_iters += r.mac;
    return r;
}
#endif

// The region's cycles by the DATAFLOW rule.
inline uint64_t region_cycles(const region_trips &r) {
    return dataflow3(ZSKIP_BODY(SCAN, r.scan), ZSKIP_FILL(SCAN), ZSKIP_BODY(ENC_WINDOW, r.enc),
                     ZSKIP_FILL(ENC_WINDOW), ZSKIP_BODY(MAC_CYCLE, r.mac), ZSKIP_FILL(MAC_CYCLE));
}

// Weight load: w [K][C][RS] float32 in DDR, quantised to wgt_t and stored in
// the engine as [c][t][k] (forward: a tap's output channels are consecutive)
// or, channels_last, [k][t][c] (backward-data). One 128-bit beat (4 words)
// per cycle where its 4 words land in 4 distinct banks of dst (cyclic over
// P): forward when a beat stays within one k (C * RS a multiple of 4: its
// words sit K apart) and K allows it (beat_in_distinct_banks); channels_last
// when RS == 1 (the fully-connected layers: the layout is DDR order, words 1
// apart) and P >= 4 (fewer banks would take two words of a beat). Otherwise
// one word per cycle. Adds its trips to load_iters; returns
// the cycles.
template <class CFG>
uint64_t load_weights(words<const float> w, unsigned K, unsigned C, unsigned RS, bool channels_last, acc_t *dst,
                      kernel_counters &cnt) {
    static const unsigned P = CFG::pe_lanes;
    static const unsigned W_MAX = CFG::max_ch * CFG::max_ch * CFG::max_ksize * CFG::max_ksize;
    static const unsigned BEATS_MAX = (W_MAX + BEAT_WORDS - 1) / BEAT_WORDS;
    const unsigned n = K * C * RS;
    const bool wide_fwd = !channels_last && (C * RS) % BEAT_WORDS == 0 && beat_in_distinct_banks(K, P);
    const bool wide_last = channels_last && RS == 1 && beat_in_distinct_banks(1, P);
// the weight memory's banks as declared (engine_memory.h): word i in bank i mod P
#pragma HLS ARRAY_PARTITION variable=dst cyclic factor=P
    if (wide_fwd || wide_last) {
        const unsigned beats = (n + BEAT_WORDS - 1) / BEAT_WORDS;
        const unsigned run = C * RS;  // words of one k in DDR
        unsigned r = 0, k = 0;
    LOAD_W_BEAT:
        for (unsigned b = 0; b < beats; ++b) {
#pragma HLS LOOP_TRIPCOUNT max=BEATS_MAX
// one 128-bit beat of w per cycle, its 4 words into 4 distinct banks
#pragma HLS PIPELINE II=1
            float word[BEAT_WORDS];
// the 4 lanes of the one beat read below are registers
#pragma HLS ARRAY_PARTITION variable=word complete
            split_beat(w.beat_at((uint64_t)b * BEAT_WORDS), word);
        LOAD_W_LANE:
            for (unsigned j = 0; j < BEAT_WORDS; ++j) {
#pragma HLS UNROLL
                const unsigned i = b * BEAT_WORDS + j;
                const unsigned at = wide_last ? i : (r + j) * K + k;
                ZSKIP_HW_ASSERT(j == 0 || at % P != (wide_last ? i - j : r * K + k) % P, "LOAD_W_BEAT",
                                "two words of a beat in one weight bank");
                if (i < n) dst[at] = acc_t(from_f32<wgt_t>(word[j]));
            }
            r += BEAT_WORDS;
            if (r == run) {
                r = 0;
                ++k;
            }
        }
        cnt.load_iters += beats;
        return ZSKIP_CYCLES(LOAD_W_BEAT, beats);
    }
    unsigned k = 0, c = 0, t = 0;
LOAD_W:
    for (unsigned i = 0; i < n; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=W_MAX
#pragma HLS PIPELINE II=1
        const unsigned at = channels_last ? (k * RS + t) * C + c : (c * RS + t) * K + k;
        dst[at] = acc_t(from_f32<wgt_t>(w[i]));
        if (++t == RS) {
            t = 0;
            if (++c == C) {
                c = 0;
                ++k;
            }
        }
    }
    cnt.load_iters += n;
    return ZSKIP_CYCLES(LOAD_W, n);
}

// Clears acc[0, n): pe_lanes words per cycle, one per accumulator bank.
// Returns the cycles.
template <class CFG>
uint64_t clear_accumulators(acc_t *acc, unsigned n) {
    static const unsigned P = CFG::pe_lanes;
    static const unsigned W_MAX = CFG::max_ch * CFG::max_ch * CFG::max_ksize * CFG::max_ksize;
    static const unsigned X_MAX = CFG::max_ch * CFG::max_dim * CFG::max_dim;
    static const unsigned ITER_MAX = ((W_MAX > X_MAX ? W_MAX : X_MAX) + P - 1) / P;
    const unsigned iters = (n + P - 1) / P;
// one word per bank per cycle (word i in bank i mod P, as declared)
#pragma HLS ARRAY_PARTITION variable=acc cyclic factor=P
CLEAR_ACC:
    for (unsigned it = 0; it < iters; ++it) {
#pragma HLS LOOP_TRIPCOUNT max=ITER_MAX
#pragma HLS PIPELINE II=1
    CLEAR_LANE:
        for (unsigned j = 0; j < P; ++j) {
#pragma HLS UNROLL
            const unsigned i = it * P + j;
            if (i < n) acc[i] = 0;
        }
    }
    return ZSKIP_CYCLES(CLEAR_ACC, iters);
}

}  // namespace zskip

#endif
