// Packing of 1-bit tensors in the bits arena: bit i of word j is element
// 32 * j + i (row-major). A bit tensor starts at a word boundary and owns its
// last word, so a writer never needs a read-modify-write.
#ifndef ZSKIP_BITS_H
#define ZSKIP_BITS_H

#include <stdint.h>

#include "wide_port.h"

namespace zskip {

// Sequential writer: collects 32 bits, then stores one word of the bits port.
struct bit_writer {
    words<uint32_t> dst;
    uint32_t word;
    unsigned fill;

    explicit bit_writer(words<uint32_t> d) : dst(d), word(0), fill(0) {}

    void put(bool bit) {
        word |= (uint32_t)bit << fill;
        if (++fill == 32) {
            dst[0] = word;
            dst += 1;
            word = 0;
            fill = 0;
        }
    }

    // Four bits at once (bit j of `nibble` is the j-th): the beat-wide
    // write-backs. The writer must have taken only whole nibbles so far.
    void put4(uint32_t nibble) {
        word |= (nibble & 0xFu) << fill;
        fill += 4;
        if (fill == 32) {
            dst[0] = word;
            dst += 1;
            word = 0;
            fill = 0;
        }
    }

    // Stores the last partial word (its unused high bits are zero).
    void flush() {
        if (fill) {
            dst[0] = word;
            dst += 1;
            word = 0;
            fill = 0;
        }
    }
};

// Bit `index` of a bit tensor (a port's words<const uint32_t> or an on-chip array).
template <class SRC>
inline bool get_bit(const SRC &src, uint64_t index) {
    return (src[index >> 5] >> (index & 31u)) & 1u;
}

}  // namespace zskip

#endif
