"""Descriptor encoding: parsed from hls/common/descriptor.h, round trip, rejection."""
import re

import numpy as np
import pytest

from zskip.host.ip import program as P


def test_fields_come_from_the_header():
    text = P.DESCRIPTOR_H.read_text()
    # an independent reading of the header: every `D_NAME = value,` line
    pairs = dict(re.findall(r"^\s*D_(\w+)\s*=\s*(\d+),", text, re.M))
    assert int(pairs.pop("WORDS")) == P.D_WORDS
    assert {k.replace("_F32", "").lower(): int(v) for k, v in pairs.items()} == P.FIELDS
    assert P.OPCODES["CONV_FWD"] == int(re.search(r"OP_CONV_FWD\s*=\s*(\d+)", text).group(1))
    assert set(P.OPCODES) >= {"CONV_FWD", "CONV_BWD_DATA", "CONV_BWD_WEIGHT", "MAXPOOL_FWD", "MAXPOOL_BWD",
                              "FC_FWD", "FC_BWD_DATA", "FC_BWD_WEIGHT", "SGD_UPDATE", "SOFTMAX_XENT"}
    flags = {k: int(v) for k, v in re.findall(r"^\s*FLAG_(\w+)\s*=\s*(\d+),", text, re.M)}
    assert P.FLAGS == flags and {"SKIP_ZEROS", "RELU", "HAS_OUT_MASK", "NESTEROV", "GATHER"} <= set(flags)
    assert all(v & (v - 1) == 0 for v in flags.values()) and len(set(flags.values())) == len(flags), \
        "flags are distinct bits"
    version = re.search(r"#define ZSKIP_VERSION (0x[0-9A-Fa-f]+)", P.VERSION_H.read_text()).group(1)
    assert P.ZSKIP_VERSION == int(version, 16)
    assert len(set(P.FIELDS.values())) == len(P.FIELDS), "two fields share a word"


CONV = dict(n=3, c=5, h=9, w=7, k=4, r=3, s=3, stride=2, pad=1, x=100, y=2000, wgt=17, bias=5, mask_out=9)


def test_round_trip():
    words = P.encode("CONV_FWD", flags=("SKIP_ZEROS", "RELU"), **CONV)
    assert words.dtype == np.uint32 and words.shape == (P.D_WORDS,)
    d = P.decode(words)
    assert d["opcode"] == "CONV_FWD" and set(d["flags"]) == {"SKIP_ZEROS", "RELU"}
    for k, v in CONV.items():
        assert d[k] == v
    assert d["dx"] == 0
    sgd = P.encode("SGD_UPDATE", count=10, wgt=1, vel=11, dw=3, lr=0.05, momentum=0.9, weight_decay=5e-4)
    d = P.decode(sgd)
    assert d["lr"] == np.float32(0.05) and d["momentum"] == np.float32(0.9)
    assert d["weight_decay"] == np.float32(5e-4)
    assert np.array_equal(P.encode(d["opcode"], flags=d["flags"],
                                   **{k: v for k, v in d.items() if k not in ("opcode", "flags")}), sgd)


@pytest.mark.parametrize("change, message", [
    (dict(r=8, s=8, pad=0), r"'r' must be in \[1, 7\]"),
    (dict(pad=3), r"'pad' must be in \[0, 2\]"),
    (dict(stride=3), r"'stride' must be 1 or 2"),
    (dict(c=129), r"'c' must be in \[1, 128\]"),
    (dict(k=0), r"'k' must be in \[1, 128\]"),
    (dict(h=33), r"'h' must be in \[1, 32\]"),
    (dict(n=0), r"'n' must be in \[1, "),
])
def test_rejects_what_the_kernel_cannot_run(change, message):
    with pytest.raises(ValueError, match=message):
        P.encode("CONV_FWD", **{**CONV, **change})


def test_rejects_unknown_names_and_bad_values():
    with pytest.raises(ValueError, match="opcode must be one of"):
        P.encode("CONV3D", **CONV)
    with pytest.raises(ValueError, match="flags: each must be one of"):
        P.encode("CONV_FWD", flags=("FAST",), **CONV)
    with pytest.raises(ValueError, match="field 'bogus' is not a descriptor field"):
        P.encode("CONV_FWD", bogus=1, **CONV)
    with pytest.raises(ValueError, match=r"field 'x' must be an integer in \[0, 4294967295\]"):
        P.encode("CONV_FWD", **{**CONV, "x": -1})
    with pytest.raises(ValueError, match="'lr' must be finite"):
        P.encode("SGD_UPDATE", count=1, lr=float("nan"))
    with pytest.raises(ValueError, match=r"'c' must be in \[1, 1024\]"):
        P.encode("FC_FWD", n=1, c=2000, k=3, h=1, w=1, r=1, s=1, stride=1)
    with pytest.raises(ValueError, match="opcode word 99"):
        w = P.encode("CONV_FWD", **CONV)
        w[P.FIELDS["opcode"]] = 99
        P.decode(w)


def test_limits_follow_the_compiled_maxima():
    small = P.Limits(pe_lanes=4, max_ch=8, max_dim=16, max_ksize=5, max_features=64)
    with pytest.raises(ValueError, match=r"'c' must be in \[1, 8\]"):
        P.encode("CONV_FWD", limits=small, **{**CONV, "c": 9})
    assert P.Limits.defaults().max_ch == 128
    assert small.defines()["ZSKIP_MAX_CH"] == 8


def test_bit_packing_matches_the_documented_layout(rng):
    mask = rng.random((3, 5, 7)) > 0.5
    words = P.pack_bits(mask)
    assert words.size == P.bit_words(mask.size) == (mask.size + 31) // 32
    flat = mask.reshape(-1)
    for i in (0, 1, 31, 32, 33, flat.size - 1):
        assert bool((int(words[i // 32]) >> (i % 32)) & 1) == flat[i]
    assert np.array_equal(P.unpack_bits(words, mask.shape), mask)


def test_operand_extents_cover_every_operand():
    words = P.encode("CONV_FWD", flags=("RELU",), **CONV)
    ext = P.operand_extents(words)
    y_size = 3 * 4 * 5 * 4  # oh = (9 + 2 - 3) // 2 + 1 = 5, ow = (7 + 2 - 3) // 2 + 1 = 4
    assert ext["act"] == max(100 + 3 * 5 * 9 * 7, 2000 + y_size)
    assert ext["wgt"] == max(17 + 4 * 5 * 9, 5 + 4)
    assert ext["bits"] == 9 + (y_size + 31) // 32


def test_arena_layout():
    lay = P.ArenaLayout()
    assert lay.alloc("act", "a", 10) == 0
    # every tensor starts on a 128-bit beat (4 words): 10 rounds up to 12
    assert P.BEAT_WORDS == 4
    assert lay.alloc("act", "b", 5) == 12
    assert lay.alloc("act", "c", 4) == 20
    assert lay.alloc("bits", "m", 2) == 0
    assert lay.alloc("bits", "n", 1) == 4
    assert lay.alloc("act", "d", 3) == 24
    # whole beats: the last tensor owns the rest of its beat
    assert lay.size("act") == 28 and lay.size("grad") == 4
    with pytest.raises(ValueError, match="arena must be one of"):
        lay.alloc("ddr", "c", 1)
    with pytest.raises(ValueError, match="already allocated"):
        lay.alloc("act", "a", 1)


def test_layout_put_and_get(rng):
    lay = P.ArenaLayout()
    lay.alloc("act", "x", 6)
    lay.alloc("bits", "m", P.bit_words(40))
    lay.alloc("bits", "idx", 3)
    bufs = {a: np.zeros(lay.size(a), P.ARENA_DTYPES[a]) for a in P.ARENAS}
    x = rng.standard_normal((2, 3)).astype(np.float32)
    m = rng.random((5, 8)) > 0.5
    lay.put(bufs, "x", x)
    lay.put(bufs, "m", m)
    lay.put(bufs, "idx", np.array([7, 0, 3]))
    assert np.array_equal(lay.get(bufs, "x", (2, 3)), x)
    assert np.array_equal(lay.get(bufs, "m", (5, 8), "bits"), m)
    assert np.array_equal(bufs["bits"][:2], P.pack_bits(m))
    assert lay.get(bufs, "idx", (3,), "index").tolist() == [7, 0, 3]
    with pytest.raises(ValueError, match="x: 7 words do not fit its 6 allocated words"):
        lay.put(bufs, "x", np.zeros(7))
