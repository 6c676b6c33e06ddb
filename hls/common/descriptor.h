// The program format: the single place where descriptor fields, opcodes,
// flags, the stats record and error codes are defined. host/program.py
// parses these enums at import (one `NAME = value,` per line), so the field
// order is written here only.
//
// A program is n_desc descriptors of D_WORDS uint32 words each. Offsets are
// in 32-bit words into the arena named in the field's comment; shapes are
// element counts. Fields whose name ends in _F32 hold float32 bit patterns.
#ifndef ZSKIP_DESCRIPTOR_H
#define ZSKIP_DESCRIPTOR_H

namespace zskip {

enum zskip_opcode {
    OP_CONV_FWD = 1,
    OP_CONV_BWD_DATA = 2,
    OP_CONV_BWD_WEIGHT = 3,
    OP_MAXPOOL_FWD = 4,
    OP_MAXPOOL_BWD = 5,
    OP_FC_FWD = 6,
    OP_FC_BWD_DATA = 7,
    OP_FC_BWD_WEIGHT = 8,
    OP_SGD_UPDATE = 9,
    OP_SOFTMAX_XENT = 10,
    OP_PRUNE_GRAD = 11,
    // batch normalisation (hls/batchnorm/batchnorm.h)
    OP_BN_FWD = 12,
    OP_BN_INFER = 13,
    OP_BN_BWD = 14,
    OP_BN_STATS = 15,
    // residual add and global average pooling (hls/residual, hls/avgpool)
    OP_ADD_FWD = 16,
    OP_ADD_BWD = 17,
    OP_GAP_FWD = 18,
    OP_GAP_BWD = 19,
    // pre-defined sparse junctions (hls/sparse_fc)
    OP_SPARSE_FC_FWD = 20,
    OP_SPARSE_FC_BWD_DATA = 21,
    OP_SPARSE_FC_BWD_WEIGHT = 22,
};

enum zskip_flag {
    FLAG_SKIP_ZEROS = 1,
    FLAG_RELU = 2,
    FLAG_HAS_OUT_MASK = 4,
    // CONV_BWD_DATA: the output-stationary gather form
    // (hls/conv_bwd_data/conv_bwd_data_gather.h) instead of the scatter form
    FLAG_GATHER = 8,
    // SGD_UPDATE: Nesterov momentum (hls/sgd_update)
    FLAG_NESTEROV = 16,
};

enum zskip_field {
    D_OPCODE = 0,
    D_FLAGS = 1,
    D_N = 2,
    D_C = 3,
    D_H = 4,
    D_W = 5,
    D_K = 6,
    D_R = 7,
    D_S = 8,
    D_STRIDE = 9,
    D_PAD = 10,
    D_COUNT = 11,
    D_X = 12,
    D_Y = 13,
    D_WGT = 14,
    D_BIAS = 15,
    D_VEL = 16,
    D_DY = 17,
    D_DX = 18,
    D_DW = 19,
    D_DB = 20,
    D_LOSS = 21,
    D_MASK_OUT = 22,
    D_MASK_IN = 23,
    D_ARGMAX = 24,
    D_LABELS = 25,
    D_LR_F32 = 26,
    D_MOMENTUM_F32 = 27,
    D_WEIGHT_DECAY_F32 = 28,
    D_TAU_F32 = 29,
    D_TAU_SCALE_F32 = 30,
    D_SEED = 31,
    D_GRAD_SCALE_F32 = 32,
    // the second operands of the residual add (offsets, beat-aligned like D_X .. D_LABELS)
    D_X2 = 33,
    D_DY2 = 34,
    // batch normalisation
    D_EPS_F32 = 35,
    D_XHAT = 36,
    D_MEAN = 37,
    D_VAR = 38,
    D_RUNNING = 39,
    // pre-defined sparse junctions (SPARSE_FC_*)
    D_PATTERN = 40,
    D_FAN_IN = 41,
    D_WORDS = 44,
};
// Meaning of the fields per opcode (arena in brackets):
//   N batch; C input channels (fc: input features, softmax: classes); H, W
//   input height and width (fc: 1); K output channels (fc: output features);
//   R, S kernel size (maxpool: R = window size); STRIDE; PAD; COUNT element
//   count (sgd).
//   X [act] layer input / logits      Y [act] layer output
//   WGT [wgt] weights / parameters    BIAS [wgt] bias     VEL [vel] momentum
//   DY [grad] gradient of the op's output (pre-activation)
//   DX [grad] gradient of the op's input / dlogits
//   DW [grad] weight gradient (sgd: the gradient it applies)
//   DB [grad] bias gradient           LOSS [grad] one word, the mean loss
//   MASK_OUT [bits] y > 0, written with RELU (maxpool: RELU = input is post-ReLU)
//   MASK_IN [bits] ReLU mask of the op's input, read with HAS_OUT_MASK
//   ARGMAX [bits] one uint32 flat index h * W + w per pooled output
//   LABELS [bits] one uint32 class index per sample
//   prune: DX [grad] = DY [grad] pruned, COUNT elements (DX = DY prunes in
//   place); TAU_F32 the threshold,
//   used when TAU_SCALE_F32 is 0; TAU_SCALE_F32 > 0 derives tau on chip as
//   mean |g| of the nonzeros * TAU_SCALE_F32 (hls/prune_grad/prune_grad.h);
//   SEED [bits] offset of the one-word random seed, a word of the bits arena
//   (not of the descriptor) so that the host changes it per mini-batch
//   without rewriting the program.
//   GRAD_SCALE_F32 (softmax, sgd; 0 reads as 1): the loss scale, a power of
//   two. softmax multiplies dlogits by it, so every gradient of the backward
//   pass is scaled by it (they are linear in dlogits) and keeps its
//   resolution in grad_t; sgd divides the gradient by it (exact in float32).
//   SGD_UPDATE with NESTEROV: the parameter steps by g + MOMENTUM * v'
//   instead of v' (g the decayed gradient, v' the new velocity).
//   ADD_FWD: X [act] a, X2 [act] b, Y [act] = a + b, COUNT elements; with
//   RELU, Y = max(a + b, 0) and MASK_OUT [bits] a + b > 0.
//   ADD_BWD: DY [grad] da, DY2 [grad] db, DX [grad] = da + db, COUNT
//   elements; with HAS_OUT_MASK, zero where MASK_IN [bits] is clear.
//   GAP_FWD: X [act] (N, C, H, W) -> Y [act] (N, C), the mean of each plane.
//   GAP_BWD: DY [grad] (N, C) -> DX [grad] (N, C, H, W) = dy / (H * W); with
//   HAS_OUT_MASK, zero where MASK_IN [bits] (N, C, H, W) is clear.
//   Batch normalisation (hls/batchnorm/batchnorm.h), x of shape N, C, H, W
//   (H = W = 1 for (N, C) inputs), statistics per channel over N*H*W values:
//   EPS_F32 the epsilon added to the variance (BN_FWD, BN_INFER, BN_BWD);
//   XHAT [act] the normalised input; MEAN, VAR [act] the batch mean and
//   biased variance (C words each); RUNNING [wgt] the running statistics,
//   running_mean (C words) then running_var (C words) directly after.
//   BN_FWD: X -> Y, XHAT, MEAN, VAR; WGT gamma, BIAS beta [wgt]; RELU fuses
//     a ReLU and writes MASK_OUT.
//   BN_INFER: X -> Y with RUNNING; WGT gamma, BIAS beta; RELU, MASK_OUT as
//     BN_FWD.
//   BN_BWD: DY (the gradient of Y before this op's ReLU), XHAT, VAR, WGT gamma
//     -> DX, DW dgamma, DB dbeta [grad]; HAS_OUT_MASK: DX is 0 where MASK_IN
//     (the ReLU mask of the op's input) is 0.
//   BN_STATS: RUNNING updated in place from MEAN, VAR with MOMENTUM_F32; C
//     channels; COUNT the values per channel the batch statistics were taken
//     over (N*H*W, >= 2: the variance is made unbiased with COUNT / (COUNT - 1)).
//   XHAT .. RUNNING are tensor offsets and beat-aligned like X .. LABELS.
//   SPARSE_FC_FWD / _BWD_DATA / _BWD_WEIGHT (hls/sparse_fc): fields as FC_*
//   (C inputs I, K outputs J), plus FAN_IN stored edges per output and
//   PATTERN [bits] the (J, FAN_IN) uint32 input index of every edge (a
//   multiple of BEAT_WORDS, like the tensor offsets); WGT and DW hold the
//   compressed (J, FAN_IN) weights / weight gradient.
// Bit tensors: bit i of word j is element 32 * j + i in row-major order; a
// bit tensor starts at a word boundary and owns its last word.

// Per-descriptor record written to the stats arena (S_WORDS words at
// d * S_WORDS). Fields ending in _LO are the low word of a uint64 whose high
// word follows (_HI). S_SATURATIONS counts the fixed-point conversions of the
// descriptor that met the range limit of their type (hls/common/types.h);
// S_TAU_F32 is the threshold a PRUNE_GRAD applied.
enum zskip_stat {
    S_ERROR = 0,
    S_OPCODE = 1,
    S_CYCLES_LO = 2,
    S_CYCLES_HI = 3,
    S_MACS_EXECUTED_LO = 4,
    S_MACS_EXECUTED_HI = 5,
    S_MACS_DENSE_LO = 6,
    S_MACS_DENSE_HI = 7,
    S_LOAD_ITERS_LO = 8,
    S_LOAD_ITERS_HI = 9,
    S_SCAN_ITERS_LO = 10,
    S_SCAN_ITERS_HI = 11,
    S_ENC_ITERS_LO = 12,
    S_ENC_ITERS_HI = 13,
    S_MAC_ITERS_LO = 14,
    S_MAC_ITERS_HI = 15,
    S_WB_ITERS_LO = 16,
    S_WB_ITERS_HI = 17,
    S_MAC_STALLS_LO = 18,
    S_MAC_STALLS_HI = 19,
    S_SATURATIONS_LO = 20,
    S_SATURATIONS_HI = 21,
    S_TAU_F32 = 22,
    S_NONFINITE_LO = 23,  // inf/NaN values the descriptor stored (types.h nonfinite_count)
    S_NONFINITE_HI = 24,
    S_WORDS = 32,
};

// S_ERROR values. The interpreter stops at the first failing descriptor.
enum zskip_error {
    ERR_NONE = 0,
    ERR_OPCODE = 1,
    ERR_BATCH = 2,
    ERR_CHANNELS = 3,
    ERR_DIM = 4,
    ERR_KSIZE = 5,
    ERR_STRIDE = 6,
    ERR_PAD = 7,
    ERR_COUNT = 8,
    ERR_LABEL = 9,
    // a hardware-rule assertion failed (ZSKIP_EMU_ASSERTS emulation builds
    // only; hls/common/hw_assert.h)
    ERR_HW_RULE = 10,
    // a tensor offset field (D_X .. D_LABELS, D_X2, D_DY2, D_PATTERN) is not a multiple of BEAT_WORDS
    ERR_ALIGN = 11,
};

// Words of one beat of the tensor ports (act, wgt, grad, bits: 128 bits).
// Every tensor offset field D_X .. D_LABELS, D_X2, D_DY2, D_PATTERN (unused ones are 0) is a
// multiple of it, so a tensor starts on a beat; D_SEED, a one-word scalar,
// is exempt. The host allocator aligns (host/ip/program.py ArenaLayout).
enum zskip_beat {
    BEAT_WORDS = 4,
};

}  // namespace zskip

#endif
