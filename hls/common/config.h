// Compile-time sizes of the accelerator. Every value is a macro with a
// default so that Python (host/emu.py, overlay scripts) chooses them with -D
// from overlay/boards.ini; the kernels only see them through the config
// structs below (hls4ml's CONFIG_T pattern).
#ifndef ZSKIP_CONFIG_H
#define ZSKIP_CONFIG_H

// Parallel multiply-accumulate lanes of the MAC stage.
#ifndef ZSKIP_PE_LANES
#define ZSKIP_PE_LANES 16
#endif
// Largest channel count of a convolution (input and output).
#ifndef ZSKIP_MAX_CH
#define ZSKIP_MAX_CH 128
#endif
// Largest feature-map side (height and width) of a convolution or pooling.
#ifndef ZSKIP_MAX_DIM
#define ZSKIP_MAX_DIM 32
#endif
// Largest convolution kernel side (and pooling window).
#ifndef ZSKIP_MAX_KSIZE
#define ZSKIP_MAX_KSIZE 7
#endif
// Largest feature count of a fully-connected layer (inputs and outputs).
#ifndef ZSKIP_MAX_FEATURES
#define ZSKIP_MAX_FEATURES 1024
#endif

#if ZSKIP_PE_LANES < 1 || ZSKIP_MAX_CH < 1 || ZSKIP_MAX_DIM < 1 || ZSKIP_MAX_KSIZE < 1 || ZSKIP_MAX_FEATURES < 1
#error "zskip: every ZSKIP_* size must be >= 1"
#endif
// the compaction stage keeps row/column coordinates and tap offsets in 8 bits
#if ZSKIP_MAX_DIM > 255 || ZSKIP_MAX_KSIZE > 255
#error "zskip: ZSKIP_MAX_DIM and ZSKIP_MAX_KSIZE must be <= 255"
#endif

namespace zskip {

// Sizes of the sparse-scatter engine when it runs a convolution.
struct conv_config {
    static const unsigned pe_lanes = ZSKIP_PE_LANES;
    static const unsigned max_ch = ZSKIP_MAX_CH;
    static const unsigned max_dim = ZSKIP_MAX_DIM;
    static const unsigned max_ksize = ZSKIP_MAX_KSIZE;
};

// Stored edges of a pre-defined sparse junction (hls/sparse_fc): the on-chip
// pattern memory holds max_features^2 / SPARSE_EDGE_DIVISOR edge indices (the
// edge weights share the fc engine's weight memory). A design constant, not a
// board size (host/ip/program.py reads it here).
static const unsigned SPARSE_EDGE_DIVISOR = 8;

// The same engine running a fully-connected layer: a 1x1 convolution on a
// 1x1 image whose channels are the features.
struct fc_config {
    static const unsigned pe_lanes = ZSKIP_PE_LANES;
    static const unsigned max_ch = ZSKIP_MAX_FEATURES;
    static const unsigned max_dim = 1;
    static const unsigned max_ksize = 1;
    // stored edges of a pre-defined sparse junction (sparse_fc)
    static const unsigned max_edges = ZSKIP_MAX_FEATURES >= SPARSE_EDGE_DIVISOR
                                          ? ZSKIP_MAX_FEATURES / SPARSE_EDGE_DIVISOR * ZSKIP_MAX_FEATURES
                                          : ZSKIP_MAX_FEATURES;
};

// Max pooling and the element-wise kernels.
struct pool_config {
    static const unsigned max_ch = ZSKIP_MAX_CH;
    static const unsigned max_dim = ZSKIP_MAX_DIM;
    static const unsigned max_ksize = ZSKIP_MAX_KSIZE;
};

// Softmax cross-entropy over at most max_classes logits per sample.
struct softmax_config {
    static const unsigned max_classes = ZSKIP_MAX_FEATURES;
};

// Trip-count hint for loops over the batch and over element counts: neither
// is bounded by the hardware (both are looped), the value only feeds the
// HLS latency report.
static const unsigned TRIP_BATCH = 64;
static const unsigned TRIP_ELEMENTS = 65536;

}  // namespace zskip

#endif
