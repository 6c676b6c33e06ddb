// Shared body of the C-simulation testbenches (hls/<kernel>/<kernel>_tb.cpp).
// The including testbench first includes its data header, generated from the
// numpy reference by hls/gen_tb_data.py, which defines:
//   TB_N_DESC, tb_program[]                 the program
//   tb_act[], tb_wgt[], tb_grad[], tb_bits[], tb_vel[]  initial arena contents
//   ZSKIP_TB_F32_REGIONS, tb_f32_expect[]   float regions {arena, offset, count} to compare
//   ZSKIP_TB_BITS_REGIONS, tb_bits_expect[] uint32 regions to compare exactly
//   TB_REL_TOL                              tolerance relative to the region's largest |value|
// The run returns 1 on any mismatch or error code, so csim_design fails.
#ifndef ZSKIP_TB_RUNNER_H
#define ZSKIP_TB_RUNNER_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include <vector>

#include "../common/cosim.h"
#include "../common/descriptor.h"
#include "../common/version.h"
#include "../zskip_top/zskip_top.h"

namespace zskip_tb {

// positions in host/ip/program.py ARENAS (gen_tb_data.py writes them)
enum arena_id { ARENA_ACT = 0, ARENA_WGT = 1, ARENA_GRAD = 2, ARENA_BITS = 3, ARENA_VEL = 4 };

struct region {
    unsigned arena, offset, count;
};

static const region tb_f32_checks[] = ZSKIP_TB_F32_REGIONS;
static const region tb_bits_checks[] = ZSKIP_TB_BITS_REGIONS;

// A copy of a, zero-padded to at least min_words: co-simulation moves the
// INTERFACE depth of every port (ZSKIP_COSIM_* in config.h), so each buffer
// holds at least that many words.
template <class T, unsigned N>
std::vector<T> copy_of(const T (&a)[N], unsigned min_words) {
    std::vector<T> v(a, a + N);
    if (v.size() < min_words) v.resize(min_words, T(0));
    v.resize((v.size() + zskip::BEAT_WORDS - 1) / zskip::BEAT_WORDS * zskip::BEAT_WORDS, T(0));
    return v;
}

// The 128-bit beats of a word buffer (whose size is a multiple of BEAT_WORDS):
// zskip_top's data ports take beats (wide_port.h), laid out as the words.
template <class V>
zskip::beat<V> *beats_of(std::vector<V> &v) {
    return reinterpret_cast<zskip::beat<V> *>(v.data());
}

inline int run(const char *name) {
    std::vector<float> act = copy_of(tb_act, ZSKIP_COSIM_ARENA_WORDS), wgt = copy_of(tb_wgt, ZSKIP_COSIM_ARENA_WORDS),
                       grad = copy_of(tb_grad, ZSKIP_COSIM_ARENA_WORDS),
                       vel = copy_of(tb_vel, ZSKIP_COSIM_ARENA_WORDS);
    std::vector<uint32_t> bits = copy_of(tb_bits, ZSKIP_COSIM_ARENA_WORDS);
    std::vector<uint32_t> program = copy_of(tb_program, ZSKIP_COSIM_PROGRAM_WORDS);
    const unsigned stats_words = TB_N_DESC * zskip::S_WORDS;
    std::vector<uint32_t> stats(stats_words > ZSKIP_COSIM_STATS_WORDS ? stats_words : ZSKIP_COSIM_STATS_WORDS, 0);
    uint32_t version = 0;
    uint64_t cycles = 0;
    zskip_top(program.data(), beats_of(act), beats_of(wgt), beats_of(grad), beats_of(bits), beats_of(vel),
              stats.data(), TB_N_DESC, &version, &cycles);
    int failures = 0;
    if (version != ZSKIP_VERSION) {
        printf("%s: version register 0x%08x, expected 0x%08x\n", name, version, ZSKIP_VERSION);
        ++failures;
    }
    for (unsigned d = 0; d < TB_N_DESC; ++d) {
        if (stats[d * zskip::S_WORDS + zskip::S_ERROR] != zskip::ERR_NONE) {
            printf("%s: descriptor %u error %u\n", name, d, stats[d * zskip::S_WORDS + zskip::S_ERROR]);
            ++failures;
        }
    }
    // the float arenas by arena_id (bits is compared as words below)
    const std::vector<float> *farenas[5] = {&act, &wgt, &grad, 0, &vel};
    unsigned e = 0;
    for (unsigned r = 0; r < sizeof(tb_f32_checks) / sizeof(tb_f32_checks[0]); ++r) {
        const region &g = tb_f32_checks[r];
        double scale = 1e-30;
        for (unsigned i = 0; i < g.count; ++i) scale = fmax(scale, fabs(tb_f32_expect[e + i]));
        for (unsigned i = 0; i < g.count; ++i, ++e) {
            double got = (*farenas[g.arena])[g.offset + i], want = tb_f32_expect[e];
            if (!(fabs(got - want) <= TB_REL_TOL * scale)) {
                if (failures < 10) printf("%s: region %u word %u: got %.9g, expected %.9g\n", name, r, i, got, want);
                ++failures;
            }
        }
    }
    e = 0;
    for (unsigned r = 0; r < sizeof(tb_bits_checks) / sizeof(tb_bits_checks[0]); ++r) {
        const region &g = tb_bits_checks[r];
        for (unsigned i = 0; i < g.count; ++i, ++e) {
            if (bits[g.offset + i] != tb_bits_expect[e]) {
                if (failures < 10)
                    printf("%s: bits region %u word %u: got 0x%08x, expected 0x%08x\n", name, r, i,
                           bits[g.offset + i], tb_bits_expect[e]);
                ++failures;
            }
        }
    }
    printf("%s: %s (%d mismatches, %llu cycles)\n", name, failures ? "FAIL" : "PASS", failures,
           (unsigned long long)cycles);
    return failures ? 1 : 0;
}

}  // namespace zskip_tb

#endif
