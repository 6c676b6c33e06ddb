// C-sim testbench for prune_grad. Inputs and expected outputs come from the
// numpy reference (tests/test_prune.py writes them):
//   prune_grad_tb G.bin EXPECTED.bin TAU TAU_SCALE SEED EXPECTED_TAU
// G.bin / EXPECTED.bin: float32 little-endian arrays of equal length.
// Returns 1 on any bit mismatch, so csim_design really fails.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "prune_grad.h"

static std::vector<float> read_floats(const char *path) {
    std::vector<float> v;
    FILE *f = fopen(path, "rb");
    if (!f) return v;
    float x;
    while (fread(&x, sizeof x, 1, f) == 1) v.push_back(x);
    fclose(f);
    return v;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s G.bin EXPECTED.bin TAU TAU_SCALE SEED EXPECTED_TAU\n", argv[0]);
        return 2;
    }
    std::vector<float> g = read_floats(argv[1]), expected = read_floats(argv[2]);
    if (g.empty() || g.size() != expected.size()) {
        fprintf(stderr, "prune_grad_tb: unreadable or mismatched inputs (%zu vs %zu floats)\n", g.size(),
                expected.size());
        return 1;
    }
    // the gradient arena is a 128-bit port: g padded to whole beats
    const size_t count = g.size();
    g.resize((count + zskip::BEAT_WORDS - 1) / zskip::BEAT_WORDS * zskip::BEAT_WORDS, 0.0f);
    zskip::kernel_counters cnt;
    zskip::clear(cnt);
    const zskip::words<float> g_port(reinterpret_cast<zskip::f32_beat *>(g.data()), 0);
    const float tau = zskip::prune_grad(g_port, (uint32_t)count, strtof(argv[3], 0), strtof(argv[4], 0),
                                        (uint32_t)strtoul(argv[5], 0, 10), cnt);
    const float expected_tau = strtof(argv[6], 0);
    if (memcmp(&tau, &expected_tau, sizeof tau) != 0) {
        fprintf(stderr, "prune_grad_tb: tau %.9g, expected %.9g\n", tau, expected_tau);
        return 1;
    }
    size_t bad = 0;
    for (size_t i = 0; i < count; i++) {
        if (memcmp(&g[i], &expected[i], sizeof(float)) != 0) {
            if (bad < 5) fprintf(stderr, "prune_grad_tb: [%zu] got %.9g expected %.9g\n", i, g[i], expected[i]);
            bad++;
        }
    }
    printf("prune_grad_tb: %zu elements, tau %.9g, %zu mismatches, %llu cycles\n", count, tau, bad,
           (unsigned long long)cnt.cycles);
    return bad ? 1 : 0;
}
