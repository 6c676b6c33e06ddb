// The 128-bit m_axi data ports (act, wgt, grad, bits, vel) and the word view
// the kernels take of them.
//
// A port is a pointer to beats of BEAT_WORDS = 4 words of 32 bits
// (descriptor.h): a struct of four floats (or uint32_t), which Vitis HLS
// aggregates into one 128-bit bus word on an m_axi interface (UG1399,
// "Aggregation"; hls::vector<float, 4> would do the same but is not in the
// open-source headers g++ compiles the emulation with, and a plain struct
// needs no shim in either form). Its layout is the host's 16 bytes of four
// float32, so the emulator hands its numpy buffers over unchanged.
//
// `words<T>` addresses one tensor of a port by word: word i is lane i % 4 of
// beat i / 4 (the tensor's first word need not be a beat's: per-image slices
// of a tensor whose image is not a multiple of 4 words). In hardware each
// access through it is one 128-bit transfer (a write strobes its lane's four
// bytes), so a loop that moves one word per iteration costs what it did on
// the 32-bit ports; a loop that moves a whole beat per iteration uses
// `beat_at` and `beat_aligned` below.
#ifndef ZSKIP_WIDE_PORT_H
#define ZSKIP_WIDE_PORT_H

#include <stdint.h>

#include <type_traits>

#include "descriptor.h"

namespace zskip {

// One bus word of a data port: BEAT_WORDS words, lane l at bytes 4l..4l+3.
template <class V>
struct beat {
    V lane[BEAT_WORDS];
};
typedef beat<float> f32_beat;
typedef beat<uint32_t> u32_beat;

// A tensor in a port, addressed by word. T is the word type (float,
// uint32_t), const-qualified for a tensor the kernel only reads; it behaves
// like a T pointer: x[i], x + n.
template <class T>
struct words {
    typedef typename std::remove_const<T>::type value_type;
    typedef typename std::conditional<std::is_const<T>::value, const beat<value_type>, beat<value_type> >::type
        beat_type;

    beat_type *base;  // the port's beat 0
    uint64_t first;   // the tensor's first word, counted from base

    words(beat_type *b, uint64_t word0) : base(b), first(word0) {}
    // a read-only view of a writable tensor
    template <class U>
    words(const words<U> &o) : base(o.base), first(o.first) {}

    // word i of the tensor: one lane of one 128-bit transfer
    T &operator[](uint64_t i) const {
        const uint64_t a = first + i;
        return base[a / BEAT_WORDS].lane[a % BEAT_WORDS];
    }
    // whether two views are the same tensor (an in-place update)
    template <class U>
    bool same_as(const words<U> &o) const {
        return (const void *)base == (const void *)o.base && first == o.first;
    }
    words operator+(uint64_t n) const { return words(base, first + n); }
    words &operator+=(uint64_t n) {
        first += n;
        return *this;
    }
    // whether word i of the tensor is lane 0 of its beat
    bool beat_aligned(uint64_t i) const { return (first + i) % BEAT_WORDS == 0; }
    // the beat holding word i (which must be lane 0 of it): one 128-bit transfer
    beat_type &beat_at(uint64_t i) const { return base[(first + i) / BEAT_WORDS]; }
};

// The beat of four words (lane j = word[j]), to write with one transfer.
template <class V>
inline beat<V> make_beat(const V (&word)[BEAT_WORDS]) {
    static_assert(BEAT_WORDS == 4, "a beat is four 32-bit words of a 128-bit port");
    const beat<V> b = {{word[0], word[1], word[2], word[3]}};
    return b;
}

// The four words of a beat read with one transfer (word[j] = lane j).
template <class V>
inline void split_beat(const beat<V> &b, V (&word)[BEAT_WORDS]) {
    static_assert(BEAT_WORDS == 4, "a beat is four 32-bit words of a 128-bit port");
    word[0] = b.lane[0];
    word[1] = b.lane[1];
    word[2] = b.lane[2];
    word[3] = b.lane[3];
}

// Whether the BEAT_WORDS words of a beat, stored `stride` words apart in an
// on-chip array partitioned cyclic over `banks` banks, fall in distinct banks
// (so one iteration may touch all of them): j * stride mod banks differs for
// j < 4 exactly when no lane distance 1..3 times stride is a multiple of banks,
// i.e. banks / gcd(stride, banks) >= 4. Three comparators, per descriptor.
inline bool beat_in_distinct_banks(unsigned stride, unsigned banks) {
    return (stride % banks) != 0 && (2 * stride % banks) != 0 && (3 * stride % banks) != 0;
}

}  // namespace zskip

#endif
