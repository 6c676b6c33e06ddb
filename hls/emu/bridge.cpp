// extern "C" wrappers of the HLS top for the emulation backend (host/emu.py
// loads the shared library with ctypes). Nothing here changes the kernels.
#include <stdint.h>
#include <stdio.h>

#include "../common/config.h"
#include "../common/hw_assert.h"
#include "../common/types.h"
#include "../common/version.h"
#include "../zskip_top/zskip_top.h"

// Order of the words written by zskip_emu_config; host/emu.py reads them by
// these positions.
enum zskip_emu_config_word {
    CFG_VERSION = 0,
    CFG_PE_LANES = 1,
    CFG_MAX_CH = 2,
    CFG_MAX_DIM = 3,
    CFG_MAX_KSIZE = 4,
    CFG_MAX_FEATURES = 5,
    CFG_WORDS = 6,
};

extern "C" {

// The arenas arrive as the host's word buffers (16-byte aligned: host/devices/emu.py
// checks); the data ports take them as 128-bit beats of the same layout.
void zskip_emu_run(const uint32_t *program, float *act, float *wgt, float *grad, uint32_t *bits, float *vel,
                   uint32_t *stats, uint32_t n_desc, uint32_t *version, uint64_t *cycles) {
    using zskip::f32_beat;
    using zskip::u32_beat;
    zskip_top(program, reinterpret_cast<f32_beat *>(act), reinterpret_cast<f32_beat *>(wgt),
              reinterpret_cast<f32_beat *>(grad), reinterpret_cast<u32_beat *>(bits), reinterpret_cast<f32_beat *>(vel),
              stats, n_desc, version, cycles);
}

// The compiled configuration, CFG_WORDS words.
void zskip_emu_config(uint32_t *out) {
    out[CFG_VERSION] = ZSKIP_VERSION;
    out[CFG_PE_LANES] = ZSKIP_PE_LANES;
    out[CFG_MAX_CH] = ZSKIP_MAX_CH;
    out[CFG_MAX_DIM] = ZSKIP_MAX_DIM;
    out[CFG_MAX_KSIZE] = ZSKIP_MAX_KSIZE;
    out[CFG_MAX_FEATURES] = ZSKIP_MAX_FEATURES;
}

// The hardware-rule violation of the last start (ZSKIP_EMU_ASSERTS builds):
// writes "kernel\tloop\trule" into out (size bytes) and returns 1, or
// returns 0 when none was recorded (or the build has no assertions).
int zskip_emu_violation(char *out, uint32_t size) {
#ifdef ZSKIP_EMU_ASSERTS
    const zskip::hw_violation &r = zskip::hw_violation_record();
    if (!r.set) return 0;
    snprintf(out, size, "%s\t%s\t%s", r.kernel, r.loop, r.rule);
    return 1;
#else
    (void)out;
    (void)size;
    return 0;
#endif
}
}
