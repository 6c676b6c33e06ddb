// zskip_top: the program interpreter. One start runs n_desc descriptors
// (hls/common/descriptor.h) in order; each dispatches to one kernel and
// leaves a counter record in the stats arena. The interpreter validates every
// descriptor against the compiled maxima and stops at the first invalid one
// with its error code in S_ERROR, instead of overflowing a buffer.
#include "zskip_top.h"

#include "../common/config.h"
#include "../common/cosim.h"
#include "../common/counters.h"
#include "../common/descriptor.h"
#include "../common/engine_memory.h"
#include "../common/hw_assert.h"
#include "../common/shapes.h"
#include "../common/types.h"
#include "../common/version.h"
#include "../batchnorm/batchnorm.h"
#include "../conv_bwd_data/conv_bwd_data.h"
#include "../conv_bwd_data/conv_bwd_data_gather.h"
#include "../conv_bwd_weight/conv_bwd_weight.h"
#include "../conv_fwd/conv_fwd.h"
#include "../avgpool/avgpool.h"
#include "../residual/residual.h"
#include "../fc/fc.h"
#include "../maxpool/maxpool.h"
#include "../prune_grad/prune_grad.h"
#include "../sgd_update/sgd_update.h"
#include "../softmax_xent/softmax_xent.h"
#include "../sparse_fc/sparse_fc.h"

using namespace zskip;

// The loss scale of a descriptor; an unset field (0) means no scaling.
static float grad_scale(const uint32_t *d) {
    const float scale = word_f32(d[D_GRAD_SCALE_F32]);
    return scale > 0.0f ? scale : 1.0f;
}

static bn_shape read_bn_shape(const uint32_t *d) {
    bn_shape sh;
    sh.n = d[D_N];
    sh.c = d[D_C];
    sh.h = d[D_H];
    sh.w = d[D_W];
    return sh;
}

static pool_shape read_pool_shape(const uint32_t *d) {
    pool_shape sh;
    sh.n = d[D_N];
    sh.c = d[D_C];
    sh.h = d[D_H];
    sh.w = d[D_W];
    sh.size = d[D_R];
    sh.stride = d[D_STRIDE];
    bool fits = sh.stride && sh.size && sh.size <= sh.h && sh.size <= sh.w;
    sh.oh = fits ? (sh.h - sh.size) / sh.stride + 1 : 0;
    sh.ow = fits ? (sh.w - sh.size) / sh.stride + 1 : 0;
    return sh;
}

static gap_shape read_gap_shape(const uint32_t *d) {
    gap_shape sh;
    sh.n = d[D_N];
    sh.c = d[D_C];
    sh.h = d[D_H];
    sh.w = d[D_W];
    return sh;
}

// The IP's on-chip memory: one engine memory per engine config and one for
// pooling, each shared by the kernels that use it (one descriptor runs at a
// time).
struct ip_memory {
    scatter_engine_onchip<conv_config> *conv;
    scatter_engine_onchip<fc_config> *fc;
    maxpool_onchip<pool_config> *pool;
    batchnorm_onchip<pool_config> *bn;
    avgpool_onchip<pool_config> *gap;
    sparse_fc_onchip<fc_config> *sparse_fc;
};

// Kernel names of the opcodes, for hardware-rule reports (hw_assert.h).
static const char *kernel_name(uint32_t opcode) {
    switch (opcode) {
    case OP_CONV_FWD: return "conv_fwd";
    case OP_CONV_BWD_DATA: return "conv_bwd_data";
    case OP_CONV_BWD_WEIGHT: return "conv_bwd_weight";
    case OP_FC_FWD: return "fc_fwd";
    case OP_FC_BWD_DATA: return "fc_bwd_data";
    case OP_FC_BWD_WEIGHT: return "fc_bwd_weight";
    case OP_MAXPOOL_FWD: return "maxpool_fwd";
    case OP_MAXPOOL_BWD: return "maxpool_bwd";
    case OP_SGD_UPDATE: return "sgd_update";
    case OP_SOFTMAX_XENT: return "softmax_xent";
    case OP_PRUNE_GRAD: return "prune_grad";
    case OP_BN_FWD: return "batchnorm_fwd";
    case OP_BN_INFER: return "batchnorm_infer";
    case OP_BN_BWD: return "batchnorm_bwd";
    case OP_BN_STATS: return "batchnorm_stats";
    case OP_ADD_FWD: return "add_fwd";
    case OP_ADD_BWD: return "add_bwd";
    case OP_GAP_FWD: return "gap_fwd";
    case OP_GAP_BWD: return "gap_bwd";
    case OP_SPARSE_FC_FWD: return "sparse_fc_fwd";
    case OP_SPARSE_FC_BWD_DATA: return "sparse_fc_bwd_data";
    case OP_SPARSE_FC_BWD_WEIGHT: return "sparse_fc_bwd_weight";
    default: return "unknown";
    }
}

// Runs one descriptor; returns its ERR_* code. tau: the threshold a
// PRUNE_GRAD applied (0 for every other opcode).
static unsigned run_descriptor(const uint32_t *d, words<float> act, words<float> wgt, words<float> grad,
                               words<uint32_t> bits, words<float> vel, const ip_memory &mem, kernel_counters &cnt, float &tau) {
    // every tensor starts on a beat of its port (descriptor.h BEAT_WORDS)
    bool aligned = true;
ALIGN_CHECK:
    for (unsigned f = D_X; f <= D_LABELS; ++f) {
#pragma HLS UNROLL
        aligned = aligned && d[f] % BEAT_WORDS == 0;
    }
    // the residual add's second operands
    aligned = aligned && d[D_X2] % BEAT_WORDS == 0 && d[D_DY2] % BEAT_WORDS == 0;
// the batch-normalisation tensor offsets (descriptor.h D_XHAT .. D_RUNNING)
ALIGN_CHECK_BN:
    for (unsigned f = D_XHAT; f <= D_RUNNING; ++f) {
#pragma HLS UNROLL
        aligned = aligned && d[f] % BEAT_WORDS == 0;
    }
    // the pattern's beat-wide load needs it on a beat too
    aligned = aligned && d[D_PATTERN] % BEAT_WORDS == 0;
    if (!aligned) return ERR_ALIGN;
    const uint32_t flags = d[D_FLAGS];
    const bool skip = flags & FLAG_SKIP_ZEROS;
    const bool relu = flags & FLAG_RELU;
    const bool has_mask = flags & FLAG_HAS_OUT_MASK;
    switch (d[D_OPCODE]) {
    case OP_CONV_FWD:
        return conv_fwd<conv_config>(read_conv_shape(d), skip, relu, act + d[D_X], wgt + d[D_WGT],
                                     wgt + d[D_BIAS], act + d[D_Y], bits + d[D_MASK_OUT], *mem.conv, cnt);
    case OP_CONV_BWD_DATA:
        if (flags & FLAG_GATHER)
            return conv_bwd_data_gather<conv_config>(read_conv_shape(d), skip, has_mask, grad + d[D_DY],
                                                     wgt + d[D_WGT], bits + d[D_MASK_IN], grad + d[D_DX],
                                                     *mem.conv, cnt);
        return conv_bwd_data<conv_config>(read_conv_shape(d), skip, has_mask, grad + d[D_DY], wgt + d[D_WGT],
                                          bits + d[D_MASK_IN], grad + d[D_DX], *mem.conv, cnt);
    case OP_CONV_BWD_WEIGHT:
        return conv_bwd_weight<conv_config>(read_conv_shape(d), skip, act + d[D_X], grad + d[D_DY],
                                            grad + d[D_DW], grad + d[D_DB], *mem.conv, cnt);
    case OP_FC_FWD:
        if (d[D_H] != 1 || d[D_W] != 1 || d[D_R] != 1 || d[D_S] != 1) return ERR_DIM;
        return fc_fwd(d[D_N], d[D_C], d[D_K], skip, relu, act + d[D_X], wgt + d[D_WGT], wgt + d[D_BIAS],
                      act + d[D_Y], bits + d[D_MASK_OUT], *mem.fc, cnt);
    case OP_FC_BWD_DATA:
        if (d[D_H] != 1 || d[D_W] != 1 || d[D_R] != 1 || d[D_S] != 1) return ERR_DIM;
        return fc_bwd_data(d[D_N], d[D_C], d[D_K], skip, has_mask, grad + d[D_DY], wgt + d[D_WGT],
                           bits + d[D_MASK_IN], grad + d[D_DX], *mem.fc, cnt);
    case OP_FC_BWD_WEIGHT:
        if (d[D_H] != 1 || d[D_W] != 1 || d[D_R] != 1 || d[D_S] != 1) return ERR_DIM;
        return fc_bwd_weight(d[D_N], d[D_C], d[D_K], skip, act + d[D_X], grad + d[D_DY], grad + d[D_DW],
                             grad + d[D_DB], *mem.fc, cnt);
    case OP_SPARSE_FC_FWD:
        if (d[D_H] != 1 || d[D_W] != 1 || d[D_R] != 1 || d[D_S] != 1) return ERR_DIM;
        return sparse_fc_fwd<fc_config>(d[D_N], d[D_C], d[D_K], d[D_FAN_IN], skip, relu, act + d[D_X],
                                        wgt + d[D_WGT], bits + d[D_PATTERN], wgt + d[D_BIAS], act + d[D_Y],
                                        bits + d[D_MASK_OUT], *mem.fc, *mem.sparse_fc, cnt);
    case OP_SPARSE_FC_BWD_DATA:
        if (d[D_H] != 1 || d[D_W] != 1 || d[D_R] != 1 || d[D_S] != 1) return ERR_DIM;
        return sparse_fc_bwd_data<fc_config>(d[D_N], d[D_C], d[D_K], d[D_FAN_IN], skip, has_mask, grad + d[D_DY],
                                             wgt + d[D_WGT], bits + d[D_PATTERN], bits + d[D_MASK_IN],
                                             grad + d[D_DX], *mem.fc, *mem.sparse_fc, cnt);
    case OP_SPARSE_FC_BWD_WEIGHT:
        if (d[D_H] != 1 || d[D_W] != 1 || d[D_R] != 1 || d[D_S] != 1) return ERR_DIM;
        return sparse_fc_bwd_weight<fc_config>(d[D_N], d[D_C], d[D_K], d[D_FAN_IN], skip, act + d[D_X],
                                               grad + d[D_DY], bits + d[D_PATTERN], grad + d[D_DW], grad + d[D_DB],
                                               *mem.fc, *mem.sparse_fc, cnt);
    case OP_MAXPOOL_FWD:
        return maxpool_fwd<pool_config>(read_pool_shape(d), relu, act + d[D_X], act + d[D_Y],
                                        bits + d[D_ARGMAX], bits + d[D_MASK_OUT], *mem.pool, cnt);
    case OP_MAXPOOL_BWD:
        return maxpool_bwd<pool_config>(read_pool_shape(d), grad + d[D_DY], bits + d[D_ARGMAX],
                                        grad + d[D_DX], *mem.pool, cnt);
    case OP_SGD_UPDATE:
        return sgd_update(d[D_COUNT], word_f32(d[D_LR_F32]), word_f32(d[D_MOMENTUM_F32]),
                          word_f32(d[D_WEIGHT_DECAY_F32]), wgt + d[D_WGT], vel + d[D_VEL],
                          grad + d[D_DW], cnt, 1.0f / grad_scale(d), (d[D_FLAGS] & FLAG_NESTEROV) != 0);
    case OP_SOFTMAX_XENT:
        return softmax_xent<softmax_config>(d[D_N], d[D_C], act + d[D_X], bits + d[D_LABELS], grad + d[D_DX],
                                            grad + d[D_LOSS], cnt, grad_scale(d));
    case OP_PRUNE_GRAD:
        if (d[D_COUNT] < 1) return ERR_COUNT;
        tau = prune_grad(grad + d[D_DY], grad + d[D_DX], d[D_COUNT], word_f32(d[D_TAU_F32]),
                         word_f32(d[D_TAU_SCALE_F32]), bits[d[D_SEED]], cnt);
        return ERR_NONE;
    case OP_ADD_FWD:
        return add_fwd(d[D_COUNT], relu, act + d[D_X], act + d[D_X2], act + d[D_Y], bits + d[D_MASK_OUT], cnt);
    case OP_ADD_BWD:
        return add_bwd(d[D_COUNT], has_mask, grad + d[D_DY], grad + d[D_DY2], bits + d[D_MASK_IN], grad + d[D_DX],
                       cnt);
    case OP_GAP_FWD:
        return gap_fwd<pool_config>(read_gap_shape(d), act + d[D_X], act + d[D_Y], *mem.gap, cnt);
    case OP_GAP_BWD:
        return gap_bwd<pool_config>(read_gap_shape(d), has_mask, grad + d[D_DY], bits + d[D_MASK_IN],
                                    grad + d[D_DX], cnt);
    case OP_BN_FWD:
        return batchnorm_fwd<pool_config>(read_bn_shape(d), word_f32(d[D_EPS_F32]), relu, act + d[D_X],
                                          wgt + d[D_WGT], wgt + d[D_BIAS], act + d[D_Y], act + d[D_XHAT],
                                          act + d[D_MEAN], act + d[D_VAR], bits + d[D_MASK_OUT], *mem.bn, cnt);
    case OP_BN_INFER:
        return batchnorm_infer<pool_config>(read_bn_shape(d), word_f32(d[D_EPS_F32]), relu, act + d[D_X],
                                            wgt + d[D_WGT], wgt + d[D_BIAS], wgt + d[D_RUNNING], act + d[D_Y],
                                            bits + d[D_MASK_OUT], *mem.bn, cnt);
    case OP_BN_BWD:
        return batchnorm_bwd<pool_config>(read_bn_shape(d), word_f32(d[D_EPS_F32]), has_mask, grad + d[D_DY],
                                          act + d[D_XHAT], act + d[D_VAR], wgt + d[D_WGT], bits + d[D_MASK_IN],
                                          grad + d[D_DX], grad + d[D_DW], grad + d[D_DB], *mem.bn, cnt);
    case OP_BN_STATS:
        return batchnorm_stats<pool_config>(d[D_C], d[D_COUNT], word_f32(d[D_MOMENTUM_F32]), wgt + d[D_RUNNING],
                                            act + d[D_MEAN], act + d[D_VAR], cnt);
    default:
        return ERR_OPCODE;
    }
}

static void put64(uint32_t *rec, unsigned lo, uint64_t value) {
    rec[lo] = (uint32_t)value;
    rec[lo + 1] = (uint32_t)(value >> 32);
}

void zskip_top(const uint32_t *program, f32_beat *act, f32_beat *wgt, f32_beat *grad, u32_beat *bits, f32_beat *vel,
               uint32_t *stats, uint32_t n_desc, uint32_t *version, uint64_t *cycles) {
// One AXI master bundle per tensor class so the arenas are separate ports
// (parallel bursts, and the PYNQ driver hands each its own buffer; vel has
// its own so sgd_update reads parameter and velocity in one cycle); their
// base addresses and the scalars are AXI-lite registers of bundle control.
// act .. vel are 128-bit ports (a beat struct of four 32-bit words,
// aggregated into one bus word); program and stats stay 32-bit.
// depth: the elements (words, or beats on the 128-bit ports) co-simulation
// gives each port (cosim.h); it bounds
// nothing on the board, where the arenas are the host's buffers.
#pragma HLS INTERFACE m_axi port=program offset=slave bundle=gmem_prog depth=ZSKIP_COSIM_PROGRAM_WORDS
#pragma HLS INTERFACE m_axi port=act offset=slave bundle=gmem_act depth=ZSKIP_COSIM_ARENA_BEATS
#pragma HLS INTERFACE m_axi port=wgt offset=slave bundle=gmem_wgt depth=ZSKIP_COSIM_ARENA_BEATS
#pragma HLS INTERFACE m_axi port=grad offset=slave bundle=gmem_grad depth=ZSKIP_COSIM_ARENA_BEATS
#pragma HLS INTERFACE m_axi port=bits offset=slave bundle=gmem_bits depth=ZSKIP_COSIM_ARENA_BEATS
#pragma HLS INTERFACE m_axi port=vel offset=slave bundle=gmem_vel depth=ZSKIP_COSIM_ARENA_BEATS
#pragma HLS INTERFACE m_axi port=stats offset=slave bundle=gmem_stats depth=ZSKIP_COSIM_STATS_WORDS
#pragma HLS INTERFACE s_axilite port=program bundle=control
#pragma HLS INTERFACE s_axilite port=act bundle=control
#pragma HLS INTERFACE s_axilite port=wgt bundle=control
#pragma HLS INTERFACE s_axilite port=grad bundle=control
#pragma HLS INTERFACE s_axilite port=bits bundle=control
#pragma HLS INTERFACE s_axilite port=vel bundle=control
#pragma HLS INTERFACE s_axilite port=stats bundle=control
#pragma HLS INTERFACE s_axilite port=n_desc bundle=control
#pragma HLS INTERFACE s_axilite port=version bundle=control
#pragma HLS INTERFACE s_axilite port=cycles bundle=control
#pragma HLS INTERFACE s_axilite port=return bundle=control
    static const unsigned PROGRAM_MAX = 64;
    ip_memory mem;
    scatter_engine_memory<conv_config>(mem.conv);
    scatter_engine_memory<fc_config>(mem.fc);
    maxpool_memory<pool_config>(mem.pool);
    avgpool_memory<pool_config>(mem.gap);
    batchnorm_memory<pool_config>(mem.bn);
    sparse_fc_memory<fc_config>(mem.sparse_fc);
    *version = ZSKIP_VERSION;
#ifdef ZSKIP_EMU_ASSERTS
    hw_violation_record().set = false;
#endif
    uint64_t total = 0;
DESC:
    for (uint32_t i = 0; i < n_desc; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=PROGRAM_MAX
        uint32_t d[D_WORDS];
    DESC_FETCH:
        for (unsigned j = 0; j < D_WORDS; ++j) {
// one descriptor word per beat of a D_WORDS burst
#pragma HLS PIPELINE II=1
            d[j] = program[(uint64_t)i * D_WORDS + j];
        }
        ZSKIP_HW_KERNEL(kernel_name(d[D_OPCODE]));
        kernel_counters cnt;
        clear(cnt);
        saturation_count() = 0;
        nonfinite_count() = 0;
        float tau = 0.0f;
        unsigned err = run_descriptor(d, words<float>(act, 0), words<float>(wgt, 0), words<float>(grad, 0),
                                      words<uint32_t>(bits, 0), words<float>(vel, 0), mem, cnt, tau);
#ifdef ZSKIP_EMU_ASSERTS
        if (hw_violation_record().set) err = ERR_HW_RULE;
#endif
        cnt.cycles += ZSKIP_CYCLES(DESC_FETCH, D_WORDS);
        total += cnt.cycles;
        uint32_t *rec = stats + (uint64_t)i * S_WORDS;
        rec[S_ERROR] = err;
        rec[S_OPCODE] = d[D_OPCODE];
        put64(rec, S_CYCLES_LO, cnt.cycles);
        put64(rec, S_MACS_EXECUTED_LO, cnt.macs_executed);
        put64(rec, S_MACS_DENSE_LO, cnt.macs_dense);
        put64(rec, S_LOAD_ITERS_LO, cnt.load_iters);
        put64(rec, S_SCAN_ITERS_LO, cnt.scan_iters);
        put64(rec, S_ENC_ITERS_LO, cnt.enc_iters);
        put64(rec, S_MAC_ITERS_LO, cnt.mac_iters);
        put64(rec, S_WB_ITERS_LO, cnt.wb_iters);
        put64(rec, S_MAC_STALLS_LO, cnt.mac_stalls);
        put64(rec, S_SATURATIONS_LO, saturation_count());
        rec[S_TAU_F32] = f32_word(tau);
        put64(rec, S_NONFINITE_LO, nonfinite_count());
        if (err) break;
    }
    *cycles = total;
}
