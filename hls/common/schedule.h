// The schedule table: initiation interval (II) and pipeline depth of every
// pipelined loop of the IP, keyed by its C++ loop label. The counters turn
// loop trip counts into cycles only through this table (counters.h):
//   * a pipelined loop invocation costs   trips x II + DEPTH;
//   * a DATAFLOW region in canonical form (one producer, one consumer per
//     channel, hls::stream or ping-pong arrays) costs its slowest stage
//     (trips x II) plus the fills (the sum of its stages' depths);
//   * everything else runs sequentially (costs add up).
// `pytest -m vitis` compares csynth's reported II and depth per label with
// these rows; `zskip hls-lint` checks that every PIPELINE loop has a row and
// every row a loop. The named constants are defined here, once.
//
// The data m_axi ports are 128 bits wide (wide_port.h): a loop moves one
// word per iteration (one 128-bit access each, II = 1) or, the *_BEAT rows,
// one beat of 4 words per iteration where the 4 words go to 4 distinct
// on-chip banks (II = 1, a quarter of the trips); a loop that would need more
// accesses to one port or bank per iteration pays them (II > 1 below).
#ifndef ZSKIP_SCHEDULE_CONSTANTS_H
#define ZSKIP_SCHEDULE_CONSTANTS_H

namespace zskip {

// cycles from a float32 accumulator read to its write (adder latency at
// 100-200 MHz): the same address may issue again only this many cycles later,
// and a loop-carried float sum has II = ACC_LATENCY unless it interleaves
// ACC_LATENCY partial sums.
static const unsigned ACC_LATENCY = 5;
// DDR read + float->type conversion
static const unsigned LOAD_DEPTH = 4;
// read, quantise, compare with zero, append to the nonzero stream
static const unsigned SCAN_DEPTH = 4;
// tap and channel address arithmetic + window compaction network
static const unsigned ENC_DEPTH = 3;
// lane queue, operand read, multiply, add, accumulator write
static const unsigned MAC_DEPTH = 8;
// accumulator read, bias add, ReLU, conversion, DDR write
static const unsigned WB_DEPTH = 6;
// write-back that adds ACC_LATENCY partial copies (adder tree of depth 3)
static const unsigned WB_SUM_DEPTH = WB_DEPTH + 3 * ACC_LATENCY;
// one on-chip word cleared per lane per cycle
static const unsigned CLEAR_DEPTH = 2;
// expf / logf / divide units of the softmax (float32 cores)
static const unsigned EXP_DEPTH = 20;
static const unsigned DIV_DEPTH = 16;
// sgd: three float multiply-adds in series (the velocity, Nesterov's
// look-ahead, the parameter step); the unit is built with the Nesterov path,
// so both forms pay its depth
static const unsigned SGD_DEPTH = 21;
// prune: xorshift, compare, select
static const unsigned PRUNE_DEPTH = 6;
// residual add and global average pooling (hls/residual, hls/avgpool):
// read + quantise, the add, ReLU + conversion, DDR write
static const unsigned ADD_DEPTH = LOAD_DEPTH + ACC_LATENCY + 2;
// a channel's ACC_LATENCY partial sums through a chain of adders, the scale
// by 1 / (H * W), conversion and DDR write
static const unsigned GAP_SUM_DEPTH = WB_DEPTH + ACC_LATENCY * ACC_LATENCY + 3;
// batch normalisation: the ACC_LATENCY partial sums of a channel added in
// series (float adds are not reassociated)
static const unsigned BN_REDUCE_DEPTH = ACC_LATENCY * ACC_LATENCY;
// float32 square-root core
static const unsigned SQRT_DEPTH = 16;
// sparse_fc MAC: the pattern read adds a stage before the operand read (the
// lane's x / dx address is the edge's index)
static const unsigned SPFC_MAC_DEPTH = MAC_DEPTH + 1;
// sparse_fc forward MAC: then a pairwise adder tree over the lanes, up to 64
// lanes (6 levels of float adds) before the add into y's copy
static const unsigned SPFC_FWD_MAC_DEPTH = SPFC_MAC_DEPTH + 6 * ACC_LATENCY;
// conv_bwd_data gather form MAC: the list read and the dy / weight address
// arithmetic add two stages before the operand reads, then a pairwise adder
// tree over up to 64 lanes (6 levels of float adds) before the accumulator add
static const unsigned GATHER_MAC_DEPTH = MAC_DEPTH + 2 + 6 * ACC_LATENCY;

}  // namespace zskip

#endif

#ifdef ZSKIP_SCHEDULE
// zskip_top: one descriptor word per cycle of a D_WORDS burst
ZSKIP_SCHEDULE(DESC_FETCH, 1, LOAD_DEPTH)
// forward tap table: one source coordinate per cycle, its taps unrolled
ZSKIP_SCHEDULE(AXIS_IN, 1, 3)
// backward tap table: one source coordinate per cycle, its taps unrolled
ZSKIP_SCHEDULE(AXIS_OUT, 1, 3)
// compaction: one operand word per cycle (it emits at most one element per
// cycle into the stream, so it is not beat-wide); the bias-gradient sum
// rotates over ACC_LATENCY partial sums, so its float adds keep II = 1
ZSKIP_SCHEDULE(SCAN, 1, SCAN_DEPTH)
// encoder: one window of ENC_BITS candidates per cycle, no loop-carried data
ZSKIP_SCHEDULE(ENC_WINDOW, 1, ENC_DEPTH)
// MAC: one lane token (or one hazard bubble) per cycle; each lane's
// read-modify-write goes to its own bank, so II = 1
ZSKIP_SCHEDULE(MAC_CYCLE, 1, MAC_DEPTH)
// weight load: one word per cycle from one port
ZSKIP_SCHEDULE(LOAD_W, 1, LOAD_DEPTH)
// weight load, beat-wide: one 128-bit beat (4 words) per cycle into 4
// distinct banks of the weight memory (taken only when they are)
ZSKIP_SCHEDULE(LOAD_W_BEAT, 1, LOAD_DEPTH)
// accumulator clear: one word per bank per cycle (pe_lanes banks)
ZSKIP_SCHEDULE(CLEAR_ACC, 1, CLEAR_DEPTH)
// conv_fwd bias load: one word per cycle
ZSKIP_SCHEDULE(FWD_LOAD_B, 1, LOAD_DEPTH)
// conv_fwd write-back: one y word per cycle (bias add feeds no recurrence)
ZSKIP_SCHEDULE(FWD_WB, 1, WB_DEPTH)
// conv_fwd write-back, beat-wide: one 128-bit beat of y (4 words) per cycle,
// the 4 accumulator words in 4 distinct banks (taken only when they are)
ZSKIP_SCHEDULE(FWD_WB_BEAT, 1, WB_DEPTH)
// conv_bwd_data mask load: one mask bit per cycle into the channel sets
ZSKIP_SCHEDULE(BWD_DATA_MASK, 1, LOAD_DEPTH)
// conv_bwd_data write-back: one dx word per cycle
ZSKIP_SCHEDULE(BWD_DATA_WB, 1, WB_DEPTH)
// conv_bwd_data write-back, beat-wide: one 128-bit beat of dx per cycle, the
// 4 accumulator words in 4 distinct banks (taken only when they are)
ZSKIP_SCHEDULE(BWD_DATA_WB_BEAT, 1, WB_DEPTH)
// conv_bwd_weight x load: one word per cycle
ZSKIP_SCHEDULE(BWD_W_LOAD_X, 1, LOAD_DEPTH)
// conv_bwd_weight x load, beat-wide: one 128-bit beat of x per cycle into 4
// distinct plane banks and 4 rows of sets (taken only when they are)
ZSKIP_SCHEDULE(BWD_W_LOAD_X_BEAT, 1, LOAD_DEPTH)
// conv_bwd_weight dw write-back: one word per cycle
ZSKIP_SCHEDULE(BWD_W_WB, 1, WB_DEPTH)
// dw write-back adding ACC_LATENCY partial copies: the copies of a word sit in
// one bank, read one per cycle, so II = ACC_LATENCY
ZSKIP_SCHEDULE(BWD_W_WB_SUM, ACC_LATENCY, WB_SUM_DEPTH)
// db write-back: one word per cycle
ZSKIP_SCHEDULE(BWD_W_WB_B, 1, WB_DEPTH)
// maxpool plane load: one word per cycle
ZSKIP_SCHEDULE(POOL_LOAD, 1, LOAD_DEPTH)
// maxpool window scan: one window element per cycle; the running max is a
// one-cycle compare
ZSKIP_SCHEDULE(POOL_WINDOW, 1, SCAN_DEPTH)
// maxpool argmax check: one word per cycle
ZSKIP_SCHEDULE(POOL_CHECK, 1, LOAD_DEPTH)
// maxpool plane clear: one word per cycle
ZSKIP_SCHEDULE(POOL_CLEAR, 1, CLEAR_DEPTH)
// non-overlapping windows: each dx word is written once, no recurrence
ZSKIP_SCHEDULE(POOL_SCATTER_SET, 1, LOAD_DEPTH)
// overlapping windows: dx[argmax] += dy may hit the word the previous
// iteration added to: a float recurrence, II = adder latency
ZSKIP_SCHEDULE(POOL_SCATTER_ADD, ACC_LATENCY, LOAD_DEPTH + ACC_LATENCY)
// maxpool write-back: one word per cycle
ZSKIP_SCHEDULE(POOL_WB, 1, WB_DEPTH)
// sgd: parameter (wgt), velocity (vel) and gradient (grad) come through
// three bundles, one read and at most one write of each per element: II = 1
ZSKIP_SCHEDULE(SGD_UPDATE, 1, SGD_DEPTH)
// softmax max: a one-cycle compare recurrence, II = 1
ZSKIP_SCHEDULE(SOFTMAX_MAX, 1, LOAD_DEPTH)
// softmax exp sum: a float add recurrence, II = adder latency
ZSKIP_SCHEDULE(SOFTMAX_EXP, ACC_LATENCY, EXP_DEPTH)
// softmax gradient: one divide per cycle, no recurrence
ZSKIP_SCHEDULE(SOFTMAX_GRAD, 1, DIV_DEPTH)
// prune threshold: one word per cycle, integer |g| sums (one-cycle adder)
ZSKIP_SCHEDULE(PRUNE_STATS, 1, PRUNE_DEPTH)
// prune apply: one word per cycle, the lanes' blocks in turn
ZSKIP_SCHEDULE(PRUNE_ELEMS, 1, PRUNE_DEPTH)
// residual add forward, beat-wide: a beat of a and a beat of b come through
// the one act bundle, two reads per iteration: II = 2 (4 elements)
ZSKIP_SCHEDULE(ADD_FWD_BEAT, 2, ADD_DEPTH)
// residual add forward, the words after the last whole beat: two reads of
// the act bundle per word, II = 2
ZSKIP_SCHEDULE(ADD_FWD_WORD, 2, ADD_DEPTH)
// residual add backward (da + db), beat-wide: two reads of the grad bundle
// per beat, II = 2
ZSKIP_SCHEDULE(ADD_BWD_BEAT, 2, ADD_DEPTH)
// residual add backward, the words after the last whole beat: II = 2
ZSKIP_SCHEDULE(ADD_BWD_WORD, 2, ADD_DEPTH)
// global average pooling forward: one x word per cycle into rotating
// partial sums (the same partial recurs every ACC_LATENCY words), II = 1
ZSKIP_SCHEDULE(GAP_FWD_ACC, 1, LOAD_DEPTH + ACC_LATENCY)
// global average pooling forward: one channel's partials summed, scaled and
// stored per cycle, no loop-carried data, II = 1
ZSKIP_SCHEDULE(GAP_FWD_SUM, 1, GAP_SUM_DEPTH)
// global average pooling backward: one dx word per cycle (dy read once per
// plane, the mask once per 32 words), II = 1
ZSKIP_SCHEDULE(GAP_BWD, 1, WB_DEPTH)
// batch normalisation (hls/batchnorm/batchnorm.h). Sums over a channel's
// N*H*W values rotate over ACC_LATENCY partial sums per channel (an address
// is updated once every ACC_LATENCY iterations), so they keep II = 1.
// gamma and beta: two reads of the wgt port per channel
ZSKIP_SCHEDULE(BN_LOAD_PARAM, 2, LOAD_DEPTH)
// sum of x: one word per cycle, a rotating partial-sum add
ZSKIP_SCHEDULE(BN_SUM, 1, LOAD_DEPTH + ACC_LATENCY)
// mean: a channel's partials added in series by one adder (II = its latency)
ZSKIP_SCHEDULE(BN_MEAN, ACC_LATENCY, BN_REDUCE_DEPTH + ACC_LATENCY)
// sum of (x - mean)^2: one word per cycle (subtract, multiply, rotating add)
ZSKIP_SCHEDULE(BN_VAR_SUM, 1, LOAD_DEPTH + 3 * ACC_LATENCY)
// var and 1 / sqrt(var + eps): the partials added by one adder, as BN_MEAN
ZSKIP_SCHEDULE(BN_VAR, ACC_LATENCY, BN_REDUCE_DEPTH + ACC_LATENCY + SQRT_DEPTH + DIV_DEPTH)
// xhat and y: both written through the act port, two writes per element
ZSKIP_SCHEDULE(BN_NORM, 2, WB_DEPTH + 4 * ACC_LATENCY)
// inference parameters: gamma, beta, running mean and variance, four reads of
// the wgt port per channel
ZSKIP_SCHEDULE(BN_INFER_PARAM, 4, LOAD_DEPTH + SQRT_DEPTH)
// inference: one x read and one y write per element, a pipelined divider
ZSKIP_SCHEDULE(BN_INFER, 1, WB_DEPTH + DIV_DEPTH + 3 * ACC_LATENCY)
// backward parameters: gamma (wgt) and var (act) through two ports
ZSKIP_SCHEDULE(BN_BWD_PARAM, 1, LOAD_DEPTH + SQRT_DEPTH + 2 * DIV_DEPTH + ACC_LATENCY)
// sums of dy and dy * xhat: dy (grad) and xhat (act) through two ports,
// rotating partial-sum adds
ZSKIP_SCHEDULE(BN_BWD_SUM, 1, LOAD_DEPTH + 2 * ACC_LATENCY)
// dgamma and dbeta: the partials of both sums added by one adder
ZSKIP_SCHEDULE(BN_BWD_REDUCE, 2 * ACC_LATENCY, 2 * BN_REDUCE_DEPTH + WB_DEPTH)
// dx: dy, xhat, the mask and dx through four ports, one access each; two
// multiplies and two subtracts, no recurrence
ZSKIP_SCHEDULE(BN_BWD_DX, 1, WB_DEPTH + 3 * ACC_LATENCY)
// running statistics: four multiplies share one multiplier
ZSKIP_SCHEDULE(BN_STATS, 4, LOAD_DEPTH + 3 * ACC_LATENCY + WB_DEPTH)
// --- sparse_fc (pre-defined sparse junctions, hls/sparse_fc) ---
// pattern load, beat-wide: 4 edge indices per cycle into 4 distinct banks (P >= 4)
ZSKIP_SCHEDULE(SPFC_LOAD_IDX_BEAT, 1, LOAD_DEPTH)
// pattern load: one edge index per cycle (P < 4)
ZSKIP_SCHEDULE(SPFC_LOAD_IDX, 1, LOAD_DEPTH)
// accumulator copies clear: pe_lanes indices x ACC_LATENCY copies per cycle, one word per bank
ZSKIP_SCHEDULE(SPFC_CLEAR, 1, CLEAR_DEPTH)
// dy compaction: one word per cycle into the live list; each db word once per image
ZSKIP_SCHEDULE(SPFC_SCAN, 1, SCAN_DEPTH)
// dy compaction, beat-wide: 4 dy words per cycle, up to 4 live entries into 4 list banks (P >= 4)
ZSKIP_SCHEDULE(SPFC_SCAN_BEAT, 1, SCAN_DEPTH)
// x row load: one word per cycle
ZSKIP_SCHEDULE(SPFC_LOAD_X, 1, LOAD_DEPTH)
// x row load, beat-wide: 4 inputs per cycle into 4 distinct banks (row on a beat, P >= 4)
ZSKIP_SCHEDULE(SPFC_LOAD_X_BEAT, 1, LOAD_DEPTH)
// forward bias load: one word per cycle
ZSKIP_SCHEDULE(SPFC_FWD_LOAD_B, 1, LOAD_DEPTH)
// forward: one chunk per cycle (clash-free x banks, rotating y copies: no recurrence)
ZSKIP_SCHEDULE(SPFC_FWD_MAC, 1, SPFC_FWD_MAC_DEPTH)
// forward write-back: one y word per cycle, its ACC_LATENCY copies in distinct banks
ZSKIP_SCHEDULE(SPFC_FWD_WB, 1, WB_SUM_DEPTH)
// forward write-back, beat-wide: 4 outputs per cycle (J a multiple of 4, P >= 4)
ZSKIP_SCHEDULE(SPFC_FWD_WB_BEAT, 1, WB_SUM_DEPTH)
// backward-data mask load: one bit per cycle
ZSKIP_SCHEDULE(SPFC_BWD_DATA_MASK, 1, LOAD_DEPTH)
// backward-data mask load, beat-wide: 4 bits of one word per cycle (I a multiple of 4, P >= 4)
ZSKIP_SCHEDULE(SPFC_BWD_DATA_MASK_BEAT, 1, LOAD_DEPTH)
// backward-data: one chunk per cycle (clash-free dx banks, rotating dx copies)
ZSKIP_SCHEDULE(SPFC_BWD_DATA_MAC, 1, SPFC_MAC_DEPTH)
// backward-data write-back: one dx word per cycle, its copies in distinct banks
ZSKIP_SCHEDULE(SPFC_BWD_DATA_WB, 1, WB_SUM_DEPTH)
// backward-data write-back, beat-wide: 4 inputs per cycle (I a multiple of 4, P >= 4)
ZSKIP_SCHEDULE(SPFC_BWD_DATA_WB_BEAT, 1, WB_SUM_DEPTH)
// backward-weight: one chunk per cycle (clash-free x banks, each dw word once per image)
ZSKIP_SCHEDULE(SPFC_BWD_W_MAC, 1, SPFC_MAC_DEPTH)
// dw write-back: one word per cycle
ZSKIP_SCHEDULE(SPFC_BWD_W_WB, 1, WB_DEPTH)
// dw write-back, beat-wide: 4 edges per cycle from 4 distinct banks (edges a multiple of 4, P >= 4)
ZSKIP_SCHEDULE(SPFC_BWD_W_WB_BEAT, 1, WB_DEPTH)
// db write-back: one word per cycle
ZSKIP_SCHEDULE(SPFC_BWD_W_WB_B, 1, WB_DEPTH)
// --- conv_bwd_data gather form (FLAG_GATHER, hls/conv_bwd_data/conv_bwd_data_gather.h) ---
// weight load into [c][slot][k]: one word per cycle (the rows of one k share
// a bank, so a beat would need four writes to it)
ZSKIP_SCHEDULE(GATHER_LOAD_W, 1, LOAD_DEPTH)
// dy load: one word per cycle into [opos][g][k], its G copies in G banks
ZSKIP_SCHEDULE(GATHER_LOAD_DY, 1, LOAD_DEPTH)
// dy load, beat-wide: a beat's 4 words (4 positions of one k) share a bank per
// copy, written through its two ports: II = 2
ZSKIP_SCHEDULE(GATHER_LOAD_DY_BEAT, 2, LOAD_DEPTH)
// one channel's live-output list: one mask bit per cycle, one list append
ZSKIP_SCHEDULE(GATHER_LIST, 1, LOAD_DEPTH)
// the same, beat-wide: 4 mask bits of one row per cycle, up to 4 appends into
// distinct banks of the 4-bank list (at most two per bank: its two ports)
ZSKIP_SCHEDULE(GATHER_LIST_BEAT, 1, LOAD_DEPTH)
// one list entry per cycle (or one bubble while its accumulator's add is in
// flight): P lanes on their own banks, an adder tree, one read-modify-write
ZSKIP_SCHEDULE(GATHER_MAC, 1, GATHER_MAC_DEPTH)
// one channel's write-back: one dx word per cycle
ZSKIP_SCHEDULE(GATHER_WB, 1, WB_DEPTH)
// one channel's write-back, beat-wide: 4 positions from 4 accumulator banks
ZSKIP_SCHEDULE(GATHER_WB_BEAT, 1, WB_DEPTH)
#endif
