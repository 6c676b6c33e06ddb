// Backward-data convolution, output-stationary "gather" form (FLAG_GATHER):
// dx[c][h][w] = sum over k and the taps (r, s) that reach (h, w) of
// dy[k][oh][ow] * w[k][c][r][s], computed only for the dx outputs the
// previous layer's ReLU kept (Sarma et al.'s output-type skipping).
//
// Why a second form: the scatter form (conv_bwd_data.h) streams dy and puts
// channel c of every tap into accumulator bank c mod P, so a tap's channel
// set costs its lane cycle unless all P channels of it are masked; with a
// dense dy (batch normalisation in front of the ReLU) masking ~half of the
// outputs saves almost no cycles. Here the lanes run over the dy channels k
// instead and one output is computed per cycle, so a masked output is simply
// not in the work list.
//
// On chip, rows of KG words (one word per dy channel k): KG = K rounded up to
// a multiple of the lanes P when K >= P (ceil(K / P) chunks of P channels),
// else to the smallest divisor of P at least K, and then the lanes form
// G = P / KG groups that take G taps of the same output at once (so a
// 16-channel layer keeps 64 lanes busy). Weights [c][slot][KG], the taps
// ordered by phase (below) in slots padded to a multiple of G; dy
// [opos][g][KG] in the engine's plane memory, one copy per group. Lane
// l = g * KG + j reads word j (+ chunk * P) of group g's rows: bank l of both
// memories, its own (checked by the assertion build). The P products go
// through a pairwise adder tree (adder_tree.h) into one accumulator.
//
// Per input channel c: the mask bits of c are compacted into the list of
// live outputs (GATHER_LIST, 4 bits a cycle where W allows), grouped by phase (h mod stride, w mod stride),
// because only the taps r with (h + pad - r) a multiple of the stride reach
// an output of phase h; a tap whose source (oh, ow) falls in the padding
// still costs its cycle (its lanes do no multiply). GATHER_MAC then runs tap
// group by tap group, chunk by chunk, over the phase's list: acc[(h, w)] += tree(...),
// one list entry per cycle, so an accumulator recurs once per pass over the
// list. Where the list is shorter than ACC_LATENCY the next pass would read
// an accumulator whose add is still in flight: the loop keeps the last
// ACC_LATENCY addresses it issued (registers) and waits (a bubble, counted in
// mac_stalls). The channel's write-back follows (masked outputs are written
// as zeros; dense mode computes every output and masks here).
//
// The stages of an image (dy load; per channel list, MAC, write-back) run one
// after another: no DATAFLOW overlap is claimed. Counters: macs_executed = the
// lanes that multiplied (live output x tap inside the image x k < K),
// macs_dense = every in-image tap of every output (the same count as the
// scatter form's), mac_iters = GATHER_MAC cycles (bubbles included).
#ifndef ZSKIP_CONV_BWD_DATA_GATHER_H
#define ZSKIP_CONV_BWD_DATA_GATHER_H

#include <stdint.h>

#include "../common/adder_tree.h"
#include "../common/bits.h"
#include "../common/config.h"
#include "../common/counters.h"
#include "../common/descriptor.h"
#include "../common/engine_memory.h"
#include "../common/hw_assert.h"
#include "../common/multipliers.h"
#include "../common/shapes.h"
#include "../common/sparse_scatter.h"
#include "../common/types.h"
#include "../common/wide_port.h"

namespace zskip {

// Words of a tap row (one per dy channel): K rounded up to a multiple of the
// lanes when K >= P, else the smallest divisor of P at least K (the lanes then
// form P / row groups, one tap each).
template <class CFG>
inline unsigned gather_row_words(unsigned k) {
    static const unsigned P = CFG::pe_lanes;
    if (k >= P) return (k + P - 1) / P * P;
    unsigned best = P;
GATHER_ROW_WORDS:
    for (unsigned d = P; d >= 1; --d) {
// the divisors of the compile-time P compared at once: a small table
#pragma HLS UNROLL
        if (P % d == 0 && d >= k) best = d;
    }
    return best;
}

// Taps of each phase q = (h mod 2) * 2 + (w mod 2) of the stride (0 for
// phases a stride of 1 does not have), and the slots of the weight rows:
// phase q's taps take slots [off[q], off[q] + ceil(taps / G) * G).
struct gather_phases {
    unsigned taps[4];
    unsigned off[4];
    unsigned slots;  // all phases' slots: rows of one input channel
};

// Whether a (valid) shape fits the gather form's layouts: the weights
// C * slots * KG words in the weight memory, dy OH * OW * G * KG words in the
// plane memory. The kernel refuses a shape that does not (ERR_CHANNELS); the
// host falls back to the scatter form first (host/ip/program.py mirrors it).
template <class CFG>
inline bool gather_fits(const conv_shape &sh, unsigned slots) {
    const uint64_t kg = gather_row_words<CFG>(sh.k);
    const uint64_t g = sh.k < CFG::pe_lanes ? CFG::pe_lanes / kg : 1;
    return (uint64_t)sh.c * slots * kg <= scatter_engine_onchip<CFG>::WSIZE &&
           (uint64_t)sh.oh * sh.ow * g * kg <= scatter_engine_onchip<CFG>::XSIZE;
}

// The kernel offsets along one axis that reach outputs of each phase: r with
// (ph + pad - r) a multiple of the stride (stride 1: every r, one phase).
template <class CFG>
struct phase_taps {
    uint8_t n[2];
    uint8_t r[2][CFG::max_ksize];
};

template <class CFG>
void build_phase_taps(phase_taps<CFG> &pt, unsigned ksize, unsigned stride, unsigned pad) {
    static const unsigned KS_MAX = CFG::max_ksize;
GATHER_PHASE_TAPS:
    for (unsigned ph = 0; ph < 2; ++ph) {
// two phases at most (stride <= 2), all offsets compared at once: registers
#pragma HLS UNROLL
        unsigned n = 0;
    GATHER_PHASE_TAP:
        for (unsigned r = 0; r < KS_MAX; ++r) {
#pragma HLS UNROLL
            if (ph < stride && r < ksize && (ph + pad + stride * KS_MAX - r) % stride == 0) {
                pt.r[ph][n] = (uint8_t)r;
                ++n;
            }
        }
        pt.n[ph] = (uint8_t)n;
    }
}

// dy [N][K][OH][OW], w [K][C][R][S], out_mask bits [N][C][H][W] (read when
// has_mask) -> dx [N][C][H][W], on the engine memory `buf`. Returns ERR_NONE
// or the shape error (ERR_CHANNELS when the padded layouts do not fit).
template <class CFG, class MUL = mul_t>
unsigned conv_bwd_data_gather(const conv_shape &sh, bool skip_zeros, bool has_mask, words<const float> dy,
                              words<const float> w, words<const uint32_t> out_mask, words<float> dx,
                              scatter_engine_onchip<CFG> &buf, kernel_counters &cnt) {
    static const unsigned P = CFG::pe_lanes;
    static const unsigned L = ACC_LATENCY;
    static const unsigned BATCH = TRIP_BATCH;
    static const unsigned CH_MAX = CFG::max_ch;
    static const unsigned PLANE_MAX = CFG::max_dim * CFG::max_dim;
    static const unsigned X_MAX = scatter_engine_onchip<CFG>::XSIZE;
    // one phase's passes: tap groups x chunks x live outputs (plus its bubbles)
    static const unsigned MAC_MAX =
        PLANE_MAX * CFG::max_ksize * CFG::max_ksize * ((CFG::max_ch + CFG::pe_lanes - 1) / CFG::pe_lanes);
    static const unsigned KS_MAX = CFG::max_ksize;
    static const unsigned W_MAX = scatter_engine_onchip<CFG>::WSIZE;
    unsigned err = check_conv_shape<CFG>(sh);
    if (err) return err;
    const unsigned K = sh.k, C = sh.c, R = sh.r, S = sh.s, H = sh.h, W = sh.w, ST = sh.stride, PAD = sh.pad;
    const unsigned PLANE = H * W, OW = sh.ow, OH = sh.oh, OPLANE = OH * OW;
    // KG words a row; G tap groups of KG lanes (K < P) or CHUNKS chunks of P channels
    const unsigned KG = gather_row_words<CFG>(K);
    const unsigned G = K < P ? P / KG : 1, CHUNKS = K < P ? 1 : KG / P;
    const bool mask_items = skip_zeros && has_mask;
    phase_taps<CFG> rtaps, staps;
// registers: both phases' offsets are written in one cycle and the MAC loop
// reads one of each per cycle
#pragma HLS ARRAY_PARTITION variable=rtaps.n complete
#pragma HLS ARRAY_PARTITION variable=rtaps.r complete dim=0
#pragma HLS ARRAY_PARTITION variable=staps.n complete
#pragma HLS ARRAY_PARTITION variable=staps.r complete dim=0
    build_phase_taps<CFG>(rtaps, R, ST, PAD);
    build_phase_taps<CFG>(staps, S, ST, PAD);
    gather_phases ph_slots;
// four registers each, one per phase
#pragma HLS ARRAY_PARTITION variable=ph_slots.taps complete
#pragma HLS ARRAY_PARTITION variable=ph_slots.off complete
    unsigned slot = 0;
GATHER_PHASE_SLOTS:
    for (unsigned q = 0; q < 4; ++q) {
#pragma HLS UNROLL
        const unsigned ph = q / 2, pw = q % 2;
        const unsigned taps = ph < ST && pw < ST ? (unsigned)rtaps.n[ph] * staps.n[pw] : 0;
        ph_slots.taps[q] = taps;
        ph_slots.off[q] = slot;
        slot += (taps + G - 1) / G * G;
    }
    ph_slots.slots = slot;
    if (!gather_fits<CFG>(sh, ph_slots.slots)) return ERR_CHANNELS;
    const unsigned SLOTS = ph_slots.slots;

    // weights [c][slot][k]: tap (r, s) of phase q sits in slot off[q] + (r / ST) * taps_s(q) + s / ST
    // (rtaps lists a phase's offsets in increasing order, ST apart)
    {
        unsigned k = 0, c = 0, r = 0, s = 0;
    GATHER_LOAD_W:
        for (unsigned i = 0; i < K * C * R * S; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=W_MAX
// one weight word per cycle (the rows of one k are KG words apart: one bank)
#pragma HLS PIPELINE II=1
            const unsigned ph = (r + ST * KS_MAX - PAD) % ST, pw = (s + ST * KS_MAX - PAD) % ST;
            const unsigned q = ph * 2 + pw;
            const unsigned at = (c * SLOTS + ph_slots.off[q] + (r / ST) * staps.n[pw] + s / ST) * KG + k;
            buf.w[at] = acc_t(from_f32<wgt_t>(w[i]));
            if (++s == S) {
                s = 0;
                if (++r == R) {
                    r = 0;
                    if (++c == C) {
                        c = 0;
                        ++k;
                    }
                }
            }
        }
    }
    cnt.load_iters += (uint64_t)K * C * R * S;
    uint64_t cycles = ZSKIP_CYCLES(GATHER_LOAD_W, (uint64_t)K * C * R * S);
    // per output coordinate, its taps inside the image (macs_dense)
    cycles += ZSKIP_CYCLES(AXIS_IN, build_axis_from_input<CFG>(buf.rows, H, OH, R, ST, PAD));
    cycles += ZSKIP_CYCLES(AXIS_IN, build_axis_from_input<CFG>(buf.cols, W, OW, S, ST, PAD));
    // where each phase's list starts: the phases' sizes, in order
    unsigned qbase[4];
// four registers, one per phase
#pragma HLS ARRAY_PARTITION variable=qbase complete
    unsigned base = 0;
GATHER_PHASE_BASE:
    for (unsigned q = 0; q < 4; ++q) {
#pragma HLS UNROLL
        const unsigned ph = q / 2, pw = q % 2;
        qbase[q] = base;
        if (ph < ST && pw < ST && ph < H && pw < W) base += ((H - ph + ST - 1) / ST) * ((W - pw + ST - 1) / ST);
    }
    // dy is loaded a beat per two cycles when a beat stays in one k (OPLANE a
    // multiple of 4): its 4 words go to one bank (k mod P) through its 2 ports
    const bool wide_dy = OPLANE % BEAT_WORDS == 0;
    // dx is written a beat per cycle when every channel's plane is whole beats
    const bool wide_wb = PLANE % BEAT_WORDS == 0;
    // the mask is compacted 4 bits per cycle when 4 positions stay in one row
    // (and in one word of the mask: every channel's plane starts on a multiple of 4)
    const bool wide_list = W % BEAT_WORDS == 0;
GATHER_IMAGE:
    for (unsigned n = 0; n < sh.n; ++n) {
#pragma HLS LOOP_TRIPCOUNT max=BATCH
        words<const float> dyn = dy + (uint64_t)n * K * OPLANE;
        if (wide_dy) {
            const unsigned beats = K * OPLANE / BEAT_WORDS;
            unsigned k = 0, op = 0;
        GATHER_LOAD_DY_BEAT:
            for (unsigned b = 0; b < beats; ++b) {
#pragma HLS LOOP_TRIPCOUNT max=X_MAX/BEAT_WORDS
// one 128-bit beat of dy per two cycles: 4 positions of one k; copy g of
// them goes to bank (g * KG + k) mod P (G distinct banks), 4 words through
// that bank's two ports
#pragma HLS PIPELINE II=2
                float word[BEAT_WORDS];
// the 4 lanes of the one beat read below are registers
#pragma HLS ARRAY_PARTITION variable=word complete
                split_beat(dyn.beat_at((uint64_t)b * BEAT_WORDS), word);
            GATHER_LOAD_DY_LANE:
                for (unsigned j = 0; j < BEAT_WORDS; ++j) {
#pragma HLS UNROLL
                    const acc_t v = acc_t(from_f32<grad_t>(word[j]));
                GATHER_LOAD_DY_COPY:
                    for (unsigned g = 0; g < P; ++g) {
#pragma HLS UNROLL
                        if (g < G) {
                            const unsigned at = ((op + j) * G + g) * KG + k;
                            ZSKIP_HW_ASSERT(at % P == (g * KG + k) % P, "GATHER_LOAD_DY_BEAT",
                                            "a dy word outside its copy's bank");
                            buf.plane[at] = v;
                        }
                    }
                }
                op += BEAT_WORDS;
                if (op == OPLANE) {
                    op = 0;
                    ++k;
                }
            }
            cnt.load_iters += beats;
            cycles += ZSKIP_CYCLES(GATHER_LOAD_DY_BEAT, beats);
        } else {
            unsigned k = 0, op = 0;
        GATHER_LOAD_DY:
            for (unsigned i = 0; i < K * OPLANE; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=X_MAX
// one dy word per cycle into [opos][g][k], its G copies in G distinct banks
#pragma HLS PIPELINE II=1
                const acc_t v = acc_t(from_f32<grad_t>(dyn[i]));
            GATHER_LOAD_DY_WORD_COPY:
                for (unsigned g = 0; g < P; ++g) {
#pragma HLS UNROLL
                    if (g < G) buf.plane[(op * G + g) * KG + k] = v;
                }
                if (++op == OPLANE) {
                    op = 0;
                    ++k;
                }
            }
            cnt.load_iters += (uint64_t)K * OPLANE;
            cycles += ZSKIP_CYCLES(GATHER_LOAD_DY, (uint64_t)K * OPLANE);
        }
    GATHER_CHANNEL:
        for (unsigned c = 0; c < C; ++c) {
#pragma HLS LOOP_TRIPCOUNT max=CH_MAX
            // the channel's live outputs, grouped by phase
            unsigned fill[4] = {0, 0, 0, 0};
// four append pointers, one per phase list
#pragma HLS ARRAY_PARTITION variable=fill complete
            const uint64_t mbase = ((uint64_t)n * C + c) * PLANE;
            uint64_t dense_taps = 0;
            unsigned h = 0, x = 0;
            if (wide_list) {
            GATHER_LIST_BEAT:
                for (unsigned b = 0; b < PLANE / BEAT_WORDS; ++b) {
#pragma HLS LOOP_TRIPCOUNT max=PLANE_MAX/BEAT_WORDS
// 4 mask bits of one word per cycle: 4 positions of one row (W a multiple of
// 4); a phase list gets at most 4 (stride 1) or 2 (stride 2) consecutive
// entries, in distinct banks of the 4-bank list, so no bank takes more than
// the two writes of its two ports
#pragma HLS PIPELINE II=1
                    const uint64_t at0 = mbase + (uint64_t)b * BEAT_WORDS;
                    const uint32_t nibble = has_mask ? (out_mask[at0 >> 5] >> (at0 & 31u)) & 0xFu : 0xFu;
                    unsigned row_taps = 0;
                    unsigned bank_writes[BEAT_WORDS] = {0, 0, 0, 0};
// one counter per list bank (assertion build)
#pragma HLS ARRAY_PARTITION variable=bank_writes complete
                GATHER_LIST_LANE:
                    for (unsigned j = 0; j < BEAT_WORDS; ++j) {
#pragma HLS UNROLL
                        const unsigned p = b * BEAT_WORDS + j, xj = x + j;
                        const bool keep = (nibble >> j) & 1u;
                        uint32_t &set = buf.sets[p][c >> 5];
                        set = (set & ~(1u << (c & 31))) | ((uint32_t)keep << (c & 31));
                        row_taps += buf.cols.n[xj];
                        const unsigned q = (h % ST) * 2 + (xj % ST);
                        if (!mask_items || keep) {
                            const unsigned at = qbase[q] + fill[q];
                            ZSKIP_HW_ASSERT(++bank_writes[at % BEAT_WORDS] <= 2, "GATHER_LIST_BEAT",
                                            "more writes to a list bank in one cycle than its two ports");
                            buf.gather_list[at] = (uint16_t)((h << 8) | xj);
                            ++fill[q];
                        }
                    }
                    (void)bank_writes;
                    dense_taps += (uint64_t)buf.rows.n[h] * row_taps;
                    x += BEAT_WORDS;
                    if (x == W) {
                        x = 0;
                        ++h;
                    }
                }
                cnt.scan_iters += PLANE / BEAT_WORDS;
                cycles += ZSKIP_CYCLES(GATHER_LIST_BEAT, PLANE / BEAT_WORDS);
            } else {
            GATHER_LIST:
                for (unsigned i = 0; i < PLANE; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=PLANE_MAX
// one mask bit per cycle, kept in bit c of the position's channel set (a
// register word) for the write-back; a live output is appended to its phase's
// list (one write of the list memory per cycle)
#pragma HLS PIPELINE II=1
                    const bool keep = !has_mask || get_bit(out_mask, mbase + i);
                    uint32_t &set = buf.sets[i][c >> 5];
                    set = (set & ~(1u << (c & 31))) | ((uint32_t)keep << (c & 31));
                    dense_taps += (uint64_t)buf.rows.n[h] * buf.cols.n[x];
                    const unsigned q = (h % ST) * 2 + (x % ST);
                    if (!mask_items || keep) {
                        buf.gather_list[qbase[q] + fill[q]] = (uint16_t)((h << 8) | x);
                        ++fill[q];
                    }
                    if (++x == W) {
                        x = 0;
                        ++h;
                    }
                }
                cnt.scan_iters += PLANE;
                cycles += ZSKIP_CYCLES(GATHER_LIST, PLANE);
            }
            cnt.macs_dense += dense_taps * K;
        GATHER_PHASE:
            for (unsigned q = 0; q < 4; ++q) {
#pragma HLS LOOP_TRIPCOUNT max=4
                const unsigned ph = q / 2, pw = q % 2;
                const unsigned len = fill[q];
                const unsigned ntaps = ph_slots.taps[q], ns = pw < ST ? staps.n[pw] : 0;
                const unsigned groups = (ntaps + G - 1) / G;
                const uint64_t work = (uint64_t)groups * CHUNKS * len;
                if (!work) continue;
                // the last L accumulator addresses issued and when (registers);
                // the loop drains before the next invocation, so it starts empty
                uint32_t hz_addr[L];
                uint32_t hz_time[L];
                bool hz_valid[L];
// every entry is compared in one cycle
#pragma HLS ARRAY_PARTITION variable=hz_addr complete
#pragma HLS ARRAY_PARTITION variable=hz_time complete
#pragma HLS ARRAY_PARTITION variable=hz_valid complete
            GATHER_HZ_CLEAR:
                for (unsigned s = 0; s < L; ++s) {
#pragma HLS UNROLL
                    hz_valid[s] = false;
                }
                unsigned head = 0, i = 0, kc = 0, tg = 0;
                uint32_t now = 0;
                uint64_t issued = 0, trips = 0;
            GATHER_MAC:
                while (issued < work) {
#pragma HLS LOOP_TRIPCOUNT max=MAC_MAX
// one list entry per cycle: the G lane groups take G taps of it (or the P
// lanes a chunk of one tap), each lane reads its own dy and weight banks, an
// adder tree sums the products, one accumulator read-modify-write (the two
// ports of its bank); an address recurs one pass later, or after a bubble
#pragma HLS PIPELINE II=1
                    ++trips;
                    const uint16_t e = buf.gather_list[qbase[q] + i];
                    const unsigned oh_h = e >> 8, ow_w = e & 0xFFu;
                    const uint32_t pos = oh_h * W + ow_w;
                    bool wait = false;
                GATHER_HZ_MATCH:
                    for (unsigned s = 0; s < L; ++s) {
#pragma HLS UNROLL
                        wait = wait || (hz_valid[s] && hz_addr[s] == pos && hz_time[s] + L > now);
                    }
                    if (wait) {
                        ++now;
                        ++cnt.mac_stalls;
                        continue;
                    }
                    // per lane group: its tap, whether it reaches the output from
                    // inside dy, and the bases of its dy and weight rows
                    bool valid[P];
                    unsigned obase[P], wbase[P];
// registers, one entry per lane group
#pragma HLS ARRAY_PARTITION variable=valid complete
#pragma HLS ARRAY_PARTITION variable=obase complete
#pragma HLS ARRAY_PARTITION variable=wbase complete
                GATHER_GROUP:
                    for (unsigned g = 0; g < P; ++g) {
#pragma HLS UNROLL
                        const unsigned ti = tg * G + g;
                        // divisions by descriptor constants (ns <= max_ksize, ST <= 2): a table;
                        // a padding slot (ti >= ntaps) reads tap 0 and is not valid
                        const unsigned tt = ti < ntaps ? ti : 0;
                        const unsigned r = rtaps.r[ph][tt / (ns ? ns : 1)], s = staps.r[pw][tt % (ns ? ns : 1)];
                        const int nh = (int)(oh_h + PAD) - (int)r, nw = (int)(ow_w + PAD) - (int)s;
                        valid[g] = g < G && ti < ntaps && nh >= 0 && nw >= 0 && (unsigned)nh / ST < OH &&
                                   (unsigned)nw / ST < OW;
                        const unsigned opos = valid[g] ? ((unsigned)nh / ST) * OW + (unsigned)nw / ST : 0;
                        obase[g] = (opos * G + g) * KG;
                        wbase[g] = (c * SLOTS + ph_slots.off[q] + ti) * KG;
                    }
                    acc_t prod[P];
// the lanes' products are registers of the adder tree
#pragma HLS ARRAY_PARTITION variable=prod complete
                    unsigned live = 0;
                GATHER_LANE:
                    for (unsigned l = 0; l < P; ++l) {
#pragma HLS UNROLL
                        // lane l: group l / KG, channel l mod KG (G > 1); or chunk kc's channel l
                        const unsigned g = G > 1 ? l / KG : 0;
                        const unsigned off = G > 1 ? l % KG : kc * P + l;
                        prod[l] = 0;
                        if (valid[g] && off < K) {
                            ZSKIP_HW_ASSERT((obase[g] + off) % P == l && (wbase[g] + off) % P == l, "GATHER_MAC",
                                            "a lane reads outside its own dy or weight bank");
                            mac_multiply<MUL>::add(prod[l],
                                                   typename exact_narrow<wgt_t>::type(buf.w[wbase[g] + off]),
                                                   typename exact_narrow<grad_t>::type(buf.plane[obase[g] + off]));
                            ++live;
                        }
                    }
                    tree_sum<P>(prod);
                    buf.gather_acc[pos] += prod[0];
                    hz_addr[head] = pos;
                    hz_time[head] = now;
                    hz_valid[head] = true;
                    head = head + 1 == L ? 0 : head + 1;
                    ++now;
                    cnt.macs_executed += live;
                    ++issued;
                    if (++i == len) {
                        i = 0;
                        if (++kc == CHUNKS) {
                            kc = 0;
                            ++tg;
                        }
                    }
                }
                cnt.mac_iters += trips;
                cycles += ZSKIP_CYCLES(GATHER_MAC, trips);
            }
            // the channel's dx, masked, clearing the accumulators for the next
            words<float> dxc = dx + ((uint64_t)n * C + c) * PLANE;
            if (wide_wb) {
            GATHER_WB_BEAT:
                for (unsigned b = 0; b < PLANE / BEAT_WORDS; ++b) {
#pragma HLS LOOP_TRIPCOUNT max=PLANE_MAX/BEAT_WORDS
// one 128-bit beat of dx per cycle: 4 consecutive positions, 4 banks of the
// accumulators (cyclic factor 4) and 4 register words of the channel sets
#pragma HLS PIPELINE II=1
                    float word[BEAT_WORDS];
// the 4 lanes are registers of the one beat written below
#pragma HLS ARRAY_PARTITION variable=word complete
                GATHER_WB_LANE:
                    for (unsigned j = 0; j < BEAT_WORDS; ++j) {
#pragma HLS UNROLL
                        const unsigned p = b * BEAT_WORDS + j;
                        grad_t v = grad_t(buf.gather_acc[p]);
                        buf.gather_acc[p] = 0;
                        if (!((buf.sets[p][c >> 5] >> (c & 31)) & 1u)) v = 0;
                        count_nonfinite(v);
                        word[j] = to_f32(v);
                    }
                    dxc.beat_at((uint64_t)b * BEAT_WORDS) = make_beat(word);
                }
                cnt.wb_iters += PLANE / BEAT_WORDS;
                cycles += ZSKIP_CYCLES(GATHER_WB_BEAT, PLANE / BEAT_WORDS);
            } else {
            GATHER_WB:
                for (unsigned p = 0; p < PLANE; ++p) {
#pragma HLS LOOP_TRIPCOUNT max=PLANE_MAX
// one dx word per cycle: mask, quantise, store, clear
#pragma HLS PIPELINE II=1
                    grad_t v = grad_t(buf.gather_acc[p]);
                    buf.gather_acc[p] = 0;
                    if (!((buf.sets[p][c >> 5] >> (c & 31)) & 1u)) v = 0;
                    count_nonfinite(v);
                    dxc[p] = to_f32(v);
                }
                cnt.wb_iters += PLANE;
                cycles += ZSKIP_CYCLES(GATHER_WB, PLANE);
            }
        }
    }
    cnt.cycles += cycles;
    return ERR_NONE;
}

}  // namespace zskip

#endif
