// The accelerator IP: one top function that runs a program of descriptors.
#ifndef ZSKIP_TOP_H
#define ZSKIP_TOP_H

#include <stdint.h>

void zskip_top(const uint32_t *program, float *act, float *wgt, float *grad, uint32_t *bits, float *vel,
               uint32_t *stats, uint32_t n_desc, uint32_t *version, uint64_t *cycles);

#endif
