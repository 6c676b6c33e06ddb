// The accelerator IP: one top function that runs a program of descriptors.
#ifndef ZSKIP_TOP_H
#define ZSKIP_TOP_H

#include <stdint.h>

#include "../common/wide_port.h"

// program and stats are 32-bit ports; the data arenas are 128-bit ports of
// beats (common/wide_port.h), their tensors beat-aligned (descriptor.h).
void zskip_top(const uint32_t *program, zskip::f32_beat *act, zskip::f32_beat *wgt, zskip::f32_beat *grad,
               zskip::u32_beat *bits, zskip::f32_beat *vel, uint32_t *stats, uint32_t n_desc, uint32_t *version, uint64_t *cycles);

#endif
